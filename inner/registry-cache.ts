/**
 * The daemon's in-memory view of the registry (registry.ts writes it): auth code → system, with each
 * system's address allow-list. It reloads when the database changes underneath it (`PRAGMA data_version`
 * moves when another connection, such as the CLI, commits), so `system …` commands take effect in a
 * running daemon within a second.
 */
import type { BlockList } from 'node:net'
import type { DB } from '../shared/sqlite.js'
import { buildAllowList, fromRow, type SystemInfo, type SystemRow } from './registry.js'

export interface CodeEntry { system: SystemInfo; allow: BlockList | null; expiresAt: number | null }

/**
 * The daemon's in-memory view of the registry, reloaded when the database changes underneath it.
 * Lookups on the intake hot path are one Map get.
 */
export class RegistryCache {
  private byCode = new Map<string, CodeEntry>()
  private byId = new Map<string, SystemInfo>()
  private version = -1
  private timer: NodeJS.Timeout | undefined
  private readonly listeners = new Set<() => void>()

  constructor(private readonly db: DB) {
    this.reload()
  }

  /** Reloads when another connection (the CLI) has committed since the last look. */
  refresh(): boolean {
    const v = this.db.pragma('data_version', { simple: true }) as number
    if (v === this.version) return false
    this.reload()
    return true
  }

  reload(): void {
    this.version = this.db.pragma('data_version', { simple: true }) as number
    const systems = this.db.prepare<[], SystemRow>('SELECT * FROM systems').all().map(fromRow)
    const byId = new Map(systems.map((s) => [s.id, s]))
    const allow = new Map(systems.map((s) => [s.id, buildAllowList(s.allowIps)]))
    const byCode = new Map<string, CodeEntry>()
    for (const c of this.db.prepare<[], { code: string; system_id: string; expires_at: number | null }>('SELECT code, system_id, expires_at FROM auth_codes').all()) {
      const s = byId.get(c.system_id)
      if (s) byCode.set(c.code, { system: s, allow: allow.get(s.id) ?? null, expiresAt: c.expires_at })
    }
    this.byCode = byCode
    this.byId = byId
    for (const l of this.listeners) l()
  }

  /** Polls for changes every `ms` (DESIGN §3.1: effective within one second). */
  watch(ms = 250, onError: (e: unknown) => void = () => {}): void {
    // A failed look (say, a listener throwing) must not end the daemon: the next tick tries again.
    this.timer ??= setInterval(() => {
      try {
        this.refresh()
      } catch (e) {
        onError(e)
      }
    }, ms)
    this.timer.unref()
  }

  onChange(fn: () => void): () => void {
    this.listeners.add(fn)
    return () => this.listeners.delete(fn)
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
  }

  /** The entry for a code that is valid now, or undefined. */
  lookup(code: string, now = Date.now()): CodeEntry | undefined {
    const e = this.byCode.get(code)
    if (!e || (e.expiresAt !== null && e.expiresAt <= now)) return undefined
    return e
  }

  system(id: string): SystemInfo | undefined {
    return this.byId.get(id)
  }

  systems(): SystemInfo[] {
    return [...this.byId.values()]
  }

  /** The current (non-expiring) code of a system, for signing callbacks. */
  currentCode(systemId: string): string | undefined {
    for (const [code, e] of this.byCode) if (e.system.id === systemId && e.expiresAt === null) return code
    return undefined
  }
}
