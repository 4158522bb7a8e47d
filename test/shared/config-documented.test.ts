import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { INNER_SCHEMA } from '../../inner/config.js'
import { OUTER_SCHEMA } from '../../outer/config.js'
import { ROOT } from '../helpers/daemons.js'

interface Node { type?: string; properties?: Record<string, Node>; items?: Node }

/** Every leaf key path of a config schema, e.g. `intake.maxBodyBytes`, `outers.publicKey`. */
function leaves(node: Node, prefix = ''): string[] {
  const props = node.properties ?? node.items?.properties
  if (!props) return [prefix]
  return Object.entries(props).flatMap(([k, v]) => (k === '$schema' ? [] : leaves(v, prefix ? `${prefix}.${k}` : k)))
}

const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')

for (const [name, schema] of [['inner.json', INNER_SCHEMA], ['outer.json', OUTER_SCHEMA]] as const) {
  t.test(`config: every key of ${name} is documented in README`, async (t) => {
    for (const path of leaves(schema as unknown as Node)) {
      const leaf = path.split('.').pop()!
      const parent = path.split('.').slice(0, -1).join('.')
      // A row names the key as `a.b.c`, or groups siblings as `a.b` / `c` in one row, or as `a.*`.
      // A nested object (e.g. tls.intake = {certFile, keyFile}) may be documented as one row naming its path.
      const segments = path.split('.')
      const objectRow = segments.length > 2 && readme.includes(`\`${segments.slice(0, -1).join('.')}\``) && readme.includes(leaf)
      const documented = objectRow || readme.includes(`\`${path}\``) || readme.includes(`\`${parent}.*\``)
        || readme.includes(`\`${path.split('.')[0]}[].${leaf}\``) || (parent !== '' && readme.includes(`\`${leaf}\``) && readme.includes(`\`${parent}.`))
      t.ok(documented, `${name}: ${path}`)
    }
  })
}
