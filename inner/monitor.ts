/**
 * Monitoring queries (DESIGN §3.7): a message's lifecycle (`trace`) and per-system/overall counts,
 * backlog and stage latencies (`stats`). Read-only; used by the CLI, the admin listener and tests.
 */
import type { DB } from '../shared/sqlite.js'
import type { InnerStore, MessageRow } from './store.js'
import type { SystemInfo } from './registry.js'
import { readPollHealth, type PollHealth } from './poll-health.js'
import { rejectionCounts } from './rejections.js'

export const STAGES = ['received', 'stored', 'forwarded', 'acked', 'delivered', 'read', 'superseded'] as const
export type Stage = (typeof STAGES)[number]

export interface Trace {
  id: string
  seq: number
  system: string
  user: string
  quantity: number
  source: string
  stages: Partial<Record<Stage, number>>
}

function toTrace(r: MessageRow): Trace {
  const stages: Partial<Record<Stage, number>> = { received: r.received_at, stored: r.stored_at }
  if (r.forwarded_at !== null) stages.forwarded = r.forwarded_at
  if (r.acked_at !== null) stages.acked = r.acked_at
  if (r.delivered_at !== null) stages.delivered = r.delivered_at
  if (r.read_at !== null) stages.read = r.read_at
  if (r.superseded_at !== null) stages.superseded = r.superseded_at
  return { id: r.id, seq: r.seq, system: r.system_id, user: r.user, quantity: r.quantity, source: r.source, stages }
}

/** By message id or by seq. */
export function traceMessage(store: InnerStore, idOrSeq: string): Trace | undefined {
  const row = /^\d+$/.test(idOrSeq)
    ? store.db.prepare<[number], MessageRow>('SELECT * FROM messages WHERE seq = ?').get(Number(idOrSeq))
    : store.db.prepare<[string], MessageRow>('SELECT * FROM messages WHERE id = ?').get(idOrSeq)
  return row ? toTrace(row) : undefined
}

/** A user's newest messages (optionally of one system), newest first. */
export function traceUser(store: InnerStore, user: string, system?: string, limit = 50): Trace[] {
  const rows = system
    ? store.db.prepare<[string, string, number], MessageRow>('SELECT * FROM messages WHERE user = ? AND system_id = ? ORDER BY seq DESC LIMIT ?').all(user, system, limit)
    : store.db.prepare<[string, number], MessageRow>('SELECT * FROM messages WHERE user = ? ORDER BY seq DESC LIMIT ?').all(user, limit)
  return rows.map(toTrace)
}

export interface Percentiles { n: number; p50: number | null; p95: number | null; p99: number | null }

export interface SystemStats {
  id: string
  name: string
  enabled: boolean
  produced: number
  forwarded: number
  acked: number
  delivered: number
  read: number
  superseded: number
  lastMessageAt: number | null
  mode: string
  /** Pushes and poll records of this system that were rejected (all time). */
  rejected: number
  rejectedByCode: Record<string, number>
  /** pull-user / pull-all: the poller's health; null for push systems and systems not polled yet. */
  poll: PollHealth | null
}

export interface PeerStats { publicKey: string; kind: string; url: string; ackedSeq: number; backlog: number; connectedAt: number | null; lastError: string | null }

export interface Stats {
  center: { epoch: string; lastSeq: number; firstSeq: number }
  /** `rejected` includes rejections whose auth code matched no system (`rejectedUnknownSystem`). */
  totals: Omit<SystemStats, 'id' | 'name' | 'enabled' | 'lastMessageAt' | 'mode' | 'poll' | 'rejectedByCode'>
  rejectedUnknownSystem: number
  systems: SystemStats[]
  peers: PeerStats[]
  /** Milliseconds between stages over the most recent `window` messages. */
  latency: { storedToAcked: Percentiles; storedToDelivered: Percentiles; receivedToStored: Percentiles }
  /** Actions from users (DESIGN §3.6) by status at the inner: forwarded (being delivered), delivered, failed. */
  actions: ActionCounts
}

export interface ActionCounts { forwarded: number; delivered: number; failed: number }

/** Actions held by the inner, by status. */
export function actionCounts(store: InnerStore): ActionCounts {
  const out: ActionCounts = { forwarded: 0, delivered: 0, failed: 0 }
  for (const r of store.db.prepare<[], { status: keyof ActionCounts; n: number }>('SELECT status, count(*) AS n FROM actions GROUP BY status').all()) {
    if (r.status in out) out[r.status] = r.n
  }
  return out
}

function percentiles(values: number[]): Percentiles {
  if (values.length === 0) return { n: 0, p50: null, p95: null, p99: null }
  values.sort((a, b) => a - b)
  const at = (p: number): number => values[Math.min(values.length - 1, Math.floor(p * values.length))]!
  return { n: values.length, p50: at(0.5), p95: at(0.95), p99: at(0.99) }
}

export function collectStats(store: InnerStore, systems: readonly SystemInfo[], window = 10_000): Stats {
  const db = store.db
  const rows = db.prepare<[], {
    system_id: string; produced: number; forwarded: number; acked: number; delivered: number; read: number; superseded: number; last: number | null
  }>(`SELECT system_id, count(*) AS produced, count(forwarded_at) AS forwarded, count(acked_at) AS acked,
        count(delivered_at) AS delivered, count(read_at) AS read, count(superseded_at) AS superseded, max(stored_at) AS last
      FROM messages GROUP BY system_id`).all()
  const bySystem = new Map(rows.map((r) => [r.system_id, r]))
  const health = readPollHealth(db)
  const rejections = rejectionCounts(db)
  const sys: SystemStats[] = systems.map((s) => {
    const r = bySystem.get(s.id)
    return {
      id: s.id, name: s.name, enabled: s.enabled,
      produced: r?.produced ?? 0, forwarded: r?.forwarded ?? 0, acked: r?.acked ?? 0, delivered: r?.delivered ?? 0,
      read: r?.read ?? 0, superseded: r?.superseded ?? 0, lastMessageAt: r?.last ?? null,
      mode: s.mode, rejected: rejections.get(s.id)?.total ?? 0, rejectedByCode: rejections.get(s.id)?.byCode ?? {},
      poll: s.mode === 'push' ? null : health.get(s.id) ?? null,
    }
  })
  const rejectedUnknownSystem = rejections.get('')?.total ?? 0
  const totals = { produced: 0, forwarded: 0, acked: 0, delivered: 0, read: 0, superseded: 0, rejected: rejectedUnknownSystem }
  for (const s of sys) totals.rejected += s.rejected
  for (const r of rows) {
    totals.produced += r.produced; totals.forwarded += r.forwarded; totals.acked += r.acked
    totals.delivered += r.delivered; totals.read += r.read; totals.superseded += r.superseded
  }
  const peers = db.prepare<[], { public_key: string; kind: string; url: string; acked_seq: number; connected_at: number | null; last_error: string | null }>(
    'SELECT public_key, kind, url, acked_seq, connected_at, last_error FROM peers ORDER BY public_key').all()
    .map((p) => ({
      publicKey: p.public_key, kind: p.kind, url: p.url, ackedSeq: p.acked_seq, backlog: Math.max(0, store.lastSeq - p.acked_seq),
      connectedAt: p.connected_at, lastError: p.last_error,
    }))
  const recent = db.prepare<[number], { r: number; s: number; a: number | null; d: number | null }>(
    'SELECT received_at AS r, stored_at AS s, acked_at AS a, delivered_at AS d FROM messages ORDER BY seq DESC LIMIT ?').all(window)
  return {
    center: { epoch: store.epoch, lastSeq: store.lastSeq, firstSeq: store.firstSeq() },
    totals,
    rejectedUnknownSystem,
    systems: sys,
    peers,
    latency: {
      receivedToStored: percentiles(recent.map((m) => m.s - m.r)),
      storedToAcked: percentiles(recent.filter((m) => m.a !== null).map((m) => m.a! - m.s)),
      storedToDelivered: percentiles(recent.filter((m) => m.d !== null).map((m) => m.d! - m.s)),
    },
    actions: actionCounts(store),
  }
}

/**
 * One of the last errors operators see (DESIGN §3.7): a rejection count of a (system, source, code), or the
 * last failed poll of a system.
 */
export interface RecentError {
  kind: 'rejection' | 'poll'
  /** When it last happened (ms). */
  at: number
  /** Public system id; null for pushes whose auth code matched no system. */
  system: string | null
  /** push | pull (rejections) or poll (a failed poll round). */
  source: 'push' | 'pull' | 'poll'
  code: string
  /** rejection: how many of this (system, source, code) so far; poll: consecutive failures now (0 = recovered). */
  count: number
  reason: string | null
}

/** The most recent rejections and poll errors, newest first (durable, so any process can read them). */
export function recentErrors(db: DB, limit = 20): RecentError[] {
  const rejected = db.prepare<[number], { system_id: string; source: string; code: string; count: number; last_at: number; last_reason: string | null }>(
    'SELECT system_id, source, code, count, last_at, last_reason FROM rejections ORDER BY last_at DESC LIMIT ?').all(limit)
    .map((r): RecentError => ({
      kind: 'rejection', at: r.last_at, system: r.system_id === '' ? null : r.system_id, source: r.source === 'pull' ? 'pull' : 'push',
      code: r.code, count: r.count, reason: r.last_reason,
    }))
  const polls = db.prepare<[number], { system_id: string; last_error_code: string; last_error: string | null; last_error_at: number; consecutive_failures: number }>(
    `SELECT system_id, last_error_code, last_error, last_error_at, consecutive_failures FROM poll_health
      WHERE last_error_code IS NOT NULL AND last_error_at IS NOT NULL ORDER BY last_error_at DESC LIMIT ?`).all(limit)
    .map((p): RecentError => ({
      kind: 'poll', at: p.last_error_at, system: p.system_id, source: 'poll', code: p.last_error_code, count: p.consecutive_failures, reason: p.last_error,
    }))
  return [...rejected, ...polls].sort((a, b) => b.at - a.at).slice(0, limit)
}
