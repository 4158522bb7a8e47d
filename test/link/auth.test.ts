/**
 * The link refuses, and logs, whatever is not the pinned peer (DESIGN §3.4): an unknown inner key, a wrong
 * outer key, replayed handshakes, and — after a valid handshake — altered or replayed frames. Where the
 * test plays the inner it uses the shared/link.ts primitives and the real inner key file.
 */
import t, { type Test } from 'tap'
import { join } from 'node:path'
import WebSocket from 'ws'
import { canonicalBytes, generateKeyFiles, loadKeyFile, publicKeyObject, sign, signEnvelope, type KeyPair } from '../../shared/crypto.js'
import { clientHandshake, nextMessage, type SealedChannel } from '../../shared/link.js'
import { CLOSE, PROTOCOL_VERSION, authSignedObject, type AuthFrame, type HelloFrame } from '../../shared/protocol.js'
import {
  makeKeys, push, record, startInner, startOuter, waitFor, addSystem, type Keys, type LogLine, type RunningOuter,
} from '../helpers/daemons.js'

const refusedWith = (msg: string, code: string) => (l: LogLine): boolean => l.msg === msg && l.code === code

/** A raw link connection to the outer. */
interface RawLink { ws: WebSocket; closed: Promise<{ code: number; reason: string }> }

/**
 * Connects to the outer's /link and runs `onOpen` inside the 'open' event: the server's hello can arrive
 * in the same read as the upgrade reply, so listeners must be in place before the event handler returns.
 */
function openLink<R>(t: Test, outer: RunningOuter, onOpen: (ws: WebSocket) => Promise<R>): Promise<{ link: RawLink; result: R }> {
  const ws = new WebSocket(outer.linkUrl, { perMessageDeflate: false })
  t.teardown(() => ws.terminate())
  const closed = new Promise<{ code: number; reason: string }>((res) => ws.once('close', (code, reason) => res({ code, reason: reason.toString() })))
  return new Promise((res, rej) => {
    ws.once('open', () => onOpen(ws).then((result) => res({ link: { ws, closed }, result }), rej))
    ws.once('error', rej)
  })
}

/** Wraps ws.send to capture what a handshake sends. */
function captureSends(ws: WebSocket): string[] {
  const sent: string[] = []
  const orig = ws.send.bind(ws)
  ws.send = ((data: string, ...rest: unknown[]) => {
    sent.push(String(data))
    return (orig as (d: string, ...r: unknown[]) => void)(data, ...rest)
  }) as typeof ws.send
  return sent
}

async function handshake(t: Test, outer: RunningOuter, key: KeyPair, keys: Keys): Promise<{ link: RawLink; channel: SealedChannel; sent: string[]; acks: Record<string, unknown>[] }> {
  let sent: string[] = []
  const { link, result: { channel } } = await openLink(t, outer, (ws) => {
    sent = captureSends(ws)
    return clientHandshake(ws, {
      key, serverKey: keys.outerPub, serverKeyObject: publicKeyObject(keys.outerPub), center: 'test-center', epoch: 'epoch-test-1',
    })
  })
  const acks: Record<string, unknown>[] = []
  link.ws.on('message', (d) => {
    try {
      acks.push(channel.open(d.toString()) as Record<string, unknown>)
    } catch { /* error frames before a close */ }
  })
  return { link, channel, sent, acks }
}

/** Connects and reads the server's hello. */
async function hello(t: Test, outer: RunningOuter): Promise<{ link: RawLink; hello: HelloFrame }> {
  const { link, result } = await openLink(t, outer, (ws) => nextMessage(ws, 5000))
  return { link, hello: JSON.parse(result) as HelloFrame }
}

t.test('link: the outer refuses an inner whose key it does not pin, and logs it', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const outer = await startOuter(t, dir, keys)
  const stranger = generateKeyFiles(join(dir, 'stranger'), 'inner')
  const inner = await startInner(t, dir, { ...keys, innerKey: stranger.keyFile, innerPub: stranger.publicKey }, outer.linkUrl)
  const line = await outer.logs.waitFor(refusedWith('link handshake refused', 'ERR_LINK_UNKNOWN_KEY'), 'outer refuses the unknown key')
  t.equal(line.code, 'ERR_LINK_UNKNOWN_KEY')
  // The inner tries again (with backoff) and is refused again; it never comes up.
  await waitFor(() => outer.logs.lines.filter(refusedWith('link handshake refused', 'ERR_LINK_UNKNOWN_KEY')).length >= 2, 'a second refusal')
  await inner.logs.waitFor((l) => l.msg === 'link handshake refused', 'the inner logs the refusal too')
  t.notOk(inner.logs.find((l) => l.msg === 'link up'), 'the inner never logs link up')
  t.notOk(outer.logs.find((l) => l.msg === 'link up'), 'the outer never logs link up')
  t.notOk(inner.daemon.links.some((l) => l.state === 'up'))
  t.equal(outer.daemon.store.epoch, null, 'the outer holds nothing')
})

t.test('link: the inner refuses an outer whose key differs from its pinned key; no data reaches the outer', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const outer = await startOuter(t, dir, keys)
  const impostor = generateKeyFiles(join(dir, 'impostor'), 'outer')
  const inner = await startInner(t, dir, { ...keys, outerPub: impostor.publicKey }, outer.linkUrl)
  const sys = await addSystem(inner)
  t.equal((await push(inner.intakeUrl, record(sys.code, 'admin', 5))).status, 200, 'pushes are still taken and stored')
  const line = await inner.logs.waitFor(refusedWith('link handshake refused', 'ERR_LINK_UNKNOWN_KEY'), 'inner refuses the hello')
  t.equal(line.code, 'ERR_LINK_UNKNOWN_KEY')
  await waitFor(() => inner.logs.lines.filter(refusedWith('link handshake refused', 'ERR_LINK_UNKNOWN_KEY')).length >= 2, 'refused on retry too')
  t.notOk(inner.logs.find((l) => l.msg === 'link up'), 'the inner never logs link up')
  t.notOk(outer.logs.find((l) => l.msg === 'link up'), 'the outer never logs link up')
  t.equal(outer.daemon.store.epoch, null, 'the outer has no replica')
  t.equal(outer.daemon.store.hw, null)
  t.same(outer.daemon.store.counts(), { users: 0, items: 0, history: 0 }, 'no data reached the outer')
})

t.test('link: replayed handshakes are refused', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const outer = await startOuter(t, dir, keys)
  const innerKey = loadKeyFile(keys.innerKey)

  // A genuine session; its auth frame is what an eavesdropper would record.
  const first = await handshake(t, outer, innerKey, keys)
  await outer.logs.waitFor((l) => l.msg === 'link up', 'the genuine session is up')
  const recorded = JSON.parse(first.sent.find((s) => s.includes('"auth"'))!) as AuthFrame
  t.equal(recorded.t, 'auth')
  first.link.ws.close()
  await first.link.closed

  await t.test('the recorded auth frame on a new connection: bad signature (the server nonce differs)', async (t) => {
    const { link, hello: h } = await hello(t, outer)
    t.not(h.nonce, recorded.nonce)
    link.ws.send(JSON.stringify(recorded))
    const closed = await link.closed
    t.equal(closed.code, CLOSE.BAD_SIGNATURE)
    await outer.logs.waitFor(refusedWith('link handshake refused', 'ERR_LINK_BAD_SIGNATURE'), 'logged as a bad signature')
  })

  await t.test('a fresh, valid signature over a client nonce seen before: ERR_LINK_REPLAY', async (t) => {
    const { link, hello: h } = await hello(t, outer)
    const auth: AuthFrame = {
      t: 'auth', v: PROTOCOL_VERSION, key: innerKey.publicKey, nonce: recorded.nonce, center: recorded.center, epoch: recorded.epoch,
      sig: sign(canonicalBytes(authSignedObject({
        serverKey: h.key, serverNonce: h.nonce, clientKey: innerKey.publicKey, clientNonce: recorded.nonce,
        center: recorded.center, epoch: recorded.epoch,
      })), innerKey),
    }
    const errorFrame = nextMessage(link.ws, 5000)
    link.ws.send(JSON.stringify(auth))
    t.match(JSON.parse(await errorFrame), { t: 'error', code: 'ERR_LINK_REPLAY' }, 'the outer says why')
    const closed = await link.closed
    t.equal(closed.code, CLOSE.REPLAY)
    await outer.logs.waitFor(refusedWith('link handshake refused', 'ERR_LINK_REPLAY'), 'logged as a replay')
  })

  await t.test('the same with a new nonce is accepted (the key itself is fine)', async (t) => {
    const again = await handshake(t, outer, innerKey, keys)
    t.ok(again.channel, 'handshake completes')
    again.link.ws.close()
  })
})

t.test('link: altered and replayed frames after a valid handshake are refused; nothing is stored', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const outer = await startOuter(t, dir, keys)
  const innerKey = loadKeyFile(keys.innerKey)
  const envelope = (seq: number, quantity: number) => signEnvelope({
    seq, id: `m-${seq}`, system: 'sys-test', systemName: '建设项目', user: 'admin', level: 1, quantity, url: '', ts: Date.now(), center: 'test-center',
  }, innerKey)

  // A valid session brings the replica to epoch-test-1 / hw 0.
  const s1 = await handshake(t, outer, innerKey, keys)
  s1.link.ws.send(s1.channel.seal({ t: 'resync', epoch: 'epoch-test-1', first: true, done: true, hw: 0, items: [] }))
  await waitFor(() => s1.acks.find((a) => a.t === 'ack'), 'resync acked')
  t.equal(outer.daemon.store.hw, 0)

  await t.test('a batch whose body was altered after signing: 4002, ERR_LINK_BAD_SIGNATURE, nothing stored', async (t) => {
    const wire = JSON.parse(s1.channel.seal({ t: 'batch', epoch: 'epoch-test-1', items: [envelope(1, 5)] })) as { s: string; b: string }
    t.match(wire.b, /"quantity":5/)
    const tampered = JSON.stringify({ s: wire.s, b: wire.b.replace('"quantity":5', '"quantity":500') })
    s1.link.ws.send(tampered)
    const closed = await s1.link.closed
    t.equal(closed.code, CLOSE.BAD_SIGNATURE)
    await outer.logs.waitFor(refusedWith('link frame refused', 'ERR_LINK_BAD_SIGNATURE'), 'logged')
    t.equal(outer.daemon.store.hw, 0, 'hw unchanged')
    t.same(outer.daemon.store.counts(), { users: 0, items: 0, history: 0 }, 'nothing stored')
  })

  await t.test('a frame sent again (wrong n): ERR_LINK_SEQUENCE, the first copy stored once', async (t) => {
    const s2 = await handshake(t, outer, innerKey, keys)
    const frame = s2.channel.seal({ t: 'batch', epoch: 'epoch-test-1', items: [envelope(1, 7)] })
    s2.link.ws.send(frame)
    await waitFor(() => s2.acks.find((a) => a.t === 'ack' && a.seq === 1), 'batch acked')
    s2.link.ws.send(frame)
    const closed = await s2.link.closed
    t.equal(closed.code, CLOSE.SEQUENCE)
    await outer.logs.waitFor(refusedWith('link frame refused', 'ERR_LINK_SEQUENCE'), 'logged')
    t.equal(outer.daemon.store.hw, 1)
    t.same(outer.daemon.store.counts(), { users: 1, items: 1, history: 1 }, 'stored once')
  })

  await t.test('a frame from another session (signed for a different session id): bad signature', async (t) => {
    const a = await handshake(t, outer, innerKey, keys)
    const b = await handshake(t, outer, innerKey, keys)
    await waitFor(() => a.link.ws.readyState !== WebSocket.OPEN, 'the older session is replaced')
    const fromA = a.channel.seal({ t: 'batch', epoch: 'epoch-test-1', items: [envelope(2, 9)] })
    b.link.ws.send(fromA)
    const closed = await b.link.closed
    t.equal(closed.code, CLOSE.BAD_SIGNATURE)
    t.equal(outer.daemon.store.hw, 1, 'hw unchanged')
  })
})
