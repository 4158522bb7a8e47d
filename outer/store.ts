/**
 * The outer's replica of one center's todo state: the current envelope per (system, user), a bounded
 * history of updates for exact client resume, and the link's high-water mark. A batch is committed
 * before it is acked (DESIGN §3.4), and seqs at or below the mark are dropped, so a resent batch never
 * reaches a client twice.
 */
import { join } from 'node:path'
import { openDatabase, migrate, type DB, type OpenOptions } from '../shared/sqlite.js'
import type { Envelope } from '../shared/protocol.js'
import { LinkError } from '../shared/link.js'
import { CLOSE } from '../shared/protocol.js'

const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
  CREATE TABLE state (
    system   TEXT NOT NULL,
    user     TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    quantity INTEGER NOT NULL,
    envelope TEXT NOT NULL,
    PRIMARY KEY (system, user)
  ) WITHOUT ROWID;
  CREATE INDEX state_user ON state(user);
  CREATE TABLE history (
    seq      INTEGER PRIMARY KEY,
    user     TEXT NOT NULL,
    ts       INTEGER NOT NULL,
    envelope TEXT NOT NULL
  );
  CREATE INDEX history_user ON history(user, seq);
  `,
  // 1: clients (DESIGN §3.6): receipts waiting for the inner's receipts-ack, and actions queued for the
  // inner with their status. Both are durable so that neither daemon's restart loses one (see outer/queues.ts).
  `
  CREATE TABLE receipts (
    rid  INTEGER PRIMARY KEY AUTOINCREMENT,   -- travels as receipts.rid; acked up to a rid, then deleted
    seq  INTEGER NOT NULL,
    user TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('delivered', 'read')),
    ts   INTEGER NOT NULL,
    UNIQUE (seq, kind) ON CONFLICT IGNORE     -- only the first receipt of each kind counts at the inner
  );
  CREATE TABLE actions (
    id         TEXT PRIMARY KEY,
    user       TEXT NOT NULL,
    system     TEXT NOT NULL,
    type       TEXT NOT NULL,
    ref        TEXT,
    payload    TEXT,                           -- JSON text, absent when the client sent none
    token      TEXT,                           -- the user's token, forwarded for the inner to verify; cleared once final
    ts         INTEGER NOT NULL,               -- when the client submitted it
    status     TEXT NOT NULL CHECK (status IN ('queued', 'forwarded', 'delivered', 'failed')),
    code       TEXT,
    error      TEXT,
    updated_at INTEGER NOT NULL
  );
  CREATE INDEX actions_user ON actions(user, status);
  CREATE INDEX actions_open ON actions(status, ts);
  `,
]

/** An envelope with the exact JSON text that is stored and sent to clients. */
export interface Item { env: Envelope; json: string }

export interface RetentionOptions { minAgeMs: number; minCount: number }

export class OuterStore {
  readonly db: DB
  private meta = { epoch: null as string | null, center: null as string | null, hw: null as number | null, floor: 0 }
  private readonly st

  constructor(dataDir: string, opts: OpenOptions = {}) {
    this.db = openDatabase(join(dataDir, 'outer.sqlite'), opts)
    migrate(this.db, MIGRATIONS)
    const db = this.db
    this.st = {
      getMeta: db.prepare<[], { key: string; value: string }>('SELECT key, value FROM meta'),
      setMeta: db.prepare('INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value'),
      delMeta: db.prepare('DELETE FROM meta WHERE key = ?'),
      insertHistory: db.prepare('INSERT OR IGNORE INTO history(seq, user, ts, envelope) VALUES (?, ?, ?, ?)'),
      upsertState: db.prepare(`INSERT INTO state(system, user, seq, quantity, envelope) VALUES (?, ?, ?, ?, ?)
        ON CONFLICT(system, user) DO UPDATE SET seq = excluded.seq, quantity = excluded.quantity, envelope = excluded.envelope
        WHERE excluded.seq > state.seq`),
      snapshot: db.prepare<[string], { envelope: string }>('SELECT envelope FROM state WHERE user = ? AND quantity > 0 ORDER BY seq'),
      since: db.prepare<[string, number], { envelope: string }>('SELECT envelope FROM history WHERE user = ? AND seq > ? ORDER BY seq'),
      wipeState: db.prepare('DELETE FROM state'),
      wipeHistory: db.prepare('DELETE FROM history'),
      historyUser: db.prepare<[number], { user: string }>('SELECT user FROM history WHERE seq = ?'),
      stateBySeq: db.prepare<[number], { user: string }>('SELECT user FROM state WHERE seq = ?'),
      pruneBound: db.prepare<[number, number], { s: number | null }>(
        'SELECT max(seq) AS s FROM history WHERE ts < ? AND seq <= ?'),
      prune: db.prepare('DELETE FROM history WHERE seq <= ?'),
      counts: db.prepare<[], { users: number; items: number; history: number }>(
        'SELECT (SELECT count(DISTINCT user) FROM state) AS users, (SELECT count(*) FROM state) AS items, (SELECT count(*) FROM history) AS history'),
    }
    for (const { key, value } of this.st.getMeta.all()) {
      if (key === 'epoch') this.meta.epoch = value
      else if (key === 'center') this.meta.center = value
      else if (key === 'hw') this.meta.hw = Number(value)
      else if (key === 'floor') this.meta.floor = Number(value)
    }
  }

  get epoch(): string | null { return this.meta.epoch }
  get center(): string | null { return this.meta.center }
  /** Highest seq committed from the link; null before the first complete sync. */
  get hw(): number | null { return this.meta.hw }
  /** History before this seq was pruned (or never held): resumes from below it get a reset snapshot. */
  get floor(): number { return this.meta.floor }

  /**
   * Commits a batch that must continue the high-water mark. Items at or below it are duplicates of a
   * resend and are dropped; a gap is a protocol error. Returns what was newly stored, in seq order.
   */
  applyBatch(epoch: string, items: readonly Item[], now = Date.now()): Item[] {
    if (epoch !== this.meta.epoch || this.meta.hw === null) {
      throw new LinkError('ERR_LINK_SEQUENCE', CLOSE.SEQUENCE, `batch for epoch ${epoch} while holding ${this.meta.epoch ?? 'none'} (hw ${this.meta.hw ?? 'none'})`)
    }
    const hw = this.meta.hw
    const fresh = items.filter((i) => i.env.seq > hw)
    if (fresh.length === 0) return []
    if (fresh[0]!.env.seq !== hw + 1) {
      throw new LinkError('ERR_LINK_SEQUENCE', CLOSE.SEQUENCE, `batch starts at ${fresh[0]!.env.seq}, expected ${hw + 1}`)
    }
    const last = fresh[fresh.length - 1]!.env.seq
    this.db.transaction(() => {
      for (const { env, json } of fresh) {
        this.st.insertHistory.run(env.seq, env.user, now, json)
        this.st.upsertState.run(env.system, env.user, env.seq, env.quantity, json)
      }
      this.st.setMeta.run('hw', String(last))
    })()
    this.meta.hw = last
    return fresh
  }

  /**
   * Commits one chunk of a full resync. The first chunk wipes the replica in the same transaction, so the
   * replica is never a mix of two epochs; until the last chunk the mark stays unset, so a link that dies
   * midway starts the resync over.
   */
  applyResync(epoch: string, center: string, first: boolean, done: boolean, hw: number, items: readonly Item[]): void {
    if (!first && epoch !== this.meta.epoch) {
      throw new LinkError('ERR_LINK_SEQUENCE', CLOSE.SEQUENCE, 'resync chunk for another epoch')
    }
    this.db.transaction(() => {
      if (first) {
        this.st.wipeState.run()
        this.st.wipeHistory.run()
        this.st.setMeta.run('epoch', epoch)
        this.st.setMeta.run('center', center)
        this.st.delMeta.run('hw')
      }
      for (const { env, json } of items) this.st.upsertState.run(env.system, env.user, env.seq, env.quantity, json)
      if (done) {
        this.st.setMeta.run('hw', String(hw))
        this.st.setMeta.run('floor', String(hw))
      }
    })()
    if (first) {
      this.meta.epoch = epoch
      this.meta.center = center
      this.meta.hw = null
    }
    if (done) {
      this.meta.hw = hw
      this.meta.floor = hw
    }
  }

  snapshot(user: string): string[] {
    return this.st.snapshot.all(user).map((r) => r.envelope)
  }

  since(user: string, seq: number): string[] | null {
    if (seq < this.meta.floor) return null
    return this.st.since.all(user, seq).map((r) => r.envelope)
  }

  /** The user a seq belongs to (receipts are checked against it), if the outer still knows it. */
  userOf(seq: number): string | undefined {
    return this.st.historyUser.get(seq)?.user ?? this.st.stateBySeq.get(seq)?.user
  }

  /** Drops history that is both older than minAgeMs and outside the newest minCount updates. */
  prune(opts: RetentionOptions, now = Date.now()): number {
    if (this.meta.hw === null) return 0
    const bound = this.st.pruneBound.get(now - opts.minAgeMs, this.meta.hw - opts.minCount)?.s
    if (bound === null || bound === undefined || bound <= this.meta.floor) return 0
    let removed = 0
    this.db.transaction(() => {
      removed = this.st.prune.run(bound).changes
      this.st.setMeta.run('floor', String(bound))
    })()
    this.meta.floor = bound
    return removed
  }

  counts(): { users: number; items: number; history: number } {
    return this.st.counts.get()!
  }

  close(): void {
    if (this.db.open) this.db.close()
  }
}
