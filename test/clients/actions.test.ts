/**
 * Actions back to business systems (DESIGN §3.6, spec §4.2): phone → outer (queued) → the inner's own link
 * (forwarded) → the system's callback with an HMAC signature (delivered | failed), the status flowing back
 * as REST and /ws frames; the same from the inner's portal; validation at the inner from scratch.
 */
import t from 'tap'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { addSystem, connectWs, makeKeys, startInner, startOuter, startPair, token, waitFor, type Frame, type WsClient } from '../helpers/daemons.js'
import { signatureValid, startCallbackServer } from '../helpers/callback-server.js'
import { parseActionTypes } from '../../inner/registry.js'
import { actionCounts } from '../../inner/monitor.js'

interface Reply { status: number; body: Record<string, unknown> }

async function api(base: string, path: string, tok: string | undefined, body?: unknown): Promise<Reply> {
  const res = await fetch(`${base}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { ...(tok ? { authorization: `Bearer ${tok}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
  })
  return { status: res.status, body: await res.json() as Record<string, unknown> }
}

/** Waits for the action frame of `id` with `status`; every earlier status of it must come first, in order. */
async function statuses(ws: WsClient, id: string, until: string): Promise<Frame[]> {
  const seen: Frame[] = []
  for (;;) {
    const f = await ws.next((x) => x.t === 'action' && x.id === id, 15_000)
    seen.push(f)
    if (f.status === until || f.status === 'failed' || f.status === 'delivered') return seen
  }
}

const FAST_RETRY = { actions: { maxAttempts: 3, retryBaseMs: 5, retryMaxMs: 20, timeoutMs: 2000 } }

t.test('actions: a phone action reaches the callback signed with the auth code; delivered flows back', async (t) => {
  const { inner, outer } = await startPair(t)
  const cb = await startCallbackServer(t)
  const sys = await addSystem(inner, { callback: cb.url })
  const tok = await token('zhangsan')
  const phone = await connectWs(t, outer.clientsUrl, tok)
  await phone.next((f) => f.t === 'snapshot')

  const r = await api(outer.clientsUrl, '/api/v1/actions', tok, { system: sys.id, type: 'handle', ref: 'item-7', payload: { note: '已办结', n: 1 } })
  t.equal(r.status, 202)
  t.equal(r.body.status, 'queued')
  const id = r.body.id as string
  t.match(id, /^[A-Za-z0-9_-]{1,64}$/)

  const seen = await statuses(phone, id, 'delivered')
  t.same(seen.map((f) => f.status), ['forwarded', 'delivered'], 'forwarded, then delivered, as /ws frames')
  const [req] = await cb.waitForRequests(1)
  t.equal(req!.method, 'POST')
  t.match(req!.headers['content-type'], /^application\/json/)
  t.match(req!.headers['x-todo-signature'], /^sha256=[0-9a-f]{64}$/)
  t.ok(signatureValid(req!, sys.code), 'HMAC-SHA256 of the raw body keyed with the auth code')
  t.notOk(signatureValid(req!, 'ffffffffffffffffffffffffffffffff'), 'and not with another code')
  t.same(Object.keys(req!.body), ['id', 'system', 'systemName', 'user', 'type', 'ref', 'payload', 'ts'])
  t.match(req!.body, { id, system: sys.id, systemName: sys.name, user: 'zhangsan', type: 'handle', ref: 'item-7', payload: { note: '已办结', n: 1 } })
  t.type(req!.body.ts, 'number')
  t.notOk(req!.raw.toString().includes(sys.code), 'the body never holds the auth code')

  t.same((await api(outer.clientsUrl, `/api/v1/actions/${id}`, tok)).body, { id, status: 'delivered' })
  const other = await api(outer.clientsUrl, `/api/v1/actions/${id}`, await token('lisi'))
  t.equal(other.status, 404, 'another user gets 404')
  t.equal(other.body.code, 'E_NOT_FOUND')
  t.equal((await api(outer.clientsUrl, `/api/v1/actions/${id}`, undefined)).status, 401)

  // Bearer tokens are not kept once an action is final, on either side.
  const outerRow = outer.daemon.store.db.prepare('SELECT status, token FROM actions WHERE id = ?').get(id)
  t.same(outerRow, { status: 'delivered', token: null })
  const innerRow = inner.daemon.store.db.prepare('SELECT status, token, attempts FROM actions WHERE id = ?').get(id)
  t.same(innerRow, { status: 'delivered', token: null, attempts: 1 })
  t.equal(cb.requests.length, 1, 'delivered exactly once')

  // Operators see it: `stats` and the admin listener's /metrics.
  t.same(actionCounts(inner.daemon.store), { forwarded: 0, delivered: 1, failed: 0 })
  const metrics = await (await fetch(`${inner.adminUrl}/metrics`)).text()
  t.match(metrics, /todo_inner_actions\{status="delivered"\} 1/)
})

t.test('actions: over /ws the reply is the queued action frame, then each change', async (t) => {
  const { inner, outer } = await startPair(t)
  const cb = await startCallbackServer(t)
  const sys = await addSystem(inner, { callback: cb.url, actionTypes: ['read', 'handle', 'forward'] })
  const phone = await connectWs(t, outer.clientsUrl, await token('zhangsan'))
  await phone.next((f) => f.t === 'snapshot')
  const second = await connectWs(t, outer.clientsUrl, await token('zhangsan'))
  await second.next((f) => f.t === 'snapshot')
  phone.send({ t: 'action', system: sys.id, type: 'forward' })
  const q = await phone.next((f) => f.t === 'action')
  t.equal(q.status, 'queued')
  const id = q.id as string
  t.same((await statuses(phone, id, 'delivered')).map((f) => f.status), ['forwarded', 'delivered'])
  t.same((await statuses(second, id, 'delivered')).map((f) => f.status), ['forwarded', 'delivered'], 'every socket of the user hears the changes')
  t.equal((await cb.waitForRequests(1))[0]!.body.type, 'forward')

  phone.send({ t: 'action', system: sys.id, type: 'Bad Type' })
  const err = await phone.next((f) => f.t === 'error')
  t.equal(err.code, 'E_FIELD', 'a malformed action frame is refused at once')
})

t.test('actions: a failing callback is retried with backoff, then failed with E_CALLBACK', async (t) => {
  const { inner, outer } = await startPair(t, { inner: FAST_RETRY })
  const cb = await startCallbackServer(t)
  cb.respond = () => 500
  const sys = await addSystem(inner, { callback: cb.url })
  const tok = await token('zhangsan')
  const phone = await connectWs(t, outer.clientsUrl, tok)
  await phone.next((f) => f.t === 'snapshot')
  const { body } = await api(outer.clientsUrl, '/api/v1/actions', tok, { system: sys.id, type: 'handle' })
  const id = body.id as string
  const seen = await statuses(phone, id, 'failed')
  const last = seen[seen.length - 1]!
  t.equal(last.status, 'failed')
  t.equal(last.code, 'E_CALLBACK')
  t.type(last.error, 'string')
  t.equal(cb.requests.length, 3, 'exactly maxAttempts attempts')
  t.same(cb.requests.map((r) => r.headers['x-todo-attempt']), ['1', '2', '3'])
  t.same(new Set(cb.requests.map((r) => r.raw.toString())).size, 1, 'every attempt sends the same bytes')
  const rest = await api(outer.clientsUrl, `/api/v1/actions/${id}`, tok)
  t.equal(rest.body.status, 'failed')
  t.equal(rest.body.code, 'E_CALLBACK')

  // A 4xx other than 408/429 is the system refusing: no retry.
  cb.respond = () => 400
  const before = cb.requests.length
  const r2 = await api(outer.clientsUrl, '/api/v1/actions', tok, { system: sys.id, type: 'handle' })
  const s2 = await statuses(phone, r2.body.id as string, 'failed')
  t.equal(s2[s2.length - 1]!.code, 'E_CALLBACK')
  t.equal(cb.requests.length - before, 1, 'refused once, not retried')
})

t.test('actions: the inner validates from scratch (type, system, callback, size)', async (t) => {
  const { inner, outer, system: noCallback } = await startPair(t, { inner: { actions: { maxPayloadBytes: 64 } } })
  const cb = await startCallbackServer(t)
  const sys = await addSystem(inner, { callback: cb.url, actionTypes: ['read'] })
  const off = await addSystem(inner, { callback: cb.url })
  inner.daemon.store.db.prepare('UPDATE systems SET enabled = 0 WHERE id = ?').run(off.id)
  inner.daemon.registry.reload()
  const tok = await token('zhangsan')
  const phone = await connectWs(t, outer.clientsUrl, tok)
  await phone.next((f) => f.t === 'snapshot')

  const cases: [string, Record<string, unknown>, string][] = [
    ['type not allowed for the system', { system: sys.id, type: 'handle' }, 'E_ACTION_TYPE'],
    ['system without a callback', { system: noCallback.id, type: 'read' }, 'E_ACTION_NO_CALLBACK'],
    ['unknown system', { system: 'sys-nonexistent', type: 'read' }, 'E_ACTION_SYSTEM'],
    ['disabled system', { system: off.id, type: 'read' }, 'E_ACTION_SYSTEM'],
    ['payload over the inner\'s limit', { system: sys.id, type: 'read', payload: { text: 'x'.repeat(100) } }, 'E_ACTION_TOO_LARGE'],
  ]
  for (const [name, req, code] of cases) {
    const r = await api(outer.clientsUrl, '/api/v1/actions', tok, req)
    t.equal(r.status, 202, `${name}: queued at the outer`)
    const seen = await statuses(phone, r.body.id as string, 'failed')
    t.same(seen.map((f) => f.status), ['forwarded', 'failed'], `${name}: forwarded, then failed`)
    t.equal(seen[1]!.code, code, `${name}: ${code}`)
  }
  t.equal(cb.requests.length, 0, 'no refused action reached a callback')

  const bad: [unknown, string][] = [
    [{ type: 'read' }, 'E_FIELD'], [{ system: sys.id, type: 'READ' }, 'E_FIELD'], [{ system: sys.id, type: 'read', ref: 'x'.repeat(300) }, 'E_FIELD'],
    [{ system: sys.id, type: 'read', payload: 'x'.repeat(20_000) }, 'E_FIELD'], ['{not json', 'E_BAD_JSON'],
  ]
  for (const [body, code] of bad) {
    const r = await api(outer.clientsUrl, '/api/v1/actions', tok, body)
    t.equal(r.status, 400)
    t.equal(r.body.code, code)
  }
})

t.test('actions: a token the inner does not accept fails E_ACTION_TOKEN (the inner trusts nothing from the DMZ)', async (t) => {
  const { inner, outer } = await startPair(t, { inner: { tokens: { alg: 'HS256', secret: 'another-secret-only-the-inner-knows' } } })
  const cb = await startCallbackServer(t)
  const sys = await addSystem(inner, { callback: cb.url })
  const tok = await token('zhangsan')
  const phone = await connectWs(t, outer.clientsUrl, tok)
  await phone.next((f) => f.t === 'snapshot')
  const r = await api(outer.clientsUrl, '/api/v1/actions', tok, { system: sys.id, type: 'handle' })
  const seen = await statuses(phone, r.body.id as string, 'failed')
  t.equal(seen[seen.length - 1]!.code, 'E_ACTION_TOKEN')
  t.equal(cb.requests.length, 0)
})

t.test('actions: PC users act through the inner portal the same way, without a link', async (t) => {
  const { inner } = await startPair(t)
  const cb = await startCallbackServer(t)
  const sys = await addSystem(inner, { callback: cb.url })
  const tok = await token('wangwu')
  const pc = await connectWs(t, inner.portalUrl, tok)
  await pc.next((f) => f.t === 'snapshot')
  const r = await api(inner.portalUrl, '/api/v1/actions', tok, { system: sys.id, type: 'read', ref: 'r-1' })
  t.equal(r.status, 202)
  t.equal(r.body.status, 'queued')
  const id = r.body.id as string
  t.same((await statuses(pc, id, 'delivered')).map((f) => f.status), ['forwarded', 'delivered'])
  const [req] = await cb.waitForRequests(1)
  t.ok(signatureValid(req!, sys.code))
  t.match(req!.body, { id, user: 'wangwu', type: 'read', ref: 'r-1', system: sys.id })
  t.same((await api(inner.portalUrl, `/api/v1/actions/${id}`, tok)).body, { id, status: 'delivered' })
  t.equal((await api(inner.portalUrl, `/api/v1/actions/${id}`, await token('zhangsan'))).status, 404)

  // Over the portal's /ws: queued first (the reply), then the changes.
  pc.send({ t: 'action', system: sys.id, type: 'handle' })
  const q = await pc.next((f) => f.t === 'action' && f.status === 'queued')
  t.same((await statuses(pc, q.id as string, 'delivered')).map((f) => f.status), ['forwarded', 'delivered'])
})

t.test('actions: unfinished actions per user are capped at the outer (429)', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  // No inner: actions stay queued.
  const outer = await startOuter(t, dir, keys, { actions: { maxPendingPerUser: 2 } })
  const tok = await token('zhangsan')
  for (let i = 0; i < 2; i++) t.equal((await api(outer.clientsUrl, '/api/v1/actions', tok, { system: 'sys-x', type: 'read' })).status, 202)
  const r = await api(outer.clientsUrl, '/api/v1/actions', tok, { system: 'sys-x', type: 'read' })
  t.equal(r.status, 429)
  t.equal(r.body.code, 'E_TOO_MANY_ACTIONS')
  t.equal((await api(outer.clientsUrl, '/api/v1/actions', await token('lisi'), { system: 'sys-x', type: 'read' })).status, 202, 'per user, not global')
  t.equal(outer.daemon.queues.actionsOpen, 3)

  // They go out as soon as an inner connects.
  const inner = await startInner(t, dir, keys, outer.linkUrl)
  await waitFor(() => outer.daemon.queues.actionsOpen === 0, 'actions reach a final state')
  t.equal(inner.daemon.store.db.prepare("SELECT count(*) AS n FROM actions WHERE status = 'failed' AND code = 'E_ACTION_SYSTEM'").pluck().get(), 3)
})

t.test('actions: --action-types takes a comma-separated list of lowercase types', async (t) => {
  t.same(parseActionTypes('read, handle,read'), ['read', 'handle'], 'trimmed, duplicates dropped')
  t.same(parseActionTypes('approve'), ['approve'])
  t.same(parseActionTypes(''), [], 'an empty list: the system accepts no actions')
  for (const bad of ['Read', 'read,han dle', '1st', 'a'.repeat(33), 'x.y']) {
    t.throws(() => parseActionTypes(bad), { code: 'ERR_CLI_USAGE' }, `${JSON.stringify(bad)} is refused`)
  }
})

t.test('actions: a storage failure while processing an action is retried after a pause, not in a tight loop', async (t) => {
  const dir = t.testdir()
  const inner = await startInner(t, dir, makeKeys(dir), undefined, { storage: { busyTimeoutMs: 0 } })
  // The action is committed; before it is processed another connection takes the write lock, so every
  // write about it fails at once (SQLITE_BUSY) until the lock goes.
  inner.daemon.actions.receive({ id: 'a-locked', system: 'sys-none', user: 'zhangsan', type: 'read', ts: Date.now(), token: 'not-a-jwt' }, 'portal')
  const other = new Database(join(inner.config.dataDir, 'inner.sqlite'))
  other.exec('BEGIN IMMEDIATE')
  t.teardown(() => {
    if (other.inTransaction) other.exec('ROLLBACK')
    other.close()
  })
  const failed = (n: number) => () => inner.logs.lines.filter((l) => l.msg === 'action processing failed').length >= n
  await waitFor(failed(1), 'the first failure')
  await waitFor(failed(2), 'the retry', 5000)
  const [first, second] = inner.logs.lines.filter((l) => l.msg === 'action processing failed')
  const gap = Number(second!.time) - Number(first!.time)
  t.ok(gap >= 900, `the retry came ${gap} ms after the failure`)
  other.exec('ROLLBACK')
  await waitFor(() => inner.daemon.actions.get('zhangsan', 'a-locked')?.status === 'failed', 'processed once the lock is gone')
  t.equal(inner.daemon.actions.get('zhangsan', 'a-locked')?.code, 'E_ACTION_TOKEN')
})
