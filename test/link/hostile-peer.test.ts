/**
 * The inner keeps running whatever the other end of its link sends (DESIGN §3.4: the inner trusts nothing
 * from the DMZ). Here a small server plays the outer with the shared/link.ts primitives and the real outer
 * key file, and misbehaves: refusals with long non-ASCII text, malformed sealed frames, and silence.
 */
import t, { type Test } from 'tap'
import { once } from 'node:events'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import Database from 'better-sqlite3'
import WebSocket, { WebSocketServer } from 'ws'
import { loadKeyFile, publicKeyObject, randomNonce, sign, type KeyPair } from '../../shared/crypto.js'
import { NonceCache, closeReason, serverHandshake, type SealedChannel } from '../../shared/link.js'
import { CLOSE, FRAME_CONTEXT, PROTOCOL_VERSION } from '../../shared/protocol.js'
import {
  addSystem, makeKeys, push, record, startInner, startOuter, waitFor, type Keys, type LogLine,
} from '../helpers/daemons.js'

interface FakeOuter { url: string; closes: { code: number; reason: string }[] }

/** A server at /link that answers each connection with `onConnection`, after which it does what that says. */
async function fakeOuter(t: Test, onConnection: (ws: WebSocket) => void, opts: { autoPong?: boolean } = {}): Promise<FakeOuter> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, autoPong: opts.autoPong ?? true })
  t.teardown(() => new Promise<void>((r) => {
    for (const c of wss.clients) c.terminate()
    wss.close(() => r())
  }))
  await once(wss, 'listening')
  const closes: FakeOuter['closes'] = []
  wss.on('connection', (ws) => {
    ws.on('error', () => {})
    ws.on('close', (code, reason) => closes.push({ code, reason: reason.toString() }))
    onConnection(ws)
  })
  return { url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/link`, closes }
}

/** Runs the real server handshake with the outer key, pinning the inner key, then hands over the session. */
function authenticated(keys: Keys, onSession: (ws: WebSocket, channel: SealedChannel, key: KeyPair) => void): (ws: WebSocket) => void {
  const key = loadKeyFile(keys.outerKey)
  const pinned = new Map([[keys.innerPub, publicKeyObject(keys.innerPub)]])
  const seen = new NonceCache()
  return (ws) => {
    serverHandshake(ws, { key, pinned, seen, resume: () => ({ epoch: null, hw: null }) })
      .then(({ channel }) => onSession(ws, channel, key), () => ws.terminate())
  }
}

/** A sealed frame with any body text, signed as the session's outer would sign it. */
function sealRaw(channel: SealedChannel, key: KeyPair, bodyText: string): string {
  const s = sign(Buffer.concat([Buffer.from(`${FRAME_CONTEXT}${channel.sid}\n`, 'utf8'), Buffer.from(bodyText, 'utf8')]), key)
  return JSON.stringify({ s, b: bodyText })
}

const refused = (l: LogLine): boolean => l.msg === 'link handshake refused'

t.test('closeReason: cuts at 123 UTF-8 bytes on a character boundary', async (t) => {
  t.equal(closeReason('inner shutting down'), 'inner shutting down')
  const cut = closeReason(`x ${'拒'.repeat(100)}`)
  t.ok(Buffer.byteLength(cut) <= 123)
  t.equal(cut, `x ${'拒'.repeat(40)}`, 'whole characters only')
  t.equal(closeReason('😀'.repeat(40)), '😀'.repeat(30))
})

t.test('link: a refusal with long non-ASCII text from whoever answers at the outer URL does not end the inner', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  // Anybody can send a hello with the outer's public key; the refusal then comes before any signature.
  const fake = await fakeOuter(t, (ws) => {
    ws.send(JSON.stringify({ t: 'hello', v: PROTOCOL_VERSION, key: keys.outerPub, nonce: randomNonce() }))
    ws.once('message', () => ws.send(JSON.stringify({ t: 'error', code: 'constructor', msg: '拒绝'.repeat(300) })))
  })
  const inner = await startInner(t, dir, keys, undefined, { outers: [{ url: fake.url, publicKey: keys.outerPub }] })
  const line = await inner.logs.waitFor(refused, 'the refusal is logged')
  t.equal(line.code, 'ERR_LINK_PROTOCOL', 'a code the error table does not own is not taken over (not even an inherited name)')
  t.match(String(line.reason), /^server refused: constructor 拒绝/)
  await waitFor(() => inner.logs.lines.filter(refused).length >= 2, 'the inner tries again and is refused again')
  await waitFor(() => fake.closes.length >= 1, 'the inner closed the first connection')
  t.equal(fake.closes[0]!.code, CLOSE.PROTOCOL)
  t.ok(Buffer.byteLength(fake.closes[0]!.reason) <= 123)
})

t.test('link: sealed frames that are not objects, or carry an odd n, are refused with a protocol close code', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const bodies = ['null', JSON.stringify({ t: 'ack', n: '序'.repeat(200), epoch: 'e', seq: 0 })]
  let i = 0
  const fake = await fakeOuter(t, authenticated(keys, (ws, channel, key) => ws.send(sealRaw(channel, key, bodies[i++ % bodies.length]!))))
  const inner = await startInner(t, dir, keys, undefined, { outers: [{ url: fake.url, publicKey: keys.outerPub }] })
  await waitFor(() => fake.closes.length >= 2, 'both sessions closed by the inner')
  t.equal(fake.closes[0]!.code, CLOSE.PROTOCOL, 'a body that is not an object: 4000, not an internal error')
  t.equal(fake.closes[1]!.code, CLOSE.SEQUENCE, 'a wrong n: 4004')
  const lines = inner.logs.lines.filter((l) => l.msg === 'link frame refused')
  t.same(lines.slice(0, 2).map((l) => l.code), ['ERR_LINK_PROTOCOL', 'ERR_LINK_SEQUENCE'])
  await waitFor(() => inner.logs.lines.filter((l) => l.msg === 'link up').length >= 3, 'the inner keeps reconnecting')
})

t.test('link: a silent peer is dropped after link.deadMs, however long the ping interval', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  // After the handshake the fake outer never answers: no frames, no pongs.
  const fake = await fakeOuter(t, authenticated(keys, () => {}), { autoPong: false })
  const inner = await startInner(t, dir, keys, undefined, {
    outers: [{ url: fake.url, publicKey: keys.outerPub }],
    link: { heartbeatMs: 4000, deadMs: 1000, reconnectBaseMs: 60_000, reconnectMaxMs: 60_000 },
  })
  const up = await inner.logs.waitFor((l) => l.msg === 'link up', 'link up')
  const lost = await inner.logs.waitFor((l) => l.msg === 'link heartbeat lost; terminating', 'heartbeat lost', 10_000)
  const ms = Number(lost.time) - Number(up.time)
  t.ok(ms >= 900 && ms < 3000, `dropped ${ms} ms after the last sign of life (deadMs 1000, pings every 4000)`)
})

t.test('link: a database locked by another process while the link comes up does not end the inner', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const outer = await startOuter(t, dir, keys)
  const inner = await startInner(t, dir, keys, outer.linkUrl, { storage: { busyTimeoutMs: 0 } })
  // The CLI (or anyone) holds the write lock before the handshake can finish: the inner's peer row
  // cannot be written. That is monitoring data; the link must come up anyway.
  const other = new Database(join(inner.config.dataDir, 'inner.sqlite'))
  other.exec('BEGIN IMMEDIATE')
  t.teardown(() => {
    if (other.inTransaction) other.exec('ROLLBACK')
    other.close()
  })
  await inner.logs.waitFor((l) => l.msg === 'could not record peer connection', 'the failed write is logged')
  await waitFor(() => inner.daemon.links[0]!.state === 'up', 'link up')
  other.exec('ROLLBACK')
  const sys = await addSystem(inner)
  t.equal((await push(inner.intakeUrl, record(sys.code, 'admin', 3))).status, 200)
  await waitFor(() => outer.daemon.store.hw === 1, 'the message reaches the outer')
})
