/**
 * Wires todo-inner: store → registry → ingest (group commit) → intake listener, portal (client API),
 * admin listener, link clients. `build()` opens what must exist (store, key) and fails early on a bad
 * setup; `start()` binds listeners and dials; `close()` drains in reverse order. Tests start this in-process.
 */
import type { Server } from 'node:http'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'
import { loadKeyFile, type KeyPair } from '../shared/crypto.js'
import { createLogger, type Logger } from '../shared/log.js'
import { closeServer, listen, type Bound } from '../shared/listen.js'
import { createTokenVerifier } from '../shared/tokens.js'
import { ClientHub } from '../shared/client-hub.js'
import { createClientApi, type ClientApi } from '../shared/client-api.js'
import type { InnerConfig } from './config.js'
import { InnerStore } from './store.js'
import { actionCounts } from './monitor.js'
import { Gauge } from 'prom-client'
import { Retention } from './retention.js'
import { RegistryCache } from './registry-cache.js'
import { Ingest } from './ingest.js'
import { createIntakeServer } from './intake.js'
import { LinkClient } from './link-client.js'
import { createMetrics, type Metrics } from './metrics.js'
import { createAdminServer } from './admin.js'
import { Rejections } from './rejections.js'
import { Poller } from './poller.js'
import { SystemRemoval } from './removal.js'
import { ActionService, PORTAL_ORIGIN } from './actions.js'
import { createLinkInbound } from './link-inbound.js'

export interface InnerDaemon {
  readonly config: InnerConfig
  readonly store: InnerStore
  readonly registry: RegistryCache
  readonly ingest: Ingest
  readonly key: KeyPair
  readonly log: Logger
  readonly metrics: Metrics
  readonly links: LinkClient[]
  /** Polls pull-user and pull-all systems. */
  readonly poller: Poller
  /** Users' actions on their way to the business systems' callbacks. */
  readonly actions: ActionService
  /** Bound listeners by name (after start). */
  readonly addresses: Record<string, Bound>
  start(): Promise<void>
  close(): Promise<void>
}

export interface InnerDeps { log?: Logger }

/**
 * The most updates a portal client is sent when it resumes with `?since=`; a longer gap gets a fresh
 * snapshot with `reset:true` instead (a cut list followed by `synced` would leave it showing old counts).
 */
export const PORTAL_RESUME_MAX = 100_000

/** Where the web page's files are (dist/shared/web after a build). */
export const WEB_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'shared', 'web')

export function build(config: InnerConfig, deps: InnerDeps = {}): InnerDaemon {
  const log = deps.log ?? createLogger({ name: 'todo-inner', level: config.log.level })
  const key = loadKeyFile(config.keyFile)
  const store = new InnerStore(config.dataDir, { synchronous: config.storage.synchronous, busyTimeoutMs: config.storage.busyTimeoutMs })
  store.onBackgroundError = (e) => log.warn({ err: e }, 'lifecycle write failed; kept for the next try')
  const retention = new Retention(store, config.outers.map((o) => o.publicKey), config.retention, log.child({ mod: 'retention' }))
  const registry = new RegistryCache(store.db)
  const metrics = createMetrics()
  new Gauge({
    name: 'todo_inner_actions', help: 'User actions held by the inner, by status (forwarded = being delivered to the callback)',
    labelNames: ['status'], registers: [metrics.registry],
    collect() { for (const [status, n] of Object.entries(actionCounts(store))) this.set({ status }, n) },
  })
  const ingest = new Ingest(store, key, config.centerId, log.child({ mod: 'ingest' }))
  ingest.on('stored', (envs) => metrics.stored.inc(envs.length))
  const rejections = new Rejections(store.db, log.child({ mod: 'reject' }), metrics)
  const poller = new Poller({
    registry, store, ingest, rejections, log: log.child({ mod: 'poller' }), metrics, limits: config.intake, options: config.poll,
  })
  const removal = new SystemRemoval({ registry, store, ingest, log: log.child({ mod: 'removal' }) })

  const storedListeners = new Set<() => void>()
  ingest.on('stored', () => { for (const l of storedListeners) l() })
  const subscribe = (fn: () => void): (() => void) => {
    storedListeners.add(fn)
    return () => storedListeners.delete(fn)
  }
  const actions = new ActionService({ db: store.db, registry, tokens: config.tokens, log: log.child({ mod: 'actions' }), options: config.actions })
  const onBody = createLinkInbound({ store, actions, log: log.child({ mod: 'link-inbound' }) })
  const links = config.outers.map((o) => new LinkClient(o, {
    store, key, centerId: config.centerId, log: log.child({ mod: 'link' }), metrics, options: config.link, subscribe, onBody,
  }))
  // An action's status goes back where the action came from: the outer's link, or the portal's sockets.
  // A status the link cannot take now is not lost: the outer resends unfinished actions on reconnect.
  let portalHub: ClientHub | undefined
  actions.onStatus(({ origin, user, ...rec }) => {
    if (origin === PORTAL_ORIGIN) portalHub?.sendToUser(user, JSON.stringify({ t: 'action', ...rec }))
    else links.find((l) => l.target.publicKey === origin)?.send({ t: 'action-status', ...rec })
  })

  const servers: { name: string; server: Server; address: string }[] = []
  const addresses: Record<string, Bound> = {}
  let portal: ClientApi | undefined
  let started = false
  let closing: Promise<void> | undefined

  return {
    config, store, registry, ingest, key, log, metrics, links, poller, actions, addresses,

    async start() {
      if (started) return
      started = true
      registry.watch(250, (e) => log.error({ err: e }, 'registry reload failed; retrying'))
      await actions.start()
      if (config.listen.intake) {
        servers.push({
          name: 'intake', address: config.listen.intake,
          server: createIntakeServer({
            registry, ingest, log: log.child({ mod: 'intake' }), metrics, rejections,
            options: { maxBodyBytes: config.intake.maxBodyBytes, limits: config.intake, defaultRatePerSecond: config.intake.ratePerSecond },
          }),
        })
      }
      if (config.listen.portal) {
        if (!config.tokens) throw new Error('listen.portal needs a tokens section')
        const hub = new ClientHub({ maxConnectionsPerUser: config.clients.maxConnectionsPerUser, maxBufferedBytes: config.clients.maxBufferedBytes })
        portal = createClientApi({
          source: {
            epoch: () => store.epoch,
            lastSeq: () => store.lastSeq,
            snapshot: (user) => store.userSnapshot(user),
            since: (user, seq) => {
              if (seq < store.firstSeq() - 1) return null
              const rows = store.userSince(user, seq, PORTAL_RESUME_MAX + 1)
              return rows.length > PORTAL_RESUME_MAX ? null : rows.map((r) => r.envelope)
            },
          },
          hub,
          verifier: await createTokenVerifier(config.tokens),
          log: log.child({ mod: 'portal' }),
          innerPublicKey: key.publicKey,
          webDir: WEB_DIR,
          sinks: {
            receipt: (user, seq, kind) => { store.deferReceipt(user, seq, kind, Date.now()) },
            submitAction: (user, token, req) => actions.submitLocal(user, token, req),
            getAction: (user, id) => actions.get(user, id),
          },
          options: { allowedOrigins: config.clients.allowedOrigins, heartbeatMs: config.clients.heartbeatMs },
        })
        const p = portal
        portalHub = hub
        ingest.on('stored', (envs) => { for (const e of envs) p.publish(e.user, JSON.stringify(e)) })
        servers.push({ name: 'portal', address: config.listen.portal, server: portal.server })
      }
      if (config.listen.admin) {
        servers.push({ name: 'admin', address: config.listen.admin, server: createAdminServer({ store, registry, metrics, links, log: log.child({ mod: 'admin' }) }) })
      }
      for (const s of servers) addresses[s.name] = await listen(s.server, s.address, s.name, log, config.tls[s.name as keyof typeof config.tls])
      for (const l of links) l.start()
      retention.start()
      // After the listeners: polls and pending `system remove`s start once the daemon is fully up.
      poller.start()
      removal.start()
    },

    close() {
      closing ??= (async () => {
        registry.stop()
        await retention.stop()
        // Stop taking pushes first, then let the last group commit land, then stop the links and clients.
        const intake = servers.find((s) => s.name === 'intake')
        if (intake) await closeServer(intake.server)
        await removal.close()
        await poller.close()
        await ingest.close()
        await Promise.all(links.map((l) => l.close()))
        await portal?.close()
        await Promise.all(servers.filter((s) => s.name !== 'intake').map((s) => closeServer(s.server)))
        await actions.close()
        rejections.close()
        store.close()
        log.info('stopped')
      })()
      return closing
    },
  }
}
