/**
 * Receipts (DESIGN §3.4, §3.6, §3.7): a client's `ack` (displayed) and `read` travel outer → inner over the
 * inner's link and land in the message's lifecycle as `delivered` and `read`; they are queued durably at
 * the outer until the inner acknowledges them, so neither daemon's restart loses one.
 */
import t, { type Test } from 'tap'
import { traceMessage } from '../../inner/monitor.js'
import {
  addSystem, connectWs, makeKeys, push, record, startInner, startOuter, startPair, token, waitFor, type RunningInner,
} from '../helpers/daemons.js'

const stages = (inner: RunningInner, seq: number): Record<string, number> => traceMessage(inner.daemon.store, String(seq))?.stages ?? {}
const queued = (outer: { daemon: { store: { db: { prepare(s: string): { pluck(): { get(): unknown } } } } } }): number =>
  outer.daemon.store.db.prepare('SELECT count(*) FROM receipts').pluck().get() as number

t.test('receipts: ack and read from a phone reach the inner lifecycle', async (t) => {
  const p = await startPair(t)
  const phone = await connectWs(t, p.outer.clientsUrl, await token('zhangsan'))
  await phone.next((f) => f.t === 'snapshot')
  const r1 = await push(p.inner.intakeUrl, record(p.system.code, 'zhangsan', 3))
  const r2 = await push(p.inner.intakeUrl, record(p.system.code, 'zhangsan', 4))
  const s1 = (r1.body.data as { seq: number }).seq
  const s2 = (r2.body.data as { seq: number }).seq
  await phone.next((f) => f.t === 'update' && (f.item as { seq: number }).seq === s2)
  phone.send({ t: 'ack', seq: s1 })
  phone.send({ t: 'ack', seq: s2 })
  phone.send({ t: 'read', seq: s2 })
  phone.send({ t: 'ack', seq: s2 }) // a repeat changes nothing
  await waitFor(() => stages(p.inner, s2).read, 'read recorded')
  await waitFor(() => stages(p.inner, s1).delivered, 'delivered recorded')
  // forwarded/acked stamps are deferred to the next group commit or a short timer (inner/store.ts).
  const st = await waitFor(() => { const x = stages(p.inner, s2); return x.acked ? x : undefined }, 'acked stamp')
  t.ok(st.delivered! <= st.read!, 'delivered no later than read')
  t.notOk(stages(p.inner, s1).read, 's1 was only displayed')
  t.same(Object.keys(st), ['received', 'stored', 'forwarded', 'acked', 'delivered', 'read'], 'the whole lifecycle is there')
  await waitFor(() => queued(p.outer) === 0, 'the inner acknowledged every receipt')
  t.equal(p.outer.daemon.queues.receiptsQueued, 0)

  // Frames the server refuses: answered with an error frame, the socket stays.
  phone.send({ t: 'ack', seq: -1 })
  t.equal((await phone.next((f) => f.t === 'error')).code, 'E_FIELD')
  phone.send({ t: 'nonsense' })
  t.equal((await phone.next((f) => f.t === 'error')).code, 'E_FIELD')
  t.notOk(phone.closed)
})

t.test('receipts: queued at the outer while the inner is away, across an outer restart', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  let outer = await startOuter(t, dir, keys)
  let inner = await startInner(t, dir, keys, outer.linkUrl)
  const sys = await addSystem(inner)
  await waitFor(() => inner.daemon.links[0]!.state === 'up', 'link up')
  const r = await push(inner.intakeUrl, record(sys.code, 'zhangsan', 2))
  const seq = (r.body.data as { seq: number }).seq
  const tok = await token('zhangsan')
  const phone = await connectWs(t, outer.clientsUrl, tok)
  await phone.next((f) => f.t === 'snapshot' && (f.items as unknown[]).length === 1)

  await inner.daemon.close()
  phone.send({ t: 'ack', seq })
  phone.send({ t: 'read', seq })
  await waitFor(() => queued(outer) === 2, 'two receipts committed at the outer')

  // The outer restarts with the receipts on disk (on new ports: the inner starts after it, with its new URL).
  await outer.daemon.close()
  outer = await startOuter(t, dir, keys)
  t.equal(queued(outer), 2, 'still queued after the restart')
  t.equal(outer.daemon.queues.receiptsQueued, 2)

  inner = await startInner(t, dir, keys, outer.linkUrl)
  await waitFor(() => stages(inner, seq).read, 'read recorded after the inner came back')
  t.ok(stages(inner, seq).delivered)
  await waitFor(() => queued(outer) === 0, 'acknowledged and removed at the outer')
})

/** A linked pair and a client of `user` on the outer or the portal, holding one todo of that user; `seq` is its seq. */
async function clientWithTodo(t: Test, where: 'outer' | 'portal', user: string) {
  const p = await startPair(t)
  const client = await connectWs(t, where === 'outer' ? p.outer.clientsUrl : p.inner.portalUrl, await token(user))
  await client.next((f) => f.t === 'snapshot')
  const r = await push(p.inner.intakeUrl, record(p.system.code, user, 1))
  const seq = (r.body.data as { seq: number }).seq
  await client.next((f) => f.t === 'update')
  return { p, client, seq }
}

t.test('receipts: the PC portal records them directly', async (t) => {
  const { p, client: pc, seq } = await clientWithTodo(t, 'portal', 'wangwu')
  pc.send({ t: 'read', seq })
  await waitFor(() => stages(p.inner, seq).read, 'read recorded')
  t.ok(stages(p.inner, seq).delivered, 'reading implies it was displayed')
})

t.test('receipts: a storage failure while committing them is logged and survived; later ones land', async (t) => {
  const { p, client: phone, seq } = await clientWithTodo(t, 'outer', 'zhangsan')
  // The outer's disk refuses writes to the receipt queue (full, say): a temporary trigger on its connection.
  const db = p.outer.daemon.store.db
  db.exec("CREATE TEMP TRIGGER receipts_fail BEFORE INSERT ON main.receipts BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
  phone.send({ t: 'ack', seq })
  await p.outer.logs.waitFor((l) => l.msg === 'receipts not committed; dropped', 'the failure is logged')
  t.equal(p.outer.daemon.queues.receiptsQueued, 0, 'nothing counted as queued')
  db.exec('DROP TRIGGER receipts_fail')
  phone.send({ t: 'read', seq })
  await waitFor(() => stages(p.inner, seq).read, 'the next receipt reaches the inner')
  t.notOk(phone.closed)
})
