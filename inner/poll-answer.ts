/**
 * What a poll answer means (spec §6.2.1, §6.2.2; DESIGN §3.3): turns a parsed answer into ingest items.
 * Each record goes through the same validation as a push (record.ts), and its `BUSSINESS` must be a
 * currently valid code of the polled system; a record that fails is rejected, logged and counted
 * (rejections.ts) and the others still count. Items carry `onlyIfChanged`, so only changes travel.
 *
 * - pull-all: the answer is a JSON array and is the system's whole truth: a user who has a non-zero count
 *   from this system and appears nowhere in the answer goes to 0. A user whose record was rejected still
 *   appears (we do not know their count, so we leave it).
 * - pull-user: the answer for `loginName=U` is one record for U. As the spec allows one URL to serve both
 *   shapes, an array is accepted too: its records for U count and records for other users are ignored; an
 *   array with none for U (e.g. `[]`) means U has nothing open, so U goes to 0.
 */
import { RelayError } from '../shared/errors.js'
import { codeTag } from '../shared/crypto.js'
import type { IngestItem } from './ingest.js'
import { validateRecord, type ParsedRecord, type RecordLimits } from './record.js'
import type { SystemInfo } from './registry.js'
import type { RegistryCache } from './registry-cache.js'
import type { Rejections } from './rejections.js'
import type { StateRow } from './store.js'

export interface AnswerContext {
  system: SystemInfo
  registry: RegistryCache
  limits: RecordLimits
  rejections: Rejections
  /** The polled host, for rejection logs. */
  host: string
  receivedAt: number
}

export interface Interpreted {
  items: IngestItem[]
  /** Valid records (after de-duplication by user: the last one wins). */
  records: number
  rejected: number
  /** Users sent to 0 because the answer left them out. */
  zeroed: number
  zeroedUsers: ReadonlySet<string>
}

function loginOf(raw: unknown): string | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined
  const v = (raw as Record<string, unknown>).LOGINNAME
  return typeof v === 'string' ? v : typeof v === 'number' && Number.isFinite(v) ? String(v) : undefined
}

/** Validates one answer record; a failure is rejected (logged, counted) and yields undefined. */
function take(raw: unknown, index: number | undefined, ctx: AnswerContext): ParsedRecord | undefined {
  try {
    const r = validateRecord(raw, ctx.limits, index)
    const entry = ctx.registry.lookup(r.code)
    if (!entry) throw new RelayError('E_AUTH_CODE', { reason: 'BUSSINESS is not a valid auth code' })
    if (entry.system.id !== ctx.system.id) throw new RelayError('E_AUTH_CODE', { reason: 'BUSSINESS is the code of another system' })
    return r
  } catch (e) {
    if (!(e instanceof RelayError)) throw e
    const code = (raw as { BUSSINESS?: unknown } | null)?.BUSSINESS
    const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined)
    ctx.rejections.record({
      source: 'pull', code: e.code, system: ctx.system.id, host: ctx.host, reason: str(e.detail?.reason), field: str(e.detail?.field),
      codeTag: typeof code === 'string' && code.length > 0 ? codeTag(code) : undefined, user: loginOf(raw)?.slice(0, 128),
    })
    return undefined
  }
}

function item(r: ParsedRecord, ctx: AnswerContext): IngestItem {
  return {
    systemId: ctx.system.id, systemName: r.name || ctx.system.name, user: r.user, level: r.level, quantity: r.quantity,
    url: r.url, source: 'pull', receivedAt: ctx.receivedAt, onlyIfChanged: true,
  }
}

function zero(s: StateRow, ctx: AnswerContext): IngestItem {
  return {
    systemId: ctx.system.id, systemName: s.name, user: s.user, level: s.level as 1 | 2 | 3, quantity: 0, url: s.url,
    source: 'pull', receivedAt: ctx.receivedAt, onlyIfChanged: true,
  }
}

/** pull-all. `nonZero`: the system's stored rows with quantity > 0. */
export function interpretAll(answer: unknown, ctx: AnswerContext, nonZero: readonly StateRow[], maxRecords: number): Interpreted {
  if (!Array.isArray(answer)) throw new RelayError('ERR_POLL_SHAPE', { reason: `pull-all must answer a JSON array, got ${answer === null ? 'null' : typeof answer}` })
  if (answer.length > maxRecords) throw new RelayError('ERR_POLL_TOO_LARGE', { reason: `${answer.length} records > poll.maxRecords ${maxRecords}` })
  const seen = new Set<string>()
  const byUser = new Map<string, IngestItem>()
  let rejected = 0
  answer.forEach((raw, i) => {
    const login = loginOf(raw)
    if (login !== undefined) seen.add(login)
    const r = take(raw, i, ctx)
    if (!r) {
      rejected++
      return
    }
    byUser.delete(r.user) // keep answer order for the last occurrence
    byUser.set(r.user, item(r, ctx))
  })
  const items = [...byUser.values()]
  const zeroedUsers = new Set<string>()
  for (const s of nonZero) {
    if (!seen.has(s.user)) {
      items.push(zero(s, ctx))
      zeroedUsers.add(s.user)
    }
  }
  return { items, records: byUser.size, rejected, zeroed: zeroedUsers.size, zeroedUsers }
}

/** pull-user, for the answer to `loginName=user`. `stored`: the user's row for this system, if any. */
export function interpretUser(answer: unknown, user: string, ctx: AnswerContext, stored: StateRow | undefined): Interpreted {
  let candidates: { raw: unknown; index: number | undefined }[]
  if (Array.isArray(answer)) {
    candidates = answer.map((raw, index) => ({ raw, index })).filter((c) => loginOf(c.raw) === user)
  } else if (typeof answer === 'object' && answer !== null) {
    candidates = [{ raw: answer, index: undefined }]
  } else {
    throw new RelayError('ERR_POLL_SHAPE', { reason: `pull-user must answer a JSON object, got ${answer === null ? 'null' : typeof answer}` })
  }
  let last: ParsedRecord | undefined
  let rejected = 0
  for (const c of candidates) {
    const r = take(c.raw, c.index, ctx)
    if (!r) {
      rejected++
      continue
    }
    if (r.user !== user) {
      rejected++
      ctx.rejections.record({ source: 'pull', code: 'E_FIELD', system: ctx.system.id, host: ctx.host, field: 'LOGINNAME', reason: 'LOGINNAME: the answer is for another user', user: r.user })
      continue
    }
    last = r
  }
  if (last) return { items: [item(last, ctx)], records: 1, rejected, zeroed: 0, zeroedUsers: new Set() }
  if (candidates.length === 0 && stored && stored.quantity > 0) {
    return { items: [zero(stored, ctx)], records: 0, rejected, zeroed: 1, zeroedUsers: new Set([user]) }
  }
  return { items: [], records: 0, rejected, zeroed: 0, zeroedUsers: new Set() }
}
