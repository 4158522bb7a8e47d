/**
 * Dependencies point one way (DESIGN §4, STYLE "Dependencies point one way"): inner → shared and
 * outer → shared; never inner ↔ outer, never shared → inner/outer. Scans every .ts file's import and
 * export-from specifiers (static and dynamic) and fails on a forbidden edge.
 */
import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve, sep } from 'node:path'
import { ROOT } from '../helpers/daemons.js'
import { specifiers } from '../helpers/source-scan.js'

const AREAS = ['inner', 'outer', 'shared'] as const
type Area = (typeof AREAS)[number]

/** Which areas each area may import (besides packages and node: builtins). */
const ALLOWED: Record<Area, readonly Area[]> = {
  inner: ['inner', 'shared'],
  outer: ['outer', 'shared'],
  shared: ['shared'],
}

function tsFiles(dir: string): string[] {
  const out: string[] = []
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) out.push(...tsFiles(p))
    else if (e.isFile() && e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p)
  }
  return out
}

/** The area a resolved path falls in, or undefined outside inner/outer/shared. */
function areaOf(path: string): Area | undefined {
  const rel = relative(ROOT, path)
  const top = rel.split(sep)[0]
  return (AREAS as readonly string[]).includes(top ?? '') ? (top as Area) : undefined
}

function forbiddenEdges(file: string, source: string): string[] {
  const from = areaOf(file)!
  const bad: string[] = []
  for (const spec of specifiers(source)) {
    if (!spec.startsWith('.') && !spec.startsWith('/')) {
      // A package can't be inner/outer, but a self-reference by package name could reach them.
      if (/^todo-relay(\/|$)/.test(spec)) bad.push(`${spec} (self-reference by package name)`)
      continue
    }
    const target = resolve(dirname(file), spec)
    const to = areaOf(target)
    if (to === undefined) {
      bad.push(`${spec} (outside inner/outer/shared)`)
      continue
    }
    if (!ALLOWED[from].includes(to)) bad.push(`${spec} (${from} → ${to})`)
  }
  return bad
}

t.test('imports: the scanner finds every kind of import', async (t) => {
  const src = [
    "import a from '../outer/x.js'",
    "import { b, type C } from '../outer/y.js'",
    "import type { D } from '../outer/z.js'",
    "export { e } from '../outer/w.js'",
    "export * from '../outer/v.js'",
    "import '../outer/side-effect.js'",
    "const m = await import('../outer/lazy.js')",
    "import {\n  multi,\n  line,\n} from '../outer/multi.js'",
    "// import x from '../outer/commented.js'",
    "/* import y from '../outer/block.js' */",
    "import ok from '../shared/fine.js'",
  ].join('\n')
  t.same(specifiers(src).sort(), [
    '../outer/lazy.js', '../outer/multi.js', '../outer/side-effect.js', '../outer/v.js', '../outer/w.js',
    '../outer/x.js', '../outer/y.js', '../outer/z.js', '../shared/fine.js',
  ])
  const file = join(ROOT, 'inner', 'example.ts')
  t.equal(forbiddenEdges(file, src).length, 8, 'every inner → outer edge is flagged, the shared one is not')
  t.same(forbiddenEdges(join(ROOT, 'shared', 'x.ts'), "import { y } from '../inner/y.js'"), ['../inner/y.js (shared → inner)'])
  t.same(forbiddenEdges(join(ROOT, 'outer', 'x.ts'), "import { y } from '../inner/y.js'"), ['../inner/y.js (outer → inner)'])
  t.same(forbiddenEdges(join(ROOT, 'shared', 'x.ts'), "import { y } from '../test/helpers/daemons.js'"), ['../test/helpers/daemons.js (outside inner/outer/shared)'])
  t.same(forbiddenEdges(join(ROOT, 'inner', 'x.ts'), "import { y } from 'ws'\nimport z from 'node:fs'"), [])
})

t.test('imports: inner, outer and shared have no forbidden import edge', async (t) => {
  let files = 0
  const problems: string[] = []
  for (const area of AREAS) {
    for (const file of tsFiles(join(ROOT, area))) {
      files++
      for (const p of forbiddenEdges(file, readFileSync(file, 'utf8'))) problems.push(`${relative(ROOT, file)}: ${p}`)
    }
  }
  t.ok(files > 20, `scanned ${files} files`)
  t.same(problems, [], 'no forbidden edges')
})
