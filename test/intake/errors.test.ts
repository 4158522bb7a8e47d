/**
 * Every error the push intake answers with (DESIGN §3.3): the stable `code`, the HTTP status from
 * shared/errors.ts, the `field` for E_FIELD, and — since a rejected request changes nothing — the stored
 * messages and state exactly as they were before.
 */
import t, { type Test } from 'tap'
import { request } from 'node:http'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { ERRORS, type ErrorCode } from '../../shared/errors.js'
import { Registry } from '../../inner/registry.js'
import { addSystem, makeKeys, push, record, startInner, type PushResult, type RunningInner } from '../helpers/daemons.js'

const PATH = '/websocket/todo/api/message'

/** Everything a push could have changed: messages, state, and the in-memory high-water mark. */
function dump(inner: RunningInner): string {
  const db = inner.daemon.store.db
  return JSON.stringify({
    lastSeq: inner.daemon.store.lastSeq,
    messages: db.prepare('SELECT * FROM messages ORDER BY seq').all(),
    state: db.prepare('SELECT * FROM state ORDER BY system_id, user').all(),
  })
}

/** Runs a request that must be refused with `code`, and checks nothing changed. */
async function refused(t: Test, inner: RunningInner, code: ErrorCode, send: () => Promise<PushResult>, what: string, field?: string): Promise<PushResult> {
  const before = dump(inner)
  const r = await send()
  t.equal(r.status, ERRORS[code].status, `${what}: HTTP ${ERRORS[code].status}`)
  t.equal(r.body.code, code, `${what}: ${code}`)
  t.type(r.body.msg, 'string', `${what}: msg`)
  if (field !== undefined) t.equal(r.body.field, field, `${what}: names the field ${field}`)
  t.equal(dump(inner), before, `${what}: nothing stored`)
  return r
}

/** A raw request with exact method, path, headers and body. */
function raw(url: string, opts: { method?: string; path?: string; headers?: Record<string, string | number>; body?: string | Buffer; chunks?: Buffer[] }): Promise<PushResult & { headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${opts.path ?? PATH}`, { method: opts.method ?? 'POST', headers: opts.headers ?? {} }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as PushResult['body'] }))
    })
    req.on('error', reject)
    if (opts.chunks) {
      for (const c of opts.chunks) req.write(c)
      req.end()
    } else req.end(opts.body)
  })
}

const FORM = 'application/x-www-form-urlencoded; charset=UTF-8'
const form = (message: string): string => new URLSearchParams({ message }).toString()

t.test('intake errors', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const inner = await startInner(t, dir, keys, undefined, { storage: { busyTimeoutMs: 50 } })
  const sys = await addSystem(inner)
  const url = inner.intakeUrl
  // Some state to protect: every rejection below must leave it byte for byte.
  t.equal((await push(url, [record(sys.code, 'admin', 3), record(sys.code, 'lisi', 4)])).status, 200)

  t.test('E_BAD_JSON: the message is not JSON', async (t) => {
    await refused(t, inner, 'E_BAD_JSON', () => push(url, '{"LEVEL":1,'), 'truncated JSON in the form field')
    await refused(t, inner, 'E_BAD_JSON', () => push(url, "{'LEVEL':1}"), 'single quotes')
    await refused(t, inner, 'E_BAD_JSON', () => push(url, 'not json', 'json'), 'a JSON body that is not JSON')
    await refused(t, inner, 'E_BAD_JSON', () => push(url, '', 'json'), 'an empty JSON body')
    await refused(t, inner, 'E_BAD_JSON', () => push(url, '   '), 'a blank message field')
  })

  t.test('E_ENCODING: bytes that are not UTF-8 are refused, not stored as mojibake', async (t) => {
    // 建设项目 in GBK, as a Java client configured with the platform charset would send it.
    const gbk = Buffer.from([0xbd, 0xa8, 0xc9, 0xe8, 0xcf, 0xee, 0xc4, 0xbf])
    const pct = [...gbk].map((b) => `%${b.toString(16).toUpperCase()}`).join('')
    const json = JSON.stringify(record(sys.code, 'x', 1, { BUSSINESSNAME: '@@' }))
    const formBody = `message=${encodeURIComponent(json).replace('%40%40', pct)}`
    await refused(t, inner, 'E_ENCODING', () => raw(url, { headers: { 'content-type': FORM }, body: formBody }), 'percent-encoded GBK in a form')
    const [a, b] = json.split('@@') as [string, string]
    await refused(t, inner, 'E_ENCODING', () => raw(url, {
      headers: { 'content-type': 'application/json; charset=utf-8' }, body: Buffer.concat([Buffer.from(a), gbk, Buffer.from(b)]),
    }), 'raw GBK bytes in a JSON body')
  })

  t.test('E_FIELD: a bad field is named in `field`', async (t) => {
    const { LOGINNAME: _u, ...noUser } = record(sys.code, 'x', 1)
    const { QUANTITY: _q, ...noQuantity } = record(sys.code, 'x', 1)
    const { BUSSINESS: _b, ...noCode } = record(sys.code, 'x', 1)
    const cases: [string, unknown, string][] = [
      ['QUANTITY negative', record(sys.code, 'x', -1), 'QUANTITY'],
      ['QUANTITY fractional', record(sys.code, 'x', 1.5), 'QUANTITY'],
      ['QUANTITY not a number', record(sys.code, 'x', 'ten'), 'QUANTITY'],
      ['QUANTITY beyond 1,000,000,000', record(sys.code, 'x', 1_000_000_001), 'QUANTITY'],
      ['QUANTITY missing', noQuantity, 'QUANTITY'],
      ['QUANTITY empty', record(sys.code, 'x', ''), 'QUANTITY'],
      ['LOGINNAME missing', noUser, 'LOGINNAME'],
      ['LOGINNAME empty', record(sys.code, '', 1), 'LOGINNAME'],
      ['LOGINNAME longer than 128', record(sys.code, 'u'.repeat(129), 1), 'LOGINNAME'],
      ['LOGINNAME with a control character', record(sys.code, 'ad\nmin', 1), 'LOGINNAME'],
      ['LOGINNAME an object', record(sys.code, 'x', 1, { LOGINNAME: { a: 1 } }), 'LOGINNAME'],
      ['LEVEL 4', record(sys.code, 'x', 1, { LEVEL: 4 }), 'LEVEL'],
      ['LEVEL 0', record(sys.code, 'x', 1, { LEVEL: '0' }), 'LEVEL'],
      ['URL longer than 2048', record(sys.code, 'x', 1, { URL: `http://h/${'p'.repeat(2048)}` }), 'URL'],
      ['BUSSINESSNAME longer than 256', record(sys.code, 'x', 1, { BUSSINESSNAME: '名'.repeat(257) }), 'BUSSINESSNAME'],
      ['BUSSINESS missing', noCode, 'BUSSINESS'],
      ['a record that is not an object', 'just a string', 'message'],
      ['a record that is null', null, 'message'],
    ]
    for (const [what, msg, field] of cases) {
      await refused(t, inner, 'E_FIELD', () => push(url, JSON.stringify(msg)), what, field)
    }
    await refused(t, inner, 'E_FIELD', () => push(url, JSON.stringify(record(sys.code, 'x', -1)), 'json'), 'the same in a JSON body', 'QUANTITY')
    await refused(t, inner, 'E_FIELD', () => push(url, [record(sys.code, 'a', 1), record(sys.code, 'b', 'x')]), 'batch: second record', '[1].QUANTITY')
    await refused(t, inner, 'E_FIELD', () => push(url, [record(sys.code, '', 1)], 'json'), 'batch: first record', '[0].LOGINNAME')
    await refused(t, inner, 'E_FIELD', () => raw(url, { headers: { 'content-type': FORM }, body: 'msg=%7B%7D' }), 'no message field', 'message')
    await refused(t, inner, 'E_FIELD', () => raw(url, { headers: { 'content-type': FORM }, body: `${form('{}')}&${form('{}')}` }), 'message field twice', 'message')
  })

  t.test('E_EMPTY_BATCH: an empty array', async (t) => {
    await refused(t, inner, 'E_EMPTY_BATCH', () => push(url, []), 'form')
    await refused(t, inner, 'E_EMPTY_BATCH', () => push(url, [], 'json'), 'json')
  })

  t.test('E_BATCH_TOO_LARGE: more than 1000 records', async (t) => {
    const big = Array.from({ length: 1001 }, (_, i) => record(sys.code, `u${i}`, 1))
    await refused(t, inner, 'E_BATCH_TOO_LARGE', () => push(url, big, 'json'), '1001 records')
    const max = Array.from({ length: 1000 }, (_, i) => record(sys.code, `max-${i}`, 1))
    const ok = await push(url, max, 'json')
    t.equal(ok.status, 200, '1000 records are fine')
    t.equal((ok.body.data as unknown[]).length, 1000)
  })

  t.test('E_TOO_DEEP: nesting beyond the limit', async (t) => {
    await refused(t, inner, 'E_TOO_DEEP', () => push(url, `${'['.repeat(40)}${']'.repeat(40)}`, 'json'), 'nested arrays')
    let deep: unknown = 1
    for (let i = 0; i < 20; i++) deep = { a: deep }
    await refused(t, inner, 'E_TOO_DEEP', () => push(url, record(sys.code, 'x', 1, { EXTRA: deep })), 'a deep value inside a record')
    await refused(t, inner, 'E_TOO_DEEP', () => push(url, '['.repeat(100_000), 'json'), 'a hostile bracket flood')
  })

  t.test('E_AUTH_CODE: an unknown auth code', async (t) => {
    await refused(t, inner, 'E_AUTH_CODE', () => push(url, record('ae2302c72f854278b4ef3f9cbfe8bd64', 'x', 1)), 'unregistered code')
    await refused(t, inner, 'E_AUTH_CODE', () => push(url, record(sys.code.toUpperCase(), 'x', 1)), 'the code in upper case')
    await refused(t, inner, 'E_AUTH_CODE', () => push(url, record('f'.repeat(65), 'x', 1)), 'an overlong code')
  })

  t.test('E_IP_DENIED: a source address outside the system\'s whitelist', async (t) => {
    const fenced = await addSystem(inner, { allowIps: ['10.0.0.0/8'] })
    await refused(t, inner, 'E_IP_DENIED', () => push(url, record(fenced.code, 'x', 1)), 'from 127.0.0.1')
    const open = await addSystem(inner, { allowIps: ['10.0.0.0/8', '127.0.0.0/8'] })
    t.equal((await push(url, record(open.code, 'ip-ok', 1))).status, 200, 'allowed when 127.0.0.0/8 is listed')
  })

  t.test('E_SYSTEM_DISABLED: a disabled system, until it is enabled again', async (t) => {
    const s = await addSystem(inner)
    t.equal((await push(url, record(s.code, 'dis', 1))).status, 200)
    new Registry(inner.daemon.store.db).setEnabled(s.id, false)
    inner.daemon.registry.reload()
    await refused(t, inner, 'E_SYSTEM_DISABLED', () => push(url, record(s.code, 'dis', 2)), 'disabled')
    await refused(t, inner, 'E_SYSTEM_DISABLED', () => push(url, [record(sys.code, 'a', 9), record(s.code, 'dis', 2)]), 'a batch with one record of a disabled system')
    new Registry(inner.daemon.store.db).setEnabled(s.id, true)
    inner.daemon.registry.reload()
    t.equal((await push(url, record(s.code, 'dis', 2))).status, 200, 'enabled again')
  })

  t.test('E_NOT_FOUND: any other path', async (t) => {
    await refused(t, inner, 'E_NOT_FOUND', () => raw(url, { path: '/websocket/todo/api/messages', headers: { 'content-type': FORM }, body: form(JSON.stringify(record(sys.code, 'x', 1))) }), 'a near miss')
    await refused(t, inner, 'E_NOT_FOUND', () => raw(url, { method: 'GET', path: '/' }), 'GET /')
  })

  t.test('E_METHOD: anything but POST on the push path', async (t) => {
    for (const method of ['GET', 'PUT', 'DELETE']) {
      const r = await refused(t, inner, 'E_METHOD', () => raw(url, { method }), method)
      t.equal((r as PushResult & { headers: Record<string, unknown> }).headers.allow, 'POST', `${method}: Allow: POST`)
    }
  })

  t.test('E_CONTENT_TYPE: neither a form nor JSON, or not UTF-8', async (t) => {
    const body = form(JSON.stringify(record(sys.code, 'x', 1)))
    await refused(t, inner, 'E_CONTENT_TYPE', () => raw(url, { headers: { 'content-type': 'text/plain' }, body }), 'text/plain')
    await refused(t, inner, 'E_CONTENT_TYPE', () => raw(url, { body }), 'no content type')
    await refused(t, inner, 'E_CONTENT_TYPE', () => raw(url, { headers: { 'content-type': 'multipart/form-data; boundary=x' }, body }), 'multipart')
    await refused(t, inner, 'E_CONTENT_TYPE', () => raw(url, { headers: { 'content-type': 'application/x-www-form-urlencoded; charset=GBK' }, body }), 'charset GBK')
  })

  t.test('E_RATE: a system over its rate limit', async (t) => {
    const slow = await addSystem(inner, { rateLimit: 1 })
    const r = await refused(t, inner, 'E_RATE', () => raw(url, {
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(Array.from({ length: 5 }, (_, i) => record(slow.code, `r${i}`, 1))),
    }), 'a batch of 5 at 1 per second')
    t.ok((r as PushResult & { headers: Record<string, unknown> }).headers['retry-after'], 'Retry-After is set')
    t.equal((await push(url, record(sys.code, 'other-system', 1))).status, 200, 'other systems are unaffected')
    t.equal((await push(url, record(slow.code, 'r0', 1))).status, 200, 'a single record fits the bucket')
  })

  t.test('E_STORAGE: the database is locked; nothing stored, and the next push succeeds', async (t) => {
    const db = new Database(join(inner.config.dataDir, 'inner.sqlite'))
    t.teardown(() => { if (db.inTransaction) db.prepare('ROLLBACK').run(); db.close() })
    const lastSeq = inner.daemon.store.lastSeq
    db.prepare('BEGIN EXCLUSIVE').run()
    await refused(t, inner, 'E_STORAGE', () => push(url, record(sys.code, 'locked', 1)), 'while another connection holds the write lock')
    await refused(t, inner, 'E_STORAGE', () => push(url, [record(sys.code, 'locked-a', 1), record(sys.code, 'locked-b', 1)]), 'a batch too')
    db.prepare('ROLLBACK').run()
    const ok = await push(url, record(sys.code, 'locked', 1))
    t.equal(ok.status, 200, 'accepted once the lock is gone')
    t.equal((ok.body.data as { seq: number }).seq, lastSeq + 1, 'no seq was lost to the failed commits')
  })

  t.test('E_TOO_LARGE: a body beyond intake.maxBodyBytes', async (t) => {
    const d2 = t.testdir()
    const small = await startInner(t, d2, makeKeys(d2), undefined, { intake: { maxBodyBytes: 1024 } })
    const s2 = await addSystem(small)
    const big = record(s2.code, 'x', 1, { URL: `http://h/${'p'.repeat(1500)}` })
    await refused(t, small, 'E_TOO_LARGE', () => push(small.intakeUrl, big), 'declared Content-Length too large')
    await refused(t, small, 'E_TOO_LARGE', () => raw(small.intakeUrl, {
      headers: { 'content-type': 'application/json', 'transfer-encoding': 'chunked' },
      chunks: [Buffer.from(JSON.stringify(big).slice(0, 800)), Buffer.from(JSON.stringify(big).slice(800))],
    }), 'chunked, no length')
    t.equal((await push(small.intakeUrl, record(s2.code, 'x', 1))).status, 200, 'a small body passes')
  })
})
