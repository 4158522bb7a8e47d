/**
 * Wires todo-outer: store → link listener (accepts only pinned inners) → client API (phones) → admin.
 * It never opens a connection towards the private network. `build()` fails early on a bad setup;
 * `start()` binds; `close()` drains in reverse order.
 */
import type { Server } from 'node:http'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'
import { createServer } from 'node:http'
import { Gauge, type Registry } from 'prom-client'
import { loadKeyFile, type KeyPair } from '../shared/crypto.js'
import { createLogger, type Logger } from '../shared/log.js'
import { closeServer, listen, type Bound } from '../shared/listen.js'
import { checkTokenConfig, createTokenVerifier } from '../shared/tokens.js'
import { ClientHub } from '../shared/client-hub.js'
import { createClientApi, type ClientApi } from '../shared/client-api.js'
import { createRegistry } from '../shared/metrics.js'
import { sendError, sendJson } from '../shared/http.js'
import { RelayError } from '../shared/errors.js'
import type { OuterConfig } from './config.js'
import { OuterStore } from './store.js'
import { createLinkServer, type LinkServer } from './link-server.js'
import { OuterQueues } from './queues.js'

export interface OuterDaemon {
  readonly config: OuterConfig
  readonly store: OuterStore
  readonly key: KeyPair
  readonly log: Logger
  readonly hub: ClientHub
  /** Receipts and actions on their way to the inner. */
  readonly queues: OuterQueues
  readonly addresses: Record<string, Bound>
  /** The inner's public key that clients verify envelopes with (the first pinned inner). */
  readonly innerPublicKey: string
  start(): Promise<void>
  close(): Promise<void>
}

export const WEB_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'shared', 'web')

export function build(config: OuterConfig, deps: { log?: Logger } = {}): OuterDaemon {
  const log = deps.log ?? createLogger({ name: 'todo-outer', level: config.log.level })
  const key = loadKeyFile(config.keyFile)
  checkTokenConfig(config.tokens)
  const store = new OuterStore(config.dataDir, { synchronous: config.storage.synchronous, busyTimeoutMs: config.storage.busyTimeoutMs })
  const hub = new ClientHub({ maxConnectionsPerUser: config.clients.maxConnectionsPerUser, maxBufferedBytes: config.clients.maxBufferedBytes })
  const innerPublicKey = config.inners[0]!.publicKey
  const metrics: Registry = createRegistry('todo_outer')
  new Gauge({ name: 'todo_outer_clients', help: 'Connected client sockets', registers: [metrics], collect() { this.set(hub.connections) } })
  new Gauge({ name: 'todo_outer_hw', help: 'Highest seq committed from the link', registers: [metrics], collect() { this.set(store.hw ?? 0) } })
  let link: LinkServer | undefined
  const queues = new OuterQueues({
    store, hub, log: log.child({ mod: 'queues' }), session: () => link?.session(),
    options: { ...config.actions, maxQueuedReceipts: config.receipts.maxQueued },
  })
  new Gauge({ name: 'todo_outer_receipts_queued', help: 'Receipts not yet acknowledged by the inner', registers: [metrics], collect() { this.set(queues.receiptsQueued) } })
  new Gauge({ name: 'todo_outer_actions_open', help: 'Actions queued or forwarded, not yet final', registers: [metrics], collect() { this.set(queues.actionsOpen) } })

  const servers: { name: string; server: Server; address: string }[] = []
  const addresses: Record<string, Bound> = {}
  let clients: ClientApi | undefined
  let pruneTimer: NodeJS.Timeout | undefined
  let started = false
  let closing: Promise<void> | undefined

  return {
    config, store, key, log, hub, queues, addresses, innerPublicKey,

    async start() {
      if (started) return
      started = true
      const api = createClientApi({
        source: {
          epoch: () => store.epoch ?? '',
          lastSeq: () => store.hw ?? 0,
          snapshot: (user) => store.snapshot(user),
          since: (user, seq) => store.since(user, seq),
        },
        hub,
        verifier: await createTokenVerifier(config.tokens),
        log: log.child({ mod: 'clients' }),
        innerPublicKey,
        webDir: WEB_DIR,
        sinks: queues.sinks,
        options: { allowedOrigins: config.clients.allowedOrigins, heartbeatMs: config.clients.heartbeatMs },
      })
      clients = api
      link = createLinkServer({
        store, key, inners: config.inners.map((i) => i.publicKey), log: log.child({ mod: 'link' }), options: config.link,
        events: {
          onCommitted: (items) => { for (const i of items) api.publish(i.env.user, i.json) },
          onReset: () => api.resetAll(),
          onBody: (body) => queues.onBody(body),
          onSession: (session) => queues.onSession(session),
        },
      })
      servers.push({ name: 'link', address: config.listen.link, server: link.server })
      servers.push({ name: 'clients', address: config.listen.clients, server: api.server })
      if (config.listen.admin) {
        const admin = createServer((req, res) => {
          (async () => {
            const path = (req.url ?? '/').split('?')[0]
            if (path === '/metrics') {
              res.writeHead(200, { 'content-type': metrics.contentType })
              res.end(await metrics.metrics())
              return
            }
            if (path === '/healthz') {
              return sendJson(res, 200, { ok: true, epoch: store.epoch, hw: store.hw, link: link?.session() ? 'up' : 'down', clients: hub.connections, ...store.counts() })
            }
            throw new RelayError('E_NOT_FOUND')
          })().catch((e: unknown) => sendError(res, e, log))
        })
        servers.push({ name: 'admin', address: config.listen.admin, server: admin })
      }
      for (const s of servers) addresses[s.name] = await listen(s.server, s.address, s.name, log, config.tls[s.name as keyof typeof config.tls])
      const prune = (): void => {
        try {
          const n = store.prune({ minAgeMs: config.history.minAgeHours * 3_600_000, minCount: config.history.minCount })
          if (n > 0) log.info({ removed: n, floor: store.floor }, 'history pruned')
        } catch (e) {
          log.error({ err: e }, 'history prune failed')
        }
      }
      pruneTimer = setInterval(prune, config.history.pruneIntervalSeconds * 1000)
      pruneTimer.unref()
    },

    close() {
      closing ??= (async () => {
        if (pruneTimer) clearInterval(pruneTimer)
        await link?.close()
        await clients?.close()
        await Promise.all(servers.map((s) => closeServer(s.server)))
        queues.close()
        store.close()
        log.info('stopped')
      })()
      return closing
    },
  }
}
