/**
 * The outer's link listener (DESIGN §3.4): accepts only inners whose key is pinned, verifies each frame's
 * signature once, commits before acking, and hands committed updates to the client API. It never opens
 * a connection itself. One authenticated session at a time: a newer one replaces the older.
 */
import { createServer, type Server } from 'node:http'
import type { KeyObject } from 'node:crypto'
import { WebSocketServer, type WebSocket } from 'ws'
import { publicKeyObject, type KeyPair } from '../shared/crypto.js'
import { heartbeat, LinkError, MAX_LINK_FRAME_BYTES, NonceCache, refuse, serverHandshake, type SealedChannel } from '../shared/link.js'
import type { Logger } from '../shared/log.js'
import { CLOSE, validateInnerToOuter, type InnerToOuter } from '../shared/protocol.js'
import type { Item, OuterStore } from './store.js'

/** Link connections allowed to be mid-handshake at once (each may take up to the handshake timeout). */
export const MAX_PENDING_HANDSHAKES = 16

export interface LinkServerOptions { heartbeatMs: number; deadMs: number }

export interface LinkServerEvents {
  /** Newly committed updates, in seq order. */
  onCommitted(items: Item[]): void
  /** The replica was replaced by a resync. */
  onReset(): void
  /** Other bodies (action status, receipt acks) for the outer's action/receipt queues. */
  onBody?(body: Exclude<InnerToOuter, { t: 'batch' } | { t: 'resync' }>, session: LinkSession): void
  /** A session came up (queues may resend what is pending). */
  onSession?(session: LinkSession): void
}

export interface LinkSession {
  readonly peerKey: string
  send(body: { t: string; [k: string]: unknown }): boolean
}

export interface LinkServer {
  server: Server
  /** The current authenticated session, if any. */
  session(): LinkSession | undefined
  close(): Promise<void>
}

export function createLinkServer(deps: {
  store: OuterStore
  key: KeyPair
  inners: readonly string[]
  log: Logger
  options: LinkServerOptions
  events: LinkServerEvents
}): LinkServer {
  const { store, log, events } = deps
  const pinned = new Map<string, KeyObject>(deps.inners.map((k) => [k, publicKeyObject(k)]))
  const seen = new NonceCache()
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_LINK_FRAME_BYTES, perMessageDeflate: false })
  let current: { ws: WebSocket; channel: SealedChannel; peerKey: string; session: LinkSession } | undefined

  const server = createServer((req, res) => {
    res.writeHead(426, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' })
    res.end('WebSocket link endpoint (/link)\n')
  })
  server.on('upgrade', (req, socket, head) => {
    if ((req.url ?? '').split('?')[0] !== '/link') {
      // Node hands the socket over without an 'error' listener: a peer that resets it after this refusal
      // would otherwise crash the outer.
      socket.on('error', () => socket.destroy())
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
      return
    }
    // Unauthenticated connections are capped: each may hold a slot for the handshake timeout, and only
    // the pinned inners have any business here (firewall the listener to them as well).
    if (handshaking >= MAX_PENDING_HANDSHAKES) {
      socket.on('error', () => socket.destroy())
      socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
      log.warn({ remote: req.socket.remoteAddress }, 'link connection refused: too many handshakes in progress')
      return
    }
    wss.handleUpgrade(req, socket, head, (ws) => accept(ws, req.socket.remoteAddress ?? ''))
  })

  let handshaking = 0

  function accept(ws: WebSocket, remote: string): void {
    ws.on('error', (e) => log.warn({ remote, err: e.message }, 'link socket error'))
    handshaking++
    let counted = true
    const done = (): void => { if (counted) { counted = false; handshaking-- } }
    ws.once('close', done)
    serverHandshake(ws, {
      key: deps.key, pinned, seen,
      resume: () => ({ epoch: store.epoch, hw: store.hw }),
    }).then(({ channel, peerKey, center, epoch }) => {
      done()
      if (ws.readyState !== ws.OPEN) return
      if (current) {
        log.warn({ peer: peerKey.slice(0, 8) }, 'link replaced by a newer session')
        current.ws.close(CLOSE.REPLACED, 'replaced by a newer session')
      }
      const session: LinkSession = {
        peerKey,
        send: (body) => {
          if (ws.readyState !== ws.OPEN) return false
          ws.send(channel.seal(body))
          return true
        },
      }
      const me = { ws, channel, peerKey, session }
      current = me
      log.info({ peer: peerKey.slice(0, 8), remote, center, epoch, hw: store.hw }, 'link up')
      const stop = heartbeat(ws, deps.options.heartbeatMs, deps.options.deadMs, () => log.warn({ peer: peerKey.slice(0, 8) }, 'link heartbeat lost; terminating'))
      ws.on('close', (code, reason) => {
        stop()
        if (current === me) current = undefined
        log.info({ peer: peerKey.slice(0, 8), code, reason: reason.toString() }, 'link down')
      })
      ws.on('message', (data, isBinary) => {
        // A replaced session is closing: whatever it still sends must not touch the replica, which the
        // newer session now owns (two interleaved resyncs could otherwise mix).
        if (current !== me) return
        try {
          if (isBinary) throw new LinkError('ERR_LINK_PROTOCOL', CLOSE.PROTOCOL, 'binary frame')
          const body = validateInnerToOuter(channel.open(data.toString()))
          if (typeof body === 'string') throw new LinkError('ERR_LINK_PROTOCOL', CLOSE.PROTOCOL, body)
          onBody(body, center, session)
        } catch (e) {
          const err = e instanceof LinkError ? e : new LinkError('ERR_LINK_PROTOCOL', CLOSE.INTERNAL, String(e))
          if (!(e instanceof LinkError)) log.error({ err: e }, 'link frame failed')
          log.error({ peer: peerKey.slice(0, 8), remote, code: err.code, reason: err.message }, 'link frame refused')
          refuse(ws, err)
        }
      })
      try {
        events.onSession?.(session)
      } catch (e) {
        // Resending what is queued failed (storage): todos still flow, and the next session tries again.
        // Thrown from here it would be an unhandled rejection, which ends the process.
        log.error({ peer: peerKey.slice(0, 8), err: e }, 'link session hook failed')
      }
    }, (e: unknown) => {
      done()
      const err = e instanceof LinkError ? e : new LinkError('ERR_LINK_PROTOCOL', CLOSE.INTERNAL, String(e))
      log.error({ remote, code: err.code, reason: err.message }, 'link handshake refused')
      if (ws.readyState === ws.OPEN) refuse(ws, err)
    })
  }

  function onBody(body: InnerToOuter, center: string, session: LinkSession): void {
    switch (body.t) {
      case 'batch': {
        const items = body.items.map((env) => ({ env, json: JSON.stringify(env) }))
        const fresh = store.applyBatch(body.epoch, items)
        session.send({ t: 'ack', epoch: body.epoch, seq: store.hw ?? 0 })
        if (fresh.length > 0) events.onCommitted(fresh)
        return
      }
      case 'resync': {
        const items = body.items.map((env) => ({ env, json: JSON.stringify(env) }))
        store.applyResync(body.epoch, center, body.first, body.done, body.hw, items)
        session.send({ t: 'ack', epoch: body.epoch, seq: store.hw ?? 0 })
        if (body.done) {
          log.info({ epoch: body.epoch, hw: body.hw }, 'resync complete')
          events.onReset()
        }
        return
      }
      default:
        events.onBody?.(body, session)
    }
  }

  return {
    server,
    session: () => current?.session,
    async close() {
      for (const c of wss.clients) c.close(CLOSE.GOING_AWAY, 'outer shutting down')
      const deadline = setTimeout(() => { for (const c of wss.clients) c.terminate() }, 1000)
      deadline.unref()
      wss.close()
    },
  }
}
