/** The inner's Prometheus metrics, served on the admin listener at /metrics. */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { createRegistry } from '../shared/metrics.js'

export interface Metrics {
  registry: Registry
  received: Counter<'system' | 'source'>
  rejected: Counter<'code' | 'source' | 'system'>
  polls: Counter<'system' | 'outcome'>
  pollRecords: Counter<'system' | 'outcome'>
  pollFailures: Gauge<'system'>
  pollLatency: Histogram<'system'>
  stored: Counter
  forwarded: Counter<'peer'>
  acked: Counter<'peer'>
  linkUp: Gauge<'peer'>
  backlog: Gauge<'peer'>
}

export function createMetrics(): Metrics {
  const registry = createRegistry('todo_inner')
  return {
    registry,
    received: new Counter({ name: 'todo_inner_received_total', help: 'Records accepted, by system and source', labelNames: ['system', 'source'], registers: [registry] }),
    rejected: new Counter({
      name: 'todo_inner_rejected_total', help: 'Pushes and poll records rejected, by error code, source (push|pull) and system (unknown when the auth code matched none)',
      labelNames: ['code', 'source', 'system'], registers: [registry],
    }),
    polls: new Counter({ name: 'todo_inner_polls_total', help: 'Poll rounds, by system and outcome (ok|failed)', labelNames: ['system', 'outcome'], registers: [registry] }),
    pollRecords: new Counter({
      name: 'todo_inner_poll_records_total', help: 'Records from polls, by system and outcome (changed|unchanged|rejected|zeroed)',
      labelNames: ['system', 'outcome'], registers: [registry],
    }),
    pollFailures: new Gauge({ name: 'todo_inner_poll_consecutive_failures', help: 'Consecutive failed poll rounds, by system', labelNames: ['system'], registers: [registry] }),
    pollLatency: new Histogram({
      name: 'todo_inner_poll_request_seconds', help: 'Latency of one poll request', labelNames: ['system'], registers: [registry],
      buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
    }),
    stored: new Counter({ name: 'todo_inner_stored_total', help: 'Messages committed', registers: [registry] }),
    forwarded: new Counter({ name: 'todo_inner_forwarded_total', help: 'Messages sent on a link', labelNames: ['peer'], registers: [registry] }),
    acked: new Counter({ name: 'todo_inner_acked_total', help: 'Messages committed by a peer', labelNames: ['peer'], registers: [registry] }),
    linkUp: new Gauge({ name: 'todo_inner_link_up', help: '1 while the link to a peer is authenticated', labelNames: ['peer'], registers: [registry] }),
    backlog: new Gauge({ name: 'todo_inner_link_backlog', help: 'Messages stored but not yet acked by a peer', labelNames: ['peer'], registers: [registry] }),
  }
}
