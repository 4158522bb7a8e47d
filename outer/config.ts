/**
 * todo-outer's configuration: one JSON file, validated once at start (unknown keys rejected, every
 * problem named by its key), defaults from here, relative paths resolved against the file's folder,
 * frozen. README.md documents every key.
 */
import { readConfigFile, resolveFrom, schemaParts, validateConfig, deepFreeze, int, tlsSchema, resolveTls,
  type ClientsSection, type StorageSection, type LogSection } from '../shared/config.js'
import type { TlsFiles } from '../shared/listen.js'
import type { TokenConfig } from '../shared/tokens.js'

export interface OuterConfig {
  dataDir: string
  keyFile: string
  listen: { link: string; clients: string; admin?: string }
  inners: { publicKey: string }[]
  tokens: TokenConfig
  link: { heartbeatMs: number; deadMs: number }
  history: { minAgeHours: number; minCount: number; pruneIntervalSeconds: number }
  clients: ClientsSection
  /** Phone actions queued for the inner (DESIGN §3.6; outer/queues.ts). */
  actions: { maxPendingPerUser: number; retainDays: number }
  /** Delivery/read receipts queued for the inner (outer/queues.ts). */
  receipts: { maxQueued: number }
  storage: StorageSection
  log: LogSection
  /** Listeners served over TLS (https/wss): PEM certificate and key per listener name. */
  tls: { link?: TlsFiles; clients?: TlsFiles; admin?: TlsFiles }
  readonly configPath: string
}

export const OUTER_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['dataDir', 'keyFile', 'listen', 'inners', 'tokens'],
  properties: {
    $schema: { type: 'string' },
    dataDir: { type: 'string', minLength: 1 },
    keyFile: { type: 'string', minLength: 1 },
    tls: { ...tlsSchema(['link', 'clients', 'admin']), default: {} },
    listen: {
      type: 'object',
      additionalProperties: false,
      required: ['link', 'clients'],
      properties: { link: schemaParts.listen, clients: schemaParts.listen, admin: schemaParts.listen },
    },
    inners: {
      type: 'array',
      minItems: 1,
      items: { type: 'object', additionalProperties: false, required: ['publicKey'], properties: { publicKey: schemaParts.publicKey } },
    },
    tokens: schemaParts.tokens,
    link: {
      type: 'object', additionalProperties: false, default: {},
      properties: { heartbeatMs: int(100, 600_000, 10_000), deadMs: int(300, 3_600_000, 30_000) },
    },
    history: {
      type: 'object', additionalProperties: false, default: {},
      properties: { minAgeHours: int(0, 24 * 365, 24), minCount: int(0, 100_000_000, 100_000), pruneIntervalSeconds: int(1, 86_400, 600) },
    },
    clients: schemaParts.clients,
    actions: {
      type: 'object', additionalProperties: false, default: {},
      properties: {
        // Unfinished (queued or forwarded) actions one user may have; more get 429 E_TOO_MANY_ACTIONS.
        maxPendingPerUser: int(1, 100_000, 100),
        // Finished actions stay readable (GET /api/v1/actions/ID) this long, then are deleted.
        retainDays: int(1, 3650, 30),
      },
    },
    receipts: {
      type: 'object', additionalProperties: false, default: {},
      // Receipts held while the link is down; beyond this new ones are dropped (they are monitoring data).
      properties: { maxQueued: int(1000, 100_000_000, 1_000_000) },
    },
    storage: schemaParts.storage,
    log: schemaParts.log,
  },
} as const

export function parseOuterConfig(raw: unknown, configPath: string): OuterConfig {
  const c = validateConfig<Omit<OuterConfig, 'configPath'>>(raw, OUTER_SCHEMA, configPath)
  const tokens = { ...c.tokens }
  if (tokens.secretFile) tokens.secretFile = resolveFrom(configPath, tokens.secretFile)
  if (tokens.signingKeyFile) tokens.signingKeyFile = resolveFrom(configPath, tokens.signingKeyFile)
  return deepFreeze({
    ...c, configPath, tokens,
    dataDir: resolveFrom(configPath, c.dataDir),
    keyFile: resolveFrom(configPath, c.keyFile),
    tls: resolveTls(configPath, c.tls),
  })
}

export function loadOuterConfig(path: string): OuterConfig {
  return parseOuterConfig(readConfigFile(path), path)
}
