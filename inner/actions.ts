/**
 * Users' actions on their way to the business systems (DESIGN §3.6, spec §4.2 handling items on the phone).
 *
 * An action arrives over a link (from an outer, which queued it) or from the portal. It is committed here
 * first — that is what `forwarded` means — and then, trusting nothing from the DMZ, validated from scratch:
 * the user's token (signature, `aud`, `sub` = the action's user, `exp` no older than the queueing grace),
 * the system (exists, enabled, has a callback), the type (allowed for that system) and the size. A valid
 * action is POSTed to the callback (inner/callback.ts) until it answers 2xx (`delivered`) or the bounded,
 * full-jitter retries run out (`failed`, code E_CALLBACK). Each row keeps its attempts and next due time,
 * so deliveries resume after a restart. Delivery is at least once: a callback must treat a repeated `id`
 * as the same action.
 *
 * Status changes go to `onStatus` listeners; the daemon routes them to the origin (the outer's link or
 * the portal's sockets). The outer resends an unfinished action on every new session and `receive`
 * answers with the current status, so a status that could not be sent while the link was down is not lost.
 */
import { randomBytes } from 'node:crypto'
import type { Agent } from 'undici'
import type { DB } from '../shared/sqlite.js'
import type { Logger } from '../shared/log.js'
import { errorBody, RelayError, type ErrorCode } from '../shared/errors.js'
import { fullJitterDelay } from '../shared/backoff.js'
import { createTokenVerifier, type TokenConfig, type TokenVerifier } from '../shared/tokens.js'
import type { ActionRequest, ActionStatus, LinkAction } from '../shared/protocol.js'
import type { ActionRecord } from '../shared/client-api.js'
import type { SystemInfo } from './registry.js'
import type { RegistryCache } from './registry-cache.js'
import { callbackBodyText, createCallbackAgent, postCallback, signCallback } from './callback.js'

/** `origin` of actions submitted on the inner's own portal listener. */
export const PORTAL_ORIGIN = 'portal'

/** After processing failed outside the callback (a storage error), the pause before the next try. */
export const PROCESSING_RETRY_MS = 1000

export interface ActionOptions {
  graceSeconds: number
  maxAttempts: number
  retryBaseMs: number
  retryMaxMs: number
  timeoutMs: number
  maxPayloadBytes: number
  concurrency: number
}

export interface StatusChange extends ActionRecord { origin: string; user: string }

interface ActionRow {
  id: string; origin: string; user: string; system_id: string; type: string; ref: string | null; payload: string | null
  ts: number; token: string | null; validated: number; status: Exclude<ActionStatus, 'queued'>; code: string | null
  error: string | null; attempts: number; next_at: number | null; received_at: number; updated_at: number
}

function toRecord(r: Pick<ActionRow, 'id' | 'status' | 'code' | 'error'>): ActionRecord {
  const rec: ActionRecord = { id: r.id, status: r.status }
  // While forwarded, `error` holds the last attempt's failure for operators; clients see it only once final.
  if (r.status === 'failed') {
    if (r.code !== null) rec.code = r.code
    if (r.error !== null) rec.error = r.error
  }
  return rec
}

/** The wire text for a failure: the error table's "中文 (English: reason)". */
function failure(code: ErrorCode, reason?: string): { code: string; error: string } {
  return { code, error: errorBody(new RelayError(code, reason === undefined ? undefined : { reason })).msg }
}

export class ActionService {
  private verifier: TokenVerifier | undefined
  private readonly inflight = new Map<string, Promise<void>>()
  private readonly listeners = new Set<(c: StatusChange) => void>()
  private readonly abort = new AbortController()
  private readonly agent: Agent
  private timer: NodeJS.Timeout | undefined
  private retryTimer: NodeJS.Timeout | undefined
  private pumpScheduled = false
  private started = false
  private closed = false
  private readonly st

  constructor(private readonly deps: {
    db: DB
    registry: RegistryCache
    tokens: TokenConfig | undefined
    log: Logger
    options: ActionOptions
  }) {
    const db = deps.db
    this.agent = createCallbackAgent(deps.options.timeoutMs)
    this.st = {
      insert: db.prepare(`INSERT INTO actions(id, origin, user, system_id, type, ref, payload, ts, token, status, received_at, updated_at)
        VALUES (@id, @origin, @user, @system, @type, @ref, @payload, @ts, @token, 'forwarded', @now, @now)`),
      get: db.prepare<[string], ActionRow>('SELECT * FROM actions WHERE id = ?'),
      due: db.prepare<[number, number], ActionRow>(
        "SELECT * FROM actions WHERE status = 'forwarded' AND (next_at IS NULL OR next_at <= ?) ORDER BY coalesce(next_at, 0), received_at LIMIT ?"),
      nextDue: db.prepare<[], { t: number | null }>("SELECT min(next_at) AS t FROM actions WHERE status = 'forwarded' AND next_at IS NOT NULL"),
      validated: db.prepare('UPDATE actions SET validated = 1, token = NULL, updated_at = ? WHERE id = ?'),
      attempt: db.prepare('UPDATE actions SET attempts = ?, next_at = ?, error = ?, updated_at = ? WHERE id = ?'),
      finish: db.prepare(`UPDATE actions SET status = @status, code = @code, error = @error, next_at = NULL, token = NULL, updated_at = @now
        WHERE id = @id AND status = 'forwarded'`),
    }
  }

  /** Builds the token verifier and resumes what a previous run left unfinished. */
  async start(): Promise<void> {
    if (this.started) return
    this.started = true
    if (this.deps.tokens) this.verifier = await createTokenVerifier(this.deps.tokens)
    this.kick()
  }

  onStatus(fn: (c: StatusChange) => void): () => void {
    this.listeners.add(fn)
    return () => this.listeners.delete(fn)
  }

  /**
   * An action from an outer (`origin` = its public key). Commits it if new and returns its status to
   * answer with: `forwarded` for a new one, the current status for one already held (a resend), or
   * undefined when the id is taken by another user's action.
   */
  receive(a: LinkAction, origin: string): ActionRecord | undefined {
    const known = this.st.get.get(a.id)
    if (known) {
      if (known.user !== a.user) {
        this.deps.log.warn({ action: a.id, origin: origin.slice(0, 8) }, 'action id reused for another user; ignored')
        return undefined
      }
      return toRecord(known)
    }
    this.insert({ ...a, origin })
    return { id: a.id, status: 'forwarded' }
  }

  /** An action from a PC user on the portal: same validation and delivery, no link. */
  async submitLocal(user: string, token: string, req: ActionRequest): Promise<ActionRecord> {
    if (this.closed) throw new RelayError('E_SHUTTING_DOWN')
    const id = `a${randomBytes(16).toString('base64url')}`
    this.insert({ id, origin: PORTAL_ORIGIN, user, token, ts: Date.now(), ...req })
    // The reply says `queued` like the outer's; `forwarded` follows as a change, after that reply.
    setImmediate(() => this.emit({ id, origin: PORTAL_ORIGIN, user, status: 'forwarded' }))
    return { id, status: 'queued' }
  }

  /** A user's own action; another user's is indistinguishable from a missing one. */
  get(user: string, id: string): ActionRecord | undefined {
    const r = this.st.get.get(id)
    return r && r.user === user ? toRecord(r) : undefined
  }

  private insert(a: { id: string; origin: string; user: string; system: string; type: string; ref?: string; payload?: unknown; ts: number; token: string }): void {
    const now = Date.now()
    this.st.insert.run({
      id: a.id, origin: a.origin, user: a.user, system: a.system, type: a.type, ref: a.ref ?? null,
      payload: a.payload === undefined ? null : JSON.stringify(a.payload),
      ts: Math.min(a.ts, now), token: a.token, now,
    })
    this.deps.log.info({ action: a.id, origin: a.origin.slice(0, 8), user: a.user, system: a.system, type: a.type }, 'action received')
    this.kick()
  }

  private emit(c: StatusChange): void {
    for (const l of this.listeners) {
      try {
        l(c)
      } catch (e) {
        this.deps.log.error({ err: e, action: c.id }, 'action status listener failed')
      }
    }
  }

  // ---- scheduling ----------------------------------------------------------------------------------

  private kick(): void {
    if (this.pumpScheduled || !this.started || this.closed) return
    this.pumpScheduled = true
    setImmediate(() => {
      this.pumpScheduled = false
      this.pump()
    })
  }

  /** Starts what is due, up to the concurrency limit, and sets a timer for the next retry. */
  private pump(): void {
    if (this.closed || !this.deps.db.open) return
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
    const now = Date.now()
    const room = this.deps.options.concurrency - this.inflight.size
    if (room > 0) {
      for (const row of this.st.due.all(now, room + this.inflight.size)) {
        if (this.inflight.size >= this.deps.options.concurrency) break
        if (this.inflight.has(row.id)) continue
        const p = this.process(row)
          .then(() => true, (e: unknown) => {
            this.deps.log.error({ err: e, action: row.id }, 'action processing failed')
            return false
          })
          .then((ok) => {
            this.inflight.delete(row.id)
            // The row is still due: kicking at once would retry a failing write in a tight loop.
            if (ok) this.kick()
            else this.retryLater()
          })
        this.inflight.set(row.id, p)
      }
    }
    const next = this.st.nextDue.get()?.t
    if (next !== null && next !== undefined && next > now) {
      this.timer = setTimeout(() => this.pump(), Math.min(next - now, 2 ** 31 - 1))
      this.timer.unref()
    }
  }

  private retryLater(): void {
    if (this.retryTimer || this.closed) return
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined
      this.kick()
    }, PROCESSING_RETRY_MS)
    this.retryTimer.unref()
  }

  // ---- validation and delivery ------------------------------------------------------------------------

  /** Checks that hold at every attempt: the system still exists, is enabled, has a callback and code, allows the type. */
  private checkSystem(row: ActionRow): { sys: SystemInfo; code: string; url: string } | { code: ErrorCode; reason: string } {
    const sys = this.deps.registry.system(row.system_id)
    if (!sys) return { code: 'E_ACTION_SYSTEM', reason: `unknown system ${row.system_id}` }
    if (!sys.enabled) return { code: 'E_ACTION_SYSTEM', reason: `system ${sys.id} is disabled` }
    if (!sys.callback) return { code: 'E_ACTION_NO_CALLBACK', reason: `system ${sys.id} has no callback` }
    if (!sys.actionTypes.includes(row.type)) return { code: 'E_ACTION_TYPE', reason: `${row.type} (allowed: ${sys.actionTypes.join(', ') || 'none'})` }
    const authCode = this.deps.registry.currentCode(sys.id)
    if (!authCode) return { code: 'E_ACTION_SYSTEM', reason: `system ${sys.id} has no current auth code` }
    return { sys, code: authCode, url: sys.callback }
  }

  /** First-time validation of what only the action itself carries: token and size. */
  private async checkAction(row: ActionRow): Promise<{ code: ErrorCode; reason: string } | undefined> {
    const payloadBytes = row.payload === null ? 0 : Buffer.byteLength(row.payload)
    if (payloadBytes > this.deps.options.maxPayloadBytes) return { code: 'E_ACTION_TOO_LARGE', reason: `payload ${payloadBytes} bytes` }
    if (!this.verifier) return { code: 'E_ACTION_TOKEN', reason: 'no tokens configuration on the inner' }
    if (row.token === null) return { code: 'E_ACTION_TOKEN', reason: 'no token' }
    try {
      const tok = await this.verifier.verify(row.token, { maxExpiredSeconds: this.deps.options.graceSeconds })
      if (tok.user !== row.user) return { code: 'E_ACTION_TOKEN', reason: 'token is not the user\'s' }
    } catch (e) {
      return { code: 'E_ACTION_TOKEN', reason: String((e as RelayError).detail?.reason ?? 'invalid token') }
    }
    return undefined
  }

  private async process(row: ActionRow): Promise<void> {
    if (!row.validated) {
      const bad = await this.checkAction(row)
      if (this.closed) return
      if (bad) return this.finish(row, 'failed', bad.code, bad.reason)
      this.st.validated.run(Date.now(), row.id)
    }
    const target = this.checkSystem(row)
    if (!('sys' in target)) return this.finish(row, 'failed', target.code, target.reason)
    const body = callbackBodyText({
      id: row.id, system: target.sys.id, systemName: target.sys.name, user: row.user, type: row.type,
      ...(row.ref !== null ? { ref: row.ref } : {}),
      ...(row.payload !== null ? { payload: JSON.parse(row.payload) as unknown } : {}),
      ts: row.ts,
    })
    const attempt = row.attempts + 1
    // Counted before sending, so a crash mid-attempt still uses up one of the bounded attempts.
    this.st.attempt.run(attempt, row.next_at, row.error, Date.now(), row.id)
    const out = await postCallback({
      agent: this.agent, url: target.url, body, signature: signCallback(body, target.code), actionId: row.id, attempt,
      signal: this.abort.signal,
    })
    if (this.closed) return // shutting down: the row stays forwarded and resumes after the restart
    if (out.ok) return this.finish(row, 'delivered')
    const { maxAttempts, retryBaseMs, retryMaxMs } = this.deps.options
    if (out.retryable && attempt < maxAttempts) {
      const delay = fullJitterDelay(attempt - 1, { baseMs: retryBaseMs, maxMs: retryMaxMs })
      this.st.attempt.run(attempt, Date.now() + delay, out.reason, Date.now(), row.id)
      this.deps.log.warn({ action: row.id, system: target.sys.id, attempt, delayMs: delay, reason: out.reason }, 'action callback failed; will retry')
      return
    }
    this.finish(row, 'failed', 'E_CALLBACK', `${out.reason} after ${attempt} attempt${attempt === 1 ? '' : 's'}`)
  }

  private finish(row: ActionRow, status: 'delivered' | 'failed', code?: ErrorCode, reason?: string): void {
    const f = status === 'failed' ? failure(code ?? 'E_INTERNAL', reason) : undefined
    const changed = this.st.finish.run({ id: row.id, status, code: f?.code ?? null, error: f?.error ?? null, now: Date.now() }).changes
    if (changed === 0) return
    const log = this.deps.log
    if (status === 'delivered') log.info({ action: row.id, user: row.user, system: row.system_id }, 'action delivered')
    else log.warn({ action: row.id, user: row.user, system: row.system_id, code: f!.code, reason }, 'action failed')
    this.emit({ id: row.id, origin: row.origin, user: row.user, status, ...(f ? { code: f.code, error: f.error } : {}) })
  }

  /** Stops: aborts callbacks in flight (they resume after a restart) and waits for them. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (this.timer) clearTimeout(this.timer)
    if (this.retryTimer) clearTimeout(this.retryTimer)
    this.abort.abort()
    await Promise.allSettled([...this.inflight.values()])
    await this.agent.destroy().catch(() => undefined)
  }
}
