/**
 * Frame validators (shared/protocol.ts) as tables: each bad input is refused with a reason string, each
 * good one comes back typed. Parse, don't cast: whatever JSON.parse can produce must be survivable.
 */
import t, { type Test } from 'tap'
import {
  validateClientFrame, validateEnvelope, validateHandshake, validateInnerToOuter, validateOuterToInner, MAX_BATCH_ITEMS,
  type Envelope,
} from '../../shared/protocol.js'

const KEY = 'A'.repeat(43) + '='
const NONCE = 'B'.repeat(43) + '='
const SIG = 'C'.repeat(86) + '=='

function env(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    seq: 1, id: 'm-1', system: 'sys-1', systemName: '建设项目', user: 'admin', level: 1, quantity: 10,
    url: '10.194.5.72', ts: 1_733_300_000_000, center: 'c', sig: SIG, ...over,
  }
}
const without = (o: Record<string, unknown>, k: string): Record<string, unknown> => {
  const c = { ...o }
  delete c[k]
  return c
}
const envs = (from: number, n: number): Record<string, unknown>[] => Array.from({ length: n }, (_, i) => env({ seq: from + i }))

type Validator = (x: unknown) => unknown
interface Row { what: string; input: unknown }

function bad(t: Test, name: string, validate: Validator, rows: Row[]): void {
  t.test(`${name} refuses bad input`, async (t) => {
    for (const r of rows) {
      let out: unknown
      try {
        out = validate(r.input)
      } catch (e) {
        t.fail(`${r.what}: threw ${String(e)}`)
        continue
      }
      t.type(out, 'string', r.what)
    }
  })
}

function good(t: Test, name: string, validate: Validator, rows: Row[]): void {
  t.test(`${name} accepts good input`, async (t) => {
    for (const r of rows) {
      const out = validate(r.input)
      t.not(typeof out, 'string', `${r.what}${typeof out === 'string' ? `: ${out}` : ''}`)
    }
  })
}

const NOT_OBJECTS: Row[] = [
  { what: 'null', input: null }, { what: 'undefined', input: undefined }, { what: 'number', input: 1 },
  { what: 'string', input: '{}' }, { what: 'array', input: [] }, { what: 'true', input: true },
]

bad(t, 'validateEnvelope', validateEnvelope, [
  ...NOT_OBJECTS,
  { what: 'unknown key', input: env({ extra: 1 }) },
  { what: 'the auth code smuggled in', input: env({ BUSSINESS: 'ae2302c72f854278b4ef3f9cbfe8bd64' }) },
  ...['seq', 'id', 'system', 'systemName', 'user', 'level', 'quantity', 'url', 'ts', 'center', 'sig']
    .map((k) => ({ what: `missing ${k}`, input: without(env(), k) })),
  { what: 'seq 0', input: env({ seq: 0 }) },
  { what: 'seq negative', input: env({ seq: -1 }) },
  { what: 'seq fractional', input: env({ seq: 1.5 }) },
  { what: 'seq as string', input: env({ seq: '1' }) },
  { what: 'seq beyond safe integers', input: env({ seq: 2 ** 53 }) },
  { what: 'empty id', input: env({ id: '' }) },
  { what: 'id too long', input: env({ id: 'x'.repeat(65) }) },
  { what: 'empty system', input: env({ system: '' }) },
  { what: 'systemName not a string', input: env({ systemName: 5 }) },
  { what: 'systemName too long', input: env({ systemName: 'x'.repeat(257) }) },
  { what: 'empty user', input: env({ user: '' }) },
  { what: 'user too long', input: env({ user: 'u'.repeat(129) }) },
  { what: 'level 0', input: env({ level: 0 }) },
  { what: 'level 4', input: env({ level: 4 }) },
  { what: 'level as string', input: env({ level: '1' }) },
  { what: 'quantity negative', input: env({ quantity: -1 }) },
  { what: 'quantity above the limit', input: env({ quantity: 1_000_000_001 }) },
  { what: 'quantity NaN-ish', input: env({ quantity: null }) },
  { what: 'url too long', input: env({ url: 'u'.repeat(2049) }) },
  { what: 'ts negative', input: env({ ts: -5 }) },
  { what: 'empty center', input: env({ center: '' }) },
  { what: 'sig too short', input: env({ sig: SIG.slice(1) }) },
  { what: 'sig too long', input: env({ sig: SIG + 'A' }) },
  { what: 'sig not a string', input: env({ sig: 1 }) },
])

good(t, 'validateEnvelope', validateEnvelope, [
  { what: 'a full envelope', input: env() },
  { what: 'quantity 0 (cleared)', input: env({ quantity: 0 }) },
  { what: 'empty url and systemName', input: env({ url: '', systemName: '' }) },
  { what: 'level 3, max quantity', input: env({ level: 3, quantity: 1_000_000_000 }) },
])

const hello = { t: 'hello', v: 1, key: KEY, nonce: NONCE }
const auth = { t: 'auth', v: 1, key: KEY, nonce: NONCE, center: 'c', epoch: 'e', sig: SIG }
const welcome = { t: 'welcome', v: 1, sig: SIG, epoch: 'e', hw: 5 }

bad(t, 'validateHandshake', validateHandshake, [
  ...NOT_OBJECTS,
  { what: 'no t', input: { v: 1 } },
  { what: 'unknown t', input: { t: 'hi', v: 1 } },
  { what: 'a sealed frame', input: { s: SIG, b: '{}' } },
  { what: 'hello v 0', input: { ...hello, v: 0 } },
  { what: 'hello v string', input: { ...hello, v: '1' } },
  { what: 'hello key short', input: { ...hello, key: KEY.slice(1) } },
  { what: 'hello key long', input: { ...hello, key: KEY + 'A' } },
  { what: 'hello nonce missing', input: without(hello, 'nonce') },
  { what: 'hello nonce number', input: { ...hello, nonce: 5 } },
  { what: 'auth key missing', input: without(auth, 'key') },
  { what: 'auth nonce short', input: { ...auth, nonce: 'abc' } },
  { what: 'auth center empty', input: { ...auth, center: '' } },
  { what: 'auth center too long', input: { ...auth, center: 'c'.repeat(65) } },
  { what: 'auth epoch missing', input: without(auth, 'epoch') },
  { what: 'auth sig number', input: { ...auth, sig: 1 } },
  { what: 'auth sig too long', input: { ...auth, sig: SIG + 'AAAA' } },
  { what: 'welcome sig missing', input: without(welcome, 'sig') },
  { what: 'welcome epoch empty', input: { ...welcome, epoch: '' } },
  { what: 'welcome hw negative', input: { ...welcome, hw: -1 } },
  { what: 'welcome hw string', input: { ...welcome, hw: '5' } },
  { what: 'error without msg', input: { t: 'error', code: 'X' } },
  { what: 'error with a huge msg', input: { t: 'error', code: 'X', msg: 'm'.repeat(1025) } },
])

good(t, 'validateHandshake', validateHandshake, [
  { what: 'hello', input: hello },
  { what: 'auth', input: auth },
  { what: 'welcome', input: welcome },
  { what: 'welcome to a fresh replica (null epoch and hw)', input: { ...welcome, epoch: null, hw: null } },
  { what: 'welcome hw 0', input: { ...welcome, hw: 0 } },
  { what: 'error', input: { t: 'error', code: 'ERR_LINK_UNKNOWN_KEY', msg: 'no' } },
])

const batch = { t: 'batch', n: 1, epoch: 'e', items: envs(1, 3) }
const resync = { t: 'resync', n: 1, epoch: 'e', first: true, done: true, hw: 3, items: envs(1, 3) }

bad(t, 'validateInnerToOuter', validateInnerToOuter, [
  ...NOT_OBJECTS,
  { what: 'n missing', input: without(batch, 'n') },
  { what: 'n 0', input: { ...batch, n: 0 } },
  { what: 'n string', input: { ...batch, n: '1' } },
  { what: 'unknown t', input: { t: 'ack', n: 1, epoch: 'e', seq: 1 } },
  { what: 'batch without epoch', input: without(batch, 'epoch') },
  { what: 'batch items not an array', input: { ...batch, items: {} } },
  { what: 'batch empty', input: { ...batch, items: [] } },
  { what: 'batch with a bad envelope', input: { ...batch, items: [env(), env({ seq: 2, level: 9 })] } },
  { what: 'batch with an extra field in an envelope', input: { ...batch, items: [env({ extra: true })] } },
  { what: 'batch with a seq gap', input: { ...batch, items: [env({ seq: 1 }), env({ seq: 3 })] } },
  { what: 'batch out of order', input: { ...batch, items: [env({ seq: 2 }), env({ seq: 1 })] } },
  { what: 'batch with a repeated seq', input: { ...batch, items: [env({ seq: 1 }), env({ seq: 1 })] } },
  { what: 'batch too large', input: { ...batch, items: envs(1, MAX_BATCH_ITEMS + 1) } },
  { what: 'resync first not boolean', input: { ...resync, first: 1 } },
  { what: 'resync done missing', input: without(resync, 'done') },
  { what: 'resync hw negative', input: { ...resync, hw: -1 } },
  { what: 'resync bad item', input: { ...resync, items: [env({ quantity: -1 })] } },
  { what: 'action-status unknown status', input: { t: 'action-status', n: 1, id: 'a', status: 'done' } },
  { what: 'action-status without id', input: { t: 'action-status', n: 1, status: 'queued' } },
  { what: 'action-status error not a string', input: { t: 'action-status', n: 1, id: 'a', status: 'failed', error: {} } },
  { what: 'receipts-ack rid negative', input: { t: 'receipts-ack', n: 1, rid: -1 } },
])

good(t, 'validateInnerToOuter', validateInnerToOuter, [
  { what: 'batch', input: batch },
  { what: 'batch of one', input: { ...batch, items: [env({ seq: 42 })] } },
  { what: 'batch of the maximum size', input: { ...batch, items: envs(1, MAX_BATCH_ITEMS) } },
  { what: 'resync', input: resync },
  { what: 'resync chunk with no items (empty center)', input: { ...resync, items: [], hw: 0 } },
  { what: 'resync with non-contiguous latest items', input: { ...resync, items: [env({ seq: 2 }), env({ seq: 9 })] } },
  { what: 'action-status', input: { t: 'action-status', n: 3, id: 'a', status: 'failed', error: 'callback 500' } },
  { what: 'receipts-ack', input: { t: 'receipts-ack', n: 2, rid: 0 } },
])

const action = { id: 'a1', system: 'sys-1', user: 'admin', type: 'read', ts: 1, token: 'x.y.z' }

bad(t, 'validateOuterToInner', validateOuterToInner, [
  ...NOT_OBJECTS,
  { what: 'n missing', input: { t: 'ack', epoch: 'e', seq: 1 } },
  { what: 'unknown t', input: { t: 'batch', n: 1, epoch: 'e', items: envs(1, 1) } },
  { what: 'ack without epoch', input: { t: 'ack', n: 1, seq: 1 } },
  { what: 'ack seq negative', input: { t: 'ack', n: 1, epoch: 'e', seq: -1 } },
  { what: 'ack seq fractional', input: { t: 'ack', n: 1, epoch: 'e', seq: 1.5 } },
  { what: 'receipts rid 0', input: { t: 'receipts', n: 1, rid: 0, items: [] } },
  { what: 'receipts items not an array', input: { t: 'receipts', n: 1, rid: 1, items: 'x' } },
  { what: 'receipt of an unknown kind', input: { t: 'receipts', n: 1, rid: 1, items: [{ seq: 1, user: 'u', kind: 'seen', ts: 1 }] } },
  { what: 'receipt without user', input: { t: 'receipts', n: 1, rid: 1, items: [{ seq: 1, kind: 'read', ts: 1 }] } },
  { what: 'receipt seq 0', input: { t: 'receipts', n: 1, rid: 1, items: [{ seq: 0, user: 'u', kind: 'read', ts: 1 }] } },
  { what: 'too many receipts', input: { t: 'receipts', n: 1, rid: 1, items: Array.from({ length: 10_001 }, () => ({ seq: 1, user: 'u', kind: 'read', ts: 1 })) } },
  { what: 'action missing', input: { t: 'action', n: 1 } },
  { what: 'action without token', input: { t: 'action', n: 1, action: without(action, 'token') } },
  { what: 'action type with capitals', input: { t: 'action', n: 1, action: { ...action, type: 'Read' } } },
  { what: 'action type too long', input: { t: 'action', n: 1, action: { ...action, type: 'r'.repeat(33) } } },
  { what: 'action ref not a string', input: { t: 'action', n: 1, action: { ...action, ref: 5 } } },
  { what: 'action payload too large', input: { t: 'action', n: 1, action: { ...action, payload: 'p'.repeat(17 * 1024) } } },
])

good(t, 'validateOuterToInner', validateOuterToInner, [
  { what: 'ack', input: { t: 'ack', n: 1, epoch: 'e', seq: 0 } },
  { what: 'receipts', input: { t: 'receipts', n: 2, rid: 1, items: [{ seq: 1, user: 'u', kind: 'delivered', ts: 1 }, { seq: 1, user: 'u', kind: 'read', ts: 2 }] } },
  { what: 'action', input: { t: 'action', n: 3, action } },
  { what: 'action with ref and payload', input: { t: 'action', n: 3, action: { ...action, ref: 'r-1', payload: { note: '已办' } } } },
])

bad(t, 'validateClientFrame', validateClientFrame, [
  ...NOT_OBJECTS,
  { what: 'no t', input: { seq: 1 } },
  { what: 'unknown t', input: { t: 'update', item: env() } },
  { what: 'ack without seq', input: { t: 'ack' } },
  { what: 'ack seq 0', input: { t: 'ack', seq: 0 } },
  { what: 'ack seq string', input: { t: 'ack', seq: '1' } },
  { what: 'read seq fractional', input: { t: 'read', seq: 1.5 } },
  { what: 'read seq negative', input: { t: 'read', seq: -3 } },
  { what: 'action without system', input: { t: 'action', type: 'read' } },
  { what: 'action empty system', input: { t: 'action', system: '', type: 'read' } },
  { what: 'action without type', input: { t: 'action', system: 's' } },
  { what: 'action type with spaces', input: { t: 'action', system: 's', type: 'do it' } },
  { what: 'action ref too long', input: { t: 'action', system: 's', type: 'read', ref: 'r'.repeat(257) } },
  { what: 'action payload too large', input: { t: 'action', system: 's', type: 'read', payload: { x: 'p'.repeat(17 * 1024) } } },
])

good(t, 'validateClientFrame', validateClientFrame, [
  { what: 'ack', input: { t: 'ack', seq: 1 } },
  { what: 'read', input: { t: 'read', seq: 99 } },
  { what: 'ping', input: { t: 'ping' } },
  { what: 'action', input: { t: 'action', system: 'sys-1', type: 'handle', ref: 'r', payload: [1, 2] } },
])

t.test('validateClientFrame keeps only the known fields of an action', async (t) => {
  const out = validateClientFrame({ t: 'action', system: 'sys-1', type: 'read', user: 'someone-else', token: 'x' })
  t.same(out, { t: 'action', system: 'sys-1', type: 'read' }, 'a client cannot name another user or smuggle a token')
})

t.test('validateEnvelope returns the same object for a good envelope', async (t) => {
  const e = env()
  const out = validateEnvelope(e) as Envelope
  t.equal(out as unknown, e)
})
