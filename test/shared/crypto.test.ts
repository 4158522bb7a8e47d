/**
 * Keys, signatures and canonical bytes (DESIGN §3.5): node:crypto on the hot path must produce exactly
 * tweetnacl's signatures (RFC 8032 ed25519 is deterministic), key files must be tweetnacl-compatible, and
 * the canonical form must be RFC 8785 (JCS).
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import nacl from 'tweetnacl'
import {
  canonicalBytes, generateKeyFiles, keyPairFromSeed, loadKeyFile, publicKeyObject, sign, signEnvelope, verify, verifyEnvelope,
} from '../../shared/crypto.js'
import { isRelayError } from '../../shared/errors.js'
import { ENVELOPE_KEYS, type Envelope, type UnsignedEnvelope } from '../../shared/protocol.js'

t.test('crypto: node:crypto signatures equal tweetnacl signatures byte for byte', async (t) => {
  // tweetnacl signs ~200/s here (DESIGN §3.5), so 200 messages; it cross-verifies one in ten.
  for (let k = 0; k < 5; k++) {
    const seed = randomBytes(32)
    const kp = keyPairFromSeed(seed)
    const nk = nacl.sign.keyPair.fromSeed(seed)
    t.equal(kp.publicKey, Buffer.from(nk.publicKey).toString('base64'), 'same public key from the seed')
    for (let i = 0; i < 40; i++) {
      const msg = randomBytes(i === 0 ? 0 : 1 + Math.floor(Math.random() * 2048))
      const ours = sign(msg, kp)
      const theirs = Buffer.from(nacl.sign.detached(msg, nk.secretKey)).toString('base64')
      if (ours !== theirs) {
        t.fail(`signature differs for a ${msg.length}-byte message`)
        return
      }
      if ((i % 10 === 0 && !nacl.sign.detached.verify(msg, Buffer.from(ours, 'base64'), nk.publicKey)) || !verify(msg, theirs, kp.publicKeyObject)) {
        t.fail('cross-verification failed')
        return
      }
    }
  }
  t.pass('200 random messages signed identically and cross-verified')
})

t.test('crypto: verify returns false (never throws) on malformed signatures', async (t) => {
  const kp = keyPairFromSeed(randomBytes(32))
  const msg = Buffer.from('hello')
  const good = sign(msg, kp)
  t.ok(verify(msg, good, kp.publicKeyObject))
  for (const bad of ['', 'x', good.slice(0, 87), `${good}A`, '!'.repeat(88), Buffer.alloc(64).toString('base64'), 42 as unknown as string]) {
    t.equal(verify(msg, bad, kp.publicKeyObject), false, `rejects ${JSON.stringify(bad).slice(0, 20)}`)
  }
  t.equal(verify(Buffer.from('hellO'), good, kp.publicKeyObject), false, 'rejects another message')
  t.equal(verify(msg, good, keyPairFromSeed(randomBytes(32)).publicKeyObject), false, 'rejects another key')
})

t.test('crypto: keygen writes a 0600 seed file and a .pub that tweetnacl derives from it', async (t) => {
  const dir = t.testdir()
  const r = generateKeyFiles(join(dir, 'keys'), 'inner')
  const keyText = readFileSync(r.keyFile, 'utf8')
  t.match(keyText, /^[A-Za-z0-9+/]{43}=\n$/, 'one line: base64 of 32 bytes')
  t.equal(statSync(r.keyFile).mode & 0o777, 0o600, 'key file mode 0600')
  const seed = Buffer.from(keyText.trim(), 'base64')
  t.equal(seed.length, 32)
  const pubText = readFileSync(r.pubFile, 'utf8')
  t.match(pubText, /^[A-Za-z0-9+/]{43}=\n$/, '.pub is one line: base64 of 32 bytes')
  t.equal(pubText.trim(), Buffer.from(nacl.sign.keyPair.fromSeed(seed).publicKey).toString('base64'), '.pub = nacl.sign.keyPair.fromSeed(seed).publicKey')
  t.equal(r.publicKey, pubText.trim())
  t.equal(loadKeyFile(r.keyFile).publicKey, r.publicKey, 'loadKeyFile reads it back')

  const again = (() => { try { generateKeyFiles(join(dir, 'keys'), 'inner'); return undefined } catch (e) { return e } })()
  t.ok(isRelayError(again) && again.code === 'ERR_KEY_FILE', 'refuses to overwrite an existing key')
  t.equal(readFileSync(r.keyFile, 'utf8'), keyText, 'the existing key is untouched')
  const forced = generateKeyFiles(join(dir, 'keys'), 'inner', true)
  t.not(forced.publicKey, r.publicKey, '--force writes a new key')
  t.equal(statSync(r.keyFile).mode & 0o777, 0o600, 'still 0600 after overwrite')
})

t.test('crypto: loadKeyFile rejects malformed key files with ERR_KEY_FILE', async (t) => {
  const dir = t.testdir()
  const seed = randomBytes(32).toString('base64')
  const cases: [string, string | undefined][] = [
    ['missing file', undefined],
    ['empty file', ''],
    ['not base64', 'this is not a key at all, no no no no no no!\n'],
    ['31 bytes', randomBytes(31).toString('base64') + '\n'],
    ['33 bytes', randomBytes(33).toString('base64') + '\n'],
    ['64-byte nacl secret key', Buffer.from(nacl.sign.keyPair().secretKey).toString('base64') + '\n'],
    ['two lines', `${seed}\n${seed}\n`],
    ['base64url alphabet', Buffer.alloc(32, 0xfb).toString('base64url') + '=\n'],
    ['PEM', '-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n-----END PRIVATE KEY-----\n'],
  ]
  for (const [name, content] of cases) {
    const p = join(dir, `${name.replace(/\W+/g, '-')}.key`)
    if (content !== undefined) writeFileSync(p, content)
    try {
      loadKeyFile(p)
      t.fail(`${name}: accepted`)
    } catch (e) {
      t.ok(isRelayError(e) && e.code === 'ERR_KEY_FILE', `${name}: ERR_KEY_FILE`)
    }
  }
  writeFileSync(join(dir, 'ok.key'), `  ${seed}\r\n`)
  t.equal(loadKeyFile(join(dir, 'ok.key')).publicKey, keyPairFromSeed(Buffer.from(seed, 'base64')).publicKey, 'surrounding whitespace is tolerated')
})

t.test('crypto: publicKeyObject rejects a malformed base64 public key with ERR_KEY_FILE', async (t) => {
  for (const bad of ['', 'abc', randomBytes(31).toString('base64'), randomBytes(33).toString('base64')]) {
    try {
      publicKeyObject(bad)
      t.fail(`accepted ${bad}`)
    } catch (e) {
      t.ok(isRelayError(e) && e.code === 'ERR_KEY_FILE', `rejects ${JSON.stringify(bad)}`)
    }
  }
})

/** A float64 from its IEEE 754 bit pattern (RFC 8785 Appendix B lists vectors this way). */
function f64(hex: string): number {
  const dv = new DataView(new ArrayBuffer(8))
  dv.setBigUint64(0, BigInt(`0x${hex}`))
  return dv.getFloat64(0)
}

t.test('crypto: canonicalBytes is RFC 8785 (JCS)', async (t) => {
  // RFC 8785 §3.2.2 (the full example: whitespace, number forms, string escapes, key order).
  const input = `{
    "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
    "string": "\\u20ac$\\u000F\\u000aA'\\u0042\\u0022\\u005c\\\\\\"\\/",
    "literals": [null, true, false]
  }`
  t.equal(canonicalBytes(JSON.parse(input)).toString('utf8'),
    '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
    '§3.2.2 example')

  // RFC 8785 §3.2.3: properties sorted by UTF-16 code units, not by code points or UTF-8 bytes.
  const sorting = {
    '\u20ac': 'Euro Sign', '\r': 'Carriage Return', '\ufb33': 'Hebrew Letter Dalet With Dagesh', '1': 'One',
    '\ud83d\ude00': 'Emoji: Grinning Face', '\u0080': 'Control', '\u00f6': 'Latin Small Letter O With Diaeresis',
  }
  const sorted = canonicalBytes(sorting).toString('utf8')
  t.equal(sorted, '{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis",'
    + '"\u20ac":"Euro Sign","\ud83d\ude00":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}', '§3.2.3 sorting example')

  // RFC 8785 Appendix B: IEEE 754 → JSON number text.
  const numbers: [string, string][] = [
    ['0000000000000000', '0'], ['8000000000000000', '0'], ['0000000000000001', '5e-324'], ['8000000000000001', '-5e-324'],
    ['7fefffffffffffff', '1.7976931348623157e+308'], ['ffefffffffffffff', '-1.7976931348623157e+308'],
    ['4340000000000000', '9007199254740992'], ['c340000000000000', '-9007199254740992'],
    ['4430000000000000', '295147905179352830000'], ['44b52d02c7e14af5', '9.999999999999997e+22'],
    ['44b52d02c7e14af6', '1e+23'], ['3eb0c6f7a0b5ed8d', '0.000001'], ['3eb0c6f7a0b5ed8c', '9.999999999999997e-7'],
    ['41b3de4355555555', '333333333.3333333'],
  ]
  for (const [hex, want] of numbers) t.equal(canonicalBytes(f64(hex)).toString('utf8'), want, `number ${hex} → ${want}`)

  // Control characters use the short escapes where JSON has them, else lowercase \u00xx; nothing else is escaped.
  t.equal(canonicalBytes({ s: '\b\f\n\r\t\u0001\u001f\u007f/é' }).toString('utf8'), '{"s":"\\b\\f\\n\\r\\t\\u0001\\u001f\u007f/é"}')
  t.equal(canonicalBytes({ b: [{ z: 1, a: 2 }], a: {} }).toString('utf8'), '{"a":{},"b":[{"a":2,"z":1}]}', 'nested objects sorted, arrays kept in order')
  t.same([...canonicalBytes('建设项目')], [...Buffer.from('"建设项目"', 'utf8')], 'UTF-8 bytes')
  t.throws(() => canonicalBytes(undefined), TypeError)
})

function envelope(over: Partial<UnsignedEnvelope> = {}): UnsignedEnvelope {
  return {
    seq: 7, id: '0b6f6a3e-2f2c-4a55-9f0a-7c3a1d2e9b10', system: 'sys-0a1b2c3d4e', systemName: '建设项目', user: 'admin',
    level: 1, quantity: 10, url: '10.194.5.72', ts: 1_733_300_000_000, center: 'sc-province', ...over,
  }
}

t.test('crypto: an envelope verifies, with tweetnacl too, and fails when any field changes', async (t) => {
  const seed = randomBytes(32)
  const kp = keyPairFromSeed(seed)
  const env = signEnvelope(envelope(), kp)
  t.ok(verifyEnvelope(env, kp.publicKeyObject), 'verifies')
  const { sig, ...rest } = env
  t.ok(nacl.sign.detached.verify(new Uint8Array(canonicalBytes(rest)), Buffer.from(sig, 'base64'), nacl.sign.keyPair.fromSeed(seed).publicKey),
    'tweetnacl verifies it over the JCS bytes')
  const shuffled = Object.fromEntries(Object.entries(env).reverse()) as unknown as Envelope
  t.ok(verifyEnvelope(shuffled, kp.publicKeyObject), 'key order in the received object does not matter')

  const changes: Record<string, unknown[]> = {
    seq: [8, '7'], id: ['0b6f6a3e-2f2c-4a55-9f0a-7c3a1d2e9b11'], system: ['sys-0a1b2c3d4f'], systemName: ['建设项', '建设项目 '],
    user: ['admin2', 'Admin'], level: [2, '1'], quantity: [11, 0, '10'], url: ['10.194.5.73'], ts: [1_733_300_000_001],
    center: ['sc-city'],
  }
  for (const k of ENVELOPE_KEYS) {
    if (k === 'sig') continue
    t.ok(changes[k], `a change is listed for ${k}`)
    for (const v of changes[k] ?? []) {
      t.equal(verifyEnvelope({ ...env, [k]: v } as Envelope, kp.publicKeyObject), false, `${k} → ${JSON.stringify(v)} fails`)
    }
  }
  t.equal(verifyEnvelope({ ...env, extra: 1 } as unknown as Envelope, kp.publicKeyObject), false, 'an added field fails')
  const sigBytes = Buffer.from(env.sig, 'base64')
  sigBytes[10] = sigBytes[10]! ^ 1
  t.equal(verifyEnvelope({ ...env, sig: sigBytes.toString('base64') }, kp.publicKeyObject), false, 'a flipped signature bit fails')
  t.equal(verifyEnvelope(env, keyPairFromSeed(randomBytes(32)).publicKeyObject), false, 'another center key fails')
})
