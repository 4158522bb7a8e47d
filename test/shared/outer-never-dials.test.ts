/**
 * The outer never opens a connection (DESIGN §1, §3.4): everything it sends towards the private network
 * travels on the link the inner opened. Every module todo-outer can load (outer/main.ts and what it imports,
 * transitively) is scanned for the ways Node code dials out; the scan is shown to find the inner's dialer.
 */
import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { ROOT } from '../helpers/daemons.js'
import { specifiers, stripComments } from '../helpers/source-scan.js'

const DIALS: [RegExp, string][] = [
  [/\bfrom\s*['"]undici['"]|\bimport\s*\(\s*['"]undici['"]\s*\)/, 'undici'],
  [/\bfetch\s*\(/, 'fetch()'],
  [/\bnew\s+WebSocket\s*\(/, 'new WebSocket()'],
  [/\bimport\s*\{[^}]*\b(?:request|get|connect|createConnection)\b[^}]*\}\s*from\s*['"]node:(?:http|https|net|tls)['"]/, 'a dialing import from node:http/https/net/tls'],
  [/\b(?:http|https|net|tls)\.(?:request|get|connect|createConnection)\s*\(/, 'a dialing call'],
]

/** What `source` does that could open a connection. */
function dials(source: string): string[] {
  const code = stripComments(source)
  return DIALS.filter(([re]) => re.test(code)).map(([, what]) => what)
}

/** entry and every project module it imports, transitively (packages and node: builtins are not followed). */
function reachable(entry: string): string[] {
  const seen = new Set<string>([entry])
  const todo = [entry]
  while (todo.length > 0) {
    const file = todo.pop()!
    for (const spec of specifiers(readFileSync(file, 'utf8'))) {
      if (!spec.startsWith('.')) continue
      const target = resolve(dirname(file), spec.replace(/\.js$/, '.ts'))
      if (existsSync(target) && !seen.has(target)) {
        seen.add(target)
        todo.push(target)
      }
    }
  }
  return [...seen]
}

t.test('outer: no module todo-outer loads opens a connection', async (t) => {
  const files = reachable(join(ROOT, 'outer', 'main.ts'))
  const names = files.map((f) => relative(ROOT, f))
  t.ok(names.includes('outer/link-server.ts') && names.includes('shared/client-api.ts'), `${files.length} modules scanned`)
  const found = files.flatMap((f) => dials(readFileSync(f, 'utf8')).map((d) => `${relative(ROOT, f)}: ${d}`))
  t.same(found, [], 'nothing dials out')
})

t.test('outer: the scan finds each way of dialing (it is not vacuous)', async (t) => {
  t.same(dials(readFileSync(join(ROOT, 'inner', 'link-client.ts'), 'utf8')), ['new WebSocket()'], 'the inner\'s link client dials')
  for (const src of [
    "import { request } from 'undici'", 'await fetch(url)', "import { get } from 'node:https'", "import { connect } from 'node:net'",
    'http.request(opts)', 'tls.connect(port)',
  ]) t.not(dials(src).length, 0, src)
  t.same(dials("import { createServer } from 'node:https'\n// fetch(x) in a comment\nserver.listen(0)"), [], 'listening is not dialing')
})
