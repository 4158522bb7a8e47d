/**
 * `npm run demo`: both daemons on loopback with generated keys, an embedded SQLite each, one registered
 * demo system, and ready-to-paste commands. Everything lives under ./demo-data (git-ignored); a second
 * run reuses it. Ctrl-C stops both daemons cleanly.
 *
 * Ports: the usual ones (intake 8080, portal 8081, admin 8090, link 7001, clients 8443) when free,
 * otherwise any free port; the printed URLs are the real ones.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { randomBytes } from 'node:crypto'
import { createInterface } from 'node:readline'
import { generateKeyFiles } from '../shared/crypto.js'
import { mintToken } from '../shared/tokens.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
const dir = resolve(process.env.DEMO_DIR ?? join(root, 'demo-data'))
const innerBin = join(root, 'dist', 'inner', 'main.js')
const outerBin = join(root, 'dist', 'outer', 'main.js')

function freePort(preferred: number): Promise<number> {
  return new Promise((res) => {
    const s = createServer()
    s.once('error', () => res(0))
    s.listen(preferred, '127.0.0.1', () => s.close(() => res(preferred)))
  })
}

/** Runs one of our CLIs to completion and returns its stdout. */
function run(args: string[]): string {
  const r = spawnSync(process.execPath, args, { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`${args.join(' ')} failed: ${r.stderr}`)
  return r.stdout.trim()
}

/** Starts a daemon and resolves with its listener URLs once every expected listener has logged. */
function startDaemon(name: string, bin: string, config: string, expect: string[]): Promise<{ child: ChildProcess; urls: Record<string, string> }> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [bin, 'serve', '--config', config], { stdio: ['ignore', 'pipe', 'inherit'] })
    const urls: Record<string, string> = {}
    const lines = createInterface({ input: child.stdout! })
    lines.on('line', (line) => {
      let o: { msg?: string; listener?: string; url?: string; level?: number } = {}
      try { o = JSON.parse(line) } catch { /* not JSON */ }
      if (o.msg === 'listening' && o.listener && o.url) {
        urls[o.listener] = o.url
        if (expect.every((e) => urls[e])) res({ child, urls })
      }
      if (process.env.DEMO_VERBOSE || (o.level ?? 30) >= 40) process.stdout.write(`[${name}] ${line}\n`)
    })
    child.once('exit', (code) => rej(new Error(`${name} exited with ${code} before it was ready`)))
  })
}

async function main(): Promise<void> {
  mkdirSync(join(dir, 'keys'), { recursive: true })
  const innerKey = join(dir, 'keys', 'inner.key')
  const outerKey = join(dir, 'keys', 'outer.key')
  if (!existsSync(innerKey)) generateKeyFiles(join(dir, 'keys'), 'inner')
  if (!existsSync(outerKey)) generateKeyFiles(join(dir, 'keys'), 'outer')
  const innerPub = readFileSync(join(dir, 'keys', 'inner.pub'), 'utf8').trim()
  const outerPub = readFileSync(join(dir, 'keys', 'outer.pub'), 'utf8').trim()
  const secretFile = join(dir, 'keys', 'token-secret')
  if (!existsSync(secretFile)) writeFileSync(secretFile, randomBytes(32).toString('hex') + '\n', { mode: 0o600 })
  const tokens = { alg: 'HS256' as const, secretFile: './keys/token-secret' }

  const [link, clients, outerAdmin] = [await freePort(7001), await freePort(8443), await freePort(8091)]
  const outerConfig = join(dir, 'outer.json')
  writeFileSync(outerConfig, JSON.stringify({
    dataDir: './data/outer', keyFile: './keys/outer.key',
    listen: { link: `127.0.0.1:${link}`, clients: `127.0.0.1:${clients}`, admin: `127.0.0.1:${outerAdmin}` },
    inners: [{ publicKey: innerPub }], tokens,
  }, null, 2))
  const outer = await startDaemon('outer', outerBin, outerConfig, ['link', 'clients', 'admin'])

  const [intake, portal, admin] = [await freePort(8080), await freePort(8081), await freePort(8090)]
  const innerConfig = join(dir, 'inner.json')
  writeFileSync(innerConfig, JSON.stringify({
    centerId: 'demo-center', dataDir: './data/inner', keyFile: './keys/inner.key',
    listen: { intake: `127.0.0.1:${intake}`, portal: `127.0.0.1:${portal}`, admin: `127.0.0.1:${admin}` },
    outers: [{ url: `${outer.urls.link!.replace('http', 'ws')}/link`, publicKey: outerPub }], tokens,
  }, null, 2))

  // Register the demo system once (the CLI writes into the inner's database).
  const systems = JSON.parse(run([innerBin, 'system', 'list', '--config', innerConfig, '--json'])) as { id: string; name: string }[]
  let demo = systems.find((s) => s.name === '建设项目')
  let code: string
  if (!demo) {
    const added = JSON.parse(run([innerBin, 'system', 'add', '--config', innerConfig, '--name', '建设项目', '--mode', 'push',
      '--scope', 'province', '--description', 'demo system', '--json'])) as { id: string; name: string; authCode: string }
    demo = added
    code = added.authCode
  } else {
    const shown = JSON.parse(run([innerBin, 'system', 'show', demo.id, '--config', innerConfig, '--json'])) as { authCodes: { code: string; expiresAt: number | null }[] }
    code = shown.authCodes.find((c) => c.expiresAt === null)!.code
  }
  const inner = await startDaemon('inner', innerBin, innerConfig, ['intake', 'portal', 'admin'])
  const token = await mintToken({ ...tokens, secretFile }, 'admin', 8 * 3600)
  const message = JSON.stringify({ LEVEL: 1, BUSSINESS: code, URL: '10.194.5.72', LOGINNAME: 'admin', QUANTITY: 20, BUSSINESSNAME: '建设项目' })

  const out = process.stdout
  out.write(`
todo-relay demo is running (data in ${dir})
  todo-inner  intake ${inner.urls.intake}   portal ${inner.urls.portal}   admin ${inner.urls.admin}
  todo-outer  clients ${outer.urls.clients}   link ${outer.urls.link}   admin ${outer.urls.admin}
  demo system 建设项目 = ${demo.id}, auth code (授权码) ${code}

1) Push a todo count, as the spec's Java client does (form field message=, values as numbers):
   curl -s ${inner.urls.intake}/websocket/todo/api/message --data-urlencode 'message=${message}'

2) Watch it arrive on the DMZ side (as the mobile app 环保通 sees it):
   curl -s -H 'Authorization: Bearer ${token}' ${outer.urls.clients}/api/v1/todos

3) Open the mobile page (live list, each item verified in the browser against the inner's key):
   ${outer.urls.clients}/?token=${token}
   PC portal (private network): ${inner.urls.portal}/?token=${token}

   Monitoring: node ${join('dist', 'inner', 'main.js')} stats --config ${innerConfig}
               curl -s ${inner.urls.admin}/metrics
Press Ctrl-C to stop both daemons.
demo ready
`)

  let stopping = false
  const stop = (): void => {
    if (stopping) { inner.child.kill('SIGKILL'); outer.child.kill('SIGKILL'); process.exit(1) }
    stopping = true
    out.write('\nstopping both daemons…\n')
    const waitExit = (c: ChildProcess): Promise<void> => new Promise((r) => (c.exitCode !== null ? r() : c.once('exit', () => r())))
    inner.child.kill('SIGTERM')
    waitExit(inner.child).then(() => { outer.child.kill('SIGTERM'); return waitExit(outer.child) }).then(() => {
      out.write('stopped.\n')
      process.exit(0)
    })
  }
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
  for (const [n, c] of [['inner', inner.child], ['outer', outer.child]] as const) {
    c.on('exit', (code) => { if (!stopping) { out.write(`${n} exited unexpectedly (${code}); stopping\n`); stop() } })
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`demo: ${e instanceof Error ? e.message : String(e)}\n`)
  process.exit(1)
})
