/**
 * `npm run demo` does what it prints (dist/scripts/demo.js; run `npm run build` first): the printed curl
 * push is accepted, the printed clients URL and token show the pushed count, and Ctrl-C stops both
 * daemons and exits 0. The demo prefers its usual ports and falls back to free ones.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { ROOT, waitFor } from '../helpers/daemons.js'

t.test('demo: the printed push reaches the printed clients URL, and Ctrl-C exits 0', async (t) => {
  const dir = t.testdir()
  // Its own process group, so a failed test can stop the demo's daemons too.
  const demo = spawn(process.execPath, [join(ROOT, 'dist', 'scripts', 'demo.js')], {
    env: { ...process.env, DEMO_DIR: dir }, stdio: ['ignore', 'pipe', 'pipe'], detached: true,
  })
  const exited = new Promise<number | null>((res) => demo.once('exit', (code) => res(code)))
  t.teardown(async () => {
    if (demo.exitCode === null && demo.signalCode === null) {
      try { process.kill(-demo.pid!, 'SIGKILL') } catch { /* already gone */ }
      await exited
    }
  })
  let stdout = ''
  let stderr = ''
  demo.stderr!.on('data', (d: Buffer) => { stderr += d.toString() })
  const ready = new Promise<void>((res, rej) => {
    createInterface({ input: demo.stdout! }).on('line', (line) => {
      stdout += `${line}\n`
      if (line.trim() === 'demo ready') res()
    })
    exited.then((code) => rej(new Error(`demo exited (${code}) before it was ready: ${stderr}`)))
  })
  const timeout = setTimeout(() => demo.kill('SIGINT'), 45_000)
  t.teardown(() => clearTimeout(timeout))
  await ready

  const curlPush = /curl -s (http:\/\/\S+\/websocket\/todo\/api\/message) --data-urlencode 'message=(\{.*\})'/.exec(stdout)
  t.ok(curlPush, 'prints a curl push')
  const curlTodos = /curl -s -H 'Authorization: Bearer ([\w.-]+)' (http:\/\/\S+)\/api\/v1\/todos/.exec(stdout)
  t.ok(curlTodos, 'prints a curl for the todos with a bearer token')
  if (!curlPush || !curlTodos) return
  const [, intakeUrl, message] = curlPush
  const [, bearer, clientsUrl] = curlTodos
  const record = JSON.parse(message!) as { QUANTITY: number; LOGINNAME: string; BUSSINESS: string }
  t.equal(record.QUANTITY, 20)
  t.match(record.BUSSINESS, /^[0-9a-f]{32}$/)

  const res = await fetch(intakeUrl!, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded; charset=UTF-8' },
    body: new URLSearchParams({ message: message! }).toString(),
  })
  t.equal(res.status, 200)
  t.match(await res.json(), { code: 0, msg: 'success', data: { id: String, seq: Number } })

  const shown = await waitFor(async () => {
    const r = await fetch(`${clientsUrl}/api/v1/todos`, { headers: { authorization: `Bearer ${bearer}` } })
    const body = await r.json() as { user: string; total: number; items: { quantity: number; systemName: string }[] }
    return body.items?.some((i) => i.quantity === 20) ? body : undefined
  }, 'the pushed count on the clients URL', 15_000, 50)
  t.equal(shown.user, record.LOGINNAME)
  t.equal(shown.total, 20)
  t.equal(shown.items[0]!.systemName, '建设项目')

  demo.kill('SIGINT')
  t.equal(await exited, 0, 'Ctrl-C stops both daemons and exits 0')
  t.match(stdout, /stopped\./)
})
