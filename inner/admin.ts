/**
 * The inner's admin listener (private network, loopback by default): Prometheus `/metrics`, `/healthz`,
 * and JSON `/api/stats`, `/api/trace/ID`. Never on an internet-facing listener (DESIGN §3.2).
 */
import { createServer, type Server } from 'node:http'
import { RelayError } from '../shared/errors.js'
import { sendError, sendJson } from '../shared/http.js'
import type { Logger } from '../shared/log.js'
import type { InnerStore } from './store.js'
import type { RegistryCache } from './registry.js'
import type { Metrics } from './metrics.js'
import type { LinkClient } from './link-client.js'
import { collectStats, traceMessage } from './monitor.js'

export function createAdminServer(deps: { store: InnerStore; registry: RegistryCache; metrics: Metrics; links: LinkClient[]; log: Logger }): Server {
  const { store, registry, metrics, links, log } = deps
  return createServer((req, res) => {
    (async () => {
      const url = new URL(req.url ?? '/', 'http://x')
      if (req.method !== 'GET') throw new RelayError('E_METHOD', { allow: 'GET' })
      if (url.pathname === '/metrics') {
        for (const l of links) metrics.backlog.set({ peer: l.label }, Math.max(0, store.lastSeq - l.ackedSeq))
        const text = await metrics.registry.metrics()
        res.writeHead(200, { 'content-type': metrics.registry.contentType })
        res.end(text)
        return
      }
      if (url.pathname === '/healthz') {
        return sendJson(res, 200, { ok: true, lastSeq: store.lastSeq, links: links.map((l) => ({ peer: l.label, url: l.target.url, state: l.state, ackedSeq: l.ackedSeq, lastError: l.lastError ?? null })) })
      }
      if (url.pathname === '/api/stats') {
        const stats = collectStats(store, registry.systems())
        return sendJson(res, 200, { ...stats, links: links.map((l) => ({ peer: l.label, url: l.target.url, state: l.state })) })
      }
      const m = /^\/api\/trace\/([A-Za-z0-9-]{1,64})$/.exec(url.pathname)
      if (m) {
        const t = traceMessage(store, m[1]!)
        if (!t) throw new RelayError('E_NOT_FOUND', { reason: 'no such message' })
        return sendJson(res, 200, t)
      }
      throw new RelayError('E_NOT_FOUND', { reason: url.pathname })
    })().catch((e: unknown) => sendError(res, e, log))
  })
}
