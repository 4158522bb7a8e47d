/**
 * Completes `system remove` inside the running daemon, the one writer of messages (the CLI cannot write
 * messages itself: seqs are assigned by the daemon's group commit). For a system marked `removing_at`
 * (and already disabled, so no push or poll adds to it) it:
 *
 * 1. sends every user who has a non-zero count from the system a signed message with QUANTITY 0 (source
 *    `admin`), through ingest like any record, so phones and portals clear the entry; repeats until no
 *    non-zero count is left (a record queued just before the disable may land meanwhile);
 * 2. deletes the system's row — its auth codes and poll health go with it (foreign keys) — and its
 *    rejection counts. Messages and the zeroed state rows stay: history, `trace`, and a link resync
 *    (which sends the latest message per user and system) still see that the counts went to 0.
 *
 * A removal requested while no daemon runs completes when the daemon next starts.
 */
import type { Logger } from '../shared/log.js'
import type { Ingest, IngestItem } from './ingest.js'
import type { SystemInfo } from './registry.js'
import type { RegistryCache } from './registry-cache.js'
import type { InnerStore, StateRow } from './store.js'

export class SystemRemoval {
  private readonly busy = new Set<string>()
  private readonly running = new Set<Promise<void>>()
  private unsubscribe: (() => void) | undefined
  private closed = false

  constructor(private readonly deps: { registry: RegistryCache; store: InnerStore; ingest: Ingest; log: Logger; now?: () => number }) {}

  start(): void {
    if (this.unsubscribe || this.closed) return
    this.unsubscribe = this.deps.registry.onChange(() => this.sync())
    this.sync()
  }

  private sync(): void {
    if (this.closed) return
    for (const s of this.deps.registry.systems()) {
      if (s.removingAt === null || this.busy.has(s.id)) continue
      this.busy.add(s.id)
      const p = this.remove(s)
        .catch((e: unknown) => this.deps.log.error({ err: e, system: s.id }, 'system removal failed; will retry on the next registry change or restart'))
        .finally(() => {
          this.busy.delete(s.id)
          this.running.delete(p)
        })
      this.running.add(p)
    }
  }

  private async remove(s: SystemInfo): Promise<void> {
    const { store, ingest, registry, log } = this.deps
    const now = this.deps.now ?? Date.now
    const open = store.db.prepare<[string], StateRow>('SELECT * FROM state WHERE system_id = ? AND quantity > 0')
    let zeroed = 0
    for (let pass = 0; pass < 10; pass++) {
      const rows = open.all(s.id)
      if (rows.length === 0) break
      const ts = now()
      const items: IngestItem[] = rows.map((r) => ({
        systemId: s.id, systemName: r.name, user: r.user, level: r.level as 1 | 2 | 3, quantity: 0, url: r.url, source: 'admin', receivedAt: ts,
      }))
      await ingest.submit(items)
      zeroed += items.length
    }
    if (this.closed) return
    if (open.all(s.id).length > 0) throw new Error('counts kept arriving for a disabled system')
    store.db.transaction(() => {
      store.db.prepare('DELETE FROM rejections WHERE system_id = ?').run(s.id)
      store.db.prepare('DELETE FROM systems WHERE id = ? AND removing_at IS NOT NULL').run(s.id)
    })()
    registry.reload()
    log.info({ system: s.id, name: s.name, zeroed }, 'system removed')
  }

  /** Stops following the registry and waits for a removal in progress. Idempotent. */
  async close(): Promise<void> {
    this.closed = true
    this.unsubscribe?.()
    await Promise.all([...this.running])
  }
}
