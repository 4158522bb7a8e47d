import t from 'tap'
import { connect } from 'node:net'
import { once } from 'node:events'
import { startPair, waitFor } from '../helpers/daemons.js'

t.test('intake: a client that hangs up mid-body is counted as E_CLIENT_ABORTED, not an internal error', async (t) => {
  const { inner } = await startPair(t)
  const lastSeq = inner.daemon.store.lastSeq
  const { port } = new URL(inner.intakeUrl)
  const s = connect(Number(port), '127.0.0.1')
  s.on('error', () => { /* we reset it on purpose */ })
  t.teardown(() => { s.destroy() })
  await once(s, 'connect')
  s.write('POST /websocket/todo/api/message HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"LEVEL":1')
  await waitFor(() => inner.daemon.metrics.registry.getSingleMetric('todo_inner_rejected_total') !== undefined, 'metrics ready')
  s.resetAndDestroy()
  await inner.logs.waitFor((l) => l.msg === 'push rejected' && l.code === 'E_CLIENT_ABORTED', 'the abort is logged with its code')
  t.notOk(inner.logs.find((l) => l.msg === 'internal error'), 'no internal error logged')
  t.equal(inner.daemon.store.lastSeq, lastSeq, 'nothing stored')
})
