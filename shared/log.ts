/**
 * pino, JSON to stdout (journald takes it from there). One root logger per daemon; modules take a child
 * (`log.child({ mod: 'link' })`). Nothing logged may hold a secret: auth codes appear only as codeTag().
 */
import { pino, type Logger, type DestinationStream } from 'pino'

export type { Logger }

export interface LogOptions {
  level?: string
  name: string
  /** Where to write; stdout by default. Tests pass a sink to parse lines. */
  destination?: DestinationStream
}

export function createLogger(opts: LogOptions): Logger {
  const level = opts.level ?? process.env.LOG_LEVEL ?? 'info'
  return pino({ name: opts.name, level, base: { name: opts.name }, timestamp: pino.stdTimeFunctions.isoTime },
    opts.destination ?? pino.destination({ dest: 1, sync: true }))
}
