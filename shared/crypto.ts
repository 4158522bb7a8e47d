/**
 * Keys, signatures and the one canonical-bytes function.
 *
 * Keys are tweetnacl-compatible ed25519 (RFC 8032): the key file holds base64 of the 32-byte seed on one
 * line (mode 0600), the .pub file base64 of the 32-byte public key. The hot path signs and verifies with
 * node:crypto (~100x faster than tweetnacl here, byte-identical signatures since ed25519 is
 * deterministic); tweetnacl derives public keys from seeds and backs the browser page and cross-checks.
 */
import { createPrivateKey, createPublicKey, sign as nodeSign, verify as nodeVerify, randomBytes,
  createHash, type KeyObject } from 'node:crypto'
import { chmodSync, mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import nacl from 'tweetnacl'
import canonicalizeModule from 'canonicalize'
import { RelayError } from './errors.js'
import type { Envelope, UnsignedEnvelope } from './protocol.js'

export interface KeyPair {
  /** base64 of the 32-byte public key, as written to the .pub file and pinned by peers. */
  readonly publicKey: string
  readonly privateKeyObject: KeyObject
  readonly publicKeyObject: KeyObject
}

// canonicalize is CommonJS (`module.exports = fn`) while its typings declare an ES default export.
const canonicalize = canonicalizeModule as unknown as (input: unknown) => string | undefined

const B64_32 = /^[A-Za-z0-9+/]{43}=$/

function b64url(buf: Uint8Array): string {
  return Buffer.from(buf).toString('base64url')
}

/** Builds a key pair from a 32-byte seed. */
export function keyPairFromSeed(seed: Uint8Array): KeyPair {
  if (seed.length !== 32) throw new RelayError('ERR_KEY_FILE', { reason: 'seed must be 32 bytes' })
  const pub = nacl.sign.keyPair.fromSeed(seed).publicKey
  const privateKeyObject = createPrivateKey({
    key: { kty: 'OKP', crv: 'Ed25519', d: b64url(seed), x: b64url(pub) }, format: 'jwk',
  })
  return { publicKey: Buffer.from(pub).toString('base64'), privateKeyObject, publicKeyObject: publicKeyObject(pub) }
}

/** A node:crypto public key from raw 32 bytes or their base64. Throws ERR_KEY_FILE on a malformed key. */
export function publicKeyObject(pub: Uint8Array | string): KeyObject {
  const raw = typeof pub === 'string' ? decodePublicKey(pub) : pub
  return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64url(raw) }, format: 'jwk' })
}

/** Decodes a base64 ed25519 public key, insisting on exactly 32 bytes. */
export function decodePublicKey(b64: string): Uint8Array {
  const s = b64.trim()
  if (!B64_32.test(s)) throw new RelayError('ERR_KEY_FILE', { reason: 'public key must be base64 of 32 bytes' })
  return new Uint8Array(Buffer.from(s, 'base64'))
}

/** Reads a key file written by `keygen` (base64 seed on one line). */
export function loadKeyFile(path: string): KeyPair {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (e) {
    throw new RelayError('ERR_KEY_FILE', { reason: `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? e}` })
  }
  const s = text.trim()
  if (!B64_32.test(s)) throw new RelayError('ERR_KEY_FILE', { reason: `${path} must hold base64 of a 32-byte seed` })
  return keyPairFromSeed(new Uint8Array(Buffer.from(s, 'base64')))
}

/**
 * Writes `<dir>/<name>.key` (0600) and `<dir>/<name>.pub`; refuses to overwrite an existing key unless
 * `force`, since losing a pinned key breaks every peer that trusts it.
 */
export function generateKeyFiles(dir: string, name: string, force = false): { keyFile: string; pubFile: string; publicKey: string } {
  mkdirSync(dir, { recursive: true })
  const keyFile = join(dir, `${name}.key`)
  const pubFile = join(dir, `${name}.pub`)
  if (!force && existsSync(keyFile)) {
    throw new RelayError('ERR_KEY_FILE', { reason: `${keyFile} exists; remove it or pass --force` })
  }
  const seed = randomBytes(32)
  const kp = keyPairFromSeed(seed)
  writeFileSync(keyFile, seed.toString('base64') + '\n', { mode: 0o600 })
  chmodSync(keyFile, 0o600) // mode is ignored when the file already existed
  writeFileSync(pubFile, kp.publicKey + '\n', { mode: 0o644 })
  return { keyFile, pubFile, publicKey: kp.publicKey }
}

/** The one canonical-bytes function: RFC 8785 (JCS) JSON as UTF-8. */
export function canonicalBytes(value: unknown): Buffer {
  const s = canonicalize(value)
  if (s === undefined) throw new TypeError('value cannot be canonicalized')
  return Buffer.from(s, 'utf8')
}

export function sign(data: Uint8Array, key: KeyPair): string {
  return nodeSign(null, data, key.privateKeyObject).toString('base64')
}

/** Verifies a base64 signature; false (never a throw) on any malformed input. */
export function verify(data: Uint8Array, sigB64: string, pub: KeyObject): boolean {
  if (typeof sigB64 !== 'string' || sigB64.length !== 88) return false
  const sig = Buffer.from(sigB64, 'base64')
  if (sig.length !== 64) return false
  try {
    return nodeVerify(null, data, pub, sig)
  } catch {
    return false
  }
}

/** Hex SHA-256, used to log short fingerprints of secrets (never the secret). */
export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

/** A short, non-reversible tag for an auth code in logs. */
export function codeTag(code: string): string {
  return sha256Hex(code).slice(0, 8)
}

export function randomNonce(): string {
  return randomBytes(32).toString('base64')
}

/** Signs an envelope (DESIGN §3.5): ed25519 over the JCS form of every field but `sig`. */
export function signEnvelope(e: UnsignedEnvelope, key: KeyPair): Envelope {
  return { ...e, sig: sign(canonicalBytes(e), key) }
}

/** Verifies an envelope's own signature against the center's public key. */
export function verifyEnvelope(e: Envelope, pub: KeyObject): boolean {
  const { sig, ...rest } = e
  return verify(canonicalBytes(rest), sig, pub)
}
