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
  // 1: business-system integration: pending removals, poll health, rejection counts, user lookups.
  `
  -- Set by \`system remove\` (with enabled = 0); the daemon zeroes the system's counts with signed
  -- messages, then deletes the row (see inner/removal.ts).
  ALTER TABLE systems ADD COLUMN removing_at INTEGER;

  -- One row per polled system, written by the poller after each round and read by \`system show\`/\`stats\`.
  CREATE TABLE poll_health (
    system_id            TEXT PRIMARY KEY REFERENCES systems(id) ON DELETE CASCADE,
    last_attempt_at      INTEGER,
    last_success_at      INTEGER,
    last_error           TEXT,
    last_error_code      TEXT,
    last_error_at        INTEGER,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    latency_ms           INTEGER,                -- mean request latency of the last round
    round_ms             INTEGER,                -- duration of the last round
    requests             INTEGER NOT NULL DEFAULT 0,  -- last round
    failed_requests      INTEGER NOT NULL DEFAULT 0,  -- last round
    records              INTEGER NOT NULL DEFAULT 0,  -- valid records in the last round
    changed              INTEGER NOT NULL DEFAULT 0,  -- messages the last round produced
    rejected             INTEGER NOT NULL DEFAULT 0,  -- records the last round rejected
    polls_ok             INTEGER NOT NULL DEFAULT 0,
    polls_failed         INTEGER NOT NULL DEFAULT 0,
    next_poll_at         INTEGER,
    updated_at           INTEGER NOT NULL
  );

  -- Rejected pushes and poll records, counted per system ('' = the auth code matched no system),
  -- source (push | pull) and code; flushed from memory about once a second.
  CREATE TABLE rejections (
    system_id   TEXT NOT NULL,
    source      TEXT NOT NULL,
    code        TEXT NOT NULL,
    count       INTEGER NOT NULL,
    first_at    INTEGER NOT NULL,
    last_at     INTEGER NOT NULL,
    last_reason TEXT,
    PRIMARY KEY (system_id, source, code)
  ) WITHOUT ROWID;

  -- pull-all: a system's users with a non-zero count (whom a missing answer row sends to 0).
  CREATE INDEX state_system_quantity ON state(system_id, quantity);
  `,
  // 2: clients (DESIGN §3.6): the action types each system accepts, and actions on their way to the
  // business systems' callbacks (inner/actions.ts). `origin` is the outer's public key the action came
  // through, or 'portal'; `token` is kept only until the action has been validated.
  `
  ALTER TABLE systems ADD COLUMN action_types TEXT NOT NULL DEFAULT '["read","handle"]';

  CREATE TABLE actions (
    id          TEXT PRIMARY KEY,
    origin      TEXT NOT NULL,
    user        TEXT NOT NULL,
    system_id   TEXT NOT NULL,
    type        TEXT NOT NULL,
    ref         TEXT,
    payload     TEXT,                         -- JSON text, absent when the client sent none
    ts          INTEGER NOT NULL,             -- when the user submitted it (callback body ts)
    token       TEXT,
    validated   INTEGER NOT NULL DEFAULT 0,
    status      TEXT NOT NULL CHECK (status IN ('forwarded', 'delivered', 'failed')),
    code        TEXT,
    error       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER,                      -- next delivery attempt while forwarded
    received_at INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
  );
  CREATE INDEX actions_due ON actions(status, next_at);
  CREATE INDEX actions_user ON actions(user, received_at);
  `,
]
