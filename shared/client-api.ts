/**
 * The client API (DESIGN §3.6), one implementation for the outer's `clients` listener (phones) and the
 * inner's `portal` listener (PC): REST `GET /api/v1/todos`, actions, `GET /api/v1/keys`, the web page, and
 * the `/ws` WebSocket with snapshot, live updates and exact `?since=` resume.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { readFile } from 'node:fs/promises'
import { extname, join, normalize, sep } from 'node:path'
import type { Duplex } from 'node:stream'
import { WebSocketServer, type RawData, type WebSocket } from 'ws'
import { RelayError, errorBody } from './errors.js'
import { readBody, sendError, sendJson } from './http.js'
import type { Logger } from './log.js'
import { CLOSE, validateActionRequest, validateClientFrame, type ActionRequest, type ActionStatus } from './protocol.js'
import type { ClientHub, HubConnection } from './client-hub.js'
import type { TokenVerifier, VerifiedToken } from './tokens.js'

/** Where a daemon's client view of the todo state comes from (outer: its replica; inner: its store). */
export interface TodoSource {
  epoch(): string
  /** The highest seq the source holds. */
  lastSeq(): number
  /** The user's current non-zero items, as envelope JSON texts, in seq order. */
  snapshot(user: string): string[]
  /** The user's updates with seq > `since`, oldest first, or null when history no longer reaches back. */
  since(user: string, since: number): string[] | null
}

/** An action as its user sees it (`GET /api/v1/actions/ID`, `/ws` action frames); `code` and `error` only when failed. */
export interface ActionRecord { id: string; status: ActionStatus; code?: string; error?: string }

/** Actions and receipts from clients; each daemon routes them its own way. */
export interface ClientSinks {
  receipt?(user: string, seq: number, kind: 'delivered' | 'read'): void
  submitAction?(user: string, token: string, req: ActionRequest): Promise<ActionRecord>
  getAction?(user: string, id: string): ActionRecord | undefined
}

export interface ClientApiOptions {
  /** Allowed `Origin`s for /ws; empty = any (native apps send none). */
  allowedOrigins: string[]
  heartbeatMs: number
  maxPayloadBytes: number
}

export const DEFAULT_CLIENT_API_OPTIONS: ClientApiOptions = { allowedOrigins: [], heartbeatMs: 30_000, maxPayloadBytes: 64 * 1024 }

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml', '.png': 'image/png', '.ico': 'image/x-icon', '.json': 'application/json; charset=utf-8',
}

/** Node's timers hold at most 2^31-1 ms (~24.8 days); a longer delay fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * The request target as a URL, or undefined when it does not parse: `new URL('//', base)` throws (a
 * scheme-relative URL without a host), and one such request must never take a listener down.
 */
function requestUrl(req: IncomingMessage): URL | undefined {
  try {
    return new URL(req.url ?? '/', 'http://x')
  } catch {
    return undefined
  }
}

function bearer(req: IncomingMessage, url: URL): string | undefined {
  const h = req.headers.authorization
  if (h && /^Bearer\s+/i.test(h)) return h.replace(/^Bearer\s+/i, '').trim()
  return url.searchParams.get('token') ?? undefined
}

function sumItems(items: string[]): { total: number; json: string } {
  let total = 0
  for (const s of items) total += (JSON.parse(s) as { quantity: number }).quantity
  return { total, json: `[${items.join(',')}]` }
}

export interface ClientApi {
  server: Server
  /** Publishes committed updates to connected clients. */
  publish(user: string, envelopeJson: string): void
  /** Tells every connected client to start over (after the source was reset). */
  resetAll(): void
  close(): Promise<void>
}

export function createClientApi(deps: {
  source: TodoSource
  hub: ClientHub
  verifier: TokenVerifier
  log: Logger
  /** The center's public key (base64) that clients verify envelopes with. */
  innerPublicKey: string
  /** Folder of the web page's static files. */
  webDir: string
  sinks?: ClientSinks
  options?: Partial<ClientApiOptions>
}): ClientApi {
  const { source, hub, verifier, log, sinks = {} } = deps
  const options = { ...DEFAULT_CLIENT_API_OPTIONS, ...deps.options }
  const wss = new WebSocketServer({ noServer: true, maxPayload: options.maxPayloadBytes, perMessageDeflate: false })

  async function auth(req: IncomingMessage, url: URL): Promise<VerifiedToken & { token: string }> {
    const token = bearer(req, url)
    if (!token) throw new RelayError('E_UNAUTHORIZED', { reason: 'no bearer token' })
    return { ...(await verifier.verify(token)), token }
  }

  async function serveStatic(res: ServerResponse, file: string): Promise<void> {
    const root = normalize(deps.webDir + sep)
    const path = normalize(join(root, file))
    if (!path.startsWith(root)) throw new RelayError('E_NOT_FOUND')
    let body: Buffer
    try {
      body = await readFile(path)
    } catch {
      throw new RelayError('E_NOT_FOUND', { reason: file })
    }
    res.writeHead(200, {
      'content-type': CONTENT_TYPES[extname(path)] ?? 'application/octet-stream',
      'content-length': body.length,
      'cache-control': 'no-cache',
      'x-content-type-options': 'nosniff',
      // No inline script or style; no <base>, plugins or forms; never framed (the 标记已办 button acts for the user).
      'content-security-policy': "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self'; img-src 'self' data:; "
        + "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    })
    res.end(body)
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = requestUrl(req)
    if (!url) throw new RelayError('E_NOT_FOUND')
    const path = url.pathname
    if (req.method === 'GET' && (path === '/' || path === '/index.html')) return serveStatic(res, 'index.html')
    if (req.method === 'GET' && path.startsWith('/assets/')) return serveStatic(res, path.slice('/assets/'.length))
    if (req.method === 'GET' && path === '/api/v1/keys') return sendJson(res, 200, { inner: deps.innerPublicKey })
    if (req.method === 'GET' && path === '/healthz') return sendJson(res, 200, { ok: true })
    if (path === '/api/v1/todos') {
      if (req.method !== 'GET') throw new RelayError('E_METHOD', { allow: 'GET' })
      const { user } = await auth(req, url)
      const { total, json } = sumItems(source.snapshot(user))
      const text = `{"user":${JSON.stringify(user)},"epoch":${JSON.stringify(source.epoch())},"seq":${source.lastSeq()},"total":${total},"items":${json}}`
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) })
      res.end(text)
      return
    }
    if (path === '/api/v1/actions') {
      if (req.method !== 'POST') throw new RelayError('E_METHOD', { allow: 'POST' })
      const { user, token } = await auth(req, url)
      if (!sinks.submitAction) throw new RelayError('E_NOT_FOUND', { reason: 'actions are not enabled here' })
      const body = await readBody(req, options.maxPayloadBytes)
      let parsed: unknown
      try {
        parsed = JSON.parse(body.toString('utf8'))
      } catch {
        throw new RelayError('E_BAD_JSON')
      }
      const r = validateActionRequest(parsed)
      if (typeof r === 'string') throw new RelayError('E_FIELD', { field: r })
      const rec = await sinks.submitAction(user, token, r)
      return sendJson(res, 202, rec)
    }
    const m = /^\/api\/v1\/actions\/([A-Za-z0-9_-]{1,64})$/.exec(path)
    if (m) {
      if (req.method !== 'GET') throw new RelayError('E_METHOD', { allow: 'GET' })
      const { user } = await auth(req, url)
      const rec = sinks.getAction?.(user, m[1]!)
      if (!rec) throw new RelayError('E_NOT_FOUND', { reason: 'no such action' })
      return sendJson(res, 200, rec)
    }
    throw new RelayError('E_NOT_FOUND', { reason: path })
  }

  const server = createServer({ requestTimeout: 30_000, headersTimeout: 10_000 }, (req, res) => {
    handle(req, res).catch((e: unknown) => sendError(res, e, log))
  })

  function rejectUpgrade(socket: Duplex, err: RelayError): void {
    const body = JSON.stringify(errorBody(err))
    socket.end(`HTTP/1.1 ${err.status} ${err.status === 401 ? 'Unauthorized' : err.status === 429 ? 'Too Many Requests' : 'Error'}\r\n`
      + `Content-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
  }

  // Node hands an upgrading socket over without an 'error' listener, and ws adds its own only in
  // handleUpgrade: until then (while the token is checked, or while a refusal is written) a client that
  // resets the connection would raise an unhandled 'error' and crash the daemon.
  const onSocketError = function (this: Duplex): void { this.destroy() }

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', onSocketError)
    const url = requestUrl(req)
    if (url?.pathname !== '/ws') return rejectUpgrade(socket, new RelayError('E_NOT_FOUND'))
    const origin = req.headers.origin
    if (origin && options.allowedOrigins.length > 0 && !options.allowedOrigins.includes(origin)) {
      return rejectUpgrade(socket, new RelayError('E_ORIGIN', { reason: origin }))
    }
    auth(req, url).then((tok) => {
      if (socket.destroyed) return
      if (!hub.hasRoom(tok.user)) throw new RelayError('E_TOO_MANY_CONNECTIONS')
      socket.off('error', onSocketError)
      wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, tok, url))
    }).catch((e: unknown) => {
      if (!(e instanceof RelayError)) log.error({ err: e }, 'client upgrade failed')
      rejectUpgrade(socket, e instanceof RelayError ? e : new RelayError('E_INTERNAL'))
    })
  })

  function onConnection(ws: WebSocket, tok: VerifiedToken & { token: string }, url: URL): void {
    const conn: HubConnection = { user: tok.user, ws }
    // Close when the token expires: a socket never outlives its authorisation. A token valid for longer
    // than a timer can wait (a 30-day app token) re-arms in steps instead of firing at once.
    let expiry: NodeJS.Timeout
    const armExpiry = (): void => {
      const left = Math.max(0, tok.exp * 1000 - Date.now())
      expiry = setTimeout(() => (left > MAX_TIMER_MS ? armExpiry() : ws.close(CLOSE.UNAUTHORIZED, 'token expired')), Math.min(left, MAX_TIMER_MS))
      expiry.unref()
    }
    armExpiry()
    let alive = true
    ws.on('pong', () => { alive = true })
    const ping = setInterval(() => {
      if (!alive) return ws.terminate()
      alive = false
      ws.ping()
    }, options.heartbeatMs)
    ping.unref()
    ws.on('close', () => {
      clearTimeout(expiry)
      clearInterval(ping)
      hub.remove(conn)
    })
    ws.on('error', () => ws.terminate())
    ws.on('message', (data, isBinary) => {
      try {
        onFrame(data, isBinary)
      } catch (e) {
        // A failing sink (SQLite busy or full, say) answers this frame; thrown out of a ws listener it would
        // take the whole daemon down.
        log.error({ err: e, user: tok.user }, 'client frame failed')
        hub.send(conn, JSON.stringify({ t: 'error', ...errorBody(new RelayError('E_INTERNAL')) }))
      }
    })
    function onFrame(data: RawData, isBinary: boolean): void {
      let frame: unknown
      try {
        frame = isBinary ? undefined : JSON.parse(data.toString())
      } catch { /* reported below */ }
      const f = validateClientFrame(frame)
      if (typeof f === 'string') {
        ws.send(JSON.stringify({ t: 'error', code: 'E_FIELD', msg: `帧不合法 (bad frame): ${f}` }))
        return
      }
      if (f.t === 'ack') sinks.receipt?.(tok.user, f.seq, 'delivered')
      else if (f.t === 'read') sinks.receipt?.(tok.user, f.seq, 'read')
      else if (f.t === 'action') {
        if (!sinks.submitAction) {
          ws.send(JSON.stringify({ t: 'error', code: 'E_NOT_FOUND', msg: '此处不支持办理 (actions are not enabled here)' }))
          return
        }
        const { t: _t, ...req } = f
        sinks.submitAction(tok.user, tok.token, req).then(
          (rec) => hub.send(conn, JSON.stringify({ t: 'action', ...rec })),
          (e: unknown) => {
            if (!(e instanceof RelayError)) log.error({ err: e, user: tok.user }, 'client action failed')
            const err = e instanceof RelayError ? e : new RelayError('E_INTERNAL')
            hub.send(conn, JSON.stringify({ t: 'error', ...errorBody(err) }))
          })
      }
    }
    // Snapshot or resume and registration happen in one synchronous step, so no update falls between.
    const sinceParam = url.searchParams.get('since')
    const epochParam = url.searchParams.get('epoch')
    const epoch = source.epoch()
    const last = source.lastSeq()
    let resumed: string[] | null = null
    let reset = false
    if (sinceParam !== null) {
      const since = /^\d{1,15}$/.test(sinceParam) ? Number(sinceParam) : NaN
      if (epochParam === epoch && Number.isInteger(since) && since <= last) resumed = source.since(tok.user, since)
      reset = resumed === null
    }
    if (resumed !== null) {
      for (const e of resumed) {
        // A resume (up to the whole history) is held to the same bound as live updates: past it the client
        // is a slow consumer, and reconnects with `since` from what it got.
        if (ws.bufferedAmount > hub.options.maxBufferedBytes) {
          ws.close(CLOSE.SLOW_CONSUMER, 'slow consumer: reconnect with since')
          return
        }
        ws.send(`{"t":"update","item":${e}}`)
      }
      ws.send(JSON.stringify({ t: 'synced', seq: last }))
    } else {
      const { total, json } = sumItems(source.snapshot(tok.user))
      ws.send(`{"t":"snapshot","user":${JSON.stringify(tok.user)},"epoch":${JSON.stringify(epoch)},"seq":${last},"total":${total},"items":${json}${reset ? ',"reset":true' : ''}}`)
    }
    hub.add(conn)
  }

  return {
    server,
    publish: (user, json) => hub.publish(user, json),
    resetAll() {
      hub.forEachConnection((c) => {
        const { total, json } = sumItems(source.snapshot(c.user))
        hub.send(c, `{"t":"snapshot","user":${JSON.stringify(c.user)},"epoch":${JSON.stringify(source.epoch())},"seq":${source.lastSeq()},"total":${total},"items":${json},"reset":true}`)
      })
    },
    async close() {
      hub.closeAll(CLOSE.GOING_AWAY, 'server shutting down')
      for (const c of wss.clients) c.terminate()
      wss.close()
    },
  }
}
