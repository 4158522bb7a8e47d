import t from 'tap'
import Database from 'better-sqlite3'
import { join } from 'node:path'
import { connectWs, push, record, startPair, token, waitFor } from '../helpers/daemons.js'
import { traceMessage } from '../../inner/monitor.js'

t.test('lifecycle: a locked database delays receipts and stamps but never crashes the inner', async (t) => {
  const { inner, system } = await startPair(t, { inner: { storage: { busyTimeoutMs: 50 } } })
  const r = await push(inner.intakeUrl, record(system.code, 'admin', 3))
  t.equal(r.status, 200)
  const seq = (r.body.data as { seq: number }).seq
  await waitFor(() => traceMessage(inner.daemon.store, String(seq))?.stages.acked, 'acked stamp')

  const pc = await connectWs(t, inner.portalUrl, await token('admin'))
  const snap = await pc.next((f) => f.t === 'snapshot')
  t.equal((snap.items as { seq: number }[])[0]!.seq, seq)

  // Another process holds the write lock (as a long CLI or backup job might).
  const other = new Database(join(inner.config.dataDir, 'inner.sqlite'))
  t.teardown(() => { if (other.inTransaction) other.prepare('ROLLBACK').run(); other.close() })
  other.prepare('BEGIN EXCLUSIVE').run()
  pc.send({ t: 'ack', seq })
  pc.send({ t: 'read', seq })
  await inner.logs.waitFor((l) => l.msg === 'lifecycle write failed; kept for the next try', 'the failed write is logged')
  t.notOk(traceMessage(inner.daemon.store, String(seq))?.stages.delivered, 'not recorded while locked')

  other.prepare('ROLLBACK').run()
  const tr = await waitFor(() => {
    const x = traceMessage(inner.daemon.store, String(seq))
    return x?.stages.read ? x : undefined
  }, 'receipts recorded after the lock is gone', 10_000)
  t.ok(tr.stages.delivered, 'delivered recorded')
  t.equal((await push(inner.intakeUrl, record(system.code, 'admin', 4))).status, 200, 'the daemon still takes pushes')
})
