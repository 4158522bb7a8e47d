/**
 * The inner's side of a link: it always dials (connections go only from inside out). One LinkClient per
 * configured outer (or city center): connect, run the mutual handshake, then stream the outbox from the
 * peer's committed high-water mark in signed batches with a bounded window of unacked frames; heartbeats
 * find a dead peer; reconnects back off exponentially with full jitter.
 */
import { readFileSync } from 'node:fs'
import WebSocket from 'ws'
import type { KeyObject } from 'node:crypto'
import { Backoff } from '../shared/backoff.js'
import { publicKeyObject, type KeyPair } from '../shared/crypto.js'
import { RelayError } from '../shared/errors.js'
import { clientHandshake, closeReason, heartbeat, LinkError, MAX_LINK_FRAME_BYTES, type SealedChannel } from '../shared/link.js'
import type { Logger } from '../shared/log.js'
import { CLOSE, validateOuterToInner, type OuterToInner, type WelcomeFrame } from '../shared/protocol.js'
import type { InnerStore } from './store.js'
import type { Metrics } from './metrics.js'

export interface LinkTarget {
  url: string
  publicKey: string
  /** PEM CA bundle (path) that signs the peer's certificate, for wss:// with a private CA or a pinned self-signed cert. */
  ca?: string
}

export interface LinkClientOptions {
  batchSize: number
  /** Unacked frames allowed in flight. */
  window: number
  heartbeatMs: number
  deadMs: number
  reconnectBaseMs: number
  reconnectMaxMs: number
}

export type LinkState = 'idle' | 'connecting' | 'up' | 'down' | 'closed'

/** Handlers for what the peer sends besides acks (receipts, actions); each may reply on the channel. */
export type BodyHandler = (body: Exclude<OuterToInner, { t: 'ack' }>, link: LinkClient) => void

export class LinkClient {
  state: LinkState = 'idle'
  lastError: string | undefined
  readonly label: string
  private ws: WebSocket | undefined
  private channel: SealedChannel | undefined
  private readonly backoff: Backoff
  private readonly peerKey: KeyObject
  /** The CA bundle's bytes, read once: a read in the reconnect timer that failed would crash the daemon. */
  private readonly ca: Buffer | undefined
  private reconnectTimer: NodeJS.Timeout | undefined
  private stopHeartbeat: (() => void) | undefined
  private closed = false
  // Stream position for the current session.
  private mode: 'normal' | 'resync' = 'normal'
  private cursor = 0
  private acked = 0
  private resyncCursor = 0
  private resyncFirst = true
  private inflight = 0
  private connectedAt = 0
  private readonly onStored = (): void => this.pump()

  constructor(
    readonly target: LinkTarget,
    private readonly deps: {
      store: InnerStore
      key: KeyPair
      centerId: string
      log: Logger
      metrics: Metrics
      options: LinkClientOptions
      subscribe: (fn: () => void) => () => void
      onBody?: BodyHandler
    },
  ) {
    this.label = target.publicKey.slice(0, 8)
    this.peerKey = publicKeyObject(target.publicKey)
    try {
      this.ca = target.ca === undefined ? undefined : readFileSync(target.ca)
    } catch (e) {
      throw new RelayError('ERR_CONFIG_INVALID', { reason: `outers[].ca: cannot read ${target.ca}: ${(e as NodeJS.ErrnoException).code ?? String(e)}` })
    }
    this.backoff = new Backoff({ baseMs: deps.options.reconnectBaseMs, maxMs: deps.options.reconnectMaxMs })
  }

  private unsubscribe: (() => void) | undefined

  start(): void {
    if (this.state !== 'idle') return
    this.bookkeep('register', () => this.deps.store.registerPeer(this.target.publicKey, 'outer', this.target.url))
    this.unsubscribe = this.deps.subscribe(this.onStored)
    this.connect()
  }

  /** Highest seq the peer has committed in this session (0 before the first ack). */
  get ackedSeq(): number {
    return this.acked
  }

  /**
   * Peer rows are monitoring data (`stats`); a write that fails (the CLI holds the lock, disk full) must
   * not take the link down, and thrown from an event handler or a promise callback it would end the process.
   */
  private bookkeep(what: string, write: () => void): void {
    try {
      write()
    } catch (e) {
      this.deps.log.warn({ peer: this.label, err: e }, `could not record peer ${what}`)
    }
  }

  private connect(): void {
    if (this.closed) return
    this.state = 'connecting'
    const log = this.deps.log
    const ws = new WebSocket(this.target.url, {
      maxPayload: MAX_LINK_FRAME_BYTES,
      handshakeTimeout: 10_000,
      perMessageDeflate: false,
      ...(this.ca ? { ca: this.ca } : {}),
    })
    this.ws = ws
    // The peer may send session frames (resent receipts, actions) right after its welcome, in the same
    // read as the welcome and so before the handshake's promise has resolved and onWelcome has installed
    // the session's handler: hold every message after the two handshake ones (hello, welcome) until then.
    const early: { data: WebSocket.RawData; isBinary: boolean }[] = []
    let handshakeMessages = 0
    const hold = (data: WebSocket.RawData, isBinary: boolean): void => {
      if (++handshakeMessages > 2) early.push({ data, isBinary })
    }
    ws.on('message', hold)
    let failed = false
    const fail = (why: string): void => {
      if (failed) return
      failed = true
      this.lastError = why
      this.bookkeep('error', () => this.deps.store.peerError(this.target.publicKey, why))
    }
    ws.on('error', (e) => fail(e.message))
    ws.on('close', (code, reason) => {
      this.stopHeartbeat?.()
      this.channel = undefined
      this.deps.metrics.linkUp.set({ peer: this.label }, 0)
      const wasUp = this.state === 'up'
      this.state = this.closed ? 'closed' : 'down'
      if (wasUp) log.warn({ peer: this.label, code, reason: reason.toString() }, 'link down')
      if (this.closed) return
      // A session that stayed healthy for a while earns a quick retry.
      if (wasUp && Date.now() - this.connectedAt > 10_000) this.backoff.reset()
      const delay = this.backoff.next()
      log.info({ peer: this.label, delayMs: delay, attempt: this.backoff.attempts, lastError: this.lastError }, 'link reconnect scheduled')
      this.reconnectTimer = setTimeout(() => this.connect(), delay)
    })
    ws.on('open', () => {
      clientHandshake(ws, {
        key: this.deps.key, serverKey: this.target.publicKey, serverKeyObject: this.peerKey,
        center: this.deps.centerId, epoch: this.deps.store.epoch,
      }).then(({ channel, welcome }) => {
        try {
          this.onWelcome(ws, channel, welcome, { early, hold })
        } catch (e) {
          // Thrown in a promise callback this would be an unhandled rejection: drop the session instead.
          log.error({ peer: this.label, err: e }, 'link session setup failed')
          fail(String(e))
          ws.close(CLOSE.INTERNAL, 'session setup failed')
        }
      }, (e: unknown) => {
        const err = e instanceof LinkError ? e : new LinkError('ERR_LINK_PROTOCOL', CLOSE.PROTOCOL, String(e))
        fail(err.message)
        log.error({ peer: this.label, code: err.code, reason: err.message }, 'link handshake refused')
        ws.close(err.closeCode, closeReason(err.message))
      })
    })
  }

  private onWelcome(ws: WebSocket, channel: SealedChannel, w: WelcomeFrame,
    held: { early: { data: WebSocket.RawData; isBinary: boolean }[]; hold: (data: WebSocket.RawData, isBinary: boolean) => void }): void {
    if (ws !== this.ws || ws.readyState !== WebSocket.OPEN) return
    const store = this.deps.store
    this.channel = channel
    this.state = 'up'
    this.connectedAt = Date.now()
    this.inflight = 0
    this.lastError = undefined
    this.bookkeep('connection', () => store.peerConnected(this.target.publicKey))
    this.deps.metrics.linkUp.set({ peer: this.label }, 1)
    if (w.epoch === store.epoch && w.hw !== null && w.hw > store.lastSeq) {
      const old = store.epoch
      store.rotateEpoch()
      this.deps.log.error({ peer: this.label, peerHw: w.hw, lastSeq: store.lastSeq, oldEpoch: old, epoch: store.epoch },
        'peer holds seqs beyond this database (restored from an older copy?): started a new epoch; peers will resync')
    }
    const resumable = w.epoch === store.epoch && w.hw !== null && w.hw <= store.lastSeq && w.hw >= store.firstSeq() - 1
    if (resumable) {
      this.mode = 'normal'
      this.cursor = this.acked = w.hw!
    } else {
      this.mode = 'resync'
      this.resyncCursor = 0
      this.resyncFirst = true
      this.acked = 0
    }
    this.deps.log.info({ peer: this.label, url: this.target.url, peerEpoch: w.epoch, peerHw: w.hw, lastSeq: store.lastSeq, mode: this.mode }, 'link up')
    this.stopHeartbeat = heartbeat(ws, this.deps.options.heartbeatMs, this.deps.options.deadMs, () => {
      this.deps.log.warn({ peer: this.label }, 'link heartbeat lost; terminating')
    })
    const onMessage = (data: WebSocket.RawData, isBinary: boolean): void => {
      if (isBinary) return ws.close(CLOSE.PROTOCOL, 'binary frame')
      try {
        const body = validateOuterToInner(channel.open(data.toString()))
        if (typeof body === 'string') throw new LinkError('ERR_LINK_PROTOCOL', CLOSE.PROTOCOL, body)
        if (body.t === 'ack') this.onAck(body.epoch, body.seq)
        else this.deps.onBody?.(body, this)
      } catch (e) {
        const err = e instanceof LinkError ? e : new LinkError('ERR_LINK_PROTOCOL', CLOSE.INTERNAL, String(e))
        this.deps.log.error({ peer: this.label, code: err.code, reason: err.message }, 'link frame refused')
        ws.close(err.closeCode, closeReason(err.message))
      }
    }
    ws.off('message', held.hold)
    ws.on('message', onMessage)
    for (const m of held.early.splice(0)) onMessage(m.data, m.isBinary)
    this.pump()
  }

  private onAck(epoch: string, seq: number): void {
    const store = this.deps.store
    this.inflight = Math.max(0, this.inflight - 1)
    if (epoch === store.epoch && seq > this.acked) {
      const now = Date.now()
      store.recordAck(this.target.publicKey, epoch, this.acked, seq, now)
      this.deps.metrics.acked.inc({ peer: this.label }, seq - this.acked)
      this.acked = seq
    }
    this.deps.metrics.backlog.set({ peer: this.label }, store.lastSeq - this.acked)
    this.pump()
  }

  /** Sends a sealed body on the current session; false when the link is not up. */
  send(body: { t: string; [k: string]: unknown }): boolean {
    if (!this.channel || this.ws?.readyState !== WebSocket.OPEN) return false
    this.ws.send(this.channel.seal(body))
    return true
  }

  /** Sends what the window allows. Called on welcome, on every ack and after every commit. */
  private pump(): void {
    const ws = this.ws
    const ch = this.channel
    if (!ws || !ch || this.state !== 'up' || ws.readyState !== WebSocket.OPEN) return
    const { store, options } = { store: this.deps.store, options: this.deps.options }
    const epoch = JSON.stringify(store.epoch)
    while (this.inflight < options.window) {
      if (this.mode === 'resync') {
        const rows = store.latestAfter(this.resyncCursor, options.batchSize)
        const done = rows.length < options.batchSize
        const hw = done ? store.lastSeq : 0
        const items = rows.map((r) => r.envelope).join(',')
        ws.send(ch.sealSpliced('{"t":"resync",', `"epoch":${epoch},"first":${this.resyncFirst},"done":${done},"hw":${hw},"items":[${items}]}`))
        this.inflight++
        this.resyncFirst = false
        if (rows.length > 0) this.resyncCursor = rows[rows.length - 1]!.seq
        if (done) {
          this.deps.log.info({ peer: this.label, hw }, 'link resync sent')
          this.mode = 'normal'
          this.cursor = hw
        }
        continue
      }
      const rows = store.envelopesAfter(this.cursor, options.batchSize)
      if (rows.length === 0) return
      const first = rows[0]!.seq
      const last = rows[rows.length - 1]!.seq
      ws.send(ch.sealSpliced('{"t":"batch",', `"epoch":${epoch},"items":[${rows.map((r) => r.envelope).join(',')}]}`))
      this.inflight++
      store.markForwarded(first - 1, last, Date.now())
      this.deps.metrics.forwarded.inc({ peer: this.label }, rows.length)
      this.cursor = last
    }
  }

  /** Stops reconnecting and closes the session. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.unsubscribe?.()
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer)
    this.stopHeartbeat?.()
    const ws = this.ws
    if (!ws || ws.readyState === WebSocket.CLOSED) {
      this.state = 'closed'
      return
    }
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => { ws.terminate(); resolve() }, 2000)
      ws.once('close', () => { clearTimeout(t); resolve() })
      ws.close(CLOSE.GOING_AWAY, 'inner shutting down')
    })
    this.state = 'closed'
  }
}
