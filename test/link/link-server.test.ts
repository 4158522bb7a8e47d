/**
 * The outer's link listener (outer/link-server.ts) stays up whatever reaches its port: a peer that resets
 * the connection after a refusal, or a session hook that fails on storage, is logged and survived.
 */
import t from 'tap'
import { connect } from 'node:net'
import type { Duplex } from 'node:stream'
import { once } from 'node:events'
import { loadKeyFile } from '../../shared/crypto.js'
import { createLinkServer } from '../../outer/link-server.js'
import { OuterStore } from '../../outer/store.js'
import { LogSink, addSystem, makeKeys, push, record, serveOnPort0, startInner, startOuter, waitFor } from '../helpers/daemons.js'

t.test('link: a connection reset after the 404 for a wrong path does not take the outer down', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const store = new OuterStore(dir)
  t.teardown(() => store.close())
  const logs = new LogSink('link')
  const link = createLinkServer({
    store, key: loadKeyFile(keys.outerKey), inners: [keys.innerPub], log: logs.logger,
    options: { heartbeatMs: 1000, deadMs: 3000 }, events: { onCommitted: () => {}, onReset: () => {} },
  })
  const upgrades: Duplex[] = []
  link.server.on('upgrade', (_req, socket: Duplex) => upgrades.push(socket))
  const port = await serveOnPort0(t, link.server, () => link.close())

  const s = connect(port, '127.0.0.1')
  s.on('error', () => { /* reset on purpose */ })
  t.teardown(() => { s.destroy() })
  await once(s, 'connect')
  s.write('GET /not-the-link HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n'
    + 'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
  const [reply] = await once(s, 'data') as [Buffer]
  t.match(reply.toString(), /^HTTP\/1\.1 404 /)
  s.resetAndDestroy()
  await once(s, 'close')
  const server = upgrades[0]!
  await waitFor(() => server.destroyed, 'the server side of the reset socket is gone')
  t.equal((await fetch(`http://127.0.0.1:${port}/`)).status, 426, 'the link listener still answers')
})

t.test('link: a session hook that fails on storage is logged; the session stays up and todos flow', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const outer = await startOuter(t, dir, keys)
  // Resending queued receipts and actions reads SQLite; here that read fails (I/O error, say).
  outer.daemon.queues.onSession = () => { throw Object.assign(new Error('disk I/O error'), { code: 'SQLITE_IOERR' }) }
  const inner = await startInner(t, dir, keys, outer.linkUrl)
  const sys = await addSystem(inner)
  await outer.logs.waitFor((l) => l.msg === 'link session hook failed', 'the failure is logged')
  const r = await push(inner.intakeUrl, record(sys.code, 'zhangsan', 4))
  const seq = (r.body.data as { seq: number }).seq
  await waitFor(() => outer.daemon.store.hw === seq, 'the push reached the outer')
  t.equal(inner.daemon.links[0]!.state, 'up')
  t.equal(inner.logs.lines.filter((l) => l.msg === 'link up').length, 1, 'one session, never dropped')
})

t.test('link: unauthenticated connections are capped; a freed slot is usable again', async (t) => {
  const { default: WebSocket } = await import('ws')
  const { MAX_PENDING_HANDSHAKES } = await import('../../outer/link-server.js')
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const outer = await startOuter(t, dir, keys)
  const open = async (): Promise<{ ws: InstanceType<typeof WebSocket>; status?: number }> => {
    const ws = new WebSocket(outer.linkUrl)
    t.teardown(() => ws.terminate())
    return new Promise((res) => {
      ws.once('message', () => res({ ws })) // the hello: this connection holds a handshake slot
      ws.once('unexpected-response', (_req, r) => res({ ws, status: r.statusCode }))
      ws.once('error', () => { /* reported through unexpected-response */ })
    })
  }
  const held = []
  for (let i = 0; i < MAX_PENDING_HANDSHAKES; i++) held.push(await open())
  t.ok(held.every((h) => h.status === undefined), `${MAX_PENDING_HANDSHAKES} handshakes may be pending`)
  t.equal((await open()).status, 503, 'one more is refused')
  await outer.logs.waitFor((l) => l.msg === 'link connection refused: too many handshakes in progress', 'refusal logged')
  held[0]!.ws.close()
  await waitFor(async () => (await open()).status === undefined, 'a slot frees when a pending connection closes')
})
