/** Small HTTP helpers shared by the listeners of both daemons: bounded body reads and JSON replies. */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { RelayError, errorBody, isRelayError } from './errors.js'
import type { Logger } from './log.js'

/** Reads the whole body, failing with E_TOO_LARGE as soon as it passes `limit` bytes. */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'])
    if (Number.isFinite(declared) && declared > limit) {
      req.resume()
      reject(new RelayError('E_TOO_LARGE', { reason: `limit ${limit} bytes` }))
      return
    }
    const chunks: Buffer[] = []
    let size = 0
    let failed = false
    req.on('data', (c: Buffer) => {
      if (failed) return
      size += c.length
      if (size > limit) {
        failed = true
        reject(new RelayError('E_TOO_LARGE', { reason: `limit ${limit} bytes` }))
        return
      }
      chunks.push(c)
    })
    req.on('end', () => { if (!failed) resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)) })
    // A client that hangs up mid-body is not our error: no reply can reach it, and nothing was stored.
    req.on('error', (e) => { if (!failed) { failed = true; reject(new RelayError('E_CLIENT_ABORTED', { reason: (e as NodeJS.ErrnoException).code ?? e.message })) } })
  })
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body)
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  })
  res.end(text)
}

/**
 * Maps any thrown value to a reply, once, at the edge: RelayErrors keep their code and status; anything
 * else becomes E_INTERNAL and is logged with its stack, never leaked.
 */
export function sendError(res: ServerResponse, e: unknown, log: Logger): void {
  const err = isRelayError(e) ? e : new RelayError('E_INTERNAL')
  if (!isRelayError(e)) log.error({ err: e }, 'internal error')
  if (res.headersSent) {
    res.destroy()
    return
  }
  const headers: Record<string, string> = {}
  if (err.code === 'E_METHOD') headers.allow = String(err.detail?.allow ?? 'POST')
  if (err.code === 'E_RATE') headers['retry-after'] = '1'
  if (err.code === 'E_TOO_LARGE') headers.connection = 'close'
  sendJson(res, err.status, errorBody(err), headers)
}

/** The client's address as seen on the socket, with IPv4-mapped IPv6 unwrapped. */
export function clientAddress(req: IncomingMessage): string {
  const a = req.socket.remoteAddress ?? ''
  return a.startsWith('::ffff:') ? a.slice(7) : a
}
