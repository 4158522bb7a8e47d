import t from 'tap'
import { connectWs, push, record, startPair, token, waitFor } from '../helpers/daemons.js'
import { Retention } from '../../inner/retention.js'

const DAY = 86_400_000

t.test('retention: old messages every outer committed go, current counts stay, resumes below the floor reset', async (t) => {
  const { inner, outer, system, keys } = await startPair(t)
  for (const q of [1, 2, 3, 4, 5]) t.equal((await push(inner.intakeUrl, record(system.code, 'admin', q))).status, 200)
  for (const q of [7, 8]) t.equal((await push(inner.intakeUrl, record(system.code, 'bob', q))).status, 200)
  const store = inner.daemon.store
  await waitFor(() => outer.daemon.store.hw === 7 && store.minPeerAcked([keys.outerPub]) === 7, 'outer committed all 7')

  const log = inner.logs.logger
  const unacked = new Retention(store, [keys.outerPub, 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='], { days: 1, intervalSeconds: 3600 }, log, () => Date.now() + 2 * DAY)
  t.equal(await unacked.runOnce(), 0, 'nothing goes while a configured peer has not committed it')
  const notOld = new Retention(store, [keys.outerPub], { days: 1, intervalSeconds: 3600 }, log)
  t.equal(await notOld.runOnce(), 0, 'nothing younger than the retention goes')

  const r = new Retention(store, [keys.outerPub], { days: 1, intervalSeconds: 3600 }, log, () => Date.now() + 2 * DAY)
  t.equal(await r.runOnce(), 5, 'superseded messages went (4 of admin, 1 of bob)')
  t.same(store.userSnapshot('admin').map((e) => JSON.parse(e).quantity), [5], 'admin\'s current count stays')
  t.same(store.userSnapshot('bob').map((e) => JSON.parse(e).quantity), [8], 'bob\'s current count stays')
  t.equal(store.firstSeq(), 7, 'history is complete from seq 7 on')

  const pc = await connectWs(t, inner.portalUrl, await token('admin'), `since=2&epoch=${store.epoch}`)
  const snap = await pc.next((f) => f.t === 'snapshot')
  t.equal(snap.reset, true, 'a resume from below the floor gets a reset snapshot')
  t.equal(snap.total, 5)

  const pc2 = await connectWs(t, inner.portalUrl, await token('bob'), `since=6&epoch=${store.epoch}`)
  const upd = await pc2.next((f) => f.t === 'update' || f.t === 'snapshot')
  t.equal(upd.t, 'update', 'a resume from the floor still works')
  t.equal((upd.item as { quantity: number }).quantity, 8)

  // A new outer (no history) still gets the whole current state by resync.
  t.equal((await push(inner.intakeUrl, record(system.code, 'carol', 9))).status, 200)
  await waitFor(() => outer.daemon.store.hw === 8, 'outer keeps up after pruning')
})
