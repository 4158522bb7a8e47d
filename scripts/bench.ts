/**
 * `npm run bench`: measures and prints a table. Nothing here asserts a time; the numbers go to README's
 * Performance section. The daemons run as child processes (one core each on a 2-core machine) and the
 * load comes from this process over loopback with keep-alive connections.
 *
 *   BENCH_PUSHES   pushes per throughput run   (default 20000)
 *   BENCH_CONC     concurrent requests          (default 64)
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { randomBytes } from 'node:crypto'
import { Pool } from 'undici'
import WebSocket from 'ws'
import nacl from 'tweetnacl'
import { canonicalBytes, generateKeyFiles, keyPairFromSeed, sign, verify } from '../shared/crypto.js'
import { mintToken } from '../shared/tokens.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
const INNER = join(root, 'dist', 'inner', 'main.js')
const OUTER = join(root, 'dist', 'outer', 'main.js')
const PUSHES = Number(process.env.BENCH_PUSHES ?? 20_000)
const CONC = Number(process.env.BENCH_CONC ?? 64)
const tokens = { alg: 'HS256' as const, secret: randomBytes(16).toString('hex') }

interface Row { what: string; value: string; note: string }
const rows: Row[] = []
const report = (what: string, value: string, note = ''): void => {
  rows.push({ what, value, note })
  process.stderr.write(`  ${what}: ${value} ${note}\n`)
}

function start(bin: string, config: string, expect: string[]): Promise<{ child: ChildProcess; urls: Record<string, string> }> {
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [bin, 'serve', '--config', config], { stdio: ['ignore', 'pipe', 'inherit'] })
    const urls: Record<string, string> = {}
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const o = JSON.parse(line) as { msg?: string; listener?: string; url?: string }
        if (o.msg === 'listening' && o.listener) {
          urls[o.listener] = o.url!
          if (expect.every((e) => urls[e])) res({ child, urls })
        }
      } catch { /* ignore */ }
    })
    child.once('exit', (c) => rej(new Error(`${bin} exited ${c}`)))
  })
}

function stop(c: ChildProcess): Promise<void> {
  return new Promise((r) => { if (c.exitCode !== null) return r(); c.once('exit', () => r()); c.kill('SIGTERM') })
}

interface Setup { dir: string; inner: ChildProcess; outer?: ChildProcess; intake: string; clients?: string; code: string; innerPub: string }

async function setup(opts: { synchronous: 'FULL' | 'NORMAL' | 'OFF'; withOuter: boolean }): Promise<Setup> {
  const dir = mkdtempSync(join(tmpdir(), 'todo-bench-'))
  const ik = generateKeyFiles(join(dir, 'keys'), 'inner')
  const ok = generateKeyFiles(join(dir, 'keys'), 'outer')
  let outer: { child: ChildProcess; urls: Record<string, string> } | undefined
  if (opts.withOuter) {
    writeFileSync(join(dir, 'outer.json'), JSON.stringify({
      dataDir: './outer', keyFile: ok.keyFile, listen: { link: '127.0.0.1:0', clients: '127.0.0.1:0' },
      inners: [{ publicKey: ik.publicKey }], tokens, storage: { synchronous: opts.synchronous }, log: { level: 'warn' },
    }))
    outer = await start(OUTER, join(dir, 'outer.json'), ['link', 'clients'])
  }
  writeFileSync(join(dir, 'inner.json'), JSON.stringify({
    centerId: 'bench', dataDir: './inner', keyFile: ik.keyFile, listen: { intake: '127.0.0.1:0' },
    outers: outer ? [{ url: `${outer.urls.link!.replace('http', 'ws')}/link`, publicKey: ok.publicKey }] : [],
    intake: { ratePerSecond: 10_000_000 }, storage: { synchronous: opts.synchronous }, log: { level: 'warn' },
  }))
  const added = spawnSync(process.execPath, [INNER, 'system', 'add', '--config', join(dir, 'inner.json'), '--name', '建设项目', '--mode', 'push', '--json'], { encoding: 'utf8' })
  const code = (JSON.parse(added.stdout) as { authCode: string }).authCode
  const inner = await start(INNER, join(dir, 'inner.json'), ['intake'])
  return { dir, inner: inner.child, outer: outer?.child, intake: inner.urls.intake!, clients: outer?.urls.clients, code, innerPub: ik.publicKey }
}

async function teardown(s: Setup): Promise<void> {
  await stop(s.inner)
  if (s.outer) await stop(s.outer)
  rmSync(s.dir, { recursive: true, force: true })
}

function formBody(code: string, user: string, q: number): string {
  return new URLSearchParams({ message: JSON.stringify({ LEVEL: 1, BUSSINESS: code, URL: '10.194.5.72', LOGINNAME: user, QUANTITY: q, BUSSINESSNAME: '建设项目' }) }).toString()
}

/** Sends `n` pushes with `conc` in flight; returns pushes/s and latency percentiles (ms). */
async function load(s: Setup, n: number, conc: number, body: (i: number) => string): Promise<{ rate: number; p50: number; p99: number; failed: number }> {
  const pool = new Pool(s.intake, { connections: conc, pipelining: 1 })
  const lat: number[] = []
  let next = 0
  let failed = 0
  const t0 = performance.now()
  await Promise.all(Array.from({ length: conc }, async () => {
    while (next < n) {
      const i = next++
      const t = performance.now()
      const r = await pool.request({ path: '/websocket/todo/api/message', method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded; charset=UTF-8' }, body: body(i) })
      await r.body.text()
      if (r.statusCode !== 200) failed++
      lat.push(performance.now() - t)
    }
  }))
  const secs = (performance.now() - t0) / 1000
  await pool.close()
  lat.sort((a, b) => a - b)
  return { rate: n / secs, p50: lat[Math.floor(lat.length * 0.5)]!, p99: lat[Math.floor(lat.length * 0.99)]!, failed }
}

async function pushThroughput(): Promise<void> {
  for (const [sync, withOuter] of [['FULL', false], ['OFF', false], ['FULL', true]] as const) {
    const s = await setup({ synchronous: sync, withOuter })
    await load(s, 2000, CONC, (i) => formBody(s.code, `warm${i % 100}`, i)) // warm-up
    const r = await load(s, PUSHES, CONC, (i) => formBody(s.code, `user${i % 5000}`, i % 1000))
    report(`push, form, synchronous=${sync}${withOuter ? ', link to outer' : ''}`, `${Math.round(r.rate)} pushes/s`,
      `(p50 ${r.p50.toFixed(1)} ms, p99 ${r.p99.toFixed(1)} ms, ${CONC} in flight, ${r.failed} non-200)`)
    await teardown(s)
  }
  const s = await setup({ synchronous: 'FULL', withOuter: false })
  const batch = (i: number): string => new URLSearchParams({
    message: JSON.stringify(Array.from({ length: 100 }, (_, k) => ({ LEVEL: 2, BUSSINESS: s.code, LOGINNAME: `u${(i * 100 + k) % 20000}`, QUANTITY: k, BUSSINESSNAME: 'b' }))),
  }).toString()
  const n = Math.max(50, Math.floor(PUSHES / 100))
  const r = await load(s, n, 8, batch)
  report('push, batches of 100, synchronous=FULL', `${Math.round(r.rate * 100)} records/s`, `(p50 ${r.p50.toFixed(1)} ms per batch, 8 in flight)`)
  await teardown(s)
}

async function endToEnd(): Promise<void> {
  const s = await setup({ synchronous: 'FULL', withOuter: true })
  const users = 200
  const sockets: WebSocket[] = []
  const sent = new Map<string, number>()
  const lat: number[] = []
  let got = 0
  await Promise.all(Array.from({ length: users }, async (_, u) => {
    const ws = new WebSocket(`${s.clients!.replace('http', 'ws')}/ws`, { headers: { authorization: `Bearer ${await mintToken(tokens, `e2e${u}`, 600)}` } })
    sockets.push(ws)
    ws.on('message', (d) => {
      const f = JSON.parse(d.toString()) as { t: string; item?: { user: string; quantity: number } }
      if (f.t !== 'update') return
      const t = sent.get(`${f.item!.user}/${f.item!.quantity}`)
      if (t !== undefined) { lat.push(performance.now() - t); got++ }
    })
    await new Promise((r) => ws.once('message', r))
  }))
  const n = Math.min(PUSHES, 5000)
  const pool = new Pool(s.intake, { connections: 16 })
  const t0 = performance.now()
  for (let i = 0; i < n; i += 16) {
    await Promise.all(Array.from({ length: Math.min(16, n - i) }, async (_, k) => {
      const user = `e2e${(i + k) % users}`
      const q = i + k + 1
      sent.set(`${user}/${q}`, performance.now())
      const r = await pool.request({ path: '/websocket/todo/api/message', method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: formBody(s.code, user, q) })
      await r.body.text()
    }))
  }
  const deadline = Date.now() + 30_000
  while (got < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
  const secs = (performance.now() - t0) / 1000
  lat.sort((a, b) => a - b)
  report('push → phone (inner → link → outer → /ws)', `p50 ${lat[Math.floor(lat.length / 2)]!.toFixed(1)} ms, p99 ${lat[Math.floor(lat.length * 0.99)]!.toFixed(1)} ms`,
    `(${got}/${n} delivered to ${users} sockets, ${Math.round(got / secs)} msgs/s, 16 in flight)`)
  for (const ws of sockets) ws.terminate()
  await pool.close()
  await teardown(s)
}

function crypto(): void {
  const seed = randomBytes(32)
  const kp = keyPairFromSeed(seed)
  const nk = nacl.sign.keyPair.fromSeed(seed)
  const msg = canonicalBytes({ seq: 1, id: 'x'.repeat(36), system: 'sys-0123456789', systemName: '建设项目', user: 'admin', level: 1, quantity: 10, url: '10.194.5.72', ts: Date.now(), center: 'bench' })
  const time = (n: number, fn: () => void): number => { const t = performance.now(); for (let i = 0; i < n; i++) fn(); return n / ((performance.now() - t) / 1000) }
  const sig = sign(msg, kp)
  report('ed25519 sign, node:crypto', `${Math.round(time(20000, () => sign(msg, kp)))} /s`)
  report('ed25519 verify, node:crypto', `${Math.round(time(10000, () => verify(msg, sig, kp.publicKeyObject)))} /s`)
  report('ed25519 sign, tweetnacl', `${Math.round(time(200, () => nacl.sign.detached(msg, nk.secretKey)))} /s`)
  report('ed25519 verify, tweetnacl', `${Math.round(time(100, () => nacl.sign.detached.verify(msg, Buffer.from(sig, 'base64'), nk.publicKey)))} /s`)
  report('JCS canonicalize (envelope)', `${Math.round(time(50000, () => canonicalBytes({ a: 1, seq: 2, user: 'admin', systemName: '建设项目' })))} /s`)
}

async function main(): Promise<void> {
  process.stderr.write(`todo-relay bench: ${PUSHES} pushes per run, ${CONC} concurrent, node ${process.version}\n`)
  crypto()
  await pushThroughput()
  await endToEnd()
  const w1 = Math.max(...rows.map((r) => r.what.length))
  const w2 = Math.max(...rows.map((r) => r.value.length))
  process.stdout.write(`\n${'measure'.padEnd(w1)}  ${'result'.padEnd(w2)}  notes\n${'-'.repeat(w1)}  ${'-'.repeat(w2)}  -----\n`)
  for (const r of rows) process.stdout.write(`${r.what.padEnd(w1)}  ${r.value.padEnd(w2)}  ${r.note}\n`)
}

main().catch((e: unknown) => { process.stderr.write(`bench failed: ${String(e)}\n`); process.exit(1) })
