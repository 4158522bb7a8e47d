/**
 * Binding listeners: parse `"host:port"`, listen, and log the one `listening` line per listener that
 * operators and tests read (DESIGN §3.2): `{"msg":"listening","listener":"intake","url":"http://…"}`.
 */
import type { Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { parseListen } from './config.js'
import type { Logger } from './log.js'

export interface Bound { name: string; url: string; host: string; port: number }

export async function listen(server: Server, address: string, name: string, log: Logger): Promise<Bound> {
  const { host, port } = parseListen(address)
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
  const url = `http://${shownHost}:${a.port}`
  // Operators and scripts read this line whatever the configured level is.
  const always = log.isLevelEnabled('info') ? log : log.child({}, { level: 'info' })
  always.info({ listener: name, url }, 'listening')
  return { name, url, host: a.address, port: a.port }
}

/**
 * Closes a server: stops accepting, lets requests in flight finish (their replies may be the 200s of
 * committed pushes), closes idle keep-alive sockets, and cuts whatever is left after `graceMs`.
 */
export async function closeServer(server: Server, graceMs = 5000): Promise<void> {
  if (!server.listening) return
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => server.closeAllConnections(), graceMs)
    timer.unref()
    server.close(() => { clearTimeout(timer); resolve() })
    server.closeIdleConnections()
  })
}
