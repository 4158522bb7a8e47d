/**
 * Group commit: every accepted record, from any source, becomes a message here. Requests queue their
 * records; once per event-loop turn (setImmediate) one transaction assigns gap-free seqs, signs the
 * envelopes, writes messages and state, and commits; only then do the requests resolve (and the HTTP
 * layer answer 200). Measured here: a commit per request costs ~9x, a fixed timer caps throughput, one
 * commit per turn runs at ~0.94x the no-database rate (DESIGN §3.4).
 */
import { EventEmitter } from 'node:events'
import { randomUUID } from 'node:crypto'
import { signEnvelope, type KeyPair } from '../shared/crypto.js'
import { RelayError } from '../shared/errors.js'
import type { Logger } from '../shared/log.js'
import type { Envelope } from '../shared/protocol.js'
import type { InnerStore, NewMessage } from './store.js'

export interface IngestItem {
  systemId: string
  systemName: string
  user: string
  level: 1 | 2 | 3
  quantity: number
  url: string
  source: 'push' | 'pull' | 'upstream' | 'admin'
  receivedAt: number
  /** Polls set this: an unchanged count (same quantity, level, url and name) produces no message. */
  onlyIfChanged?: boolean
}

export interface StoredRef { id: string; seq: number }

interface Job { items: readonly IngestItem[]; resolve: (r: (StoredRef | null)[]) => void; reject: (e: Error) => void }

export interface IngestEvents {
  /** After a commit: the new envelopes, in seq order. */
  stored: [envelopes: Envelope[]]
}

export class Ingest extends EventEmitter<IngestEvents> {
  private queue: Job[] = []
  private scheduled = false
  private closed = false
  private idle: Promise<void> = Promise.resolve()
  private markIdle: (() => void) | undefined

  constructor(
    private readonly store: InnerStore,
    private readonly key: KeyPair,
    private readonly centerId: string,
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {
    super()
  }

  /** Queues records for the next group commit; resolves once they are on disk (null = unchanged, skipped). */
  submit(items: readonly IngestItem[]): Promise<(StoredRef | null)[]> {
    if (this.closed) return Promise.reject(new RelayError('E_SHUTTING_DOWN'))
    return new Promise((resolve, reject) => {
      this.queue.push({ items, resolve, reject })
      if (!this.scheduled) {
        this.scheduled = true
        this.idle = new Promise((r) => { this.markIdle = r })
        setImmediate(() => this.flush())
      }
    })
  }

  private flush(): void {
    const jobs = this.queue
    this.queue = []
    this.scheduled = false
    const ts = this.now()
    const first = this.store.lastSeq + 1
    let seq = this.store.lastSeq
    const results: (StoredRef | null)[][] = []
    const envelopes: Envelope[] = []
    const msgs: NewMessage[] = []
    // Within one flush a later record for the same (system, user) must compare against the earlier one.
    const pending = new Map<string, IngestItem>()
    try {
      this.store.db.transaction(() => {
        for (const job of jobs) {
          const refs: (StoredRef | null)[] = []
          for (const it of job.items) {
            if (it.onlyIfChanged) {
              const k = `${it.systemId}\u0000${it.user}`
              const prev = pending.get(k) ?? this.store.getState(it.systemId, it.user)
              if (prev && prev.quantity === it.quantity && prev.level === it.level && prev.url === it.url
                && ('systemName' in prev ? prev.systemName : prev.name) === it.systemName) {
                refs.push(null)
                continue
              }
            }
            pending.set(`${it.systemId}\u0000${it.user}`, it)
            seq++
            const id = randomUUID()
            const env = signEnvelope({
              seq, id, system: it.systemId, systemName: it.systemName, user: it.user, level: it.level,
              quantity: it.quantity, url: it.url, ts, center: this.centerId,
            }, this.key)
            envelopes.push(env)
            msgs.push({
              seq, id, systemId: it.systemId, user: it.user, quantity: it.quantity, level: it.level, url: it.url,
              name: it.systemName, source: it.source, envelope: JSON.stringify(env), receivedAt: it.receivedAt, storedAt: ts,
            })
            refs.push({ id, seq })
          }
          results.push(refs)
        }
        this.store.appendMessages(msgs)
      })()
    } catch (e) {
      this.log.error({ err: e, records: msgs.length, firstSeq: first }, 'group commit failed; nothing stored')
      const err = new RelayError('E_STORAGE', { reason: (e as { code?: string }).code ?? 'write failed' })
      for (const j of jobs) j.reject(err)
      this.markIdle?.()
      return
    }
    this.store.committed(seq)
    jobs.forEach((j, i) => j.resolve(results[i]!))
    this.markIdle?.()
    if (envelopes.length > 0) {
      // Listeners (link pumps, the portal) must not be able to crash the daemon from setImmediate;
      // the messages are committed whatever they do.
      try {
        this.emit('stored', envelopes)
      } catch (e) {
        this.log.error({ err: e }, 'a listener of stored messages failed')
      }
    }
  }

  /** Stops taking records and waits for the pending commit. */
  async close(): Promise<void> {
    this.closed = true
    await this.idle
  }
}
