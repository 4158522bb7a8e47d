/**
 * Config loading shared by both daemons: read one JSON file, validate it against the daemon's JSON
 * schema (unknown keys rejected, every problem reported at once with its key path), fill defaults,
 * resolve relative paths against the file's folder, and freeze the result.
 */
import { readFileSync } from 'node:fs'
import { dirname, isAbsolute, resolve } from 'node:path'
import { Ajv, type ErrorObject, type Schema } from 'ajv'
import { RelayError } from './errors.js'

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true, allowUnionTypes: true })

/** `"host:port"` (IPv6 as `[::1]:port`); port 0..65535, so a bad port is named here rather than failing at listen(). */
export const LISTEN_PATTERN = '^(\\[[0-9a-fA-F:.]+\\]|[A-Za-z0-9.-]+):([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$'

function describeError(e: ErrorObject): string {
  const path = e.instancePath === '' ? '(root)' : e.instancePath.slice(1).replaceAll('/', '.')
  switch (e.keyword) {
    case 'additionalProperties':
      return `${path === '(root)' ? '' : path + '.'}${String(e.params.additionalProperty)}: unknown key`
    case 'required':
      return `${path === '(root)' ? '' : path + '.'}${String(e.params.missingProperty)}: required`
    case 'pattern':
      return `${path}: does not match ${e.params.pattern === LISTEN_PATTERN ? '"host:port"' : String(e.params.pattern)}`
    default:
      return `${path}: ${e.message ?? e.keyword}`
  }
}

/**
 * Validates `raw` against `schema` (mutating it with defaults). Throws ERR_CONFIG_INVALID listing every
 * problem, each naming its key.
 */
export function validateConfig<T>(raw: unknown, schema: Schema, source: string): T {
  const validate = ajv.compile(schema)
  if (!validate(raw)) {
    const problems = [...new Set((validate.errors ?? []).map(describeError))]
    throw new RelayError('ERR_CONFIG_INVALID', { reason: `${source}: ${problems.join('; ')}` },
      `invalid config ${source}: ${problems.join('; ')}`)
  }
  return raw as T
}

/** Reads and parses a JSON config file, failing with ERR_CONFIG_READ / ERR_CONFIG_INVALID. */
export function readConfigFile(path: string): unknown {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (e) {
    throw new RelayError('ERR_CONFIG_READ', { reason: `${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}` },
      `cannot read config ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`)
  }
  try {
    return JSON.parse(text)
  } catch (e) {
    throw new RelayError('ERR_CONFIG_INVALID', { reason: `${path}: ${(e as Error).message}` },
      `config ${path} is not valid JSON: ${(e as Error).message}`)
  }
}

/** Resolves a path from a config file against the file's folder. */
export function resolveFrom(configPath: string, p: string): string {
  return isAbsolute(p) ? p : resolve(dirname(resolve(configPath)), p)
}

export function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o)
    for (const v of Object.values(o)) deepFreeze(v)
  }
  return o
}

/** Parses a validated `"host:port"` string. */
export function parseListen(s: string): { host: string; port: number } {
  const m = new RegExp(LISTEN_PATTERN).exec(s)
  if (!m) throw new RelayError('ERR_CONFIG_INVALID', { reason: `bad listen address ${s}` })
  const host = m[1]!.startsWith('[') ? m[1]!.slice(1, -1) : m[1]!
  return { host, port: Number(m[2]) }
}

/** An integer setting with its range and default. */
export const int = (min: number, max: number, dflt: number): object => ({ type: 'integer', minimum: min, maximum: max, default: dflt })

/** Sections both daemons share, with the same keys and defaults. */
export interface ClientsSection { maxConnectionsPerUser: number; maxBufferedBytes: number; allowedOrigins: string[]; heartbeatMs: number }
export interface StorageSection { synchronous: 'FULL' | 'NORMAL' | 'OFF'; busyTimeoutMs: number }
export interface LogSection { level: string }

const tlsFiles = {
  type: 'object', additionalProperties: false, required: ['certFile', 'keyFile'],
  properties: { certFile: { type: 'string', minLength: 1 }, keyFile: { type: 'string', minLength: 1 } },
} as const

/** `tls.<listener>`: serve that listener over TLS (https/wss) with these PEM files. */
export function tlsSchema(listeners: readonly string[]): object {
  return { type: 'object', additionalProperties: false, properties: Object.fromEntries(listeners.map((l) => [l, tlsFiles])) }
}

/** Resolves the PEM paths of a `tls` section against the config file's folder. */
export function resolveTls<K extends string>(configPath: string, tls: Partial<Record<K, { certFile: string; keyFile: string }>> | undefined):
  Partial<Record<K, { certFile: string; keyFile: string }>> {
  const out: Partial<Record<K, { certFile: string; keyFile: string }>> = {}
  for (const [k, v] of Object.entries(tls ?? {}) as [K, { certFile: string; keyFile: string }][]) {
    out[k] = { certFile: resolveFrom(configPath, v.certFile), keyFile: resolveFrom(configPath, v.keyFile) }
  }
  return out
}

/** JSON-schema fragments both daemons use. */
export const schemaParts = {
  clients: {
    type: 'object', additionalProperties: false, default: {},
    properties: {
      maxConnectionsPerUser: int(1, 10_000, 10),
      maxBufferedBytes: int(1024, 1024 * 1024 * 1024, 4 * 1024 * 1024),
      allowedOrigins: { type: 'array', items: { type: 'string' }, default: [] },
      heartbeatMs: int(100, 600_000, 30_000),
    },
  },
  storage: {
    type: 'object', additionalProperties: false, default: {},
    properties: { synchronous: { enum: ['FULL', 'NORMAL', 'OFF'], default: 'FULL' }, busyTimeoutMs: int(0, 60_000, 2000) },
  },
  log: {
    type: 'object', additionalProperties: false, default: {},
    properties: { level: { enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info' } },
  },
  listen: { type: 'string', pattern: LISTEN_PATTERN },
  publicKey: { type: 'string', pattern: '^[A-Za-z0-9+/]{43}=$' },
  tokens: {
    type: 'object',
    additionalProperties: false,
    required: ['alg'],
    properties: {
      alg: { enum: ['HS256', 'EdDSA'] },
      secret: { type: 'string', minLength: 16 },
      secretFile: { type: 'string' },
      publicKey: { type: 'string', pattern: '^[A-Za-z0-9+/]{43}=$' },
      signingKeyFile: { type: 'string' },
      audience: { type: 'string', default: 'todo-relay' },
      issuer: { type: 'string' },
      clockSkewSeconds: { type: 'integer', minimum: 0, maximum: 3600, default: 60 },
    },
  },
} as const
