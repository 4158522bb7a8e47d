/**
 * Message retention: the inner keeps every message's lifecycle for `retention.days` (default 30), then
 * deletes messages that every configured outer has committed and that are no longer any user's current
 * count (those stay: snapshots and resyncs are built from them). Deletion runs in small transactions,
 * yielding to the event loop between them, so pushes are never held up for long.
 */
import type { Logger } from '../shared/log.js'
import type { InnerStore } from './store.js'

const BATCH = 5000

export class Retention {
  private timer: NodeJS.Timeout | undefined
  private running: Promise<void> | undefined
  private stopped = false

  constructor(
    private readonly store: InnerStore,
    private readonly peers: readonly string[],
    private readonly options: { days: number; intervalSeconds: number },
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  start(): void {
    if (this.options.days === 0 || this.timer) return
    this.timer = setInterval(() => { void this.runOnce() }, this.options.intervalSeconds * 1000)
    this.timer.unref()
  }

  /** One pass; resolves with how many messages went. Never throws (a failure is logged and retried next pass). */
  runOnce(): Promise<number> {
    if (this.running) return this.running.then(() => 0)
    let total = 0
    const p = (async () => {
      const cutoff = this.now() - this.options.days * 86_400_000
      try {
        for (;;) {
          if (this.stopped) return
          const n = this.store.prune(cutoff, this.store.minPeerAcked(this.peers), BATCH)
          total += n
          if (n < BATCH) break
          await new Promise((r) => setImmediate(r))
        }
        if (total > 0) this.log.info({ removed: total, firstSeq: this.store.firstSeq() }, 'message history pruned')
      } catch (e) {
        this.log.warn({ err: e }, 'message pruning failed; will retry')
      }
    })()
    this.running = p.finally(() => { this.running = undefined })
    return this.running.then(() => total)
  }

  async stop(): Promise<void> {
    this.stopped = true
    if (this.timer) clearInterval(this.timer)
    await this.running
  }
}
