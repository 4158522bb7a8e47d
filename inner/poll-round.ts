/**
 * One poll round of one system (spec §6.2.1, §6.2.2): the request(s), the answer through poll-answer.ts,
 * and the resulting items through ingest with `onlyIfChanged`. pull-all is one GET; pull-user asks for
 * every known user (imported, or seen in any record) with at most `poll.concurrency` requests in flight,
 * and stops starting requests once that many failed without any success. The scheduler (poller.ts)
 * decides when rounds run and records their outcome as the system's health.
 */
import { performance } from 'node:perf_hooks'
import { RelayError } from '../shared/errors.js'
import type { Logger } from '../shared/log.js'
import type { Ingest } from './ingest.js'
import type { Metrics } from './metrics.js'
import { interpretAll, interpretUser, type AnswerContext, type Interpreted } from './poll-answer.js'
import { PollAborted, type PollClient } from './poll-fetch.js'
import type { RecordLimits } from './record.js'
import type { SystemInfo } from './registry.js'
import type { RegistryCache } from './registry-cache.js'
import type { Rejections } from './rejections.js'
import type { InnerStore, StateRow } from './store.js'

export interface RoundDeps {
  registry: RegistryCache
  store: InnerStore
  ingest: Ingest
  rejections: Rejections
  log: Logger
  metrics: Metrics
  limits: RecordLimits
  concurrency: number
  maxRecords: number
  now: () => number
}

export interface RoundTarget {
  system: SystemInfo
  client: PollClient
  /** False once the system was disabled, removed or changed, or the poller is closing: drop what arrives. */
  active(): boolean
  signal: AbortSignal
}

export interface Outcome {
  requests: number
  failed: number
  /** Mean latency of one request, ms. */
  latencyMs: number
  records: number
  changed: number
  rejected: number
  zeroed: number
  /** The round failed (no request succeeded). */
  error?: Error
  /** Some requests failed but the round counts as done (pull-user). */
  partialError?: Error
}

/** The `loginName` query parameter appended to a pull-user URL (spec §6.2.1.1: `loginName=XXX`), UTF-8 percent-encoded. */
export function userUrl(base: string, user: string): URL {
  const u = new URL(base)
  const param = `loginName=${encodeURIComponent(user)}`
  u.search = u.search.length > 1 ? `${u.search}&${param}` : `?${param}`
  return u
}

export function describeError(e: Error): { code: string; reason: string } {
  return e instanceof RelayError ? { code: e.code, reason: e.message } : { code: 'ERR_POLL_CONNECT', reason: e.message }
}

function context(d: RoundDeps, t: RoundTarget): AnswerContext {
  return { system: t.system, registry: d.registry, limits: d.limits, rejections: d.rejections, host: new URL(t.system.url!).host, receivedAt: d.now() }
}

async function submit(d: RoundDeps, t: RoundTarget, r: Interpreted, out: Outcome): Promise<void> {
  out.records += r.records
  out.rejected += r.rejected
  out.zeroed += r.zeroed
  const id = t.system.id
  // A 0 for a user who has no count from this system changes nothing a client shows: skip it, so that
  // the first round of a pull-user system does not send a message per known user.
  const items = r.items.filter((it) => it.quantity !== 0 || d.store.getState(id, it.user) !== undefined)
  const skipped = r.items.length - items.length
  if (skipped > 0) d.metrics.pollRecords.inc({ system: id, outcome: 'unchanged' }, skipped)
  // Checked synchronously right before queueing: a system disabled meanwhile stores nothing more.
  if (items.length === 0 || !t.active()) return
  const refs = await d.ingest.submit(items)
  const changed = refs.filter((x) => x !== null).length
  out.changed += changed
  d.metrics.received.inc({ system: id, source: 'pull' }, changed)
  refs.forEach((ref, i) => {
    const outcome = ref === null ? 'unchanged' : r.zeroedUsers.has(items[i]!.user) ? 'zeroed' : 'changed'
    d.metrics.pollRecords.inc({ system: id, outcome })
  })
}

async function pollAll(d: RoundDeps, t: RoundTarget, out: Outcome): Promise<void> {
  const t0 = performance.now()
  out.requests = 1
  try {
    const answer = await t.client.getJson(new URL(t.system.url!), t.signal, d.limits.maxDepth)
    out.latencyMs = performance.now() - t0
    d.metrics.pollLatency.observe({ system: t.system.id }, out.latencyMs / 1000)
    if (!t.active()) return
    const nonZero = d.store.db.prepare<[string], StateRow>('SELECT * FROM state WHERE system_id = ? AND quantity > 0').all(t.system.id)
    await submit(d, t, interpretAll(answer, context(d, t), nonZero, d.maxRecords), out)
  } catch (e) {
    out.latencyMs = performance.now() - t0
    out.failed = 1
    throw e
  }
}

async function pollUsers(d: RoundDeps, t: RoundTarget, out: Outcome): Promise<void> {
  const users = d.store.db.prepare<[], { login: string }>('SELECT login FROM users UNION SELECT user AS login FROM state').all().map((r) => r.login)
  let next = 0
  let ok = 0
  let lastError: Error | undefined
  let latencyTotal = 0
  const worker = async (): Promise<void> => {
    while (next < users.length && t.active() && !(ok === 0 && out.failed >= d.concurrency)) {
      const user = users[next++]!
      const t0 = performance.now()
      out.requests++
      try {
        const answer = await t.client.getJson(userUrl(t.system.url!, user), t.signal, d.limits.maxDepth)
        const ms = performance.now() - t0
        latencyTotal += ms
        d.metrics.pollLatency.observe({ system: t.system.id }, ms / 1000)
        if (!t.active()) return
        ok++
        await submit(d, t, interpretUser(answer, user, context(d, t), d.store.getState(t.system.id, user)), out)
      } catch (e) {
        if (e instanceof PollAborted || !t.active()) return
        latencyTotal += performance.now() - t0
        out.failed++
        lastError = e as Error
        d.log.debug({ system: t.system.id, user, ...describeError(e as Error) }, 'poll request failed')
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(d.concurrency, users.length) }, worker))
  out.latencyMs = out.requests > 0 ? latencyTotal / out.requests : 0
  if (lastError && ok === 0) out.error = lastError
  else if (lastError) {
    out.partialError = new RelayError(lastError instanceof RelayError ? lastError.code : 'ERR_POLL_CONNECT',
      { reason: `${out.failed} of ${out.requests} requests failed; last: ${lastError.message}` })
  }
}

/** Runs one round; undefined when it was aborted (not the system's fault, nothing to record). */
export async function runRound(d: RoundDeps, t: RoundTarget): Promise<Outcome | undefined> {
  const out: Outcome = { requests: 0, failed: 0, latencyMs: 0, records: 0, changed: 0, rejected: 0, zeroed: 0 }
  try {
    if (t.system.mode === 'pull-all') await pollAll(d, t, out)
    else await pollUsers(d, t, out)
  } catch (e) {
    if (e instanceof PollAborted) return undefined
    out.error = e as Error
  }
  return t.active() ? out : undefined
}
