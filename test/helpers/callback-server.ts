/**
 * A business system's action callback for tests: a real HTTP server on port 0 that records every request
 * (raw body bytes and headers) and answers with the status `respond` picks, and a reference check of the
 * `X-Todo-Signature` header written independently of inner/callback.ts (as a business system would).
 */
import { createHmac, timingSafeEqual } from 'node:crypto'
import { createServer, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { once } from 'node:events'
import { waitFor, type T } from './daemons.js'

export interface CallbackRequest { method: string; path: string; headers: IncomingHttpHeaders; raw: Buffer; body: Record<string, unknown> }

export interface CallbackServer {
  url: string
  requests: CallbackRequest[]
  /** Chooses the status of the n-th request (1-based); 200 by default. */
  respond: (n: number, req: CallbackRequest) => number
  /** Resolves once at least `n` requests arrived. */
  waitForRequests(n: number, timeoutMs?: number): Promise<CallbackRequest[]>
}

export async function startCallbackServer(t: T & { teardown(fn: () => unknown): void }): Promise<CallbackServer> {
  const cb: CallbackServer = {
    url: '',
    requests: [],
    respond: () => 200,
    waitForRequests: (n, timeoutMs = 15_000) => waitFor(() => (cb.requests.length >= n ? cb.requests : undefined), `${n} callback request(s)`, timeoutMs),
  }
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const raw = Buffer.concat(chunks)
      let body: Record<string, unknown> = {}
      try { body = JSON.parse(raw.toString('utf8')) as Record<string, unknown> } catch { /* recorded raw */ }
      const r: CallbackRequest = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, raw, body }
      cb.requests.push(r)
      const status = cb.respond(cb.requests.length, r)
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ ok: status < 300 }))
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => {
    server.closeAllConnections()
    return new Promise<void>((r) => server.close(() => r()))
  })
  cb.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/todo/callback`
  return cb
}

/** What a business system does: recompute the HMAC over the raw body with its auth code and compare in constant time. */
export function signatureValid(req: CallbackRequest, authCode: string): boolean {
  const header = req.headers['x-todo-signature']
  if (typeof header !== 'string' || !header.startsWith('sha256=')) return false
  const expected = createHmac('sha256', Buffer.from(authCode, 'ascii')).update(req.raw).digest()
  const got = Buffer.from(header.slice('sha256='.length), 'hex')
  return got.length === expected.length && timingSafeEqual(got, expected) && /^sha256=[0-9a-f]{64}$/.test(header)
}
