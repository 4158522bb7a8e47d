/**
 * The push interface exactly as the integration spec describes it (spec §6.2.3, DESIGN §2, §3.3): the form
 * post with field `message`, values as strings (the spec's example) or numbers (the spec's Java client),
 * JSON bodies and batches, defaults, completion by QUANTITY 0, the 200 body, and durability before the 200.
 */
import t from 'tap'
import { request } from 'node:http'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { push, record, startPair, token, waitFor, type RunningInner } from '../helpers/daemons.js'

interface Ok { id: string; seq: number }

function openDb(t: { teardown(fn: () => unknown): void }, inner: RunningInner): Database.Database {
  const db = new Database(join(inner.config.dataDir, 'inner.sqlite'), { readonly: true, fileMustExist: true })
  t.teardown(() => db.close())
  return db
}

async function todos(clientsUrl: string, user: string): Promise<{ user: string; total: number; items: Record<string, unknown>[] }> {
  const res = await fetch(`${clientsUrl}/api/v1/todos`, { headers: { authorization: `Bearer ${await token(user)}` } })
  if (res.status !== 200) throw new Error(`GET /api/v1/todos: ${res.status}`)
  return res.json() as Promise<{ user: string; total: number; items: Record<string, unknown>[] }>
}

/** Waits until the outer shows `user`'s item of `system` with `quantity` (or no item when `quantity` is 0). */
function outerShows(clientsUrl: string, user: string, system: string, quantity: number) {
  return waitFor(async () => {
    const r = await todos(clientsUrl, user)
    const item = r.items.find((i) => i.system === system)
    return quantity === 0 ? (item === undefined ? r : undefined) : (item?.quantity === quantity ? r : undefined)
  }, `outer shows ${user} ${system} = ${quantity}`)
}

t.test('intake: the spec example (values as strings) is accepted and answered with the spec body', async (t) => {
  const { inner, outer, system } = await startPair(t)
  const db = openDb(t, inner)
  const message = { LEVEL: '1', BUSSINESS: system.code, URL: '10.194.5.72', LOGINNAME: 'admin', QUANTITY: '10', BUSSINESSNAME: '建设项目' }
  const r = await push(inner.intakeUrl, message)
  t.equal(r.status, 200)
  t.same(Object.keys(r.body).sort(), ['code', 'data', 'msg'])
  t.equal(r.body.code, 0)
  t.equal(r.body.msg, 'success')
  const data = r.body.data as Ok
  t.same(Object.keys(data).sort(), ['id', 'seq'])
  t.type(data.id, 'string')
  t.ok(data.id.length > 0)
  t.ok(Number.isInteger(data.seq) && data.seq >= 1, 'seq is a positive integer')

  // Durable before the 200: a separate read-only connection finds the row at once.
  const row = db.prepare('SELECT seq, id, system_id, user, quantity, envelope FROM messages WHERE id = ?').get(data.id) as
    { seq: number; system_id: string; user: string; quantity: number; envelope: string } | undefined
  t.ok(row, 'the message is in the SQLite file when the 200 arrives')
  t.equal(row?.seq, data.seq)
  t.equal(row?.system_id, system.id)
  t.equal(row?.user, 'admin')
  t.equal(row?.quantity, 10)
  const env = JSON.parse(row!.envelope) as Record<string, unknown>
  t.match(env, { seq: data.seq, id: data.id, system: system.id, systemName: '建设项目', user: 'admin', level: 1, quantity: 10, url: '10.194.5.72' })
  t.notOk(row!.envelope.includes(system.code), 'the stored envelope does not hold the auth code')

  const shown = await outerShows(outer.clientsUrl, 'admin', system.id, 10)
  t.equal(shown.total, 10)
})

t.test('intake: values as JSON numbers, as the spec\'s Java client sends LEVEL and QUANTITY', async (t) => {
  const { inner, outer, system } = await startPair(t)
  const r = await push(inner.intakeUrl, { LEVEL: 2, BUSSINESS: system.code, URL: '10.194.5.72', LOGINNAME: 'lisi', QUANTITY: 7, BUSSINESSNAME: '排污许可' })
  t.equal(r.status, 200)
  t.equal(r.body.code, 0)
  const shown = await outerShows(outer.clientsUrl, 'lisi', system.id, 7)
  t.match(shown.items[0], { level: 2, quantity: 7, systemName: '排污许可' })
})

t.test('intake: a JSON body (application/json) holding one record', async (t) => {
  const { inner, outer, system } = await startPair(t)
  const r = await push(inner.intakeUrl, record(system.code, 'wangwu', 3), 'json')
  t.equal(r.status, 200)
  t.match(r.body.data, { id: String, seq: Number })
  await outerShows(outer.clientsUrl, 'wangwu', system.id, 3)
})

t.test('intake: a JSON array is a batch, answered with an array, in seq order', async (t) => {
  const { inner, outer, system } = await startPair(t)
  const db = openDb(t, inner)
  for (const as of ['json', 'form'] as const) {
    const batch = [record(system.code, `${as}-a`, 1), record(system.code, `${as}-b`, '2'), record(system.code, `${as}-c`, 3)]
    const r = await push(inner.intakeUrl, batch, as)
    t.equal(r.status, 200, `${as} batch`)
    t.equal(r.body.code, 0)
    const data = r.body.data as Ok[]
    t.ok(Array.isArray(data), 'data is an array')
    t.equal(data.length, 3)
    t.same(data.map((d) => d.seq), [data[0]!.seq, data[0]!.seq + 1, data[0]!.seq + 2], 'consecutive seqs in record order')
    for (const d of data) t.ok(db.prepare('SELECT 1 FROM messages WHERE id = ?').get(d.id), `${d.id} stored`)
    await outerShows(outer.clientsUrl, `${as}-c`, system.id, 3)
  }
})

t.test('intake: a batch is all-or-nothing — one bad record stores nothing', async (t) => {
  const { inner, system } = await startPair(t)
  const db = openDb(t, inner)
  const count = (): number => (db.prepare('SELECT count(*) AS n FROM messages').get() as { n: number }).n
  const before = count()
  const r = await push(inner.intakeUrl, [record(system.code, 'a', 1), record(system.code, 'b', -1), record(system.code, 'c', 3)])
  t.equal(r.status, 400)
  t.equal(r.body.code, 'E_FIELD')
  t.equal(r.body.field, '[1].QUANTITY')
  t.equal(count(), before, 'nothing stored')
  const unknown = await push(inner.intakeUrl, [record(system.code, 'a', 1), record('0'.repeat(32), 'b', 2)])
  t.equal(unknown.status, 401, 'an unknown auth code anywhere in the batch')
  t.equal(unknown.body.code, 'E_AUTH_CODE')
  t.equal(count(), before, 'nothing stored')
})

t.test('intake: LEVEL absent means 1; BUSSINESSNAME empty means the registered name', async (t) => {
  const { inner, outer, system } = await startPair(t)
  const { LEVEL: _l, ...noLevel } = record(system.code, 'zhao', 4, { BUSSINESSNAME: '' })
  const r = await push(inner.intakeUrl, noLevel)
  t.equal(r.status, 200)
  const shown = await outerShows(outer.clientsUrl, 'zhao', system.id, 4)
  t.equal(shown.items[0]!.level, 1, 'LEVEL defaults to 1')
  t.equal(shown.items[0]!.systemName, system.name, 'systemName is the registered name')

  const { BUSSINESSNAME: _n, ...noName } = record(system.code, 'qian', 5, { LEVEL: '3' })
  t.equal((await push(inner.intakeUrl, noName)).status, 200)
  const shown2 = await outerShows(outer.clientsUrl, 'qian', system.id, 5)
  t.equal(shown2.items[0]!.systemName, system.name, 'absent BUSSINESSNAME too')
  t.equal(shown2.items[0]!.level, 3)
})

t.test('intake: QUANTITY 0 completes (办结) — the item leaves GET /api/v1/todos', async (t) => {
  const { inner, outer, system } = await startPair(t)
  t.equal((await push(inner.intakeUrl, record(system.code, 'sun', '12'))).status, 200)
  await outerShows(outer.clientsUrl, 'sun', system.id, 12)
  t.equal((await push(inner.intakeUrl, record(system.code, 'sun', '5'))).status, 200, 'a smaller count (partly handled)')
  await outerShows(outer.clientsUrl, 'sun', system.id, 5)
  t.equal((await push(inner.intakeUrl, record(system.code, 'sun', '0'))).status, 200)
  const r = await outerShows(outer.clientsUrl, 'sun', system.id, 0)
  t.same(r.items, [], 'no item')
  t.equal(r.total, 0)
})

/** Sends exact bytes, as a Java client would put them on the wire. */
function rawPost(url: string, contentType: string, body: Buffer): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}/websocket/todo/api/message`, {
      method: 'POST',
      headers: { 'content-type': contentType, 'content-length': body.length, 'user-agent': 'Apache-HttpClient/4.5.13 (Java/1.8.0_292)' },
    }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> }))
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** java.net.URLEncoder.encode(s, "UTF-8"): unreserved . - * _ kept, space → '+', the rest %XX (uppercase). */
function javaUrlEncode(s: string): string {
  let out = ''
  for (const b of Buffer.from(s, 'utf8')) {
    const c = String.fromCharCode(b)
    if (/[A-Za-z0-9.\-*_]/.test(c)) out += c
    else if (c === ' ') out += '+'
    else out += `%${b.toString(16).toUpperCase().padStart(2, '0')}`
  }
  return out
}

t.test('intake: a hand-built Java-style form body with Chinese text is decoded without mojibake', async (t) => {
  const { inner, outer, system } = await startPair(t)
  // What json-lib's JSONObject.toString() produces for the spec's client (numbers unquoted), URL-encoded by
  // UrlEncodedFormEntity(params, "UTF-8").
  const json = `{"LEVEL":1,"BUSSINESS":"${system.code}","URL":"http://10.194.5.72/项目 审批?a=1&b=2","LOGINNAME":"张三","QUANTITY":10,"BUSSINESSNAME":"建设项目 审批"}`
  const body = `message=${javaUrlEncode(json)}`
  t.ok(body.includes('%E5%BB%BA%E8%AE%BE%E9%A1%B9%E7%9B%AE+%E5%AE%A1%E6%89%B9'), 'the body really is percent-encoded UTF-8 with + for spaces')
  const r = await rawPost(inner.intakeUrl, 'application/x-www-form-urlencoded; charset=UTF-8', Buffer.from(body, 'ascii'))
  t.equal(r.status, 200)
  t.equal(r.body.code, 0)
  const shown = await outerShows(outer.clientsUrl, '张三', system.id, 10)
  t.equal(shown.user, '张三')
  t.equal(shown.items[0]!.systemName, '建设项目 审批')
  t.equal(shown.items[0]!.url, 'http://10.194.5.72/项目 审批?a=1&b=2')

  // The same with the upper-case charset spelling some clients use, and raw UTF-8 in a JSON body.
  const r2 = await rawPost(inner.intakeUrl, 'application/json;charset=UTF-8', Buffer.from(json.replace('张三', '李四'), 'utf8'))
  t.equal(r2.status, 200)
  const shown2 = await outerShows(outer.clientsUrl, '李四', system.id, 10)
  t.equal(shown2.items[0]!.systemName, '建设项目 审批')
})
