/**
 * The push endpoint (spec §6.2.3, DESIGN §3.3): `POST /websocket/todo/api/message`. Checks run in a fixed
 * order — path, method, size, content type, encoding, JSON depth and syntax, fields, auth code, source
 * address, enabled, rate — and every record of a batch must pass before any is queued, so a rejected
 * request changes nothing. The address is checked before `enabled` so that a caller outside a system's
 * whitelist learns nothing about the system's state. The 200 goes out only after the group commit that
 * holds the records. Every rejection is logged and counted once, in inner/rejections.ts.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { RelayError } from '../shared/errors.js'
import { clientAddress, readBody, sendError, sendJson } from '../shared/http.js'
import { codeTag } from '../shared/crypto.js'
import type { Logger } from '../shared/log.js'
import { parseIntakeBody, validateRecord, type RecordLimits } from './record.js'
import { isAllowed } from './registry.js'
import type { RegistryCache } from './registry-cache.js'
import type { Ingest, IngestItem } from './ingest.js'
import { RateLimiter } from './rate-limit.js'
import type { Metrics } from './metrics.js'
import type { Rejections } from './rejections.js'

export const PUSH_PATH = '/websocket/todo/api/message'

export interface IntakeOptions {
  maxBodyBytes: number
  limits: RecordLimits
  /** Records per second per system unless the system has its own. */
  defaultRatePerSecond: number
}

export function createIntakeServer(deps: {
  registry: RegistryCache
  ingest: Ingest
  log: Logger
  metrics: Metrics
  rejections: Rejections
  options: IntakeOptions
}): Server {
  const { registry, ingest, log, metrics, rejections, options } = deps
  const limiter = new RateLimiter()

  /** What a rejection's log line names, filled in as the request is understood. */
  interface Context { system?: string; codeTag?: string; user?: string }

  /** Names the system (and user) of the first record early, so a malformed record's rejection still says whose it was. */
  function note(ctx: Context, raws: unknown[]): void {
    const first = raws[0]
    if (typeof first !== 'object' || first === null || Array.isArray(first)) return
    const r = first as Record<string, unknown>
    if (typeof r.BUSSINESS === 'string' && r.BUSSINESS.length > 0) {
      ctx.codeTag = codeTag(r.BUSSINESS)
      ctx.system = registry.lookup(r.BUSSINESS)?.system.id
    }
    if (typeof r.LOGINNAME === 'string' && raws.length === 1) ctx.user = r.LOGINNAME.slice(0, 128)
  }

  async function handle(req: IncomingMessage, res: ServerResponse, ctx: Context): Promise<void> {
    const path = (req.url ?? '').split('?')[0]
    if (path !== PUSH_PATH) throw new RelayError('E_NOT_FOUND', { reason: path })
    if (req.method !== 'POST') throw new RelayError('E_METHOD', { reason: `${req.method} (use POST)`, allow: 'POST' })
    const receivedAt = Date.now()
    const ip = clientAddress(req)
    const { batch, raws } = parseIntakeBody(req.headers['content-type'], await readBody(req, options.maxBodyBytes), options.limits)
    note(ctx, raws)
    const records = raws.map((r, i) => validateRecord(r, options.limits, batch ? i : undefined))

    const items: IngestItem[] = []
    const perSystem = new Map<string, { n: number; rate: number }>()
    for (const r of records) {
      // On a miss, look once more after a reload if the CLI committed since (one cheap PRAGMA): a code
      // issued by `system add` or `rotate-code` works the moment the command returns.
      const entry = registry.lookup(r.code) ?? (registry.refresh() ? registry.lookup(r.code) : undefined)
      ctx.codeTag = codeTag(r.code)
      if (!entry) {
        ctx.system = undefined
        throw new RelayError('E_AUTH_CODE')
      }
      const sys = entry.system
      ctx.system = sys.id
      if (!isAllowed(entry.allow, ip)) throw new RelayError('E_IP_DENIED', { reason: ip })
      if (!sys.enabled) throw new RelayError('E_SYSTEM_DISABLED', { reason: sys.id })
      const ps = perSystem.get(sys.id) ?? { n: 0, rate: sys.rateLimit ?? options.defaultRatePerSecond }
      ps.n++
      perSystem.set(sys.id, ps)
      items.push({
        systemId: sys.id, systemName: r.name || sys.name, user: r.user, level: r.level, quantity: r.quantity,
        url: r.url, source: 'push', receivedAt,
      })
    }
    for (const [id, ps] of perSystem) if (!limiter.check(id, ps.n, ps.rate)) throw new RelayError('E_RATE', { reason: id })
    for (const [id, ps] of perSystem) limiter.take(id, ps.n, ps.rate)

    const refs = await ingest.submit(items)
    for (const it of items) metrics.received.inc({ system: it.systemId, source: 'push' })
    const data = refs.map((r) => r!)
    sendJson(res, 200, { code: 0, msg: 'success', data: batch ? data : data[0] })
  }

  return createServer({ requestTimeout: 30_000, headersTimeout: 10_000, keepAliveTimeout: 5_000 }, (req, res) => {
    const ctx: Context = {}
    handle(req, res, ctx).catch((e: unknown) => {
      const err = e instanceof RelayError ? e : undefined
      const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined)
      rejections.record({
        source: 'push', code: err?.code ?? 'E_INTERNAL', system: ctx.system, codeTag: ctx.codeTag, user: ctx.user,
        reason: str(err?.detail?.reason), field: str(err?.detail?.field), ip: clientAddress(req),
      })
      sendError(res, e, log)
    })
  })
}
