/**
 * todo-inner's configuration: one JSON file, validated once at start against this schema (unknown keys
 * rejected, every problem named by its key), defaults filled from here, relative paths resolved against
 * the file's folder, then frozen. README.md documents every key.
 */
import { readConfigFile, resolveFrom, schemaParts, validateConfig, deepFreeze, int, tlsSchema, resolveTls,
  type ClientsSection, type StorageSection, type LogSection } from '../shared/config.js'
import type { TlsFiles } from '../shared/listen.js'
import type { TokenConfig } from '../shared/tokens.js'
import { ENVELOPE_LIMITS } from '../shared/protocol.js'

export interface InnerConfig {
  centerId: string
  dataDir: string
  keyFile: string
  listen: { intake?: string; portal?: string; admin?: string }
  outers: { url: string; publicKey: string; ca?: string }[]
  tokens?: TokenConfig
  intake: {
    maxBodyBytes: number; maxBatch: number; maxLoginName: number; maxUrl: number; maxName: number
    maxQuantity: number; maxDepth: number; ratePerSecond: number
  }
  link: { batchSize: number; window: number; heartbeatMs: number; deadMs: number; reconnectBaseMs: number; reconnectMaxMs: number }
  clients: ClientsSection
  /** Delivering users' actions to the business systems' callbacks (DESIGN §3.6; inner/actions.ts). */
  actions: {
    graceSeconds: number; maxAttempts: number; retryBaseMs: number; retryMaxMs: number; timeoutMs: number
    maxPayloadBytes: number; concurrency: number
  }
  /** Polling pull-user and pull-all systems (inner/poller.ts). */
  poll: {
    concurrency: number; connectTimeoutMs: number; headersTimeoutMs: number; bodyTimeoutMs: number; requestTimeoutMs: number
    maxResponseBytes: number; maxRecords: number; keepAliveTimeoutMs: number; backoffMaxMs: number
  }
  /** How long the message history (the lifecycle record) is kept (inner/retention.ts). */
  retention: { days: number; intervalSeconds: number }
  storage: StorageSection
  log: LogSection
  /** Absolute path of the file this came from. */
  /** Listeners served over TLS (https/wss): PEM certificate and key per listener name. */
  tls: { intake?: TlsFiles; portal?: TlsFiles; admin?: TlsFiles }
  readonly configPath: string
}

export const INNER_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['centerId', 'dataDir', 'keyFile', 'listen'],
  properties: {
    $schema: { type: 'string' },
    centerId: { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,64}$' },
    dataDir: { type: 'string', minLength: 1 },
    keyFile: { type: 'string', minLength: 1 },
    tls: { ...tlsSchema(['intake', 'portal', 'admin']), default: {} },
    listen: {
      type: 'object',
      additionalProperties: false,
      properties: {
        intake: schemaParts.listen, portal: schemaParts.listen, admin: schemaParts.listen,
      },
    },
    outers: {
      type: 'array',
      default: [],
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['url', 'publicKey'],
        properties: {
          url: { type: 'string', pattern: '^wss?://' },
          publicKey: schemaParts.publicKey,
          ca: { type: 'string' },
        },
      },
    },
    tokens: schemaParts.tokens,
    intake: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        maxBodyBytes: int(1024, 64 * 1024 * 1024, 1024 * 1024),
        maxBatch: int(1, 100_000, 1000),
        // At most what an envelope may carry (shared/protocol.ts): the outer refuses a batch holding more.
        maxLoginName: int(1, ENVELOPE_LIMITS.user, 128),
        maxUrl: int(1, ENVELOPE_LIMITS.url, 2048),
        maxName: int(1, ENVELOPE_LIMITS.systemName, 256),
        maxQuantity: int(0, ENVELOPE_LIMITS.quantity, 1_000_000_000),
        maxDepth: int(2, 256, 16),
        ratePerSecond: int(1, 10_000_000, 5000),
      },
    },
    link: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        batchSize: int(1, 1000, 500),
        window: int(1, 1024, 8),
        heartbeatMs: int(100, 600_000, 10_000),
        deadMs: int(300, 3_600_000, 30_000),
        reconnectBaseMs: int(1, 600_000, 500),
        reconnectMaxMs: int(1, 3_600_000, 30_000),
      },
    },
    clients: schemaParts.clients,
    actions: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        // How long after its token expired a queued action is still accepted (DESIGN §3.6: default 24 h).
        graceSeconds: int(0, 30 * 86_400, 86_400),
        // Callback attempts before an action ends `failed` (E_CALLBACK).
        maxAttempts: int(1, 100, 10),
        // Full-jitter backoff between attempts: random(0, min(retryMaxMs, retryBaseMs·2^attempt)).
        retryBaseMs: int(1, 3_600_000, 1000),
        retryMaxMs: int(1, 86_400_000, 600_000),
        // Per attempt: connect, headers and body each within this.
        timeoutMs: int(100, 600_000, 10_000),
        // The action's payload as JSON, at most (the link allows 16 KiB).
        maxPayloadBytes: int(0, 16 * 1024, 16 * 1024),
        // Callbacks in flight at once.
        concurrency: int(1, 1000, 8),
      },
    },
    poll: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        // Requests in flight (and connections) per system: the fan-out of a pull-user round.
        concurrency: int(1, 256, 8),
        connectTimeoutMs: int(100, 120_000, 5000),
        // Until the status line and headers arrive.
        headersTimeoutMs: int(100, 600_000, 10_000),
        // Longest silence while the body arrives.
        bodyTimeoutMs: int(100, 600_000, 10_000),
        // The whole request, connect to last byte (a server dripping bytes defeats the two above).
        requestTimeoutMs: int(100, 3_600_000, 30_000),
        // Largest answer accepted (a pull-all answer of 100,000 users is about 15 MiB).
        maxResponseBytes: int(1024, 1024 * 1024 * 1024, 32 * 1024 * 1024),
        // Most records in one pull-all answer.
        maxRecords: int(1, 10_000_000, 200_000),
        // Idle keep-alive connections are closed after this (or the server's Keep-Alive hint).
        keepAliveTimeoutMs: int(100, 600_000, 10_000),
        // After the n-th consecutive failure the next poll waits interval + random(0, min(backoffMaxMs, interval·2^(n−1))).
        backoffMaxMs: int(0, 86_400_000, 600_000),
      },
    },
    retention: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        // Messages older than this, committed by every outer and no longer current, are deleted; 0 keeps all.
        days: int(0, 36_500, 30),
        intervalSeconds: int(1, 86_400, 3600),
      },
    },
    storage: schemaParts.storage,
    log: schemaParts.log,
  },
} as const

/** Validates a parsed config object; `configPath` anchors relative paths. */
export function parseInnerConfig(raw: unknown, configPath: string): InnerConfig {
  const c = validateConfig<Omit<InnerConfig, 'configPath'>>(raw, INNER_SCHEMA, configPath)
  const resolved: InnerConfig = {
    ...c,
    configPath,
    dataDir: resolveFrom(configPath, c.dataDir),
    keyFile: resolveFrom(configPath, c.keyFile),
    tls: resolveTls(configPath, c.tls),
    outers: c.outers.map((o) => (o.ca ? { ...o, ca: resolveFrom(configPath, o.ca) } : o)),
  }
  if (c.tokens) {
    const t = { ...c.tokens }
    if (t.secretFile) t.secretFile = resolveFrom(configPath, t.secretFile)
    if (t.signingKeyFile) t.signingKeyFile = resolveFrom(configPath, t.signingKeyFile)
    resolved.tokens = t
  }
  return deepFreeze(resolved)
}

export function loadInnerConfig(path: string): InnerConfig {
  return parseInnerConfig(readConfigFile(path), path)
}
