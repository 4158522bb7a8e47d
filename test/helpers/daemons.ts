/**
 * Test helpers: real daemons, in-process (build() from source) or as child processes (dist/), on port 0,
 * with real SQLite files in t.testdir(), plus a log sink that parses pino lines and a WebSocket client
 * that waits for frames with a timeout. No fixed ports, no sleeps: everything waits on an event or a
 * polled condition with a deadline.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { Writable } from 'node:stream'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import WebSocket from 'ws'
import { pino } from 'pino'
import { generateKeyFiles } from '../../shared/crypto.js'
import { mintToken, type TokenConfig } from '../../shared/tokens.js'
import type { Logger } from '../../shared/log.js'
import { closeServer } from '../../shared/listen.js'
import { parseInnerConfig, type InnerConfig } from '../../inner/config.js'
import { parseOuterConfig, type OuterConfig } from '../../outer/config.js'
import { build as buildInner, type InnerDaemon } from '../../inner/daemon.js'
import { build as buildOuter, type OuterDaemon } from '../../outer/daemon.js'
import { Registry, type AddSystemInput } from '../../inner/registry.js'

export const ROOT = resolve(fileURLToPath(import.meta.url), '..', '..', '..')
export const INNER_BIN = join(ROOT, 'dist', 'inner', 'main.js')
export const OUTER_BIN = join(ROOT, 'dist', 'outer', 'main.js')
export const TOKENS: TokenConfig = { alg: 'HS256', secret: 'test-secret-0123456789abcdef' }

/** The subset of node-tap's Test that helpers use. */
export interface T {
  // No parameter here: tap's own signature (FixtureDirContent) must stay assignable under strict checks.
  testdir(): string
  teardown(fn: () => unknown): void
}

// ---------------------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------------------

/** Polls `fn` until it returns a truthy value, or fails after `timeoutMs` with `what`. */
export async function waitFor<V>(fn: () => V | Promise<V>, what: string, timeoutMs = 10_000, everyMs = 10): Promise<NonNullable<V>> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await fn()
    if (v) return v as NonNullable<V>
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((r) => setTimeout(r, everyMs))
  }
}

// ---------------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------------

export interface LogLine { level: number; msg: string; [k: string]: unknown }

/** A pino logger whose lines are parsed into `lines`; `waitFor` resolves on the first matching line. */
export class LogSink {
  readonly lines: LogLine[] = []
  readonly logger: Logger
  private waiters: { pred: (l: LogLine) => boolean; resolve: (l: LogLine) => void }[] = []

  constructor(name: string) {
    const stream = new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        for (const s of chunk.toString().split('\n')) if (s.trim()) this.add(JSON.parse(s) as LogLine)
        cb()
      },
    })
    this.logger = pino({ name, level: 'debug', base: { name } }, stream)
  }

  add(l: LogLine): void {
    this.lines.push(l)
    this.waiters = this.waiters.filter((w) => (w.pred(l) ? (w.resolve(l), false) : true))
  }

  find(pred: (l: LogLine) => boolean): LogLine | undefined {
    return this.lines.find(pred)
  }

  waitFor(pred: (l: LogLine) => boolean, what: string, timeoutMs = 10_000): Promise<LogLine> {
    const found = this.lines.find(pred)
    if (found) return Promise.resolve(found)
    return new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`timed out waiting for log: ${what}`)), timeoutMs)
      this.waiters.push({ pred, resolve: (l) => { clearTimeout(timer); res(l) } })
    })
  }
}

// ---------------------------------------------------------------------------------------------------
// Keys and configs
// ---------------------------------------------------------------------------------------------------

export interface Keys { dir: string; innerKey: string; innerPub: string; outerKey: string; outerPub: string }

export function makeKeys(dir: string): Keys {
  const k = join(dir, 'keys')
  const i = generateKeyFiles(k, 'inner')
  const o = generateKeyFiles(k, 'outer')
  return { dir: k, innerKey: i.keyFile, innerPub: i.publicKey, outerKey: o.keyFile, outerPub: o.publicKey }
}

/** Fast test timings: quick reconnects and heartbeats. */
export const FAST_LINK = { reconnectBaseMs: 20, reconnectMaxMs: 300, heartbeatMs: 500, deadMs: 3000 }

export function outerConfigObject(dir: string, keys: Keys, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    dataDir: join(dir, 'outer-data'), keyFile: keys.outerKey,
    listen: { link: '127.0.0.1:0', clients: '127.0.0.1:0', admin: '127.0.0.1:0' },
    inners: [{ publicKey: keys.innerPub }], tokens: TOKENS,
    link: { heartbeatMs: FAST_LINK.heartbeatMs, deadMs: FAST_LINK.deadMs },
    log: { level: 'debug' },
    ...extra,
  }
}

export function innerConfigObject(dir: string, keys: Keys, outerLinkUrl: string | undefined, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    centerId: 'test-center', dataDir: join(dir, 'inner-data'), keyFile: keys.innerKey,
    listen: { intake: '127.0.0.1:0', portal: '127.0.0.1:0', admin: '127.0.0.1:0' },
    outers: outerLinkUrl ? [{ url: outerLinkUrl, publicKey: keys.outerPub }] : [],
    tokens: TOKENS, link: FAST_LINK, log: { level: 'debug' },
    ...extra,
  }
}

export function writeConfig(dir: string, name: string, obj: Record<string, unknown>): string {
  mkdirSync(dir, { recursive: true })
  const p = join(dir, name)
  writeFileSync(p, JSON.stringify(obj, null, 2))
  return p
}

// ---------------------------------------------------------------------------------------------------
// In-process daemons
// ---------------------------------------------------------------------------------------------------

export interface RunningOuter { daemon: OuterDaemon; logs: LogSink; linkUrl: string; clientsUrl: string; config: OuterConfig }
export interface RunningInner { daemon: InnerDaemon; logs: LogSink; intakeUrl: string; portalUrl: string; adminUrl: string; config: InnerConfig }

export async function startOuter(t: T, dir: string, keys: Keys, extra: Record<string, unknown> = {}): Promise<RunningOuter> {
  const config = parseOuterConfig(outerConfigObject(dir, keys, extra), join(dir, 'outer.json'))
  const logs = new LogSink('todo-outer')
  const daemon = buildOuter(config, { log: logs.logger })
  t.teardown(() => daemon.close())
  await daemon.start()
  return {
    daemon, logs, config,
    linkUrl: `${daemon.addresses.link!.url.replace('http', 'ws')}/link`,
    clientsUrl: daemon.addresses.clients!.url,
  }
}

export async function startInner(t: T, dir: string, keys: Keys, outerLinkUrl: string | undefined, extra: Record<string, unknown> = {}): Promise<RunningInner> {
  const config = parseInnerConfig(innerConfigObject(dir, keys, outerLinkUrl, extra), join(dir, 'inner.json'))
  const logs = new LogSink('todo-inner')
  const daemon = buildInner(config, { log: logs.logger })
  t.teardown(() => daemon.close())
  await daemon.start()
  return {
    daemon, logs, config,
    intakeUrl: daemon.addresses.intake?.url ?? '',
    portalUrl: daemon.addresses.portal?.url ?? '',
    adminUrl: daemon.addresses.admin?.url ?? '',
  }
}

/** Registers a system straight in the inner's database (as the CLI does) and waits until the daemon sees it. */
export async function addSystem(inner: RunningInner, input: Partial<AddSystemInput> = {}): Promise<{ id: string; code: string; name: string }> {
  const r = new Registry(inner.daemon.store.db).add({ name: `系统-${Math.random().toString(36).slice(2, 8)}`, mode: 'push', ...input })
  inner.daemon.registry.reload()
  return { id: r.system.id, code: r.authCode, name: r.system.name }
}

/** A pair of in-process daemons, linked, with one push system registered. */
export async function startPair(t: T, opts: { inner?: Record<string, unknown>; outer?: Record<string, unknown> } = {}): Promise<{
  dir: string; keys: Keys; outer: RunningOuter; inner: RunningInner; system: { id: string; code: string; name: string }
}> {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const outer = await startOuter(t, dir, keys, opts.outer)
  const inner = await startInner(t, dir, keys, outer.linkUrl, opts.inner)
  const system = await addSystem(inner)
  await waitFor(() => inner.daemon.links.every((l) => l.state === 'up'), 'link up')
  return { dir, keys, outer, inner, system }
}

/**
 * Listens on 127.0.0.1 port 0 and registers teardown: `close` (the module's own, e.g. sockets first), then
 * the server. Returns the port.
 */
export async function serveOnPort0(t: T, server: Server, close: () => unknown = () => {}): Promise<number> {
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(async () => {
    await close()
    await closeServer(server)
  })
  return (server.address() as AddressInfo).port
}

// ---------------------------------------------------------------------------------------------------
// Child-process daemons (dist/)
// ---------------------------------------------------------------------------------------------------

export interface Child {
  proc: ChildProcess
  urls: Record<string, string>
  lines: LogLine[]
  waitLog(pred: (l: LogLine) => boolean, what: string, timeoutMs?: number): Promise<LogLine>
  exited: Promise<number | null>
  kill(sig?: NodeJS.Signals): Promise<number | null>
}

/** Spawns `node dist/<which>/main.js serve --config FILE` and resolves when every listener in `expect` logged. */
export function spawnDaemon(t: T, which: 'inner' | 'outer', configPath: string, expect: string[]): Promise<Child> {
  const bin = which === 'inner' ? INNER_BIN : OUTER_BIN
  const proc = spawn(process.execPath, [bin, 'serve', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] })
  const sink = new LogSink(which)
  const urls: Record<string, string> = {}
  let stderr = ''
  proc.stderr!.on('data', (d: Buffer) => { stderr += d.toString() })
  const exited = new Promise<number | null>((r) => proc.once('exit', (code, sig) => r(code ?? (sig ? -1 : null))))
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL')
      await exited
    }
  })
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    try {
      const l = JSON.parse(line) as LogLine
      if (l.msg === 'listening' && typeof l.listener === 'string') urls[l.listener] = l.url as string
      sink.add(l)
    } catch { /* not a log line */ }
  })
  const child: Child = {
    proc, urls, lines: sink.lines, exited,
    waitLog: (pred, what, timeoutMs) => sink.waitFor(pred, what, timeoutMs),
    kill: (sig = 'SIGTERM') => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(sig)
      return exited
    },
  }
  return Promise.race([
    Promise.all(expect.map((e) => sink.waitFor((l) => l.msg === 'listening' && l.listener === e, `${which} ${e} listening`, 20_000))).then(() => child),
    exited.then((code) => { throw new Error(`${which} exited (${code}) before listening: ${stderr}`) }),
  ])
}

export function readPub(path: string): string {
  return readFileSync(path, 'utf8').trim()
}

// ---------------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------------

export function token(user: string, ttlSeconds = 3600, cfg: TokenConfig = TOKENS): Promise<string> {
  return mintToken(cfg, user, ttlSeconds)
}

/** A seed-format record; values may be strings or numbers as the spec allows. */
export function record(code: string, user: string, quantity: number | string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { LEVEL: 1, BUSSINESS: code, URL: '10.194.5.72', LOGINNAME: user, QUANTITY: quantity, BUSSINESSNAME: '建设项目', ...extra }
}

export interface PushResult { status: number; body: { code: number | string; msg: string; data?: unknown; field?: string } }

/** POSTs like the spec's Java client: form field message= (or a JSON body with `as: 'json'`). */
export async function push(intakeUrl: string, message: unknown, as: 'form' | 'json' = 'form'): Promise<PushResult> {
  const text = typeof message === 'string' ? message : JSON.stringify(message)
  const res = await fetch(`${intakeUrl}/websocket/todo/api/message`, as === 'form'
    ? { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded; charset=UTF-8' }, body: new URLSearchParams({ message: text }).toString() }
    : { method: 'POST', headers: { 'content-type': 'application/json' }, body: text })
  return { status: res.status, body: await res.json() as PushResult['body'] }
}

export interface Frame { t: string; [k: string]: unknown }

/** A WebSocket client that queues frames; `next` waits for the next frame matching a predicate. */
export class WsClient {
  readonly frames: Frame[] = []
  private cursor = 0
  private waiters: (() => void)[] = []
  closed: { code: number; reason: string } | undefined
  readonly opened: Promise<void>

  constructor(readonly ws: WebSocket) {
    ws.on('message', (d) => {
      this.frames.push(JSON.parse(d.toString()) as Frame)
      this.wake()
    })
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() }
      this.wake()
    })
    this.opened = new Promise((res, rej) => {
      ws.once('open', () => res())
      ws.once('unexpected-response', (_req, r) => rej(Object.assign(new Error(`HTTP ${r.statusCode}`), { status: r.statusCode })))
      ws.once('error', rej)
    })
  }

  private wake(): void {
    const w = this.waiters
    this.waiters = []
    for (const f of w) f()
  }

  /** The next unread frame matching `pred` (frames before it are consumed). */
  async next(pred: (f: Frame) => boolean = () => true, timeoutMs = 10_000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      while (this.cursor < this.frames.length) {
        const f = this.frames[this.cursor++]!
        if (pred(f)) return f
      }
      if (this.closed) throw new Error(`socket closed (${this.closed.code} ${this.closed.reason}) while waiting for a frame`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error('timed out waiting for a frame')
      await new Promise<void>((res) => {
        const timer = setTimeout(res, left)
        this.waiters.push(() => { clearTimeout(timer); res() })
      })
    }
  }

  waitClose(timeoutMs = 10_000): Promise<{ code: number; reason: string }> {
    return waitFor(() => this.closed, 'socket close', timeoutMs)
  }

  send(frame: unknown): void {
    this.ws.send(JSON.stringify(frame))
  }

  close(): void {
    this.ws.close()
  }
}

/**
 * Opens `/ws` and answers the HTTP status of a refused upgrade, or 101 once it opened (then drops it). The
 * token travels as a bearer header, or as `?token=` (what browsers do) with `viaQuery`.
 */
export async function upgradeStatus(baseUrl: string, tok: string | undefined, opts: { viaQuery?: boolean; headers?: Record<string, string> } = {}): Promise<number> {
  const viaQuery = opts.viaQuery === true && tok !== undefined
  const url = `${baseUrl.replace('http', 'ws')}/ws${viaQuery ? `?token=${tok}` : ''}`
  const auth: Record<string, string> = !viaQuery && tok !== undefined ? { authorization: `Bearer ${tok}` } : {}
  const ws = new WebSocket(url, { headers: { ...auth, ...opts.headers } })
  const c = new WsClient(ws)
  try {
    await c.opened
    ws.terminate()
    return 101
  } catch (e) {
    return (e as { status?: number }).status ?? 0
  }
}

/** Opens `/ws` with a bearer token (and optional query such as since/epoch); registers teardown. */
export async function connectWs(t: T, baseUrl: string, tok: string, query = '', header = true): Promise<WsClient> {
  const url = `${baseUrl.replace('http', 'ws')}/ws${query ? `?${query}` : ''}`
  const ws = header ? new WebSocket(url, { headers: { authorization: `Bearer ${tok}` } }) : new WebSocket(`${url}${query ? '&' : '?'}token=${tok}`)
  const c = new WsClient(ws)
  t.teardown(() => ws.terminate())
  await c.opened
  return c
}
