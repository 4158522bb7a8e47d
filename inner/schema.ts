/**
 * The inner's SQLite schema, as numbered migrations (applied once each, tracked in user_version).
 *
 * Lifecycle (DESIGN §3.7) lives as one timestamp column per stage on `messages`, so a message's whole
 * history is one row and monitoring queries are range scans; per-peer progress lives in `peers`.
 */
export const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

  CREATE TABLE systems (
    id          TEXT PRIMARY KEY,               -- public id, travels in envelopes
    name        TEXT NOT NULL UNIQUE,
    mode        TEXT NOT NULL CHECK (mode IN ('push', 'pull-user', 'pull-all')),
    url         TEXT,
    interval_s  INTEGER,
    scopes      TEXT NOT NULL DEFAULT '[]',     -- JSON array of province|city|county
    allow_ips   TEXT NOT NULL DEFAULT '[]',     -- JSON array of CIDRs; empty = any address
    callback    TEXT,
    description TEXT NOT NULL DEFAULT '',
    rate_limit  INTEGER,                        -- records per second; NULL = the configured default
    enabled     INTEGER NOT NULL DEFAULT 1,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
  );

  -- Auth codes (授权码). expires_at NULL = the current code; a rotated-out code keeps working until then.
  CREATE TABLE auth_codes (
    code       TEXT PRIMARY KEY,
    system_id  TEXT NOT NULL REFERENCES systems(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER
  );
  CREATE INDEX auth_codes_system ON auth_codes(system_id);

  CREATE TABLE users (
    login      TEXT PRIMARY KEY,
    name       TEXT NOT NULL DEFAULT '',
    region     TEXT NOT NULL DEFAULT '',
    updated_at INTEGER NOT NULL
  );

  -- The current count per (system, user): the latest message's seq.
  CREATE TABLE state (
    system_id TEXT NOT NULL,
    user      TEXT NOT NULL,
    quantity  INTEGER NOT NULL,
    level     INTEGER NOT NULL,
    url       TEXT NOT NULL,
    name      TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    PRIMARY KEY (system_id, user)
  ) WITHOUT ROWID;
  CREATE INDEX state_seq ON state(seq);
  CREATE INDEX state_user ON state(user);

  -- The outbox and the lifecycle: one row per message, gap-free seq.
  CREATE TABLE messages (
    seq           INTEGER PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    system_id     TEXT NOT NULL,
    user          TEXT NOT NULL,
    quantity      INTEGER NOT NULL,
    source        TEXT NOT NULL,                -- push | pull | upstream
    envelope      TEXT NOT NULL,                -- the signed envelope, exactly as sent
    received_at   INTEGER NOT NULL,
    stored_at     INTEGER NOT NULL,
    forwarded_at  INTEGER,
    acked_at      INTEGER,
    delivered_at  INTEGER,
    read_at       INTEGER,
    superseded_at INTEGER
  );
  CREATE INDEX messages_user ON messages(user, seq);
  CREATE INDEX messages_system ON messages(system_id, seq);

  -- Link peers (outers, city centers): how far each has committed.
  CREATE TABLE peers (
    public_key   TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,                 -- outer | downstream
    url          TEXT NOT NULL,
    epoch        TEXT,
    acked_seq    INTEGER NOT NULL DEFAULT 0,
    connected_at INTEGER,
    last_error   TEXT,
    updated_at   INTEGER NOT NULL
  );
  `,
  // 1: business-system integration (poll health, users) — filled by that capability.
  `SELECT 1;`,
  // 2: clients (receipts, actions) — filled by that capability.
  `SELECT 1;`,
]
