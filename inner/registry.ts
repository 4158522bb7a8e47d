/**
 * The registry of business systems (注册) and their auth codes (授权码, the whitelist 白名单).
 *
 * The CLI writes it straight into the daemon's SQLite file; a running daemon notices within a second
 * through `PRAGMA data_version` (which changes when another connection commits) and reloads its
 * in-memory view, so `system …` commands take effect without a restart.
 */
import { randomBytes } from 'node:crypto'
import { BlockList, isIP } from 'node:net'
import type { DB } from '../shared/sqlite.js'
import { RelayError } from '../shared/errors.js'

export type Mode = 'push' | 'pull-user' | 'pull-all'
export type Scope = 'province' | 'city' | 'county'
export const MODES: readonly Mode[] = ['push', 'pull-user', 'pull-all']
export const SCOPES: readonly Scope[] = ['province', 'city', 'county']

export interface SystemInfo {
  id: string
  name: string
  mode: Mode
  url: string | null
  intervalSeconds: number | null
  scopes: Scope[]
  allowIps: string[]
  callback: string | null
  /** Action types users may send to the callback (DESIGN §3.6), e.g. read, handle. */
  actionTypes: string[]
  description: string
  rateLimit: number | null
  enabled: boolean
  /** Set by `system remove`: the daemon is zeroing the system's counts and will then delete it. */
  removingAt: number | null
  createdAt: number
  updatedAt: number
}

interface SystemRow {
  id: string; name: string; mode: Mode; url: string | null; interval_s: number | null; scopes: string; allow_ips: string
  callback: string | null; description: string; rate_limit: number | null; enabled: number; created_at: number; updated_at: number
  action_types?: string
  removing_at?: number | null
}

function fromRow(r: SystemRow): SystemInfo {
  return {
    id: r.id, name: r.name, mode: r.mode, url: r.url, intervalSeconds: r.interval_s,
    scopes: JSON.parse(r.scopes) as Scope[], allowIps: JSON.parse(r.allow_ips) as string[], callback: r.callback,
    actionTypes: r.action_types === undefined ? [...DEFAULT_ACTION_TYPES] : JSON.parse(r.action_types) as string[],
    description: r.description, rateLimit: r.rate_limit, enabled: r.enabled === 1,
    removingAt: r.removing_at ?? null, createdAt: r.created_at, updatedAt: r.updated_at,
  }
}

/** A new auth code: 32 lowercase hex digits (128 random bits), as in the spec's examples. */
export function newAuthCode(): string {
  return randomBytes(16).toString('hex')
}

/** Parses an IPv4/IPv6 CIDR (or a bare address) into a BlockList entry, or throws with the reason. */
export function parseCidr(cidr: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } {
  const [address, bits] = cidr.split('/') as [string, string | undefined]
  const v = isIP(address)
  if (v === 0) throw new RelayError('ERR_CLI_USAGE', { reason: `bad address in CIDR ${cidr}` })
  const max = v === 4 ? 32 : 128
  const prefix = bits === undefined ? max : Number(bits)
  if (!/^\d+$/.test(bits ?? String(max)) || prefix < 0 || prefix > max) throw new RelayError('ERR_CLI_USAGE', { reason: `bad prefix in CIDR ${cidr}` })
  return { address, prefix, family: v === 4 ? 'ipv4' : 'ipv6' }
}

export function buildAllowList(cidrs: readonly string[]): BlockList | null {
  if (cidrs.length === 0) return null
  const bl = new BlockList()
  for (const c of cidrs) {
    const p = parseCidr(c)
    bl.addSubnet(p.address, p.prefix, p.family)
  }
  return bl
}

export function isAllowed(list: BlockList | null, address: string): boolean {
  if (list === null) return true
  const v = isIP(address)
  if (v === 0) return false
  return list.check(address, v === 4 ? 'ipv4' : 'ipv6')
}

/** Action types a system accepts when registered without `--action-types`. */
export const DEFAULT_ACTION_TYPES: readonly string[] = ['read', 'handle']
const ACTION_TYPE = /^[a-z][a-z0-9_-]{0,31}$/

/** Parses `--action-types read,handle` (comma-separated, lowercase, as the client API's `type`). */
export function parseActionTypes(s: string | readonly string[]): string[] {
  const list = (typeof s === 'string' ? s.split(',') : [...s]).map((x) => x.trim()).filter((x) => x.length > 0)
  for (const x of list) {
    if (!ACTION_TYPE.test(x)) throw new RelayError('ERR_CLI_USAGE', { reason: `bad action type ${x} (lowercase letters, digits, _ and -, up to 32)` })
  }
  return [...new Set(list)]
}

export interface AddSystemInput {
  name: string
  mode: Mode
  url?: string
  intervalSeconds?: number
  scopes?: Scope[]
  allowIps?: string[]
  callback?: string
  actionTypes?: string[]
  description?: string
  rateLimit?: number
}

/** Registry operations on the database; used by the CLI and by tests. */
export class Registry {
  constructor(private readonly db: DB) {}

  add(input: AddSystemInput): { system: SystemInfo; authCode: string } {
    const name = input.name.trim()
    if (name.length === 0 || name.length > 256) throw new RelayError('ERR_CLI_USAGE', { reason: '--name must be 1..256 characters' })
    if (!MODES.includes(input.mode)) throw new RelayError('ERR_CLI_USAGE', { reason: `--mode must be one of ${MODES.join(', ')}` })
    if (input.mode !== 'push' && !input.url) throw new RelayError('ERR_CLI_USAGE', { reason: `--url is required for --mode ${input.mode}` })
    for (const u of [input.url, input.callback]) if (u !== undefined) checkHttpUrl(u)
    for (const c of input.allowIps ?? []) parseCidr(c)
    // Checked here, not only by the CLI's option parser (commander's argParser replaces its choices check).
    for (const sc of input.scopes ?? []) if (!SCOPES.includes(sc)) throw new RelayError('ERR_CLI_USAGE', { reason: `--scope must be one of ${SCOPES.join(', ')}` })
    const actionTypes = parseActionTypes(input.actionTypes ?? DEFAULT_ACTION_TYPES)
    if (input.intervalSeconds !== undefined && !(Number.isInteger(input.intervalSeconds) && input.intervalSeconds >= 1 && input.intervalSeconds <= 86400)) {
      throw new RelayError('ERR_CLI_USAGE', { reason: '--interval must be 1..86400 seconds' })
    }
    if (this.db.prepare('SELECT 1 FROM systems WHERE name = ?').get(name)) throw new RelayError('ERR_SYSTEM_EXISTS', { reason: name })
    const now = Date.now()
    const id = `sys-${randomBytes(5).toString('hex')}`
    const code = newAuthCode()
    this.db.transaction(() => {
      this.db.prepare(`INSERT INTO systems(id, name, mode, url, interval_s, scopes, allow_ips, callback, description, rate_limit, enabled, created_at, updated_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)`).run(
        id, name, input.mode, input.url ?? null,
        input.mode === 'push' ? null : (input.intervalSeconds ?? 60),
        JSON.stringify([...new Set(input.scopes ?? [])]), JSON.stringify(input.allowIps ?? []), input.callback ?? null,
        input.description ?? '', input.rateLimit ?? null, now, now)
      this.db.prepare('INSERT INTO auth_codes(code, system_id, created_at, expires_at) VALUES (?, ?, ?, NULL)').run(code, id, now)
      this.db.prepare('UPDATE systems SET action_types = ? WHERE id = ?').run(JSON.stringify(actionTypes), id)
    })()
    return { system: this.get(id), authCode: code }
  }

  list(): SystemInfo[] {
    return this.db.prepare<[], SystemRow>('SELECT * FROM systems ORDER BY created_at, id').all().map(fromRow)
  }

  /** By public id or by name. */
  get(idOrName: string): SystemInfo {
    const r = this.db.prepare<[string, string], SystemRow>('SELECT * FROM systems WHERE id = ? OR name = ?').get(idOrName, idOrName)
    if (!r) throw new RelayError('ERR_SYSTEM_NOT_FOUND', { reason: idOrName })
    return fromRow(r)
  }

  /** Auth codes of a system, current first. Only the CLI shows them, to the administrator. */
  codes(systemId: string): { code: string; createdAt: number; expiresAt: number | null }[] {
    return this.db.prepare<[string], { code: string; created_at: number; expires_at: number | null }>(
      'SELECT code, created_at, expires_at FROM auth_codes WHERE system_id = ? ORDER BY expires_at IS NOT NULL, created_at DESC').all(systemId)
      .map((r) => ({ code: r.code, createdAt: r.created_at, expiresAt: r.expires_at }))
  }

  setEnabled(idOrName: string, enabled: boolean): SystemInfo {
    const s = this.get(idOrName)
    if (enabled && s.removingAt !== null) throw new RelayError('ERR_SYSTEM_REMOVING', { reason: `${s.id} is being removed` })
    this.db.prepare('UPDATE systems SET enabled = ?, updated_at = ? WHERE id = ?').run(enabled ? 1 : 0, Date.now(), s.id)
    return this.get(s.id)
  }

  /**
   * Issues a new code; the old current code keeps working for `graceSeconds` so a business system can be
   * redeployed without losing pushes. Both map to the same public system id.
   */
  rotateCode(idOrName: string, graceSeconds: number): { system: SystemInfo; authCode: string; oldCodesExpireAt: number } {
    const s = this.get(idOrName)
    if (s.removingAt !== null) throw new RelayError('ERR_SYSTEM_REMOVING', { reason: `${s.id} is being removed` })
    const now = Date.now()
    const expires = now + graceSeconds * 1000
    const code = newAuthCode()
    this.db.transaction(() => {
      this.db.prepare('UPDATE auth_codes SET expires_at = ? WHERE system_id = ? AND (expires_at IS NULL OR expires_at > ?)').run(expires, s.id, expires)
      this.db.prepare('DELETE FROM auth_codes WHERE system_id = ? AND expires_at IS NOT NULL AND expires_at <= ?').run(s.id, now)
      this.db.prepare('INSERT INTO auth_codes(code, system_id, created_at, expires_at) VALUES (?, ?, ?, NULL)').run(code, s.id, now)
      this.db.prepare('UPDATE systems SET updated_at = ? WHERE id = ?').run(now, s.id)
    })()
    return { system: this.get(s.id), authCode: code, oldCodesExpireAt: expires }
  }

  /** How many users currently have a non-zero count from the system (what `system remove` clears). */
  nonZeroUsers(systemId: string): number {
    return (this.db.prepare<[string], { n: number }>('SELECT count(*) AS n FROM state WHERE system_id = ? AND quantity > 0').get(systemId)?.n) ?? 0
  }

  /**
   * Marks a system for removal and disables it at once (its pushes get E_SYSTEM_DISABLED, its polls
   * stop). The running daemon completes the removal (inner/removal.ts): it zeroes every user's count from
   * the system with signed messages, so phones and portals clear the entries, then deletes the system and
   * its auth codes. Messages stay in history. Refused while the system is enabled unless `force`.
   */
  requestRemoval(idOrName: string, force: boolean): SystemInfo {
    const s = this.get(idOrName)
    if (s.removingAt !== null) return s
    if (s.enabled && !force) {
      throw new RelayError('ERR_CLI_USAGE', { reason: `${s.id} (${s.name}) is enabled; run \`system disable\` first, or pass --force` })
    }
    const now = Date.now()
    this.db.prepare('UPDATE systems SET enabled = 0, removing_at = ?, updated_at = ? WHERE id = ?').run(now, now, s.id)
    return this.get(s.id)
  }

  /** Whether the system's row is gone (the daemon finished `requestRemoval`). */
  exists(id: string): boolean {
    return this.db.prepare('SELECT 1 FROM systems WHERE id = ?').get(id) !== undefined
  }
}

export function checkHttpUrl(u: string): void {
  let url: URL
  try {
    url = new URL(u)
  } catch {
    throw new RelayError('ERR_CLI_USAGE', { reason: `not a URL: ${u}` })
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new RelayError('ERR_CLI_USAGE', { reason: `URL must be http(s): ${u}` })
}

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
