/**
 * One business system's HTTP client for polls: an undici Pool per system (keep-alive, at most
 * `concurrency` connections, so one slow system can never take another's sockets), connect/headers/body
 * timeouts plus an overall deadline per request (a server that drips one byte every few seconds defeats
 * inactivity timeouts), a response size cap, and strict decoding of the answer in its declared charset
 * (UTF-8 by default; GBK/GB18030 are accepted when declared, as older systems send them). Every failure
 * becomes one ERR_POLL_* code, stored as the system's last poll error.
 */
import { Pool } from 'undici'
import { RelayError } from '../shared/errors.js'
import { parseJsonText } from './record.js'

export interface PollHttpOptions {
  /** Connections (and so requests in flight) per system. */
  concurrency: number
  connectTimeoutMs: number
  /** Until the status line and headers have arrived. */
  headersTimeoutMs: number
  /** Longest silence while the body arrives. */
  bodyTimeoutMs: number
  /** The whole request, from connect to the last body byte. */
  requestTimeoutMs: number
  maxResponseBytes: number
  keepAliveTimeoutMs: number
}

export const USER_AGENT = 'todo-relay-poller/1 (todo-inner)'

/** Thrown when the caller aborted (system disabled, removed, changed, or shutdown): not the system's fault. */
export class PollAborted extends Error {
  constructor() {
    super('poll aborted')
    this.name = 'PollAborted'
  }
}

function undiciCode(e: unknown): string | undefined {
  const c = (e as { code?: unknown })?.code ?? (e as { cause?: { code?: unknown } })?.cause?.code
  return typeof c === 'string' ? c : undefined
}

/** Maps a transport failure to an ERR_POLL_* error (never quoting the URL, whose query may hold a token). */
function mapError(e: unknown, caller: AbortSignal, deadline: AbortSignal, requestTimeoutMs: number): Error {
  if (e instanceof RelayError || e instanceof PollAborted) return e
  if (caller.aborted) return new PollAborted()
  if (deadline.aborted) return new RelayError('ERR_POLL_TIMEOUT', { reason: `no complete answer within ${requestTimeoutMs} ms` })
  const code = undiciCode(e)
  switch (code) {
    case 'UND_ERR_CONNECT_TIMEOUT': return new RelayError('ERR_POLL_TIMEOUT', { reason: 'connect timeout' })
    case 'UND_ERR_HEADERS_TIMEOUT': return new RelayError('ERR_POLL_TIMEOUT', { reason: 'no response headers in time' })
    case 'UND_ERR_BODY_TIMEOUT': return new RelayError('ERR_POLL_TIMEOUT', { reason: 'the body stalled' })
    case 'UND_ERR_RES_EXCEEDED_MAX_SIZE': return new RelayError('ERR_POLL_TOO_LARGE', { reason: 'answer larger than poll.maxResponseBytes' })
    default: return new RelayError('ERR_POLL_CONNECT', { reason: code ?? ((e as Error)?.message ?? String(e)).slice(0, 200) })
  }
}

/** Decodes an answer strictly in the charset its Content-Type declares (UTF-8 when none). */
export function decodeAnswer(bytes: Uint8Array, contentType: string | undefined): string {
  const charset = /;\s*charset\s*=\s*"?([^";\s]+)"?/i.exec(contentType ?? '')?.[1]?.toLowerCase() ?? 'utf-8'
  let decoder: InstanceType<typeof TextDecoder>
  try {
    decoder = new TextDecoder(charset, { fatal: true })
  } catch {
    throw new RelayError('ERR_POLL_ENCODING', { reason: `unsupported charset ${charset.slice(0, 40)}` })
  }
  try {
    return decoder.decode(bytes)
  } catch {
    throw new RelayError('ERR_POLL_ENCODING', { reason: `not valid ${charset}` })
  }
}

export class PollClient {
  private readonly pool: Pool
  private closed: Promise<void> | undefined

  constructor(origin: string, private readonly opts: PollHttpOptions) {
    this.pool = new Pool(origin, {
      connections: opts.concurrency,
      pipelining: 1,
      connect: { timeout: opts.connectTimeoutMs },
      headersTimeout: opts.headersTimeoutMs,
      bodyTimeout: opts.bodyTimeoutMs,
      keepAliveTimeout: opts.keepAliveTimeoutMs,
      maxResponseSize: opts.maxResponseBytes,
    })
  }

  /**
   * GETs `url` (same origin as the pool) and parses the answer as JSON with at most `maxDepth` levels.
   * Only 200 counts as an answer (spec §6.2: the center treats anything else as failure).
   */
  async getJson(url: URL, signal: AbortSignal, maxDepth: number): Promise<unknown> {
    if (signal.aborted) throw new PollAborted()
    const deadline = AbortSignal.timeout(this.opts.requestTimeoutMs)
    const both = AbortSignal.any([signal, deadline])
    let text: string
    try {
      const res = await this.pool.request({
        path: `${url.pathname}${url.search}`, method: 'GET', signal: both,
        headers: { accept: 'application/json', 'user-agent': USER_AGENT },
      })
      // Destroying a body we stopped reading makes it emit 'error' (UND_ERR_ABORTED); without a listener
      // that would be an uncaught exception. Errors while reading still reach the loop below.
      res.body.on('error', () => {})
      try {
        if (res.statusCode !== 200) throw new RelayError('ERR_POLL_HTTP', { reason: `HTTP ${res.statusCode}` })
        const declared = Number(res.headers['content-length'])
        if (Number.isFinite(declared) && declared > this.opts.maxResponseBytes) {
          throw new RelayError('ERR_POLL_TOO_LARGE', { reason: `${declared} bytes > poll.maxResponseBytes ${this.opts.maxResponseBytes}` })
        }
        const chunks: Buffer[] = []
        let size = 0
        for await (const chunk of res.body) {
          size += (chunk as Buffer).length
          if (size > this.opts.maxResponseBytes) {
            throw new RelayError('ERR_POLL_TOO_LARGE', { reason: `more than poll.maxResponseBytes ${this.opts.maxResponseBytes}` })
          }
          chunks.push(chunk as Buffer)
        }
        const ct = res.headers['content-type']
        text = decodeAnswer(Buffer.concat(chunks), Array.isArray(ct) ? ct[0] : ct)
      } finally {
        // Frees the connection at once when we stopped reading early (error, cap, abort).
        if (!res.body.readableEnded && !res.body.destroyed) res.body.destroy()
      }
    } catch (e) {
      throw mapError(e, signal, deadline, this.opts.requestTimeoutMs)
    }
    if (text.trim().length === 0) throw new RelayError('ERR_POLL_BAD_JSON', { reason: 'empty answer' })
    try {
      return parseJsonText(text, maxDepth)
    } catch (e) {
      throw new RelayError('ERR_POLL_BAD_JSON', { reason: e instanceof RelayError ? String(e.detail?.reason ?? e.code) : 'not valid JSON' })
    }
  }

  /** Drops every connection at once. Idempotent. */
  close(): Promise<void> {
    this.closed ??= this.pool.destroy().catch(() => undefined)
    return this.closed
  }
}
