/**
 * Opening SQLite the way both daemons need it: WAL, `synchronous=FULL` by default so a committed
 * transaction survives power loss (DESIGN §3.4), a busy timeout so the CLI and a running daemon can share
 * the file, and foreign keys on.
 */
import Database from 'better-sqlite3'
import { mkdirSync } from 'node:fs'
import { dirname } from 'node:path'

export type DB = Database.Database
export type Synchronous = 'FULL' | 'NORMAL' | 'OFF'

export interface OpenOptions {
  synchronous?: Synchronous
  /** How long a write waits for another connection's lock (the CLI's) before failing; it blocks the event loop meanwhile. */
  busyTimeoutMs?: number
  readonly?: boolean
}

export function openDatabase(file: string, opts: OpenOptions = {}): DB {
  const { synchronous = 'FULL', busyTimeoutMs = 2000, readonly = false } = opts
  if (!readonly) mkdirSync(dirname(file), { recursive: true })
  const db = new Database(file, { readonly, fileMustExist: readonly })
  db.pragma(`busy_timeout = ${Math.floor(busyTimeoutMs)}`)
  if (!readonly) {
    db.pragma('journal_mode = WAL')
    db.pragma(`synchronous = ${synchronous}`)
  }
  db.pragma('foreign_keys = ON')
  return db
}

/** Applies numbered migrations once each, recording progress in `PRAGMA user_version`. */
export function migrate(db: DB, migrations: readonly string[]): void {
  const current = db.pragma('user_version', { simple: true }) as number
  for (let v = current; v < migrations.length; v++) {
    db.transaction(() => {
      db.exec(migrations[v]!)
      db.pragma(`user_version = ${v + 1}`)
    })()
  }
}
