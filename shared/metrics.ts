/** Prometheus metrics: one registry per daemon instance (tests run several daemons in one process). */
import { Registry, collectDefaultMetrics } from 'prom-client'

export function createRegistry(prefix: string, defaults = true): Registry {
  const r = new Registry()
  if (defaults) collectDefaultMetrics({ register: r, prefix: `${prefix}_` })
  return r
}
