/**
 * The push endpoint (spec §6.2.3, DESIGN §3.3): `POST /websocket/todo/api/message`. Checks run in a fixed
 * order — content type, size, JSON, fields, auth code, enabled, source address, rate — and every record of
 * a batch must pass before any is queued, so a rejected request changes nothing. The 200 goes out only
 * after the group commit that holds the records.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { RelayError } from '../shared/errors.js'
import { clientAddress, readBody, sendError, sendJson } from '../shared/http.js'
import { codeTag } from '../shared/crypto.js'
import type { Logger } from '../shared/log.js'
import { parseIntakeBody, validateRecord, type RecordLimits } from './record.js'
import { isAllowed, type RegistryCache } from './registry.js'
import type { Ingest, IngestItem } from './ingest.js'
import { RateLimiter } from './rate-limit.js'
import type { Metrics } from './metrics.js'

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
  options: IntakeOptions
}): Server {
  const { registry, ingest, log, metrics, options } = deps
  const limiter = new RateLimiter()

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '').split('?')[0]
    if (path !== PUSH_PATH) throw new RelayError('E_NOT_FOUND', { reason: path })
    if (req.method !== 'POST') throw new RelayError('E_METHOD', { reason: `${req.method} (use POST)`, allow: 'POST' })
    const receivedAt = Date.now()
    const ip = clientAddress(req)
    const { batch, raws } = parseIntakeBody(req.headers['content-type'], await readBody(req, options.maxBodyBytes), options.limits)
    const records = raws.map((r, i) => validateRecord(r, options.limits, batch ? i : undefined))

    const items: IngestItem[] = []
    const perSystem = new Map<string, { n: number; rate: number }>()
    for (const r of records) {
      const entry = registry.lookup(r.code)
      if (!entry) {
        log.warn({ ip, codeTag: codeTag(r.code) }, 'push with unknown auth code')
        throw new RelayError('E_AUTH_CODE')
      }
      const sys = entry.system
      if (!sys.enabled) throw new RelayError('E_SYSTEM_DISABLED', { reason: sys.id })
      if (!isAllowed(entry.allow, ip)) throw new RelayError('E_IP_DENIED', { reason: ip })
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
    handle(req, res).catch((e: unknown) => {
      if (e instanceof RelayError) {
        metrics.rejected.inc({ code: e.code })
        if (e.code !== 'E_NOT_FOUND' && e.code !== 'E_METHOD') {
          log.info({ code: e.code, reason: e.detail?.reason ?? e.detail?.field, ip: clientAddress(req) }, 'push rejected')
        }
      }
      sendError(res, e, log)
    })
  })
}
