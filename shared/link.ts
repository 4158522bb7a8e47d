/**
 * The link's handshake and sealed frames (DESIGN §3.4), shared by the dialer (the inner's link client)
 * and the servers (the outer's link listener, a city inner's upstream listener).
 *
 * Handshake — a mutual challenge–response over both nonces and both keys:
 *   server → dialer  hello   {key: serverKey, nonce: serverNonce}
 *   dialer → server  auth    {key: clientKey, nonce: clientNonce, center, epoch,
 *                             sig: sign_client(JCS{ctx:auth, serverKey, serverNonce, clientKey, clientNonce, center, epoch})}
 *   server → dialer  welcome {epoch, hw, sig: sign_server(JCS{ctx:welcome, serverKey, serverNonce, clientKey, clientNonce, epoch, hw})}
 * Each side pins the other's key. The server's fresh nonce makes a recorded `auth` useless on another
 * connection; the server also refuses a client nonce it has seen before (replay), and logs it.
 *
 * After the handshake every frame is sealed: `{"s": sign(FRAME_CONTEXT + sid + "\n" + b), "b": body}` with
 * `sid` derived from both nonces and `n` counting 1, 2, 3… per direction, so frames cannot be replayed
 * across sessions, reordered or altered.
 */
import { createHash, type KeyObject } from 'node:crypto'
import type WebSocket from 'ws'
import { canonicalBytes, randomNonce, sign, verify, type KeyPair } from './crypto.js'
import {
  CLOSE, FRAME_CONTEXT, PROTOCOL_VERSION, authSignedObject, validateHandshake, validateSealed, welcomeSignedObject,
  type AuthFrame, type HelloFrame, type WelcomeFrame,
} from './protocol.js'
import { ERRORS, RelayError, type ErrorCode } from './errors.js'

export const HANDSHAKE_TIMEOUT_MS = 10_000
export const MAX_LINK_FRAME_BYTES = 64 * 1024 * 1024

/** A link failure with the close code to send. */
export class LinkError extends RelayError {
  constructor(code: ErrorCode, readonly closeCode: number, reason: string) {
    super(code, { reason }, reason)
  }
}

/** Sealing and opening frames of one authenticated session. */
export class SealedChannel {
  private sendN = 0
  private recvN = 0
  private readonly prefix: Buffer

  constructor(private readonly own: KeyPair, private readonly peer: KeyObject, readonly sid: string) {
    this.prefix = Buffer.from(`${FRAME_CONTEXT}${sid}\n`, 'utf8')
  }

  /** Seals a body (its `n` is assigned here) and returns the wire text. */
  seal(body: { t: string; [k: string]: unknown }): string {
    const b = JSON.stringify({ ...body, n: ++this.sendN })
    return this.sealText(b)
  }

  /** Seals a body whose JSON text the caller built (hot path: envelopes spliced in as stored). `bodyPrefix` must open an object. */
  sealSpliced(bodyStart: string, rest: string): string {
    return this.sealText(`${bodyStart}"n":${++this.sendN},${rest}`)
  }

  private sealText(b: string): string {
    const s = sign(Buffer.concat([this.prefix, Buffer.from(b, 'utf8')]), this.own)
    return `{"s":"${s}","b":${JSON.stringify(b)}}`
  }

  /**
   * Verifies a received frame's signature (one verify per frame) and its position, and returns the
   * parsed body for the caller's validator. Throws LinkError with the close code to use.
   */
  open(data: string): unknown {
    let outer: unknown
    try {
      outer = JSON.parse(data)
    } catch {
      throw new LinkError('ERR_LINK_PROTOCOL', CLOSE.PROTOCOL, 'frame is not JSON')
    }
    const sealed = validateSealed(outer, MAX_LINK_FRAME_BYTES)
    if (typeof sealed === 'string') throw new LinkError('ERR_LINK_PROTOCOL', CLOSE.PROTOCOL, sealed)
    if (!verify(Buffer.concat([this.prefix, Buffer.from(sealed.b, 'utf8')]), sealed.s, this.peer)) {
      throw new LinkError('ERR_LINK_BAD_SIGNATURE', CLOSE.BAD_SIGNATURE, 'frame signature does not verify')
    }
    let body: unknown
    try {
      body = JSON.parse(sealed.b)
    } catch {
      throw new LinkError('ERR_LINK_PROTOCOL', CLOSE.PROTOCOL, 'frame body is not JSON')
    }
    if (typeof body !== 'object' || body === null) throw new LinkError('ERR_LINK_PROTOCOL', CLOSE.PROTOCOL, 'frame body is not an object')
    const n = (body as { n?: unknown }).n
    if (n !== this.recvN + 1) throw new LinkError('ERR_LINK_SEQUENCE', CLOSE.SEQUENCE, `frame n=${String(n).slice(0, 20)} where ${this.recvN + 1} was due`)
    this.recvN++
    return body
  }
}

export function sessionId(serverNonce: string, clientNonce: string): string {
  return createHash('sha256').update(`${serverNonce}|${clientNonce}`).digest('base64url').slice(0, 22)
}

/** Resolves with the next text message, or rejects on close/timeout. */
export function nextMessage(ws: WebSocket, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { cleanup(); reject(new LinkError('ERR_LINK_PROTOCOL', CLOSE.HANDSHAKE_TIMEOUT, 'handshake timed out')) }, timeoutMs)
    const onMessage = (data: WebSocket.RawData, isBinary: boolean): void => {
      cleanup()
      if (isBinary) reject(new LinkError('ERR_LINK_PROTOCOL', CLOSE.PROTOCOL, 'binary frame in handshake'))
      else resolve(data.toString())
    }
    const onClose = (code: number, reason: Buffer): void => {
      cleanup()
      reject(new LinkError('ERR_LINK_PROTOCOL', code, `closed during handshake: ${code} ${reason.toString()}`))
    }
    const cleanup = (): void => {
      clearTimeout(timer)
      ws.off('message', onMessage)
      ws.off('close', onClose)
    }
    ws.on('message', onMessage)
    ws.on('close', onClose)
  })
}

function parseHandshake(text: string): ReturnType<typeof validateHandshake> {
  try {
    return validateHandshake(JSON.parse(text))
  } catch {
    return 'handshake frame is not JSON'
  }
}

/**
 * A close frame's reason cut to what RFC 6455 §5.5 allows (a control frame's payload is at most 125 bytes,
 * 2 of them the code), on a character boundary: ws throws a RangeError for a longer reason, and reasons
 * quote peer-supplied text (an error frame's msg), which may be multi-byte.
 */
export function closeReason(text: string): string {
  let out = ''
  let bytes = 0
  for (const ch of text) {
    bytes += Buffer.byteLength(ch, 'utf8')
    if (bytes > 123) break
    out += ch
  }
  return out
}

/** Tells the peer why, then closes. */
export function refuse(ws: WebSocket, err: LinkError): void {
  try {
    ws.send(JSON.stringify({ t: 'error', code: err.code, msg: err.message }))
  } catch { /* already closing */ }
  ws.close(err.closeCode, closeReason(err.message))
}

export interface ServerHandshakeResult {
  channel: SealedChannel
  peerKey: string
  center: string
  epoch: string
}

/**
 * Runs the server side. `pinned` maps base64 public keys to KeyObjects; `seen` remembers client nonces
 * (bounded by the caller) to refuse replays; `resume` says what the server holds for that center.
 */
export async function serverHandshake(ws: WebSocket, opts: {
  key: KeyPair
  pinned: ReadonlyMap<string, KeyObject>
  seen: NonceCache
  resume: (center: string, epoch: string) => { epoch: string | null; hw: number | null }
  timeoutMs?: number
}): Promise<ServerHandshakeResult> {
  const serverNonce = randomNonce()
  const hello: HelloFrame = { t: 'hello', v: PROTOCOL_VERSION, key: opts.key.publicKey, nonce: serverNonce }
  ws.send(JSON.stringify(hello))
  const frame = parseHandshake(await nextMessage(ws, opts.timeoutMs ?? HANDSHAKE_TIMEOUT_MS))
  if (typeof frame === 'string') throw new LinkError('ERR_LINK_PROTOCOL', CLOSE.PROTOCOL, frame)
  if (frame.t !== 'auth') throw new LinkError('ERR_LINK_PROTOCOL', CLOSE.PROTOCOL, `expected auth, got ${frame.t}`)
  const auth: AuthFrame = frame
  if (auth.v !== PROTOCOL_VERSION) throw new LinkError('ERR_LINK_PROTOCOL', CLOSE.PROTOCOL, `protocol version ${auth.v} not supported`)
  const peer = opts.pinned.get(auth.key)
  if (!peer) throw new LinkError('ERR_LINK_UNKNOWN_KEY', CLOSE.UNKNOWN_KEY, 'dialer key is not pinned')
  const signed = canonicalBytes(authSignedObject({
    serverKey: opts.key.publicKey, serverNonce, clientKey: auth.key, clientNonce: auth.nonce, center: auth.center, epoch: auth.epoch,
  }))
  if (!verify(signed, auth.sig, peer)) throw new LinkError('ERR_LINK_BAD_SIGNATURE', CLOSE.BAD_SIGNATURE, 'auth signature does not verify')
  if (!opts.seen.add(auth.nonce)) throw new LinkError('ERR_LINK_REPLAY', CLOSE.REPLAY, 'client nonce replayed')
  const { epoch, hw } = opts.resume(auth.center, auth.epoch)
  const welcome: WelcomeFrame = {
    t: 'welcome', v: PROTOCOL_VERSION, epoch, hw,
    sig: sign(canonicalBytes(welcomeSignedObject({
      serverKey: opts.key.publicKey, serverNonce, clientKey: auth.key, clientNonce: auth.nonce, epoch, hw,
    })), opts.key),
  }
  ws.send(JSON.stringify(welcome))
  return { channel: new SealedChannel(opts.key, peer, sessionId(serverNonce, auth.nonce)), peerKey: auth.key, center: auth.center, epoch: auth.epoch }
}

export interface ClientHandshakeResult { channel: SealedChannel; welcome: WelcomeFrame }

/** Runs the dialer side against a server whose key is pinned as `serverKey`. */
export async function clientHandshake(ws: WebSocket, opts: {
  key: KeyPair
  serverKey: string
  serverKeyObject: KeyObject
  center: string
  epoch: string
  timeoutMs?: number
}): Promise<ClientHandshakeResult> {
  const timeout = opts.timeoutMs ?? HANDSHAKE_TIMEOUT_MS
  const hello = parseHandshake(await nextMessage(ws, timeout))
  if (typeof hello === 'string') throw new LinkError('ERR_LINK_PROTOCOL', CLOSE.PROTOCOL, hello)
  if (hello.t !== 'hello') throw new LinkError('ERR_LINK_PROTOCOL', CLOSE.PROTOCOL, `expected hello, got ${hello.t}`)
  if (hello.v !== PROTOCOL_VERSION) throw new LinkError('ERR_LINK_PROTOCOL', CLOSE.PROTOCOL, `server speaks protocol ${hello.v}, this side ${PROTOCOL_VERSION}`)
  if (hello.key !== opts.serverKey) throw new LinkError('ERR_LINK_UNKNOWN_KEY', CLOSE.UNKNOWN_KEY, 'server key does not match the pinned key')
  const clientNonce = randomNonce()
  const auth: AuthFrame = {
    t: 'auth', v: PROTOCOL_VERSION, key: opts.key.publicKey, nonce: clientNonce, center: opts.center, epoch: opts.epoch,
    sig: sign(canonicalBytes(authSignedObject({
      serverKey: hello.key, serverNonce: hello.nonce, clientKey: opts.key.publicKey, clientNonce, center: opts.center, epoch: opts.epoch,
    })), opts.key),
  }
  ws.send(JSON.stringify(auth))
  const reply = parseHandshake(await nextMessage(ws, timeout))
  if (typeof reply === 'string') throw new LinkError('ERR_LINK_PROTOCOL', CLOSE.PROTOCOL, reply)
  if (reply.t === 'error') {
    // Keep the server's stable code so the operator on this side sees why (e.g. our key is not pinned there).
    // Own keys only: `in` would also match inherited names such as `constructor`.
    const code = (Object.hasOwn(ERRORS, reply.code) ? reply.code : 'ERR_LINK_PROTOCOL') as ErrorCode
    throw new LinkError(code, CLOSE.PROTOCOL, `server refused: ${reply.code} ${reply.msg}`)
  }
  if (reply.t !== 'welcome') throw new LinkError('ERR_LINK_PROTOCOL', CLOSE.PROTOCOL, `expected welcome, got ${reply.t}`)
  if (reply.v !== PROTOCOL_VERSION) throw new LinkError('ERR_LINK_PROTOCOL', CLOSE.PROTOCOL, `welcome for protocol ${reply.v}`)
  const signed = canonicalBytes(welcomeSignedObject({
    serverKey: hello.key, serverNonce: hello.nonce, clientKey: opts.key.publicKey, clientNonce, epoch: reply.epoch, hw: reply.hw,
  }))
  if (!verify(signed, reply.sig, opts.serverKeyObject)) throw new LinkError('ERR_LINK_BAD_SIGNATURE', CLOSE.BAD_SIGNATURE, 'welcome signature does not verify')
  return { channel: new SealedChannel(opts.key, opts.serverKeyObject, sessionId(hello.nonce, clientNonce)), welcome: reply }
}

/** Remembers recent client nonces (bounded, oldest forgotten first) to refuse replayed handshakes. */
export class NonceCache {
  private readonly set = new Set<string>()
  constructor(private readonly max = 100_000) {}

  /** false when the nonce was seen before. */
  add(nonce: string): boolean {
    if (this.set.has(nonce)) return false
    this.set.add(nonce)
    if (this.set.size > this.max) this.set.delete(this.set.values().next().value!)
    return true
  }
}

/**
 * Heartbeats: ping every `intervalMs`; a peer silent (no pong, no message) for `deadMs` is terminated,
 * so a dead link is found within 30 s by default (DESIGN §3.4). The deadline is its own timer, pushed
 * back on every sign of life: checking it only when pinging would find a dead peer up to `intervalMs` late.
 */
export function heartbeat(ws: WebSocket, intervalMs: number, deadMs: number, onDead: () => void): () => void {
  let stopped = false
  const stop = (): void => {
    stopped = true
    clearInterval(ping)
    clearTimeout(dead)
  }
  const dead = setTimeout(() => {
    stop()
    onDead()
    ws.terminate()
  }, deadMs)
  dead.unref()
  const alive = (): void => { if (!stopped) dead.refresh() }
  ws.on('pong', alive)
  ws.on('message', alive)
  ws.on('ping', alive)
  const ping = setInterval(() => {
    try { ws.ping() } catch { /* closing */ }
  }, intervalMs)
  ping.unref()
  return stop
}
