/**
 * The registry of business systems (注册) and their auth codes (授权码, the whitelist 白名单): validation
 * and the writes that `system …` commands make. The CLI writes straight into the daemon's SQLite file; the
 * daemon's in-memory view (registry-cache.ts) follows within a second.
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

export interface SystemRow {
  id: string; name: string; mode: Mode; url: string | null; interval_s: number | null; scopes: string; allow_ips: string
  callback: string | null; description: string; rate_limit: number | null; enabled: number; created_at: number; updated_at: number
  action_types?: string
  removing_at?: number | null
}

export function fromRow(r: SystemRow): SystemInfo {
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

/** A system's registration: what `system add` sets and, all but the mode, what `system update` changes. */
export type Registration = Pick<SystemInfo,
  'name' | 'mode' | 'url' | 'intervalSeconds' | 'scopes' | 'allowIps' | 'callback' | 'actionTypes' | 'description' | 'rateLimit'>

/**
 * The one check of a whole registration, shared by `system add` and `system update` so both accept
 * exactly the same values. Returns it normalized (name trimmed, scopes and action types deduplicated);
 * throws ERR_CLI_USAGE with the reason.
 */
export function validateRegistration(r: Registration): Registration {
  const name = r.name.trim()
  if (name.length === 0 || name.length > 256) throw new RelayError('ERR_CLI_USAGE', { reason: '--name must be 1..256 characters' })
  if (!MODES.includes(r.mode)) throw new RelayError('ERR_CLI_USAGE', { reason: `--mode must be one of ${MODES.join(', ')}` })
  if (r.mode !== 'push' && !r.url) throw new RelayError('ERR_CLI_USAGE', { reason: `--url is required for --mode ${r.mode}` })
  for (const u of [r.url, r.callback]) if (u !== null) checkHttpUrl(u)
  for (const c of r.allowIps) parseCidr(c)
  // Checked here, not only by the CLI's option parser (commander's argParser replaces its choices check).
  for (const sc of r.scopes) if (!SCOPES.includes(sc)) throw new RelayError('ERR_CLI_USAGE', { reason: `--scope must be one of ${SCOPES.join(', ')}` })
  const actionTypes = parseActionTypes(r.actionTypes)
  if (r.intervalSeconds !== null && !(Number.isInteger(r.intervalSeconds) && r.intervalSeconds >= 1 && r.intervalSeconds <= 86400)) {
    throw new RelayError('ERR_CLI_USAGE', { reason: '--interval must be 1..86400 seconds' })
  }
  if (r.rateLimit !== null && !(Number.isInteger(r.rateLimit) && r.rateLimit >= 1)) throw new RelayError('ERR_CLI_USAGE', { reason: '--rate must be a positive integer' })
  return { ...r, name, scopes: [...new Set(r.scopes)], allowIps: [...r.allowIps], actionTypes }
}

/**
 * What `system update` changes: an absent field stays as it is, `null` clears (callback, rate limit), a
 * list replaces the whole list. `mode` is only compared: a mode cannot change.
 */
export interface SystemUpdate {
  mode?: Mode
  name?: string
  url?: string
  intervalSeconds?: number
  scopes?: Scope[]
  allowIps?: string[]
  callback?: string | null
  actionTypes?: string[]
  description?: string
  rateLimit?: number | null
}

/** The fields of a registration that `system update` can change, in the order it reports them. */
export const UPDATABLE: readonly (keyof SystemUpdate & keyof Registration)[] = [
  'name', 'url', 'intervalSeconds', 'scopes', 'allowIps', 'callback', 'actionTypes', 'description', 'rateLimit',
]

/** Registry operations on the database; used by the CLI and by tests. */
export class Registry {
  constructor(private readonly db: DB) {}

  add(input: AddSystemInput): { system: SystemInfo; authCode: string } {
    const r = validateRegistration({
      name: input.name, mode: input.mode, url: input.url ?? null,
      intervalSeconds: input.intervalSeconds ?? (input.mode === 'push' ? null : 60),
      scopes: input.scopes ?? [], allowIps: input.allowIps ?? [], callback: input.callback ?? null,
      actionTypes: input.actionTypes ?? [...DEFAULT_ACTION_TYPES], description: input.description ?? '', rateLimit: input.rateLimit ?? null,
    })
    if (this.db.prepare('SELECT 1 FROM systems WHERE name = ?').get(r.name)) throw new RelayError('ERR_SYSTEM_EXISTS', { reason: r.name })
    const now = Date.now()
    const id = `sys-${randomBytes(5).toString('hex')}`
    const code = newAuthCode()
    this.db.transaction(() => {
      this.db.prepare(`INSERT INTO systems(id, name, mode, url, interval_s, scopes, allow_ips, callback, description, rate_limit, enabled, created_at, updated_at)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)`).run(
        id, r.name, r.mode, r.url,
        r.mode === 'push' ? null : r.intervalSeconds,
        JSON.stringify(r.scopes), JSON.stringify(r.allowIps), r.callback,
        r.description, r.rateLimit, now, now)
      this.db.prepare('INSERT INTO auth_codes(code, system_id, created_at, expires_at) VALUES (?, ?, ?, NULL)').run(code, id, now)
      this.db.prepare('UPDATE systems SET action_types = ? WHERE id = ?').run(JSON.stringify(r.actionTypes), id)
    })()
    return { system: this.get(id), authCode: code }
  }

  /**
   * Changes a registration in place: its id, auth codes, enabled flag and every user's count stay (unlike
   * remove + add, which zeroes the counts). Validated exactly as `add`; the mode cannot change; refused
   * while a removal is pending. Read, check and write are one IMMEDIATE transaction, so a concurrent
   * `system remove` or another update cannot slip in between. Values equal to the current ones are not
   * written (`changed` is then empty and `updated_at` stays). A running daemon reloads within a second.
   */
  update(idOrName: string, changes: SystemUpdate): { system: SystemInfo; changed: (typeof UPDATABLE)[number][] } {
    const given = UPDATABLE.filter((k) => changes[k] !== undefined)
    const nothing = (): RelayError => new RelayError('ERR_CLI_USAGE', {
      reason: 'nothing to change: give at least one of --name, --url, --interval, --scope, --allow-ip, --clear-allow-ip, --callback, '
        + '--clear-callback, --action-types, --description, --rate, --clear-rate',
    })
    if (given.length === 0 && changes.mode === undefined) throw nothing()
    return this.db.transaction(() => {
      const cur = this.get(idOrName)
      if (cur.removingAt !== null) throw new RelayError('ERR_SYSTEM_REMOVING', { reason: `${cur.id} is being removed` })
      if (changes.mode !== undefined && changes.mode !== cur.mode) {
        throw new RelayError('ERR_CLI_USAGE', {
          reason: `the mode of ${cur.id} (${cur.name}) is ${cur.mode} and cannot change to ${changes.mode}: `
            + 'run `system remove` and `system add` again with the new mode (removing sets every user\'s count from it to 0)',
        })
      }
      if (given.length === 0) throw nothing()
      if (cur.mode === 'push' && changes.intervalSeconds !== undefined) {
        throw new RelayError('ERR_CLI_USAGE', { reason: `--interval applies to pull-user and pull-all systems; ${cur.id} is push` })
      }
      const next = validateRegistration({
        name: changes.name ?? cur.name, mode: cur.mode, url: changes.url ?? cur.url,
        intervalSeconds: changes.intervalSeconds ?? cur.intervalSeconds, scopes: changes.scopes ?? cur.scopes,
        allowIps: changes.allowIps ?? cur.allowIps, callback: changes.callback === undefined ? cur.callback : changes.callback,
        actionTypes: changes.actionTypes ?? cur.actionTypes, description: changes.description ?? cur.description,
        rateLimit: changes.rateLimit === undefined ? cur.rateLimit : changes.rateLimit,
      })
      const changed = UPDATABLE.filter((k) => JSON.stringify(next[k]) !== JSON.stringify(cur[k]))
      if (changed.length === 0) return { system: cur, changed }
      if (changed.includes('name') && this.db.prepare('SELECT 1 FROM systems WHERE name = ? AND id <> ?').get(next.name, cur.id)) {
        throw new RelayError('ERR_SYSTEM_EXISTS', { reason: next.name })
      }
      this.db.prepare(`UPDATE systems SET name = ?, url = ?, interval_s = ?, scopes = ?, allow_ips = ?, callback = ?, action_types = ?,
        description = ?, rate_limit = ?, updated_at = ? WHERE id = ?`).run(
        next.name, next.url, next.intervalSeconds, JSON.stringify(next.scopes), JSON.stringify(next.allowIps), next.callback,
        JSON.stringify(next.actionTypes), next.description, next.rateLimit, Date.now(), cur.id)
      return { system: this.get(cur.id), changed }
    }).immediate()
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
