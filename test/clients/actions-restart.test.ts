/**
 * Actions survive restarts (DESIGN §3.6: nothing is lost if either daemon restarts in between): queued at
 * the outer while the inner is away, forwarded and retried at the inner across its restart, and a final
 * status produced while the outer was down reaches it after the reconnect. Also the queueing grace for
 * tokens that expire while the action waits.
 */
import t from 'tap'
import { join } from 'node:path'
import { openDatabase } from '../../shared/sqlite.js'
import {
  addSystem, connectWs, makeKeys, startInner, startOuter, token, waitFor,
  type Keys, type RunningInner, type RunningOuter, type T,
} from '../helpers/daemons.js'
import { signatureValid, startCallbackServer } from '../helpers/callback-server.js'

async function api(base: string, path: string, tok: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${base}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { authorization: `Bearer ${tok}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
  return { status: res.status, body: await res.json() as Record<string, unknown> }
}

/**
 * Closes an outer and builds a new one on the same data folder and link port (a running inner's configured
 * URL); the other listeners take new ports.
 */
async function restartOuter(t: T, dir: string, keys: Keys, prev: RunningOuter): Promise<RunningOuter> {
  await prev.daemon.close()
  return startOuter(t, dir, keys, { listen: { link: `127.0.0.1:${prev.daemon.addresses.link!.port}`, clients: '127.0.0.1:0', admin: '127.0.0.1:0' } })
}

const innerStatus = (inner: RunningInner, id: string): unknown =>
  inner.daemon.store.db.prepare('SELECT status FROM actions WHERE id = ?').pluck().get(id)

const RETRY = { actions: { maxAttempts: 100, retryBaseMs: 20, retryMaxMs: 100, timeoutMs: 2000 } }

t.test('actions: queued while the inner is away, across an outer restart, then delivered', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  let outer = await startOuter(t, dir, keys)
  const tok = await token('zhangsan')
  // The system id is what the inner will assign; register it first in an inner that is not running yet.
  const cb = await startCallbackServer(t)
  let inner = await startInner(t, dir, keys, undefined)
  const sys = await addSystem(inner, { callback: cb.url })
  await inner.daemon.close()

  const r = await api(outer.clientsUrl, '/api/v1/actions', tok, { system: sys.id, type: 'handle', ref: 'x-1' })
  t.equal(r.status, 202)
  const id = r.body.id as string
  outer = await restartOuter(t, dir, keys, outer)
  t.same((await api(outer.clientsUrl, `/api/v1/actions/${id}`, tok)).body, { id, status: 'queued' }, 'still queued after the outer restarted')

  const phone = await connectWs(t, outer.clientsUrl, tok)
  await phone.next((f) => f.t === 'snapshot')
  inner = await startInner(t, dir, keys, outer.linkUrl)
  t.equal((await phone.next((f) => f.t === 'action' && f.id === id && f.status === 'forwarded', 15_000)).status, 'forwarded')
  t.equal((await phone.next((f) => f.t === 'action' && f.id === id && f.status === 'delivered', 15_000)).status, 'delivered')
  const [req] = await cb.waitForRequests(1)
  t.ok(signatureValid(req!, sys.code))
  t.equal(req!.body.id, id)
  t.equal(cb.requests.length, 1)
})

/** Linked daemons (the inner retrying fast) and a system whose callback answers 503 until `openCallback()`. */
async function pairWithFailingCallback(t: T) {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const outer = await startOuter(t, dir, keys)
  const inner = await startInner(t, dir, keys, outer.linkUrl, RETRY)
  const cb = await startCallbackServer(t)
  let open = false
  cb.respond = () => (open ? 200 : 503)
  const sys = await addSystem(inner, { callback: cb.url })
  await waitFor(() => inner.daemon.links[0]!.state === 'up', 'link up')
  return { dir, keys, outer, inner, cb, sys, tok: await token('zhangsan'), openCallback: () => { open = true } }
}

t.test('actions: a status reached while the outer is down arrives after it restarts', async (t) => {
  const p = await pairWithFailingCallback(t)
  const { dir, keys, inner, cb, sys, tok } = p
  let outer = p.outer
  const r = await api(outer.clientsUrl, '/api/v1/actions', tok, { system: sys.id, type: 'handle' })
  const id = r.body.id as string
  await waitFor(async () => (await api(outer.clientsUrl, `/api/v1/actions/${id}`, tok)).body.status === 'forwarded', 'forwarded at the outer')
  await cb.waitForRequests(1)

  await outer.daemon.close()
  p.openCallback()
  await waitFor(() => innerStatus(inner, id) === 'delivered', 'delivered while the outer is down', 15_000)
  outer = await restartOuter(t, dir, keys, outer)
  await waitFor(async () => (await api(outer.clientsUrl, `/api/v1/actions/${id}`, tok)).body.status === 'delivered', 'delivered at the restarted outer', 15_000)
  t.pass('the outer learned the final status after the reconnect')
  t.equal(cb.requests.filter((q) => q.body.id === id).length >= 2, true, 'retried until the callback answered 2xx')
  t.equal(outer.daemon.queues.actionsOpen, 0)
})

t.test('actions: a delivery pending at the inner resumes after the inner restarts', async (t) => {
  const p = await pairWithFailingCallback(t)
  const { dir, keys, outer, cb, sys, tok } = p
  let inner = p.inner
  const phone = await connectWs(t, outer.clientsUrl, tok)
  await phone.next((f) => f.t === 'snapshot')
  const r = await api(outer.clientsUrl, '/api/v1/actions', tok, { system: sys.id, type: 'handle' })
  const id = r.body.id as string
  await phone.next((f) => f.t === 'action' && f.id === id && f.status === 'forwarded')
  await cb.waitForRequests(1)

  await inner.daemon.close()
  t.equal(statusAtRest(dir, id), 'forwarded', 'still forwarded (durable) while the inner is down')
  p.openCallback()
  const before = cb.requests.length
  inner = await startInner(t, dir, keys, outer.linkUrl, RETRY)
  const done = await phone.next((f) => f.t === 'action' && f.id === id && f.status !== 'forwarded', 15_000)
  t.equal(done.status, 'delivered', 'the phone hears delivered after the inner restarted')
  t.ok(cb.requests.length > before, 'the restarted inner made the delivery')
  t.equal(innerStatus(inner, id), 'delivered')
})

/** Reads the inner's database while it is not running (what `todo-inner trace` would do). */
function statusAtRest(dir: string, id: string): unknown {
  const db = openDatabase(join(dir, 'inner-data', 'inner.sqlite'), { readonly: true })
  try {
    return db.prepare('SELECT status FROM actions WHERE id = ?').pluck().get(id)
  } finally {
    db.close()
  }
}

t.test('actions: an expired token is accepted within the queueing grace and refused beyond it', async (t) => {
  for (const [grace, expected] of [[86_400, 'delivered'], [0, 'failed']] as const) {
    const dir = t.testdir()
    const keys = makeKeys(dir)
    const outer = await startOuter(t, dir, keys)
    const cb = await startCallbackServer(t)
    const tokens = { alg: 'HS256', secret: 'test-secret-0123456789abcdef', clockSkewSeconds: 0 }
    let inner = await startInner(t, dir, keys, undefined, { tokens })
    const sys = await addSystem(inner, { callback: cb.url })
    await inner.daemon.close()

    const tok = await token('zhangsan', 1)
    const exp = JSON.parse(Buffer.from(tok.split('.')[1]!, 'base64url').toString()).exp as number
    const r = await api(outer.clientsUrl, '/api/v1/actions', tok, { system: sys.id, type: 'handle' })
    t.equal(r.status, 202)
    const id = r.body.id as string
    // The action waits at the outer until its token has expired.
    await waitFor(() => Date.now() > exp * 1000 + 1100, 'the token to expire', 5000, 50)
    inner = await startInner(t, dir, keys, outer.linkUrl, { tokens, actions: { graceSeconds: grace } })
    await waitFor(() => ['delivered', 'failed'].includes(innerStatus(inner, id) as string), 'a final status', 15_000)
    t.equal(innerStatus(inner, id), expected, `grace ${grace}s: ${expected}`)
    if (expected === 'failed') {
      t.equal(inner.daemon.store.db.prepare('SELECT code FROM actions WHERE id = ?').pluck().get(id), 'E_ACTION_TOKEN')
      t.equal(cb.requests.length, 0)
    }
    await inner.daemon.close()
    await outer.daemon.close()
  }
})
