/**
 * The poller for pull-user and pull-all systems (spec §6.2.1, §6.2.2; DESIGN §3.3). One scheduler — a
 * single timer armed for the earliest due system — and per-system state: its own HTTP pool
 * (poll-fetch.ts), its own in-flight round and abort controller, its own backoff and health. Rounds run
 * independently, so a slow, hanging or dead system never delays another one.
 *
 * - Registry changes (RegistryCache.onChange, which the daemon sees within 250 ms) start polling new or
 *   re-enabled systems at once, stop disabled and removed ones (aborting a round in flight, whose answer
 *   is then dropped), and restart a system whose mode, URL or interval changed.
 * - A round that succeeds schedules the next one `interval` after its start (never overlapping itself).
 *   A failed round waits `interval + random(0, min(poll.backoffMaxMs, interval·2^(n−1)))` after the n-th
 *   consecutive failure — full-jitter exponential backoff on top of the interval — and the first success
 *   resets it. A round itself (its requests, the answers, ingest with `onlyIfChanged`) is poll-round.ts.
 * - After each round the system's health goes to `poll_health` (poll-health.ts) for `system show`/`stats`.
 */
import { Backoff } from '../shared/backoff.js'
import type { Logger } from '../shared/log.js'
import { PollClient, type PollHttpOptions } from './poll-fetch.js'
import { initialPollHealth, writePollHealth, type PollHealth } from './poll-health.js'
import { describeError, runRound, type RoundDeps } from './poll-round.js'
import type { SystemInfo } from './registry.js'

export interface PollOptions extends PollHttpOptions {
  /** Cap on the extra wait after failures, ms (see the file comment). */
  backoffMaxMs: number
  /** Most records one pull-all answer may hold. */
  maxRecords: number
}

/** The collaborators a round uses, plus the scheduler's own options (a round's limits derive from them). */
export interface PollerDeps extends Pick<RoundDeps, 'registry' | 'store' | 'ingest' | 'rejections' | 'log' | 'metrics' | 'limits'> {
  options: PollOptions
  now?: () => number
  random?: () => number
}

interface SystemState {
  system: SystemInfo
  /** mode, URL and interval: a change restarts the system's polling. */
  key: string
  client: PollClient
  backoff: Backoff
  health: PollHealth
  nextAt: number
  running: Promise<void> | undefined
  abort: AbortController | undefined
  stopped: boolean
}

const keyOf = (s: SystemInfo): string => `${s.mode}\u0000${s.url ?? ''}\u0000${s.intervalSeconds ?? ''}`

export class Poller {
  private readonly systems = new Map<string, SystemState>()
  private readonly stopping = new Set<Promise<void>>()
  private timer: NodeJS.Timeout | undefined
  private timerAt = Infinity
  private unsubscribe: (() => void) | undefined
  private started = false
  private closing: Promise<void> | undefined
  private readonly now: () => number
  private readonly log: Logger
  private readonly roundDeps: RoundDeps

  constructor(private readonly deps: PollerDeps) {
    this.now = deps.now ?? Date.now
    this.log = deps.log
    this.roundDeps = {
      registry: deps.registry, store: deps.store, ingest: deps.ingest, rejections: deps.rejections, log: deps.log, metrics: deps.metrics,
      limits: deps.limits, concurrency: deps.options.concurrency, maxRecords: deps.options.maxRecords, now: this.now,
    }
  }

  /** Begins polling every enabled pull system and follows registry changes. Idempotent. */
  start(): void {
    if (this.started || this.closing) return
    this.started = true
    this.unsubscribe = this.deps.registry.onChange(() => this.sync())
    this.sync()
  }

  /** In-memory health of a polled system (the durable copy is in poll_health). */
  health(systemId: string): Readonly<PollHealth> | undefined {
    return this.systems.get(systemId)?.health
  }

  /** Ids of the systems being polled. */
  polled(): string[] {
    return [...this.systems.keys()]
  }

  private sync(): void {
    if (this.closing) return
    const wanted = new Map<string, SystemInfo>()
    for (const s of this.deps.registry.systems()) {
      if (s.enabled && s.removingAt === null && s.mode !== 'push' && s.url && s.intervalSeconds) wanted.set(s.id, s)
    }
    for (const [id, st] of this.systems) {
      const s = wanted.get(id)
      if (!s) this.stop(st, 'disabled or removed')
      else if (keyOf(s) !== st.key) this.stop(st, 'registration changed')
      else st.system = s
    }
    for (const [id, s] of wanted) if (!this.systems.has(id)) this.begin(s)
    this.arm()
  }

  private begin(s: SystemInfo): void {
    const intervalMs = s.intervalSeconds! * 1000
    const st: SystemState = {
      system: s, key: keyOf(s), client: new PollClient(new URL(s.url!).origin, this.deps.options),
      backoff: new Backoff({ baseMs: intervalMs, maxMs: this.deps.options.backoffMaxMs, ...(this.deps.random ? { random: this.deps.random } : {}) }),
      health: initialPollHealth(this.deps.store.db, s.id, this.now()),
      nextAt: this.now(), running: undefined, abort: undefined, stopped: false,
    }
    this.systems.set(s.id, st)
    this.log.info({ system: s.id, mode: s.mode, intervalSeconds: s.intervalSeconds, host: new URL(s.url!).host }, 'polling started')
  }

  private stop(st: SystemState, reason: string): void {
    st.stopped = true
    st.abort?.abort()
    this.systems.delete(st.system.id)
    this.deps.metrics.pollFailures.remove({ system: st.system.id })
    const done = (st.running ?? Promise.resolve()).then(() => st.client.close())
    this.stopping.add(done)
    void done.finally(() => this.stopping.delete(done))
    this.log.info({ system: st.system.id, reason }, 'polling stopped')
  }

  /** Arms the one timer for the earliest system that is due and not already polling. */
  private arm(): void {
    if (this.closing) return
    let next = Infinity
    for (const st of this.systems.values()) if (!st.running && st.nextAt < next) next = st.nextAt
    if (this.timer && next === this.timerAt) return
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
    this.timerAt = next
    if (next === Infinity) return
    this.timer = setTimeout(() => {
      this.timer = undefined
      this.timerAt = Infinity
      this.tick()
    }, Math.max(0, next - this.now()))
  }

  private tick(): void {
    const t = this.now()
    for (const st of this.systems.values()) if (!st.running && st.nextAt <= t) this.launch(st)
    this.arm()
  }

  private launch(st: SystemState): void {
    const abort = new AbortController()
    st.abort = abort
    st.running = this.round(st, abort.signal)
      .catch((e: unknown) => { this.log.error({ err: e, system: st.system.id }, 'poll round crashed') })
      .finally(() => {
        st.running = undefined
        st.abort = undefined
        this.arm()
      })
  }

  private async round(st: SystemState, signal: AbortSignal): Promise<void> {
    const s = st.system
    const started = this.now()
    const out = await runRound(this.roundDeps, { system: s, client: st.client, signal, active: () => !st.stopped && !signal.aborted })
    if (!out) return
    const t = this.now()
    const h = st.health
    const intervalMs = s.intervalSeconds! * 1000
    Object.assign(h, {
      lastAttemptAt: started, latencyMs: Math.round(out.latencyMs), roundMs: t - started, requests: out.requests,
      failedRequests: out.failed, records: out.records, changed: out.changed, rejected: out.rejected, updatedAt: t,
    })
    let delay: number
    if (out.error) {
      const { code, reason } = describeError(out.error)
      h.consecutiveFailures++
      h.pollsFailed++
      h.lastError = reason.slice(0, 500)
      h.lastErrorCode = code
      h.lastErrorAt = t
      delay = intervalMs + st.backoff.next()
      this.log.warn({ system: s.id, code, reason, failures: h.consecutiveFailures, retryInMs: delay }, 'poll failed')
    } else {
      if (h.consecutiveFailures > 0) this.log.info({ system: s.id, after: h.consecutiveFailures }, 'poll recovered')
      h.consecutiveFailures = 0
      h.pollsOk++
      h.lastSuccessAt = t
      st.backoff.reset()
      if (out.partialError) {
        const { code, reason } = describeError(out.partialError)
        h.lastError = reason.slice(0, 500)
        h.lastErrorCode = code
        h.lastErrorAt = t
      }
      delay = Math.max(0, started + intervalMs - t)
      this.log.debug({ system: s.id, requests: out.requests, records: out.records, changed: out.changed, rejected: out.rejected, zeroed: out.zeroed, ms: t - started }, 'poll ok')
    }
    st.nextAt = t + delay
    h.nextPollAt = st.nextAt
    this.deps.metrics.polls.inc({ system: s.id, outcome: out.error ? 'failed' : 'ok' })
    this.deps.metrics.pollFailures.set({ system: s.id }, h.consecutiveFailures)
    if (out.rejected > 0) this.deps.metrics.pollRecords.inc({ system: s.id, outcome: 'rejected' }, out.rejected)
    try {
      writePollHealth(this.deps.store.db, h)
    } catch (e) {
      // The system may have been deleted meanwhile (foreign key), or the CLI holds the write lock.
      this.log.warn({ err: e, system: s.id }, 'could not record poll health')
    }
  }

  /** Stops polling: aborts rounds in flight, waits for them, drops every connection. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.unsubscribe?.()
      if (this.timer) clearTimeout(this.timer)
      this.timer = undefined
      for (const st of [...this.systems.values()]) this.stop(st, 'shutting down')
      await Promise.all([...this.stopping])
    })()
    return this.closing
  }
}
