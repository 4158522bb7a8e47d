/**
 * The inner's admin listener (private network, loopback by default): the admin web console (`/`, its files
 * under `/admin-assets/`), Prometheus `/metrics`, `/healthz`, and JSON `/api/stats`, `/api/trace/ID`,
 * `/api/trace?user=LOGIN[&system=ID]`. Read-only: GET only. Never on an internet-facing listener (DESIGN §3.2).
 */
import { createServer, type Server, type ServerResponse } from 'node:http'
import { readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { RelayError } from '../shared/errors.js'
import { sendError, sendJson } from '../shared/http.js'
import type { Logger } from '../shared/log.js'
import { ENVELOPE_LIMITS } from '../shared/protocol.js'
import type { InnerStore } from './store.js'
import type { RegistryCache } from './registry-cache.js'
import type { Metrics } from './metrics.js'
import type { LinkClient, LinkState } from './link-client.js'
import { collectStats, recentErrors, traceMessage, traceUser, type PeerStats, type RecentError, type Stats } from './monitor.js'

/** Where the console's files are: inner/admin-web from source, dist/inner/admin-web after a build. */
export const ADMIN_WEB_DIR = join(dirname(fileURLToPath(import.meta.url)), 'admin-web')

/** How many of the last errors `/api/stats` carries. */
export const RECENT_ERRORS = 20

const ASSET_TYPES: Record<string, string> = { js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' }

/** The console runs no inline script or style, loads nothing from elsewhere and is never framed. */
const CONSOLE_CSP = "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
  + "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

/** A link as the console shows it: the live client's state joined with its durable `peers` row. */
export interface LinkView {
  peer: string
  publicKey: string
  url: string
  state: LinkState
  /** Highest seq the peer committed: this session's, or the stored one before the session's first ack. */
  ackedSeq: number
  backlog: number
  connectedAt: number | null
  lastError: string | null
}

/** `/api/stats`: `collectStats` plus the live links, the last errors and the server's clock. */
export interface AdminStats extends Stats {
  now: number
  links: LinkView[]
  errors: RecentError[]
}

function linkViews(links: readonly LinkClient[], peers: readonly PeerStats[], lastSeq: number): LinkView[] {
  const rows = new Map(peers.map((p) => [p.publicKey, p]))
  return links.map((l) => {
    const row = rows.get(l.target.publicKey)
    const ackedSeq = l.ackedSeq > 0 ? l.ackedSeq : row?.ackedSeq ?? 0
    return {
      peer: l.label, publicKey: l.target.publicKey, url: l.target.url, state: l.state, ackedSeq,
      backlog: Math.max(0, lastSeq - ackedSeq), connectedAt: row?.connectedAt ?? null, lastError: l.lastError ?? row?.lastError ?? null,
    }
  })
}

export function createAdminServer(deps: { store: InnerStore; registry: RegistryCache; metrics: Metrics; links: LinkClient[]; log: Logger; webDir?: string }): Server {
  const { store, registry, metrics, links, log } = deps
  const webDir = deps.webDir ?? ADMIN_WEB_DIR

  /** `file` is index.html or one name matched by the asset route's pattern, so it cannot leave `webDir`. */
  async function serveFile(res: ServerResponse, file: string, type: string): Promise<void> {
    let body: Buffer
    try {
      body = await readFile(join(webDir, file))
    } catch {
      throw new RelayError('E_NOT_FOUND', { reason: file })
    }
    res.writeHead(200, {
      'content-type': type, 'content-length': body.length, 'cache-control': 'no-cache',
      'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer', 'content-security-policy': CONSOLE_CSP,
    })
    res.end(body)
  }

  return createServer((req, res) => {
    (async () => {
      const url = new URL(req.url ?? '/', 'http://x')
      if (req.method !== 'GET') throw new RelayError('E_METHOD', { allow: 'GET' })
      const path = url.pathname
      if (path === '/' || path === '/index.html') return serveFile(res, 'index.html', 'text/html; charset=utf-8')
      const asset = /^\/admin-assets\/([A-Za-z0-9_-]{1,64})\.(js|css)$/.exec(path)
      if (asset) return serveFile(res, `${asset[1]!}.${asset[2]!}`, ASSET_TYPES[asset[2]!]!)
      if (path === '/metrics') {
        for (const l of links) metrics.backlog.set({ peer: l.label }, Math.max(0, store.lastSeq - l.ackedSeq))
        const text = await metrics.registry.metrics()
        res.writeHead(200, { 'content-type': metrics.registry.contentType })
        res.end(text)
        return
      }
      if (path === '/healthz') {
        return sendJson(res, 200, { ok: true, lastSeq: store.lastSeq, links: links.map((l) => ({ peer: l.label, url: l.target.url, state: l.state, ackedSeq: l.ackedSeq, lastError: l.lastError ?? null })) })
      }
      if (path === '/api/stats') {
        const stats = collectStats(store, registry.systems())
        const body: AdminStats = { ...stats, now: Date.now(), links: linkViews(links, stats.peers, stats.center.lastSeq), errors: recentErrors(store.db, RECENT_ERRORS) }
        return sendJson(res, 200, body)
      }
      if (path === '/api/trace') {
        const user = url.searchParams.get('user') ?? ''
        const system = url.searchParams.get('system') || undefined
        if (user.length === 0 || user.length > ENVELOPE_LIMITS.user) throw new RelayError('E_FIELD', { field: 'user' })
        if (system !== undefined && !/^[A-Za-z0-9_-]{1,64}$/.test(system)) throw new RelayError('E_FIELD', { field: 'system' })
        return sendJson(res, 200, { user, system: system ?? null, messages: traceUser(store, user, system) })
      }
      const m = /^\/api\/trace\/([A-Za-z0-9-]{1,64})$/.exec(path)
      if (m) {
        const t = traceMessage(store, m[1]!)
        if (!t) throw new RelayError('E_NOT_FOUND', { reason: 'no such message' })
        return sendJson(res, 200, t)
      }
      throw new RelayError('E_NOT_FOUND', { reason: path })
    })().catch((e: unknown) => sendError(res, e, log))
  })
}
