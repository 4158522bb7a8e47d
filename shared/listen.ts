/**
 * Binding listeners: parse `"host:port"`, listen, and log the one `listening` line per listener that
 * operators and tests read (DESIGN §3.2): `{"msg":"listening","listener":"intake","url":"http://…"}`.
 */
import type { Server } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import { readFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { parseListen } from './config.js'
import { RelayError } from './errors.js'
import type { Logger } from './log.js'

export interface Bound { name: string; url: string; host: string; port: number }

/** A listener's TLS material (PEM files), from the config's `tls.<listener>`. */
export interface TlsFiles { certFile: string; keyFile: string }

/** HTTPS front ends that stand in for an HTTP server on the wire (closeServer closes them too). */
const frontends = new WeakMap<Server, Server>()

/**
 * An HTTPS server that hands every request and upgrade to `server`, so each module builds one plain
 * `http.Server` and TLS is purely a listener setting.
 */
function tlsFrontend(server: Server, tls: TlsFiles, name: string): Server {
  let cert: Buffer
  let key: Buffer
  try {
    cert = readFileSync(tls.certFile)
    key = readFileSync(tls.keyFile)
  } catch (e) {
    throw new RelayError('ERR_CONFIG_INVALID', { reason: `tls.${name}: ${(e as Error).message}` }, `tls.${name}: ${(e as Error).message}`)
  }
  const front = createHttpsServer({ cert, key, requestTimeout: server.requestTimeout, headersTimeout: server.headersTimeout, keepAliveTimeout: server.keepAliveTimeout })
  front.on('request', (req, res) => server.emit('request', req, res))
  front.on('upgrade', (req, socket, head) => server.emit('upgrade', req, socket, head))
  frontends.set(server, front)
  return front
}

export async function listen(app: Server, address: string, name: string, log: Logger, tls?: TlsFiles): Promise<Bound> {
  const { host, port } = parseListen(address)
  const server = tls ? tlsFrontend(app, tls, name) : app
  await new Promise<void>((resolve, reject) => {
    const onError = (e: Error): void => reject(e)
    server.once('error', onError)
    server.listen({ host, port, exclusive: true }, () => {
      server.off('error', onError)
      resolve()
    })
  })
  const a = server.address() as AddressInfo
  const shownHost = a.address === '0.0.0.0' ? '127.0.0.1' : a.address === '::' ? '[::1]' : a.family === 'IPv6' ? `[${a.address}]` : a.address
  const url = `${tls ? 'https' : 'http'}://${shownHost}:${a.port}`
  // Operators and scripts read this line whatever the configured level is.
  const always = log.isLevelEnabled('info') ? log : log.child({}, { level: 'info' })
  always.info({ listener: name, url }, 'listening')
  return { name, url, host: a.address, port: a.port }
}

/**
 * Closes a server: stops accepting, lets requests in flight finish (their replies may be the 200s of
 * committed pushes), closes idle keep-alive sockets, and cuts whatever is left after `graceMs`.
 */
export async function closeServer(app: Server, graceMs = 5000): Promise<void> {
  const server = frontends.get(app) ?? app
  if (!server.listening) return
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => server.closeAllConnections(), graceMs)
    timer.unref()
    server.close(() => { clearTimeout(timer); resolve() })
    server.closeIdleConnections()
  })
}
