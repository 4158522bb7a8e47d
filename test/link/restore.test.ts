import t from 'tap'
import { copyFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { connectWs, push, record, startInner, startPair, token, waitFor } from '../helpers/daemons.js'

t.test('link: an inner restored from an older copy starts a new epoch and the outer resyncs', async (t) => {
  const { dir, keys, inner, outer, system } = await startPair(t)
  for (const q of [1, 2]) t.equal((await push(inner.intakeUrl, record(system.code, 'admin', q))).status, 200)
  const backup = join(dir, 'backup.sqlite')
  inner.daemon.store.db.exec(`VACUUM INTO '${backup}'`)
  for (const q of [3, 4, 5]) t.equal((await push(inner.intakeUrl, record(system.code, 'admin', q))).status, 200)
  await waitFor(() => outer.daemon.store.hw === 5, 'outer holds seq 5')
  const oldEpoch = inner.daemon.store.epoch
  // A phone that stays connected across the restore.
  const live = await connectWs(t, outer.clientsUrl, await token('admin'))
  t.equal((await live.next((f) => f.t === 'snapshot')).total, 5)

  // Restore the older copy in place of the live database, as an operator restoring a backup would.
  await inner.daemon.close()
  const file = join(inner.config.dataDir, 'inner.sqlite')
  for (const f of [file, `${file}-wal`, `${file}-shm`]) rmSync(f, { force: true })
  copyFileSync(backup, file)
  const restored = await startInner(t, dir, keys, outer.linkUrl)
  t.equal(restored.daemon.store.epoch, oldEpoch, 'the copy carries the old epoch')
  t.equal(restored.daemon.store.lastSeq, 2)

  await restored.logs.waitFor((l) => /started a new epoch/.test(l.msg), 'new epoch logged')
  const newEpoch = restored.daemon.store.epoch
  t.not(newEpoch, oldEpoch)
  await waitFor(() => outer.daemon.store.epoch === newEpoch && outer.daemon.store.hw === 2, 'outer resynced to the new epoch')
  const liveReset = await live.next((f) => f.t === 'snapshot')
  t.match(liveReset, { reset: true, epoch: newEpoch, seq: 2, total: 2 }, 'the connected phone is told to start over, with the restored state')

  // A phone that saw seq 5 of the old epoch gets a reset snapshot, not a resume.
  const phone = await connectWs(t, outer.clientsUrl, await token('admin'), `since=5&epoch=${oldEpoch}`)
  const snap = await phone.next((f) => f.t === 'snapshot')
  t.equal(snap.reset, true)
  t.equal(snap.epoch, newEpoch)
  t.equal(snap.total, 2, 'the restored count')

  // New messages continue in the new epoch and reach the phone.
  t.equal((await push(restored.intakeUrl, record(system.code, 'admin', 7))).status, 200)
  for (const ws of [phone, live]) {
    const upd = await ws.next((f) => f.t === 'update')
    t.equal((upd.item as { quantity: number }).quantity, 7)
    t.equal((upd.item as { seq: number }).seq, 3)
  }
})
