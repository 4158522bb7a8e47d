/**
 * Client tokens (DESIGN §3.6): a JWT with `sub` = login name, `exp`, `aud` (default `todo-relay`), signed
 * HS256 or EdDSA as configured. Verification honours `iat`/`nbf`, allows a configurable clock skew
 * (default 60 s) and checks `iss` only when configured. Minting exists for tests, the demo and
 * `todo-outer token`; in production the 环保通/portal login service mints tokens.
 */
import { readFileSync } from 'node:fs'
import { jwtVerify, SignJWT, importJWK, type JWTPayload, type CryptoKey, type KeyObject } from 'jose'
import { RelayError } from './errors.js'
import { decodePublicKey } from './crypto.js'

export interface TokenConfig {
  alg: 'HS256' | 'EdDSA'
  secret?: string
  secretFile?: string
  publicKey?: string
  signingKeyFile?: string
  audience?: string
  issuer?: string
  clockSkewSeconds?: number
}

export interface VerifiedToken { user: string; exp: number }

type Key = CryptoKey | KeyObject | Uint8Array

function hsSecret(cfg: TokenConfig): Uint8Array {
  const s = cfg.secret ?? (cfg.secretFile ? readFileSync(cfg.secretFile, 'utf8').trim() : undefined)
  if (!s) throw new RelayError('ERR_CONFIG_INVALID', { reason: 'tokens.secret or tokens.secretFile is required for HS256' })
  return new TextEncoder().encode(s)
}

/** Checks the token config is complete; called once at start so a bad config fails before listening. */
export function checkTokenConfig(cfg: TokenConfig): void {
  if (cfg.alg === 'HS256') hsSecret(cfg)
  else if (!cfg.publicKey) throw new RelayError('ERR_CONFIG_INVALID', { reason: 'tokens.publicKey is required for EdDSA' })
}

export interface TokenVerifier {
  verify(token: string, opts?: { maxExpiredSeconds?: number }): Promise<VerifiedToken>
}

export async function createTokenVerifier(cfg: TokenConfig): Promise<TokenVerifier> {
  checkTokenConfig(cfg)
  const key: Key = cfg.alg === 'HS256'
    ? hsSecret(cfg)
    : await importJWK({ kty: 'OKP', crv: 'Ed25519', x: Buffer.from(decodePublicKey(cfg.publicKey!)).toString('base64url') }, 'EdDSA')
  const audience = cfg.audience ?? 'todo-relay'
  const skew = cfg.clockSkewSeconds ?? 60
  return {
    /**
     * `maxExpiredSeconds` widens the tolerance for tokens that travelled with a queued action: the inner
     * accepts a token that expired at most that long ago (DESIGN §3.6 queueing grace).
     */
    async verify(token, opts) {
      if (typeof token !== 'string' || token.length === 0 || token.length > 8192) throw new RelayError('E_UNAUTHORIZED', { reason: 'no token' })
      let payload: JWTPayload
      try {
        const r = await jwtVerify(token, key, {
          algorithms: [cfg.alg === 'EdDSA' ? 'EdDSA' : 'HS256'],
          audience,
          ...(cfg.issuer ? { issuer: cfg.issuer } : {}),
          clockTolerance: skew + (opts?.maxExpiredSeconds ?? 0),
          requiredClaims: ['sub', 'exp'],
        })
        payload = r.payload
      } catch (e) {
        throw new RelayError('E_UNAUTHORIZED', { reason: (e as { code?: string }).code ?? 'invalid token' })
      }
      // jose applies one tolerance to `exp` and `nbf` alike; the queueing grace is for `exp` only, so a
      // token that is not valid yet is still refused beyond the ordinary clock skew.
      if (typeof payload.nbf === 'number' && payload.nbf > Date.now() / 1000 + skew) {
        throw new RelayError('E_UNAUTHORIZED', { reason: 'ERR_JWT_CLAIM_VALIDATION_FAILED' })
      }
      const sub = payload.sub
      if (typeof sub !== 'string' || sub.length === 0 || sub.length > 128) throw new RelayError('E_UNAUTHORIZED', { reason: 'bad sub' })
      return { user: sub, exp: payload.exp! }
    },
  }
}

/** Parses "90s", "15m", "1h", "7d" or plain seconds. */
export function parseDuration(s: string): number {
  const m = /^(\d+)\s*(ms|s|m|h|d)?$/.exec(s.trim())
  if (!m) throw new RelayError('ERR_CLI_USAGE', { reason: `bad duration ${s} (use e.g. 30s, 15m, 1h, 7d)` })
  const n = Number(m[1])
  const unit = m[2] ?? 's'
  const factor = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 }[unit]!
  return n * factor
}

/** Mints a token (HS256 with the shared secret, or EdDSA with `tokens.signingKeyFile`). */
export async function mintToken(cfg: TokenConfig, user: string, ttlSeconds: number): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  const jwt = new SignJWT({}).setSubject(user).setIssuedAt(now).setExpirationTime(now + Math.floor(ttlSeconds))
    .setAudience(cfg.audience ?? 'todo-relay')
  if (cfg.issuer) jwt.setIssuer(cfg.issuer)
  if (cfg.alg === 'HS256') return jwt.setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).sign(hsSecret(cfg))
  if (!cfg.signingKeyFile) throw new RelayError('ERR_CONFIG_INVALID', { reason: 'tokens.signingKeyFile is needed to mint EdDSA tokens' })
  const { loadKeyFile } = await import('./crypto.js')
  const kp = loadKeyFile(cfg.signingKeyFile)
  return jwt.setProtectedHeader({ alg: 'EdDSA', typ: 'JWT' }).sign(kp.privateKeyObject)
}
