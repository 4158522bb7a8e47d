/**
 * The outer's two queues towards the inner (DESIGN §3.4, §3.6): clients' delivery/read receipts and users'
 * actions. Each is committed to SQLite before anything else happens, travels over the link that the inner
 * opened (the outer never dials), and leaves the queue only when the inner has acknowledged it:
 *
 * - receipts: batched per event-loop turn into `receipts` bodies whose `rid` is the highest row id inside;
 *   the inner answers `receipts-ack` with that rid once it has committed them, and rows up to it are
 *   deleted. Every new session first resends what is still unacknowledged (the inner records a receipt
 *   only once, so a resend is harmless).
 * - actions: `queued` here, sent at once when the link is up and again on every new session until the
 *   inner reports a final status. The inner answers each `action` body with the action's current status,
 *   so a status it sent while the link was down arrives after the reconnect.
 */
import { randomBytes } from 'node:crypto'
import type { ClientHub } from '../shared/client-hub.js'
import type { ActionRecord, ClientSinks } from '../shared/client-api.js'
import { RelayError } from '../shared/errors.js'
import type { Logger } from '../shared/log.js'
import type { ActionRequest, ActionStatus, ActionStatusBody, InnerToOuter, LinkAction, Receipt } from '../shared/protocol.js'
import type { LinkSession } from './link-server.js'
import type { OuterStore } from './store.js'

export interface QueueOptions {
  /** Unfinished actions one user may have before 429 E_TOO_MANY_ACTIONS. */
  maxPendingPerUser: number
  /** Finished actions are kept (readable by their user) this long. */
  retainDays: number
  /** Receipts held for the inner; beyond this new ones are dropped and counted. */
  maxQueuedReceipts: number
}

/** Statuses only move forward; a late or repeated report of an earlier one is ignored. */
const RANK: Record<ActionStatus, number> = { queued: 0, forwarded: 1, delivered: 2, failed: 2 }
const RECEIPTS_PER_BODY = 1000
const RETENTION_SWEEP_MS = 3_600_000

interface ActionRow {
  id: string; user: string; system: string; type: string; ref: string | null; payload: string | null; token: string | null
  ts: number; status: ActionStatus; code: string | null; error: string | null; updated_at: number
}

interface ReceiptRow { rid: number; seq: number; user: string; kind: 'delivered' | 'read'; ts: number }

/** A new action id: 128 random bits, URL-safe (fits the `/api/v1/actions/ID` pattern). */
export function newActionId(): string {
  return `a${randomBytes(16).toString('base64url')}`
}

export function actionRecord(r: { id: string; status: ActionStatus; code: string | null; error: string | null }): ActionRecord {
  const rec: ActionRecord = { id: r.id, status: r.status }
  if (r.code !== null) rec.code = r.code
  if (r.error !== null) rec.error = r.error
  return rec
}

export class OuterQueues {
  /** What the client API calls (receipts and actions from phones). */
  readonly sinks: Required<ClientSinks>
  private pending: Omit<Receipt, 'rid'>[] = []
  private flushScheduled = false
  private queued: number
  private dropped = 0
  private closed = false
  private readonly sweepTimer: NodeJS.Timeout
  private readonly st

  constructor(private readonly deps: {
    store: OuterStore
    hub: ClientHub
    log: Logger
    options: QueueOptions
    /** The current link session, if the inner is connected. */
    session: () => LinkSession | undefined
  }) {
    const db = deps.store.db
    this.st = {
      insertReceipt: db.prepare<[number, string, string, number], { rid: number }>(
        'INSERT INTO receipts(seq, user, kind, ts) VALUES (?, ?, ?, ?) RETURNING rid'),
      receipts: db.prepare<[number, number], ReceiptRow>('SELECT rid, seq, user, kind, ts FROM receipts WHERE rid > ? ORDER BY rid LIMIT ?'),
      ackReceipts: db.prepare('DELETE FROM receipts WHERE rid <= ?'),
      countReceipts: db.prepare<[], { n: number }>('SELECT count(*) AS n FROM receipts'),
      insertAction: db.prepare(`INSERT INTO actions(id, user, system, type, ref, payload, token, ts, status, updated_at)
        VALUES (@id, @user, @system, @type, @ref, @payload, @token, @ts, 'queued', @ts)`),
      getAction: db.prepare<[string], ActionRow>('SELECT * FROM actions WHERE id = ?'),
      openActions: db.prepare<[], ActionRow>("SELECT * FROM actions WHERE status IN ('queued', 'forwarded') ORDER BY ts, id"),
      countOpen: db.prepare<[], { n: number }>("SELECT count(*) AS n FROM actions WHERE status IN ('queued', 'forwarded')"),
      openForUser: db.prepare<[string], { n: number }>("SELECT count(*) AS n FROM actions WHERE user = ? AND status IN ('queued', 'forwarded')"),
      setStatus: db.prepare(`UPDATE actions SET status = @status, code = @code, error = @error, updated_at = @now,
        token = CASE WHEN @final THEN NULL ELSE token END WHERE id = @id`),
      sweep: db.prepare("DELETE FROM actions WHERE status IN ('delivered', 'failed') AND updated_at < ?"),
    }
    this.queued = this.st.countReceipts.get()!.n
    this.sweepTimer = setInterval(() => this.sweep(), RETENTION_SWEEP_MS)
    this.sweepTimer.unref()
    this.sinks = {
      receipt: (user, seq, kind) => this.receipt(user, seq, kind),
      submitAction: (user, token, req) => this.submitAction(user, token, req),
      getAction: (user, id) => this.getAction(user, id),
    }
  }

  /** Receipts waiting for the inner's ack (committed plus not yet flushed). */
  get receiptsQueued(): number {
    return this.queued + this.pending.length
  }

  /** Actions not yet in a final state. */
  get actionsOpen(): number {
    return this.st.countOpen.get()!.n
  }

  // ---- receipts ----------------------------------------------------------------------------------

  private receipt(user: string, seq: number, kind: 'delivered' | 'read'): void {
    if (this.closed) return
    // A user may acknowledge only their own todos; anything else is dropped here, before the link.
    if (this.deps.store.userOf(seq) !== user) {
      this.deps.log.debug({ user, seq, kind }, 'receipt for a seq of another user or unknown; ignored')
      return
    }
    this.pending.push({ seq, user, kind, ts: Date.now() })
    if (!this.flushScheduled) {
      this.flushScheduled = true
      setImmediate(() => this.flush())
    }
  }

  /** Commits the receipts gathered in this event-loop turn in one transaction, then sends them. */
  flush(): void {
    this.flushScheduled = false
    if (this.pending.length === 0 || !this.deps.store.db.open) return
    const batch = this.pending
    this.pending = []
    const rows: ReceiptRow[] = []
    try {
      this.deps.store.db.transaction(() => {
        for (const r of batch) {
          if (this.queued + rows.length >= this.deps.options.maxQueuedReceipts) {
            this.dropped++
            continue
          }
          const ins = this.st.insertReceipt.get(r.seq, r.user, r.kind, r.ts)
          if (ins) rows.push({ rid: ins.rid, ...r }) // undefined: the same (seq, kind) is already queued
        }
      })()
    } catch (e) {
      // Receipts are monitoring data: when storage fails (disk full, say) this turn's are dropped and
      // logged. Thrown from this setImmediate callback it would end the process.
      this.deps.log.error({ err: e, receipts: batch.length }, 'receipts not committed; dropped')
      this.dropped = 0
      return
    }
    this.queued += rows.length
    if (this.dropped > 0) {
      this.deps.log.warn({ dropped: this.dropped, queued: this.queued }, 'receipt queue full; receipts dropped')
      this.dropped = 0
    }
    const s = this.deps.session()
    if (s && rows.length > 0) this.sendReceipts(s, rows)
  }

  private sendReceipts(s: LinkSession, rows: ReceiptRow[]): void {
    for (let i = 0; i < rows.length; i += RECEIPTS_PER_BODY) {
      const chunk = rows.slice(i, i + RECEIPTS_PER_BODY)
      const items: Receipt[] = chunk.map((r) => ({ seq: r.seq, user: r.user, kind: r.kind, ts: r.ts }))
      if (!s.send({ t: 'receipts', rid: chunk[chunk.length - 1]!.rid, items })) return
    }
  }

  // ---- actions -----------------------------------------------------------------------------------

  private async submitAction(user: string, token: string, req: ActionRequest): Promise<ActionRecord> {
    if (this.closed) throw new RelayError('E_SHUTTING_DOWN')
    if (this.st.openForUser.get(user)!.n >= this.deps.options.maxPendingPerUser) throw new RelayError('E_TOO_MANY_ACTIONS')
    const row = {
      id: newActionId(), user, system: req.system, type: req.type, ref: req.ref ?? null,
      payload: req.payload === undefined ? null : JSON.stringify(req.payload), token, ts: Date.now(),
    }
    this.st.insertAction.run(row) // committed: this is what `queued` means (DESIGN §3.6)
    this.deps.log.info({ action: row.id, user, system: row.system, type: row.type }, 'action queued')
    const s = this.deps.session()
    if (s) this.sendAction(s, { ...row, status: 'queued', code: null, error: null, updated_at: row.ts })
    return { id: row.id, status: 'queued' }
  }

  private getAction(user: string, id: string): ActionRecord | undefined {
    const r = this.st.getAction.get(id)
    // Another user's action is indistinguishable from a missing one (404).
    return r && r.user === user ? actionRecord(r) : undefined
  }

  private sendAction(s: LinkSession, r: ActionRow): boolean {
    if (r.token === null) return true
    const action: LinkAction = { id: r.id, system: r.system, user: r.user, type: r.type, ts: r.ts, token: r.token }
    if (r.ref !== null) action.ref = r.ref
    if (r.payload !== null) action.payload = JSON.parse(r.payload) as unknown
    return s.send({ t: 'action', action })
  }

  private onStatus(b: ActionStatusBody): void {
    const r = this.st.getAction.get(b.id)
    if (!r) {
      this.deps.log.warn({ action: b.id, status: b.status }, 'status for an unknown action; ignored')
      return
    }
    if (RANK[b.status] <= RANK[r.status]) return
    const final = RANK[b.status] === 2
    const code = b.status === 'failed' ? (b.code ?? 'E_INTERNAL') : null
    const error = b.status === 'failed' ? (b.error ?? null) : null
    this.st.setStatus.run({ id: b.id, status: b.status, code, error, now: Date.now(), final: final ? 1 : 0 })
    this.deps.log.info({ action: b.id, user: r.user, status: b.status, code: code ?? undefined }, 'action status')
    this.deps.hub.sendToUser(r.user, JSON.stringify({ t: 'action', ...actionRecord({ id: b.id, status: b.status, code, error }) }))
  }

  // ---- link --------------------------------------------------------------------------------------

  /** Bodies from the inner that belong to these queues. */
  onBody(body: Exclude<InnerToOuter, { t: 'batch' } | { t: 'resync' }>): void {
    if (!this.deps.store.db.open) return
    if (body.t === 'receipts-ack') {
      this.queued = Math.max(0, this.queued - this.st.ackReceipts.run(body.rid).changes)
    } else if (body.t === 'action-status') {
      this.onStatus(body)
    }
  }

  /** A new session: resend every unacknowledged receipt and every unfinished action. */
  onSession(s: LinkSession): void {
    if (!this.deps.store.db.open) return
    let after = 0
    let receipts = 0
    for (;;) {
      const rows = this.st.receipts.all(after, RECEIPTS_PER_BODY)
      if (rows.length === 0) break
      this.sendReceipts(s, rows)
      receipts += rows.length
      after = rows[rows.length - 1]!.rid
    }
    const open = this.st.openActions.all()
    for (const r of open) if (!this.sendAction(s, r)) break
    if (receipts > 0 || open.length > 0) this.deps.log.info({ receipts, actions: open.length }, 'resent pending receipts and actions')
  }

  private sweep(): void {
    if (!this.deps.store.db.open) return
    const n = this.st.sweep.run(Date.now() - this.deps.options.retainDays * 86_400_000).changes
    if (n > 0) this.deps.log.info({ removed: n }, 'finished actions past retention removed')
  }

  /** Commits what is still gathered in memory and stops. Idempotent; call before closing the store. */
  close(): void {
    if (this.closed) return
    this.flush()
    this.closed = true
    clearInterval(this.sweepTimer)
  }
}
