/**
 * Client limits (DESIGN §3.6): a slow consumer is closed with 4008 instead of being buffered without
 * bound and resumes exactly with `?since=`; at most N connections per user (the next gets 429, other
 * users are unaffected); `maxPayload` for client frames; the optional Origin allow-list.
 */
import t from 'tap'
import type { Socket } from 'node:net'
import { request } from 'node:http'
import WebSocket from 'ws'
import { CLOSE } from '../../shared/protocol.js'
import { connectWs, push, record, startPair, token, upgradeStatus, waitFor, WsClient, type Frame } from '../helpers/daemons.js'

/** The status and error code of a refused upgrade, read as plain HTTP. */
function refusedBody(base: string, tok: string): Promise<{ status: number; code: string }> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}/ws`, {
      headers: { authorization: `Bearer ${tok}`, connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' },
    })
    req.on('upgrade', (_res, socket) => { socket.destroy(); reject(new Error('upgraded')) })
    req.on('response', (res) => {
      let text = ''
      res.on('data', (d: Buffer) => { text += d.toString() })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, code: (JSON.parse(text) as { code: string }).code }))
    })
    req.on('error', reject)
    req.end()
  })
}

t.test('limits: a client that stops reading is closed with 4008 and resumes exactly with since', async (t) => {
  const p = await startPair(t, { outer: { clients: { maxBufferedBytes: 1024 } } })
  const slowTok = await token('slow')
  const slow = await connectWs(t, p.outer.clientsUrl, slowTok)
  const snap = await slow.next((f) => f.t === 'snapshot')
  const fast = await connectWs(t, p.outer.clientsUrl, await token('fast'))
  await fast.next((f) => f.t === 'snapshot')
  // Stop reading: the kernel buffers fill, then the server's send queue grows past maxBufferedBytes.
  const sock = (slow.ws as unknown as { _socket: Socket })._socket
  sock.pause()

  const url = `http://10.194.5.72/${'p'.repeat(2000)}`
  let q = 0
  for (let batch = 0; batch < 40 && p.outer.daemon.hub.connections > 1; batch++) {
    const records = Array.from({ length: 400 }, () => record(p.system.code, 'slow', ++q, { URL: url }))
    const r = await push(p.inner.intakeUrl, records, 'json')
    t.equal(r.status, 200)
    await waitFor(() => p.outer.daemon.store.hw === (r.body.data as { seq: number }[]).at(-1)!.seq, 'outer committed the batch')
  }
  await waitFor(() => p.outer.daemon.hub.connections === 1, 'the slow socket dropped from the hub')
  await push(p.inner.intakeUrl, record(p.system.code, 'fast', 1))
  t.equal((await fast.next((f) => f.t === 'update')).t, 'update', 'other users keep their live updates')
  t.notOk(fast.closed)

  // Reading again: what was already on the wire arrives, then the 4008 close.
  sock.resume()
  const closed = await slow.waitClose(30_000)
  t.equal(closed.code, CLOSE.SLOW_CONSUMER, 'closed as a slow consumer')
  const before = slow.frames.filter((f) => f.t === 'update').map((f) => (f.item as { seq: number }).seq)
  const last = before.at(-1) ?? (snap.seq as number)

  const again = await connectWs(t, p.outer.clientsUrl, slowTok, `since=${last}&epoch=${snap.epoch as string}`)
  const after: number[] = []
  let synced: Frame | undefined
  while (!synced) {
    const f = await again.next(() => true, 20_000)
    if (f.t === 'update') after.push((f.item as { seq: number }).seq)
    else if (f.t === 'synced') synced = f
    else t.fail(`unexpected ${f.t}`)
  }
  const all = p.outer.daemon.store.db.prepare("SELECT seq FROM history WHERE user = 'slow' ORDER BY seq").pluck().all() as number[]
  t.same([...before, ...after], all, `all ${all.length} updates exactly once, in order, across the drop (${before.length} before, ${after.length} resumed)`)
  t.equal(synced.seq, p.outer.daemon.store.hw)
})

t.test('limits: at most maxConnectionsPerUser sockets per user; the next gets 429', async (t) => {
  const p = await startPair(t)
  const tok = await token('zhangsan')
  const open: WsClient[] = []
  for (let i = 0; i < 10; i++) {
    const c = await connectWs(t, p.outer.clientsUrl, tok)
    await c.next((f) => f.t === 'snapshot')
    open.push(c)
  }
  t.equal(await upgradeStatus(p.outer.clientsUrl, tok), 429, 'the 11th connection is refused with 429')
  t.same(await refusedBody(p.outer.clientsUrl, tok), { status: 429, code: 'E_TOO_MANY_CONNECTIONS' })
  t.equal(await upgradeStatus(p.outer.clientsUrl, await token('lisi')), 101, 'another user is not affected (caps are per user, not per IP)')
  open[0]!.close()
  await waitFor(() => p.outer.daemon.hub.connections === 9, 'one socket freed')
  t.equal(await upgradeStatus(p.outer.clientsUrl, tok), 101, 'room again after one closed')
})

t.test('limits: frames above maxPayload close the socket (1009); Origin allow-list', async (t) => {
  const p = await startPair(t, { outer: { clients: { allowedOrigins: ['https://app.example'] } } })
  const tok = await token('zhangsan')
  const c = await connectWs(t, p.outer.clientsUrl, tok)
  await c.next((f) => f.t === 'snapshot')
  c.ws.send(JSON.stringify({ t: 'ping', pad: 'x'.repeat(70 * 1024) }))
  t.equal((await c.waitClose()).code, 1009, 'message too big')

  t.equal(await upgradeStatus(p.outer.clientsUrl, tok, { headers: { origin: 'https://evil.example' } }), 403, 'a foreign Origin is refused')
  t.equal(await upgradeStatus(p.outer.clientsUrl, tok, { headers: { origin: 'https://app.example' } }), 101, 'an allowed Origin is accepted')
  t.equal(await upgradeStatus(p.outer.clientsUrl, tok), 101, 'no Origin (native apps) is accepted')
})

t.test('limits: a resume larger than the send buffer is cut with 4008, not buffered whole; reconnects finish it', async (t) => {
  const p = await startPair(t, { outer: { clients: { maxBufferedBytes: 1024 } } })
  const url = `http://10.194.5.72/${'p'.repeat(2000)}`
  let q = 0
  for (let batch = 0; batch < 13; batch++) { // 400 records of ~2 KB: under the 1 MiB body limit
    const r = await push(p.inner.intakeUrl, Array.from({ length: 400 }, () => record(p.system.code, 'big', ++q, { URL: url })), 'json')
    t.equal(r.status, 200)
    await waitFor(() => p.outer.daemon.store.hw === (r.body.data as { seq: number }[]).at(-1)!.seq, 'outer committed the batch')
  }
  const all = p.outer.daemon.store.db.prepare("SELECT seq FROM history WHERE user = 'big' ORDER BY seq").pluck().all() as number[]
  const epoch = p.outer.daemon.store.epoch!
  const tok = await token('big')
  const updates = (c: WsClient): number[] => c.frames.filter((f) => f.t === 'update').map((f) => (f.item as { seq: number }).seq)
  const ended = (c: WsClient): Promise<unknown> => waitFor(() => c.closed ?? c.frames.find((f) => f.t === 'synced'), 'a close or the end of the resume', 30_000)

  // ~11 MB of history for a client that reads nothing yet: far more than the kernel buffers hold.
  const ws = new WebSocket(`${p.outer.clientsUrl.replace('http', 'ws')}/ws?since=0&epoch=${epoch}`, { headers: { authorization: `Bearer ${tok}` } })
  t.teardown(() => ws.terminate())
  ws.once('open', () => (ws as unknown as { _socket: Socket })._socket.pause())
  const first = new WsClient(ws)
  await first.opened
  ;(ws as unknown as { _socket: Socket })._socket.resume()
  await ended(first)
  t.equal(first.closed?.code, CLOSE.SLOW_CONSUMER, 'cut as a slow consumer')
  const got = updates(first)
  t.ok(got.length > 0 && got.length < all.length, `${got.length} of ${all.length} updates before the cut`)

  // Each reconnect from the last seq seen carries on (the server writes a resume in one go, so a big one may
  // be cut again even for a reading client) until `synced`.
  for (let n = 1; ; n++) {
    const c = await connectWs(t, p.outer.clientsUrl, tok, `since=${got.at(-1)!}&epoch=${epoch}`)
    await ended(c)
    const more = updates(c)
    got.push(...more)
    if (c.frames.some((f) => f.t === 'synced')) break
    t.equal(c.closed?.code, CLOSE.SLOW_CONSUMER)
    t.ok(more.length > 0, `reconnect ${n} made progress`)
    if (n >= 50) throw new Error('no end to the resume')
  }
  t.same(got, all, 'every update once, in order, across the cuts')
})
