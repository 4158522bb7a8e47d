/**
 * The inner's durable store: the outbox of signed envelopes with a gap-free seq, the current state per
 * (system, user), lifecycle timestamps and per-peer progress. Writes of new messages go through
 * `appendMessages` inside one transaction per group commit (see ingest.ts).
 */
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { openDatabase, migrate, type DB, type OpenOptions } from '../shared/sqlite.js'
import { MIGRATIONS } from './schema.js'

/** The longest a lifecycle stamp waits for a group commit to ride in. */
export const LIFECYCLE_FLUSH_MS = 100
/** After a failed lifecycle write, the next try; and how many deferred stamps are kept meanwhile. */
const LIFECYCLE_RETRY_MS = 1000
const MAX_DEFERRED_LIFECYCLE = 100_000

export interface NewMessage {
  seq: number
  id: string
  systemId: string
  user: string
  quantity: number
  level: number
  url: string
  name: string
  source: 'push' | 'pull' | 'upstream' | 'admin'
  envelope: string
  receivedAt: number
  storedAt: number
}

export interface StateRow { system_id: string; user: string; quantity: number; level: number; url: string; name: string; seq: number }

export interface MessageRow {
  seq: number; id: string; system_id: string; user: string; quantity: number; source: string; envelope: string
  received_at: number; stored_at: number; forwarded_at: number | null; acked_at: number | null
  delivered_at: number | null; read_at: number | null; superseded_at: number | null
}

export class InnerStore {
  readonly db: DB
  private currentEpoch: string
  private last: number
  private readonly st

  constructor(dataDir: string, opts: OpenOptions = {}) {
    this.db = openDatabase(join(dataDir, 'inner.sqlite'), opts)
    migrate(this.db, MIGRATIONS)
    const db = this.db
    this.st = {
      getMeta: db.prepare<[string], { value: string }>('SELECT value FROM meta WHERE key = ?'),
      setMeta: db.prepare('INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value'),
      insertMessage: db.prepare(`INSERT INTO messages(seq, id, system_id, user, quantity, source, envelope, received_at, stored_at)
        VALUES (@seq, @id, @systemId, @user, @quantity, @source, @envelope, @receivedAt, @storedAt)`),
      getState: db.prepare<[string, string], StateRow>('SELECT * FROM state WHERE system_id = ? AND user = ?'),
      upsertState: db.prepare(`INSERT INTO state(system_id, user, quantity, level, url, name, seq)
        VALUES (@systemId, @user, @quantity, @level, @url, @name, @seq)
        ON CONFLICT(system_id, user) DO UPDATE SET quantity = excluded.quantity, level = excluded.level,
          url = excluded.url, name = excluded.name, seq = excluded.seq`),
      supersede: db.prepare('UPDATE messages SET superseded_at = ? WHERE seq = ? AND superseded_at IS NULL'),
      after: db.prepare<[number, number], { seq: number; envelope: string }>('SELECT seq, envelope FROM messages WHERE seq > ? ORDER BY seq LIMIT ?'),
      latestAfter: db.prepare<[number, number], { seq: number; envelope: string }>(
        'SELECT m.seq, m.envelope FROM state s JOIN messages m ON m.seq = s.seq WHERE s.seq > ? ORDER BY s.seq LIMIT ?'),
      minSeq: db.prepare<[], { s: number | null }>('SELECT min(seq) AS s FROM messages'),
      maxSeq: db.prepare<[], { s: number | null }>('SELECT max(seq) AS s FROM messages'),
      forwarded: db.prepare('UPDATE messages SET forwarded_at = ? WHERE seq > ? AND seq <= ? AND forwarded_at IS NULL'),
      acked: db.prepare('UPDATE messages SET acked_at = ? WHERE seq > ? AND seq <= ? AND acked_at IS NULL'),
      userSnapshot: db.prepare<[string], { envelope: string }>(
        'SELECT m.envelope FROM state s JOIN messages m ON m.seq = s.seq WHERE s.user = ? AND s.quantity > 0 ORDER BY s.seq'),
      userSince: db.prepare<[string, number, number], { envelope: string; seq: number }>(
        'SELECT envelope, seq FROM messages WHERE user = ? AND seq > ? ORDER BY seq LIMIT ?'),
      upsertPeer: db.prepare(`INSERT INTO peers(public_key, kind, url, updated_at) VALUES (?, ?, ?, ?)
        ON CONFLICT(public_key) DO UPDATE SET kind = excluded.kind, url = excluded.url, updated_at = excluded.updated_at`),
      peerAck: db.prepare('UPDATE peers SET acked_seq = ?, epoch = ?, updated_at = ? WHERE public_key = ?'),
      peerConnected: db.prepare('UPDATE peers SET connected_at = ?, last_error = NULL, updated_at = ? WHERE public_key = ?'),
      peerError: db.prepare('UPDATE peers SET last_error = ?, updated_at = ? WHERE public_key = ?'),
      prunable: db.prepare<[number, number, number], { seq: number }>(
        `SELECT seq FROM messages WHERE stored_at < ? AND seq <= ? AND seq NOT IN (SELECT seq FROM state) ORDER BY seq LIMIT ?`),
      deleteMessage: db.prepare('DELETE FROM messages WHERE seq = ?'),
      peerAcked: db.prepare<[string], { acked_seq: number }>('SELECT acked_seq FROM peers WHERE public_key = ?'),
      receiptDelivered: db.prepare('UPDATE messages SET delivered_at = ? WHERE seq = ? AND user = ? AND delivered_at IS NULL'),
      receiptRead: db.prepare('UPDATE messages SET read_at = ? WHERE seq = ? AND user = ? AND read_at IS NULL'),
    }
    this.currentEpoch = this.initEpoch()
    this.prunedThrough = Number(this.st.getMeta.get('pruned_through')?.value ?? 0)
    this.last = Math.max(this.st.maxSeq.get()?.s ?? 0, Number(this.st.getMeta.get('last_seq')?.value ?? 0))
  }

  /** The epoch is random and fixed at creation, so a reset or restored database never passes for the old sequence. */
  private initEpoch(): string {
    const row = this.st.getMeta.get('epoch')
    if (row) return row.value
    const epoch = randomBytes(8).toString('hex')
    this.db.transaction(() => {
      this.st.setMeta.run('epoch', epoch)
      this.st.setMeta.run('created_at', String(Date.now()))
    })()
    return epoch
  }

  /** The database's epoch: random, fixed at creation, changed only by rotateEpoch(). */
  get epoch(): string {
    return this.currentEpoch
  }

  /**
   * Starts a new epoch. Called when a peer holds seqs beyond ours in our epoch, i.e. this database was
   * restored from an older copy: reusing those seqs would make phones mistake new messages for ones they
   * have seen. Every peer and client then resynchronises from a snapshot.
   */
  rotateEpoch(): string {
    const epoch = randomBytes(8).toString('hex')
    this.st.setMeta.run('epoch', epoch)
    this.currentEpoch = epoch
    return epoch
  }

  /** The highest committed seq. */
  get lastSeq(): number {
    return this.last
  }

  /** The oldest seq still held (history before it was pruned); lastSeq + 1 when empty. */
  firstSeq(): number {
    return Math.max(this.prunedThrough + 1, this.st.minSeq.get()?.s ?? this.last + 1)
  }

  /** History up to this seq is incomplete (pruned): only messages still current in `state` remain. */
  private prunedThrough = 0

  /**
   * Deletes up to `limit` messages that were stored before `cutoff`, are covered by `maxSeq` (every peer
   * has committed them) and are no longer any (system, user)'s current message. Returns how many went;
   * the caller repeats until 0. Seqs and stored_at grow together, so what remains below the new floor is
   * exactly the current state.
   */
  prune(cutoff: number, maxSeq: number, limit: number): number {
    let removed = 0
    this.db.transaction(() => {
      const rows = this.st.prunable.all(cutoff, maxSeq, limit)
      if (rows.length === 0) return
      for (const r of rows) removed += this.st.deleteMessage.run(r.seq).changes
      const floor = rows[rows.length - 1]!.seq
      if (floor > this.prunedThrough) {
        this.st.setMeta.run('pruned_through', String(floor))
        this.prunedThrough = floor
      }
    })()
    return removed
  }

  /** The lowest seq that all of these peers have committed (lastSeq when there are none). */
  minPeerAcked(publicKeys: readonly string[]): number {
    let min = this.last
    for (const k of publicKeys) min = Math.min(min, this.st.peerAcked.get(k)?.acked_seq ?? 0)
    return min
  }

  getState(systemId: string, user: string): StateRow | undefined {
    return this.st.getState.get(systemId, user)
  }

  /**
   * Appends messages and updates state. Must run inside a transaction (ingest.ts opens it). `seq`s must
   * continue lastSeq without gaps; the in-memory counter moves only after the caller's commit, via
   * `committed()`, so a rolled-back transaction leaves no hole.
   */
  appendMessages(msgs: readonly NewMessage[]): void {
    for (const m of msgs) {
      const prev = this.st.getState.get(m.systemId, m.user)
      if (prev) this.st.supersede.run(m.storedAt, prev.seq)
      this.st.insertMessage.run(m)
      this.st.upsertState.run(m)
    }
    if (msgs.length > 0) this.st.setMeta.run('last_seq', String(msgs[msgs.length - 1]!.seq))
    this.flushLifecycle() // inside the caller's transaction: nested db.transaction() becomes a savepoint
  }

  committed(lastSeq: number): void {
    this.last = lastSeq
  }

  /** Envelopes with seq > `after`, in order, as stored JSON text. */
  envelopesAfter(after: number, limit: number): { seq: number; envelope: string }[] {
    return this.st.after.all(after, limit)
  }

  /** The latest envelope per (system, user) with seq > `after`, in seq order (for a full resync). */
  latestAfter(after: number, limit: number): { seq: number; envelope: string }[] {
    return this.st.latestAfter.all(after, limit)
  }

  markForwarded(from: number, to: number, ts: number): void {
    this.deferLifecycle(() => this.st.forwarded.run(ts, from, to))
  }

  private lifecycle: (() => void)[] = []
  private lifecycleTimer: NodeJS.Timeout | undefined

  /**
   * Lifecycle stamps (forwarded, acked) are monitoring data and a peer's progress is re-learned from the
   * peer on reconnect, so they need not cost a commit (an fsync) each: they ride in the next group
   * commit, or in one transaction of their own at most LIFECYCLE_FLUSH_MS later.
   */
  private deferLifecycle(op: () => void): void {
    this.lifecycle.push(op)
    if (!this.lifecycleTimer) {
      this.lifecycleTimer = setTimeout(() => this.flushLifecycle(), LIFECYCLE_FLUSH_MS)
      this.lifecycleTimer.unref()
    }
  }

  /**
   * Writes deferred lifecycle stamps now (in their own transaction unless one is open). A failure (the
   * database locked by another process past the busy timeout, a full disk) must not take the daemon down
   * for monitoring data: the stamps are kept for the next try (up to MAX_DEFERRED_LIFECYCLE) and the error
   * goes to `onBackgroundError`. Inside a caller's transaction the error propagates, so that commit fails whole.
   */
  flushLifecycle(): void {
    if (this.lifecycleTimer) clearTimeout(this.lifecycleTimer)
    this.lifecycleTimer = undefined
    if (this.lifecycle.length === 0 || !this.db.open) return
    const ops = this.lifecycle
    this.lifecycle = []
    if (this.db.inTransaction) {
      this.db.transaction(() => { for (const op of ops) op() })()
      return
    }
    try {
      this.db.transaction(() => { for (const op of ops) op() })()
    } catch (e) {
      this.lifecycle = ops.concat(this.lifecycle).slice(-MAX_DEFERRED_LIFECYCLE)
      this.lifecycleTimer = setTimeout(() => this.flushLifecycle(), LIFECYCLE_RETRY_MS)
      this.lifecycleTimer.unref()
      this.onBackgroundError?.(e)
    }
  }

  /** Where failures of background (monitoring) writes are reported; the daemon logs them. */
  onBackgroundError: ((e: unknown) => void) | undefined

  /** Records a client receipt (delivered/read) with the next lifecycle flush rather than a commit of its own. */
  deferReceipt(user: string, seq: number, kind: 'delivered' | 'read', ts: number): void {
    this.deferLifecycle(() => { this.recordReceipt(user, seq, kind, ts) })
  }

  /**
   * Records a client receipt for the message `seq` if it belongs to `user` (a receipt for somebody else's
   * message is ignored); only the first receipt of each kind counts, and reading implies it was displayed.
   * Returns whether a stage was newly recorded.
   */
  recordReceipt(user: string, seq: number, kind: 'delivered' | 'read', ts: number): boolean {
    const changed = (kind === 'read' ? this.st.receiptRead : this.st.receiptDelivered).run(ts, seq, user).changes > 0
    if (kind === 'read' && changed) this.st.receiptDelivered.run(ts, seq, user)
    return changed
  }

  /** Records a peer's committed high-water mark and the `acked` stage for what it newly covers. */
  recordAck(peerKey: string, epoch: string, prev: number, seq: number, ts: number): void {
    this.deferLifecycle(() => {
      if (seq > prev) this.st.acked.run(ts, prev, seq)
      this.st.peerAck.run(seq, epoch, ts, peerKey)
    })
  }

  registerPeer(publicKey: string, kind: 'outer' | 'downstream', url: string): void {
    this.st.upsertPeer.run(publicKey, kind, url, Date.now())
  }

  peerConnected(publicKey: string): void {
    const now = Date.now()
    this.st.peerConnected.run(now, now, publicKey)
  }

  peerError(publicKey: string, error: string): void {
    this.st.peerError.run(error.slice(0, 500), Date.now(), publicKey)
  }

  /** A user's current non-zero items, as envelope JSON text. */
  userSnapshot(user: string): string[] {
    return this.st.userSnapshot.all(user).map((r) => r.envelope)
  }

  /** A user's messages after `seq`, oldest first. */
  userSince(user: string, seq: number, limit: number): { envelope: string; seq: number }[] {
    return this.st.userSince.all(user, seq, limit)
  }

  close(): void {
    this.flushLifecycle() // reports, never throws, outside a transaction
    if (this.lifecycleTimer) clearTimeout(this.lifecycleTimer)
    this.lifecycleTimer = undefined
    if (this.db.open) this.db.close()
  }
}

