/**
 * A real HTTP "business system" for poll tests, on port 0: it serves both pull shapes of the spec —
 * `GET /user?loginName=X` (one record, spec §6.2.1) and `GET /all` (an array, spec §6.2.2) — from a map
 * of counts, with values as strings (the spec's examples) or as numbers, and can misbehave on demand:
 * slow, garbage, HTTP 500, hanging (requests held open), too large, GBK, wrong shape.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import type { T } from './daemons.js'

export type Behavior = 'ok' | 'garbage' | 'error500' | 'hang' | 'big' | 'object' | 'gbk' | 'gbk-undeclared'

export interface SeenRequest { path: string; loginName: string | null; at: number }

/** GBK bytes of the few strings the tests use (encoded by hand: Node has no GBK encoder). */
const GBK: Record<string, number[]> = {
  建设项目: [0xbd, 0xa8, 0xc9, 0xe8, 0xcf, 0xee, 0xc4, 0xbf],
  张三: [0xd5, 0xc5, 0xc8, 0xfd],
}

export class BusinessSystem {
  readonly server: Server
  url = ''
  /** user → open items. */
  readonly counts = new Map<string, number>()
  /** The auth code (BUSSINESS) the answers carry; per-user overrides for hostile answers. */
  code = ''
  readonly codeFor = new Map<string, string>()
  /** Send LEVEL/QUANTITY as JSON numbers instead of strings. */
  numbers = false
  behavior: Behavior = 'ok'
  /** Delay before answering, ms. */
  delayMs = 0
  name = '建设项目'
  /** Extra raw elements appended to a /all answer (hostile records). */
  extra: unknown[] = []
  readonly requests: SeenRequest[] = []
  /** Requests held open by `hang`, and how many requests are being answered right now. */
  readonly held = new Set<ServerResponse>()
  inFlight = 0
  maxInFlight = 0
  connections = 0
  private readonly sockets = new Set<Socket>()

  constructor(t: T) {
    this.server = createServer((req, res) => { void this.handle(req, res) })
    this.server.on('connection', (s: Socket) => {
      this.connections++
      this.sockets.add(s)
      s.on('close', () => this.sockets.delete(s))
    })
    t.teardown(() => this.close())
  }

  async start(): Promise<this> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r))
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`
    return this
  }

  record(user: string): Record<string, unknown> {
    const q = this.counts.get(user) ?? 0
    return {
      LEVEL: this.numbers ? 1 : '1', BUSSINESS: this.codeFor.get(user) ?? this.code, URL: '10.194.5.72', LOGINNAME: user,
      QUANTITY: this.numbers ? q : String(q), BUSSINESSNAME: this.name,
    }
  }

  requestsFor(path: string): SeenRequest[] {
    return this.requests.filter((r) => r.path === path)
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', 'http://x')
    this.requests.push({ path: u.pathname, loginName: u.searchParams.get('loginName'), at: Date.now() })
    if (this.behavior === 'hang') {
      this.held.add(res)
      res.on('close', () => this.held.delete(res))
      return
    }
    this.inFlight++
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight)
    try {
      if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs))
      this.answer(u, res)
    } finally {
      this.inFlight--
    }
  }

  private answer(u: URL, res: ServerResponse): void {
    const json = (body: unknown, ct = 'application/json;charset=UTF-8'): void => {
      const text = JSON.stringify(body)
      res.writeHead(200, { 'content-type': ct, 'content-length': Buffer.byteLength(text) })
      res.end(text)
    }
    switch (this.behavior) {
      case 'garbage':
        res.writeHead(200, { 'content-type': 'text/html' })
        res.end('<html><body>Apache Tomcat/8.5 - Error report</body></html>')
        return
      case 'error500':
        res.writeHead(500, { 'content-type': 'application/json' })
        res.end('{"error":"java.lang.NullPointerException"}')
        return
      case 'big': {
        const filler = 'x'.repeat(1024)
        res.writeHead(200, { 'content-type': 'application/json' })
        res.write('[')
        for (let i = 0; i < 2048; i++) res.write(`${i ? ',' : ''}"${filler}"`)
        res.end(']')
        return
      }
      case 'object':
        json({ data: [...this.counts.keys()].map((k) => this.record(k)) })
        return
      case 'gbk':
      case 'gbk-undeclared': {
        // [{"LEVEL":"1","BUSSINESS":code,"URL":"u","LOGINNAME":"张三","QUANTITY":"7","BUSSINESSNAME":"建设项目"}] in GBK
        const parts: Buffer[] = [
          Buffer.from(`[{"LEVEL":"1","BUSSINESS":"${this.code}","URL":"10.194.5.72","LOGINNAME":"`), Buffer.from(GBK.张三!),
          Buffer.from(`","QUANTITY":"${this.counts.get('张三') ?? 0}","BUSSINESSNAME":"`), Buffer.from(GBK.建设项目!), Buffer.from('"}]'),
        ]
        const body = Buffer.concat(parts)
        res.writeHead(200, { 'content-type': this.behavior === 'gbk' ? 'application/json; charset=GBK' : 'application/json', 'content-length': body.length })
        res.end(body)
        return
      }
      default:
        break
    }
    if (u.pathname === '/user') {
      const login = u.searchParams.get('loginName')
      if (login === null) return json([...this.counts.keys()].map((k) => this.record(k)))
      return json(this.record(login))
    }
    if (u.pathname === '/all') return json([...[...this.counts.keys()].map((k) => this.record(k)), ...this.extra])
    res.writeHead(404)
    res.end()
  }

  close(): Promise<void> {
    for (const r of this.held) r.destroy()
    for (const s of this.sockets) s.destroy()
    return new Promise((r) => this.server.close(() => r()))
  }
}

export async function startBusinessSystem(t: T, setup: (b: BusinessSystem) => void = () => {}): Promise<BusinessSystem> {
  const b = new BusinessSystem(t)
  setup(b)
  return b.start()
}
