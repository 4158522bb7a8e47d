/**
 * The per-user fan-out that both daemons serve (outer: 环保通 phones; inner: PC portal). Connections
 * register under their user; `publish` sends each update only to that user's connections, in seq order.
 * A connection whose send buffer passes the limit is closed as a slow consumer rather than buffered
 * without bound: the client reconnects with `?since=` and resumes exactly (DESIGN §3.6).
 */
import type WebSocket from 'ws'
import { CLOSE } from './protocol.js'

export interface HubOptions {
  maxConnectionsPerUser: number
  /** Bytes queued in a socket's send buffer before it counts as a slow consumer. */
  maxBufferedBytes: number
}

export const DEFAULT_HUB_OPTIONS: HubOptions = { maxConnectionsPerUser: 10, maxBufferedBytes: 4 * 1024 * 1024 }

export interface HubConnection {
  readonly user: string
  readonly ws: WebSocket
}

export class ClientHub {
  private readonly byUser = new Map<string, Set<HubConnection>>()
  private count = 0

  constructor(readonly options: HubOptions = DEFAULT_HUB_OPTIONS) {}

  /** Whether the user may open one more connection. */
  hasRoom(user: string): boolean {
    return (this.byUser.get(user)?.size ?? 0) < this.options.maxConnectionsPerUser
  }

  add(conn: HubConnection): void {
    let set = this.byUser.get(conn.user)
    if (!set) this.byUser.set(conn.user, (set = new Set()))
    set.add(conn)
    this.count++
  }

  remove(conn: HubConnection): void {
    const set = this.byUser.get(conn.user)
    if (set?.delete(conn)) {
      this.count--
      if (set.size === 0) this.byUser.delete(conn.user)
    }
  }

  get connections(): number {
    return this.count
  }

  get users(): number {
    return this.byUser.size
  }

  /** Sends one user's update (`envelopeJson` is the signed envelope's JSON text) to their connections. */
  publish(user: string, envelopeJson: string): void {
    const set = this.byUser.get(user)
    if (!set) return
    const frame = `{"t":"update","item":${envelopeJson}}`
    for (const c of set) this.send(c, frame)
  }

  /** Sends a frame to every connection of a user (action status, resets). */
  sendToUser(user: string, frame: string): void {
    const set = this.byUser.get(user)
    if (set) for (const c of set) this.send(c, frame)
  }

  /** Sends to every connection (e.g. a reset snapshot after a resync). */
  forEachConnection(fn: (c: HubConnection) => void): void {
    for (const set of this.byUser.values()) for (const c of set) fn(c)
  }

  send(c: HubConnection, frame: string): void {
    if (c.ws.readyState !== 1) return
    if (c.ws.bufferedAmount > this.options.maxBufferedBytes) {
      this.remove(c)
      c.ws.close(CLOSE.SLOW_CONSUMER, 'slow consumer: reconnect with since')
      return
    }
    c.ws.send(frame)
  }

  closeAll(code: number, reason: string): void {
    for (const set of this.byUser.values()) for (const c of set) c.ws.close(code, reason)
    this.byUser.clear()
    this.count = 0
  }
}
