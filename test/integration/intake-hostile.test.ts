/**
 * The push endpoint under hostile input (DESIGN §3.3): a table of bad pushes — malformed JSON, wrong
 * types, out-of-range values, huge and deeply nested bodies, bad content types and encodings, wrong
 * methods and paths, unknown, disabled and rotated-out codes, a disallowed address, a rate limit — each
 * answered with its status and stable code, each logged (never with the auth code in clear) and counted,
 * and the stored state byte-for-byte unchanged. Then the positive side: Unicode kept exactly, batches,
 * IPv4/IPv6 whitelists, and a rate limit that leaves other systems alone.
 */
import t from 'tap'
import { Registry, buildAllowList, isAllowed } from '../../inner/registry.js'
import type { DB } from '../../shared/sqlite.js'
import { addSystem, makeKeys, push, record, startInner, token, waitFor, type RunningInner } from '../helpers/daemons.js'

const PATH = '/websocket/todo/api/message'
const FORM = 'application/x-www-form-urlencoded; charset=UTF-8'

interface Req { method?: string; path?: string; contentType?: string | null; body?: string | Uint8Array | ReadableStream<Uint8Array> }
interface Reply { status: number; body: { code?: unknown; field?: string; msg?: string; data?: unknown }; headers: Headers }

async function send(url: string, r: Req): Promise<Reply> {
  const headers: Record<string, string> = {}
  if (r.contentType !== null) headers['content-type'] = r.contentType ?? FORM
  const body = r.body === undefined ? undefined : typeof r.body === 'string' ? new TextEncoder().encode(r.body) : r.body
  const res = await fetch(`${url}${r.path ?? PATH}`, {
    method: r.method ?? 'POST', headers, ...(body !== undefined ? { body, duplex: 'half' } : {}),
  } as RequestInit)
  const text = await res.text()
  return { status: res.status, body: text ? JSON.parse(text) as Reply['body'] : {}, headers: res.headers }
}

const form = (message: string): Req => ({ body: `message=${encodeURIComponent(message)}` })
const json = (text: string): Req => ({ contentType: 'application/json', body: text })

/** Every table that holds todo state, as text: equal text means byte-for-byte equal state. */
function snapshot(db: DB): string {
  return ['messages', 'state', 'systems', 'auth_codes', 'users', 'meta']
    .map((tb) => JSON.stringify(db.prepare(`SELECT * FROM ${tb} ORDER BY 1, 2`).raw().all())).join('\n')
}

function streamOf(bytes: number): ReadableStream<Uint8Array> {
  let sent = 0
  return new ReadableStream({
    pull(c) {
      if (sent >= bytes) return c.close()
      const n = Math.min(64 * 1024, bytes - sent)
      sent += n
      c.enqueue(new Uint8Array(n).fill(0x61))
    },
  })
}

t.test('intake: a table of bad pushes — right status and code, logged and counted, state unchanged', async (t) => {
  const dir = t.testdir()
  const inner = await startInner(t, dir, makeKeys(dir), undefined)
  const good = await addSystem(inner, { name: '建设项目' })
  const disabled = await addSystem(inner)
  const rotated = await addSystem(inner)
  const ipOnly = await addSystem(inner, { allowIps: ['10.0.0.0/8', 'fd00::/8'] })
  const slow = await addSystem(inner, { rateLimit: 1 })
  const reg = new Registry(inner.daemon.store.db)
  reg.setEnabled(disabled.id, false)
  reg.rotateCode(rotated.id, 0)
  inner.daemon.registry.reload()
  t.equal((await push(inner.intakeUrl, record(good.code, 'admin', 5))).status, 200, 'a good push first, so there is state to protect')

  const rec = (o: Record<string, unknown> = {}): Record<string, unknown> => ({ ...record(good.code, 'admin', 7), ...o })
  const r = (o: Record<string, unknown> = {}): string => JSON.stringify(rec(o))
  const deep = (n: number): string => `${'['.repeat(n)}${']'.repeat(n)}`
  const gbkJson = new Uint8Array([...new TextEncoder().encode(r({ BUSSINESSNAME: 'X' })).slice(0, -3), 0xbd, 0xa8, 0x22, 0x7d])

  const cases: [string, Req, number, string, string?][] = [
    // JSON syntax and shape
    ['form: truncated JSON', form('{"LEVEL":1,'), 400, 'E_BAD_JSON'],
    ['json: truncated JSON', json('{"LEVEL":1,'), 400, 'E_BAD_JSON'],
    ['json: empty body', json(''), 400, 'E_BAD_JSON'],
    ['json: trailing garbage', json(`${r()}x`), 400, 'E_BAD_JSON'],
    ['json: single quotes', json("{'LEVEL':1}"), 400, 'E_BAD_JSON'],
    ['json: NaN literal', json(r().replace('"QUANTITY":7', '"QUANTITY":NaN')), 400, 'E_BAD_JSON'],
    ['form: no message field', { body: `msg=${encodeURIComponent(r())}` }, 400, 'E_FIELD', 'message'],
    ['form: message twice', { body: `message=${encodeURIComponent(r())}&message=${encodeURIComponent(r())}` }, 400, 'E_FIELD', 'message'],
    ['form: empty message', form(''), 400, 'E_BAD_JSON'],
    ['json: null', json('null'), 400, 'E_FIELD', 'message'],
    ['json: a number', json('42'), 400, 'E_FIELD', 'message'],
    ['json: a string', json('"建设项目"'), 400, 'E_FIELD', 'message'],
    ['json: empty batch', json('[]'), 400, 'E_EMPTY_BATCH'],
    ['json: batch of 1001', json(JSON.stringify(Array.from({ length: 1001 }, () => rec()))), 400, 'E_BATCH_TOO_LARGE'],
    ['batch: one bad record spoils all', json(JSON.stringify([rec(), rec({ QUANTITY: -1 })])), 400, 'E_FIELD', '[1].QUANTITY'],
    ['batch: one unknown code spoils all', json(JSON.stringify([rec(), rec({ BUSSINESS: 'f'.repeat(32) })])), 401, 'E_AUTH_CODE'],
    ['batch: nested array', json(JSON.stringify([[rec()]])), 400, 'E_FIELD', '[0].message'],
    // QUANTITY
    ['QUANTITY missing', form(r({ QUANTITY: undefined })), 400, 'E_FIELD', 'QUANTITY'],
    ['QUANTITY negative', form(r({ QUANTITY: -1 })), 400, 'E_FIELD', 'QUANTITY'],
    ['QUANTITY fraction', form(r({ QUANTITY: 1.5 })), 400, 'E_FIELD', 'QUANTITY'],
    ['QUANTITY text', form(r({ QUANTITY: 'abc' })), 400, 'E_FIELD', 'QUANTITY'],
    ['QUANTITY above 1e9', form(r({ QUANTITY: 1_000_000_001 })), 400, 'E_FIELD', 'QUANTITY'],
    ['QUANTITY 1e400', form(r().replace('"QUANTITY":7', '"QUANTITY":1e400')), 400, 'E_FIELD', 'QUANTITY'],
    ['QUANTITY boolean', form(r({ QUANTITY: true })), 400, 'E_FIELD', 'QUANTITY'],
    ['QUANTITY array', form(r({ QUANTITY: [] })), 400, 'E_FIELD', 'QUANTITY'],
    ['QUANTITY "-5"', form(r({ QUANTITY: '-5' })), 400, 'E_FIELD', 'QUANTITY'],
    ['QUANTITY 17 digits', form(r({ QUANTITY: '12345678901234567' })), 400, 'E_FIELD', 'QUANTITY'],
    ['QUANTITY "1 0"', form(r({ QUANTITY: '1 0' })), 400, 'E_FIELD', 'QUANTITY'],
    // LEVEL
    ['LEVEL 0', form(r({ LEVEL: 0 })), 400, 'E_FIELD', 'LEVEL'],
    ['LEVEL 4', form(r({ LEVEL: '4' })), 400, 'E_FIELD', 'LEVEL'],
    ['LEVEL text', form(r({ LEVEL: 'high' })), 400, 'E_FIELD', 'LEVEL'],
    ['LEVEL fraction', form(r({ LEVEL: 1.5 })), 400, 'E_FIELD', 'LEVEL'],
    // LOGINNAME
    ['LOGINNAME missing', form(r({ LOGINNAME: undefined })), 400, 'E_FIELD', 'LOGINNAME'],
    ['LOGINNAME empty', form(r({ LOGINNAME: '' })), 400, 'E_FIELD', 'LOGINNAME'],
    ['LOGINNAME 129 characters', form(r({ LOGINNAME: '张'.repeat(129) })), 400, 'E_FIELD', 'LOGINNAME'],
    ['LOGINNAME NUL', form(r({ LOGINNAME: '\u0000admin' })), 400, 'E_FIELD', 'LOGINNAME'],
    ['LOGINNAME newline', form(r({ LOGINNAME: 'ad\nmin' })), 400, 'E_FIELD', 'LOGINNAME'],
    ['LOGINNAME bidi override', form(r({ LOGINNAME: 'admin\u202e' })), 400, 'E_FIELD', 'LOGINNAME'],
    ['LOGINNAME line separator', form(r({ LOGINNAME: 'a\u2028b' })), 400, 'E_FIELD', 'LOGINNAME'],
    ['LOGINNAME object', form(r({ LOGINNAME: { name: 'admin' } })), 400, 'E_FIELD', 'LOGINNAME'],
    ['LOGINNAME lone surrogate', form(r({ LOGINNAME: 'a\ud800' })), 400, 'E_FIELD', 'LOGINNAME'],
    // URL, BUSSINESSNAME
    ['URL 2049 characters', form(r({ URL: `http://x/${'a'.repeat(2040)}` })), 400, 'E_FIELD', 'URL'],
    ['URL with BEL', form(r({ URL: 'http://x/\u0007' })), 400, 'E_FIELD', 'URL'],
    ['BUSSINESSNAME 257 characters', form(r({ BUSSINESSNAME: '项'.repeat(257) })), 400, 'E_FIELD', 'BUSSINESSNAME'],
    ['BUSSINESSNAME C1 control', form(r({ BUSSINESSNAME: '建设\u0085项目' })), 400, 'E_FIELD', 'BUSSINESSNAME'],
    ['BUSSINESSNAME array', form(r({ BUSSINESSNAME: ['a'] })), 400, 'E_FIELD', 'BUSSINESSNAME'],
    // Auth codes and the whitelist
    ['BUSSINESS missing', form(r({ BUSSINESS: undefined })), 400, 'E_FIELD', 'BUSSINESS'],
    ['BUSSINESS a number', form(r({ BUSSINESS: 12345 })), 400, 'E_FIELD', 'BUSSINESS'],
    ['BUSSINESS unknown', form(r({ BUSSINESS: '0'.repeat(32) })), 401, 'E_AUTH_CODE'],
    ['BUSSINESS huge', form(r({ BUSSINESS: 'a'.repeat(5000) })), 401, 'E_AUTH_CODE'],
    ['BUSSINESS of a disabled system', form(r({ BUSSINESS: disabled.code })), 403, 'E_SYSTEM_DISABLED'],
    ['BUSSINESS rotated out', form(r({ BUSSINESS: rotated.code })), 401, 'E_AUTH_CODE'],
    ['address outside the whitelist', form(r({ BUSSINESS: ipOnly.code })), 403, 'E_IP_DENIED'],
    ['rate: a batch above the burst', json(JSON.stringify([1, 2, 3].map(() => rec({ BUSSINESS: slow.code })))), 429, 'E_RATE'],
    // Size and nesting
    ['nesting 17 levels', json(deep(17)), 400, 'E_TOO_DEEP'],
    ['nesting 100,000 levels', json(deep(100_000)), 400, 'E_TOO_DEEP'],
    ['nested field 17 levels', json(r({ ITEMS: JSON.parse(deep(16)) })), 400, 'E_TOO_DEEP'],
    ['body above 1 MiB', json(r({ BUSSINESSNAME: 'x'.repeat(1024 * 1024) })), 413, 'E_TOO_LARGE'],
    ['chunked body above 1 MiB', { body: streamOf(2 * 1024 * 1024) }, 413, 'E_TOO_LARGE'],
    // Content types and encodings
    ['text/plain', { contentType: 'text/plain', body: r() }, 415, 'E_CONTENT_TYPE'],
    ['no content type', { contentType: null, body: r() }, 415, 'E_CONTENT_TYPE'],
    ['multipart/form-data', { contentType: 'multipart/form-data; boundary=x', body: `--x\r\nContent-Disposition: form-data; name="message"\r\n\r\n${r()}\r\n--x--` }, 415, 'E_CONTENT_TYPE'],
    ['charset GBK declared', { contentType: 'application/x-www-form-urlencoded; charset=GBK', body: `message=${encodeURIComponent(r())}` }, 415, 'E_CONTENT_TYPE'],
    ['application/xml', { contentType: 'application/xml', body: '<message/>' }, 415, 'E_CONTENT_TYPE'],
    ['json: GBK bytes', { contentType: 'application/json', body: gbkJson }, 400, 'E_ENCODING'],
    ['form: GBK percent-encoded', { body: `message=${encodeURIComponent(r({ BUSSINESSNAME: 'X' })).replace('X', '%BD%A8%C9%E8')}` }, 400, 'E_ENCODING'],
    ['form: raw invalid bytes', { body: new Uint8Array([...new TextEncoder().encode('message='), 0xff, 0xfe]) }, 400, 'E_ENCODING'],
    // Methods and paths
    ['GET', { method: 'GET' }, 405, 'E_METHOD'],
    ['PUT', { method: 'PUT', body: `message=${encodeURIComponent(r())}` }, 405, 'E_METHOD'],
    ['DELETE', { method: 'DELETE' }, 405, 'E_METHOD'],
    ['PATCH', { method: 'PATCH', body: 'x' }, 405, 'E_METHOD'],
    ['OPTIONS', { method: 'OPTIONS' }, 405, 'E_METHOD'],
    ['unknown path', { path: '/websocket/todo/api/messages', body: `message=${encodeURIComponent(r())}` }, 404, 'E_NOT_FOUND'],
    ['trailing slash', { path: `${PATH}/`, body: `message=${encodeURIComponent(r())}` }, 404, 'E_NOT_FOUND'],
    ['path traversal', { path: '/websocket/todo/api/../api/message/../../../etc/passwd', body: 'x' }, 404, 'E_NOT_FOUND'],
  ]
  t.ok(cases.length >= 40, `${cases.length} bad pushes`)

  const db = inner.daemon.store.db
  const before = snapshot(db)
  const lastSeq = inner.daemon.store.lastSeq
  const logged = (): number => inner.logs.lines.filter((l) => l.msg === 'push rejected').length
  for (const [name, req, status, code, field] of cases) {
    const n = logged()
    const res = await send(inner.intakeUrl, req)
    t.equal(res.status, status, `${name}: status ${status}`)
    t.equal(res.body.code, code, `${name}: ${code}`)
    if (field !== undefined) t.equal(res.body.field, field, `${name}: names ${field}`)
    t.match(res.body.msg, /[\u4e00-\u9fff].*\(.+\)/, `${name}: msg is 中文 (English)`)
    if (code === 'E_METHOD') t.equal(res.headers.get('allow'), 'POST')
    if (code === 'E_RATE') t.ok(res.headers.get('retry-after'))
    t.equal(snapshot(db), before, `${name}: stored state unchanged`)
    await waitFor(() => logged() > n, `${name}: logged`)
  }
  t.equal(inner.daemon.store.lastSeq, lastSeq, 'no seq was taken')

  // Logged with system, reason and address — and never an auth code in clear, only its short hash.
  const lines = inner.logs.lines.filter((l) => l.msg === 'push rejected')
  const logText = JSON.stringify(inner.logs.lines)
  for (const c of [good.code, disabled.code, rotated.code, ipOnly.code, slow.code]) t.notOk(logText.includes(c), 'no auth code in the logs')
  t.ok(lines.every((l) => l.ip === '127.0.0.1'), 'client address logged')
  t.match(lines.find((l) => l.code === 'E_IP_DENIED'), { system: ipOnly.id, codeTag: String, ip: '127.0.0.1' })
  t.match(lines.find((l) => l.code === 'E_FIELD' && l.field === 'LOGINNAME'), { system: good.id, codeTag: String })
  t.match(lines.find((l) => l.code === 'E_AUTH_CODE'), { system: null, codeTag: String })
  // Counted: durably per system and code (flushed about once a second), and in Prometheus.
  const total = await waitFor(() => {
    const n = db.prepare('SELECT sum(count) FROM rejections WHERE source = ?').pluck().get('push') as number | null
    return n === cases.length ? n : undefined
  }, 'rejections counted durably')
  t.equal(total, cases.length)
  t.equal(db.prepare('SELECT count FROM rejections WHERE system_id = ? AND code = ?').pluck().get(disabled.id, 'E_SYSTEM_DISABLED'), 1)
  const metrics = await (await fetch(`${inner.adminUrl}/metrics`)).text()
  t.match(metrics, /todo_inner_rejected_total\{code="E_IP_DENIED",source="push",system="sys-[0-9a-f]+"\} 1/)
})

t.test('intake: Unicode is kept exactly — 建设项目, emoji, rare CJK — in forms, JSON and batches', async (t) => {
  const dir = t.testdir()
  const inner: RunningInner = await startInner(t, dir, makeKeys(dir), undefined)
  const sys = await addSystem(inner)
  const names = ['建设项目', '排污许可👩‍💻✅', '𠀀𪚥𰻞', 'Ünïcödé ﬁ é', '彝文ꆈꌠ']
  const users = ['张三', '𠀀李四', 'user👍🏽', 'ａｄｍｉｎ']
  const url = 'http://10.194.5.72/审批?id=1&名=值'
  let i = 0
  for (const name of names) {
    for (const user of users) {
      const as = i++ % 2 === 0 ? 'form' : 'json'
      const res = await push(inner.intakeUrl, record(sys.code, user, i, { BUSSINESSNAME: name, URL: url }), as)
      t.equal(res.status, 200, `${as}: ${user} ${name}`)
      const env = JSON.parse(inner.daemon.store.db.prepare('SELECT envelope FROM messages WHERE seq = ?').pluck().get((res.body.data as { seq: number }).seq) as string) as Record<string, unknown>
      t.equal(env.systemName, name)
      t.equal(env.user, user)
      t.equal(env.url, url)
    }
  }
  // A batch in the form field, read back through the portal API exactly.
  const batch = users.map((u, k) => record(sys.code, u, 100 + k, { BUSSINESSNAME: '建设项目🏗️' }))
  const res = await push(inner.intakeUrl, batch)
  t.equal(res.status, 200)
  t.equal((res.body.data as unknown[]).length, users.length, 'a batch answers an array')
  const todos = await (await fetch(`${inner.portalUrl}/api/v1/todos`, { headers: { authorization: `Bearer ${await token('𠀀李四')}` } })).json() as { items: Record<string, unknown>[] }
  t.match(todos.items, [{ user: '𠀀李四', systemName: '建设项目🏗️', quantity: 101 }])
})

t.test('intake: IPv4 and IPv6 whitelists', async (t) => {
  const table: [string[], string, boolean][] = [
    [['10.0.0.0/8'], '10.200.1.2', true], [['10.0.0.0/8'], '11.0.0.1', false], [['10.1.2.3'], '10.1.2.3', true],
    [['10.1.2.3'], '10.1.2.4', false], [['fd00::/8'], 'fd12::1', true], [['fd00::/8'], 'fe80::1', false],
    [['::1/128'], '::1', true], [['10.0.0.0/8', '::1/128'], '::1', true], [['10.0.0.0/8'], '::1', false],
    [['::1/128'], '127.0.0.1', false], [[], '203.0.113.9', true], [['10.0.0.0/8'], 'not-an-ip', false],
  ]
  for (const [cidrs, ip, ok] of table) t.equal(isAllowed(buildAllowList(cidrs), ip), ok, `${cidrs.join(',') || 'any'} ${ok ? 'allows' : 'denies'} ${ip}`)

  const dir = t.testdir()
  const inner = await startInner(t, dir, makeKeys(dir), undefined, { listen: { intake: '[::1]:0' } })
  const v6 = await addSystem(inner, { allowIps: ['::1/128'] })
  const v4 = await addSystem(inner, { allowIps: ['127.0.0.0/8'] })
  const ula = await addSystem(inner, { allowIps: ['fd00::/8'] })
  t.equal((await push(inner.intakeUrl, record(v6.code, 'u', 1))).status, 200, '::1 allowed by ::1/128')
  const denied = await push(inner.intakeUrl, record(v4.code, 'u', 1))
  t.equal(denied.status, 403)
  t.equal(denied.body.code, 'E_IP_DENIED', '::1 is not in 127.0.0.0/8')
  t.equal((await push(inner.intakeUrl, record(ula.code, 'u', 1))).body.code, 'E_IP_DENIED', '::1 is not in fd00::/8')
})

t.test('intake: a system over its rate gets 429 E_RATE; another system is not affected', async (t) => {
  const dir = t.testdir()
  const inner = await startInner(t, dir, makeKeys(dir), undefined)
  const limited = await addSystem(inner, { rateLimit: 5 })
  const other = await addSystem(inner, { rateLimit: 5 })
  // Burst of two seconds' worth (10 records), then 429 until the bucket refills.
  const results = await Promise.all(Array.from({ length: 20 }, (_, k) => push(inner.intakeUrl, record(limited.code, `u${k}`, 1))))
  const ok = results.filter((r) => r.status === 200).length
  t.ok(ok >= 10 && ok <= 11, `${ok} accepted within the burst`)
  t.ok(results.filter((r) => r.status === 429).every((r) => r.body.code === 'E_RATE'), 'the rest get E_RATE')
  t.ok(results.some((r) => r.status === 429))
  const others = await Promise.all(Array.from({ length: 10 }, (_, k) => push(inner.intakeUrl, record(other.code, `u${k}`, 1))))
  t.ok(others.every((r) => r.status === 200), 'the other system keeps its own budget')
  const stored = inner.daemon.store.db.prepare('SELECT count(*) FROM messages WHERE system_id = ?').pluck().get(limited.id)
  t.equal(stored, ok, 'exactly the accepted records were stored')
})
