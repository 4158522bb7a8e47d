/**
 * Every rejected push and every rejected poll record is logged and counted here, in one place: a log line
 * (system, code, reason, client address or polled host, and a short hash of the auth code — never the
 * code itself), the Prometheus counter, and a durable per-(system, source, code) count that `stats` and
 * `system show` read from another process. Durable counts are batched in memory and written about once a
 * second, so a flood of bad requests costs one small transaction per second, not one fsync each.
 */
import type { DB } from '../shared/sqlite.js'
import type { ErrorCode } from '../shared/errors.js'
import type { Logger } from '../shared/log.js'
import type { Metrics } from './metrics.js'

export interface Rejection {
  source: 'push' | 'pull'
  code: ErrorCode
  /** The public system id, when the auth code (or the polled system) is known. */
  system?: string | undefined
  reason?: string | undefined
  field?: string | undefined
  /** push: the client address. */
  ip?: string | undefined
  /** pull: the polled URL's host. */
  host?: string | undefined
  /** The first 8 hex digits of SHA-256 of the auth code (codeTag), when one was sent. */
  codeTag?: string | undefined
  user?: string | undefined
}

interface Pending { count: number; firstAt: number; lastAt: number; lastReason: string | null }

export const DEFAULT_FLUSH_MS = 1000

export class Rejections {
  private pending = new Map<string, Pending>()
  private timer: NodeJS.Timeout | undefined
  private closed = false
  private readonly upsert

  constructor(
    private readonly db: DB,
    private readonly log: Logger,
    private readonly metrics: Metrics,
    private readonly flushMs = DEFAULT_FLUSH_MS,
    private readonly now: () => number = Date.now,
  ) {
    this.upsert = db.prepare(`INSERT INTO rejections(system_id, source, code, count, first_at, last_at, last_reason)
      VALUES (?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT(system_id, source, code) DO UPDATE SET count = count + excluded.count, last_at = excluded.last_at,
        last_reason = coalesce(excluded.last_reason, last_reason)`)
  }

  record(r: Rejection): void {
    const system = r.system ?? ''
    const fields: Record<string, unknown> = { source: r.source, code: r.code, system: r.system ?? null }
    for (const k of ['reason', 'field', 'ip', 'host', 'codeTag', 'user'] as const) if (r[k] !== undefined) fields[k] = r[k]
    this.log.info(fields, r.source === 'push' ? 'push rejected' : 'poll record rejected')
    this.metrics.rejected.inc({ code: r.code, source: r.source, system: r.system ?? 'unknown' })
    const key = `${system}\u0000${r.source}\u0000${r.code}`
    const t = this.now()
    const p = this.pending.get(key)
    const reason = (r.reason ?? r.field ?? null)?.slice(0, 300) ?? null
    if (p) {
      p.count++
      p.lastAt = t
      p.lastReason = reason ?? p.lastReason
    } else {
      this.pending.set(key, { count: 1, firstAt: t, lastAt: t, lastReason: reason })
    }
    if (!this.timer && !this.closed) {
      this.timer = setTimeout(() => { this.timer = undefined; this.flush() }, this.flushMs)
      this.timer.unref()
    }
  }

  /** Writes the pending counts; on failure (e.g. the CLI holds the write lock) they stay pending. */
  flush(): void {
    if (this.pending.size === 0 || !this.db.open) return
    const batch = this.pending
    this.pending = new Map()
    try {
      this.db.transaction(() => {
        for (const [key, p] of batch) {
          const [system, source, code] = key.split('\u0000') as [string, string, string]
          this.upsert.run(system, source, code, p.count, p.firstAt, p.lastAt, p.lastReason)
        }
      })()
    } catch (e) {
      this.log.warn({ err: e }, 'could not write rejection counts; will retry')
      for (const [key, p] of batch) {
        const q = this.pending.get(key)
        if (q) { q.count += p.count; q.firstAt = Math.min(q.firstAt, p.firstAt) } else this.pending.set(key, p)
      }
      if (!this.closed && !this.timer) {
        this.timer = setTimeout(() => { this.timer = undefined; this.flush() }, this.flushMs)
        this.timer.unref()
      }
    }
  }

  /** Flushes what is pending and stops the timer. Idempotent. */
  close(): void {
    this.closed = true
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
    this.flush()
  }
}

export interface RejectionCounts {
  total: number
  byCode: Record<string, number>
  bySource: Record<string, number>
  lastAt: number | null
  lastReason: string | null
}

/** Durable rejection counts per system id ('' = unknown auth code). */
export function rejectionCounts(db: DB): Map<string, RejectionCounts> {
  const out = new Map<string, RejectionCounts>()
  const rows = db.prepare<[], { system_id: string; source: string; code: string; count: number; last_at: number; last_reason: string | null }>(
    'SELECT system_id, source, code, count, last_at, last_reason FROM rejections ORDER BY last_at').all()
  for (const r of rows) {
    const c = out.get(r.system_id) ?? { total: 0, byCode: {}, bySource: {}, lastAt: null, lastReason: null }
    c.total += r.count
    c.byCode[r.code] = (c.byCode[r.code] ?? 0) + r.count
    c.bySource[r.source] = (c.bySource[r.source] ?? 0) + r.count
    c.lastAt = r.last_at
    c.lastReason = r.last_reason
    out.set(r.system_id, c)
  }
  return out
}
