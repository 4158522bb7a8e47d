/**
 * Each polled system's health, durable in `poll_health` so that `system show` and `stats` — separate
 * processes — can show it: last attempt, last success, last error (an ERR_POLL_* code and its reason),
 * consecutive failures, latency, what the last round brought, and when the next poll is due.
 */
import type { DB } from '../shared/sqlite.js'

export interface PollHealth {
  systemId: string
  lastAttemptAt: number | null
  lastSuccessAt: number | null
  lastError: string | null
  lastErrorCode: string | null
  lastErrorAt: number | null
  consecutiveFailures: number
  /** Mean latency of one request in the last round, ms. */
  latencyMs: number | null
  /** Duration of the last round, ms (pull-user: every user's request). */
  roundMs: number | null
  /** Requests made in the last round, and how many of them failed. */
  requests: number
  failedRequests: number
  /** Valid records in the last round's answer(s), messages they produced, records rejected. */
  records: number
  changed: number
  rejected: number
  pollsOk: number
  pollsFailed: number
  nextPollAt: number | null
  updatedAt: number
}

interface Row {
  system_id: string; last_attempt_at: number | null; last_success_at: number | null; last_error: string | null
  last_error_code: string | null; last_error_at: number | null; consecutive_failures: number; latency_ms: number | null
  round_ms: number | null; requests: number; failed_requests: number; records: number; changed: number; rejected: number
  polls_ok: number; polls_failed: number; next_poll_at: number | null; updated_at: number
}

function fromRow(r: Row): PollHealth {
  return {
    systemId: r.system_id, lastAttemptAt: r.last_attempt_at, lastSuccessAt: r.last_success_at, lastError: r.last_error,
    lastErrorCode: r.last_error_code, lastErrorAt: r.last_error_at, consecutiveFailures: r.consecutive_failures,
    latencyMs: r.latency_ms, roundMs: r.round_ms, requests: r.requests, failedRequests: r.failed_requests,
    records: r.records, changed: r.changed, rejected: r.rejected, pollsOk: r.polls_ok, pollsFailed: r.polls_failed,
    nextPollAt: r.next_poll_at, updatedAt: r.updated_at,
  }
}

/** The stored health of every polled system, by system id. */
export function readPollHealth(db: DB): Map<string, PollHealth> {
  return new Map(db.prepare<[], Row>('SELECT * FROM poll_health').all().map((r) => [r.system_id, fromRow(r)]))
}

export function readSystemPollHealth(db: DB, systemId: string): PollHealth | undefined {
  const r = db.prepare<[string], Row>('SELECT * FROM poll_health WHERE system_id = ?').get(systemId)
  return r ? fromRow(r) : undefined
}

/** Writes one system's health (one small statement per poll round). */
export function writePollHealth(db: DB, h: PollHealth): void {
  db.prepare(`INSERT INTO poll_health(system_id, last_attempt_at, last_success_at, last_error, last_error_code, last_error_at,
      consecutive_failures, latency_ms, round_ms, requests, failed_requests, records, changed, rejected, polls_ok, polls_failed,
      next_poll_at, updated_at)
    VALUES (@systemId, @lastAttemptAt, @lastSuccessAt, @lastError, @lastErrorCode, @lastErrorAt, @consecutiveFailures, @latencyMs,
      @roundMs, @requests, @failedRequests, @records, @changed, @rejected, @pollsOk, @pollsFailed, @nextPollAt, @updatedAt)
    ON CONFLICT(system_id) DO UPDATE SET last_attempt_at = excluded.last_attempt_at, last_success_at = excluded.last_success_at,
      last_error = excluded.last_error, last_error_code = excluded.last_error_code, last_error_at = excluded.last_error_at,
      consecutive_failures = excluded.consecutive_failures, latency_ms = excluded.latency_ms, round_ms = excluded.round_ms,
      requests = excluded.requests, failed_requests = excluded.failed_requests, records = excluded.records,
      changed = excluded.changed, rejected = excluded.rejected, polls_ok = excluded.polls_ok, polls_failed = excluded.polls_failed,
      next_poll_at = excluded.next_poll_at, updated_at = excluded.updated_at`).run(h)
}

/** A fresh health record, or the stored one (so counters survive a restart). */
export function initialPollHealth(db: DB, systemId: string, now: number): PollHealth {
  return readSystemPollHealth(db, systemId) ?? {
    systemId, lastAttemptAt: null, lastSuccessAt: null, lastError: null, lastErrorCode: null, lastErrorAt: null,
    consecutiveFailures: 0, latencyMs: null, roundMs: null, requests: 0, failedRequests: 0, records: 0, changed: 0,
    rejected: 0, pollsOk: 0, pollsFailed: 0, nextPollAt: null, updatedAt: now,
  }
}

/** One line for the CLI: `last ok … (12 ms), 3 records, 1 changed; failures 0; next …`. */
export function describePollHealth(h: PollHealth | undefined, fmtTime: (ms: number | null) => string): string {
  if (!h) return 'not polled yet'
  const parts = [
    `last ok ${fmtTime(h.lastSuccessAt)}${h.latencyMs === null ? '' : ` (latency ${h.latencyMs} ms, round ${h.roundMs ?? '-'} ms)`}`,
    `${h.records} records, ${h.changed} changed, ${h.rejected} rejected in the last round`,
    `consecutive failures ${h.consecutiveFailures}`,
    `polls ok ${h.pollsOk}, failed ${h.pollsFailed}`,
  ]
  if (h.lastErrorCode) parts.push(`last error ${fmtTime(h.lastErrorAt)} ${h.lastErrorCode}: ${h.lastError ?? ''}`)
  parts.push(`next ${fmtTime(h.nextPollAt)}`)
  return parts.join('; ')
}
