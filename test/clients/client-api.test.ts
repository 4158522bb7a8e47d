/**
 * The client API (shared/client-api.ts) under hostile or unlucky clients, on the internet-facing listener:
 * nothing a client does at the socket level — a reset while its token is checked or after a refusal, a
 * request target that does not parse — takes the daemon down; a failing sink answers the frame instead of
 * crashing; a long-lived token keeps its socket; the page is never framed and runs no inline script.
 */
import t, { type Test } from 'tap'
import { connect, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { once } from 'node:events'
import { createClientApi, type ClientSinks } from '../../shared/client-api.js'
import { ClientHub } from '../../shared/client-hub.js'
import { RelayError } from '../../shared/errors.js'
import { createTokenVerifier, type TokenVerifier } from '../../shared/tokens.js'
import { WEB_DIR } from '../../outer/daemon.js'
import { LogSink, TOKENS, connectWs, push, record, serveOnPort0, startPair, token, waitFor } from '../helpers/daemons.js'

/** A client API on port 0 with an empty source; `upgrades` holds the server side of every upgrade request. */
async function startApi(t: Test, opts: { verifier?: TokenVerifier; sinks?: ClientSinks } = {}) {
  const logs = new LogSink('clients')
  const api = createClientApi({
    source: { epoch: () => 'epoch-1', lastSeq: () => 0, snapshot: () => [], since: () => [] },
    hub: new ClientHub(),
    verifier: opts.verifier ?? await createTokenVerifier(TOKENS),
    log: logs.logger,
    innerPublicKey: `${'A'.repeat(43)}=`,
    webDir: WEB_DIR,
    ...(opts.sinks ? { sinks: opts.sinks } : {}),
  })
  const upgrades: Duplex[] = []
  api.server.on('upgrade', (_req, socket: Duplex) => upgrades.push(socket))
  const port = await serveOnPort0(t, api.server, () => api.close())
  return { api, logs, upgrades, port, url: `http://127.0.0.1:${port}` }
}

/** Writes a WebSocket upgrade request for `target` on a raw socket (no client library to tidy up after us). */
async function rawUpgrade(t: Test, port: number, target: string, headers: Record<string, string> = {}): Promise<Socket> {
  const s = connect(port, '127.0.0.1')
  s.on('error', () => { /* the test resets it on purpose */ })
  t.teardown(() => { s.destroy() })
  await once(s, 'connect')
  const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')
  s.write(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n`
    + `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${extra}\r\n`)
  return s
}

/** Reads the refusal, then resets the connection (RST), as a flaky carrier network or a hostile client may. */
async function readThenReset(s: Socket): Promise<string> {
  const [reply] = await once(s, 'data') as [Buffer]
  s.resetAndDestroy()
  await once(s, 'close')
  return reply.toString()
}

t.test('client api: a connection reset after a refused upgrade does not take the daemon down', async (t) => {
  const srv = await startApi(t)
  const cases: [string, Record<string, string>, RegExp][] = [
    ['/nope', {}, /^HTTP\/1\.1 404 /],
    ['/ws', { authorization: 'Bearer not.a.token' }, /^HTTP\/1\.1 401 [\s\S]*"code":"E_UNAUTHORIZED"/],
  ]
  for (const [target, headers, expected] of cases) {
    const s = await rawUpgrade(t, srv.port, target, headers)
    t.match(await readThenReset(s), expected, `${target}: refused`)
    const server = srv.upgrades.at(-1)!
    await waitFor(() => server.destroyed, `${target}: the server side of the reset socket is gone`)
  }
  t.equal((await fetch(`${srv.url}/healthz`)).status, 200, 'still serving')
})

t.test('client api: a connection reset while its token is being checked does not take the daemon down', async (t) => {
  let verifying!: () => void
  const started = new Promise<void>((r) => { verifying = r })
  let refuse!: (e: Error) => void
  // A verifier that answers only when the test says so: the reset lands while the check is pending.
  const srv = await startApi(t, {
    verifier: { verify: () => { verifying(); return new Promise((_res, rej) => { refuse = rej }) } },
  })
  const s = await rawUpgrade(t, srv.port, '/ws', { authorization: 'Bearer pending.check.token' })
  await started
  s.resetAndDestroy()
  await once(s, 'close')
  refuse(new RelayError('E_UNAUTHORIZED'))
  const server = srv.upgrades[0]!
  await waitFor(() => server.destroyed, 'the server side of the reset socket is gone')
  t.equal((await fetch(`${srv.url}/healthz`)).status, 200, 'still serving')
})

t.test('client api: a request target that does not parse as a URL gets 404, on a request and at an upgrade', async (t) => {
  const srv = await startApi(t)
  for (const target of ['//', '//x:99999/ws']) {
    const s = await rawUpgrade(t, srv.port, target)
    t.match(await readThenReset(s), /^HTTP\/1\.1 404 [\s\S]*"code":"E_NOT_FOUND"/, `upgrade ${target}: 404`)
    const plain = connect(srv.port, '127.0.0.1')
    t.teardown(() => { plain.destroy() })
    plain.end(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`)
    let text = ''
    plain.on('data', (d: Buffer) => { text += d.toString() })
    await once(plain, 'close')
    t.match(text, /^HTTP\/1\.1 404 [\s\S]*"code":"E_NOT_FOUND"/, `GET ${target}: 404`)
  }
  t.notOk(srv.logs.find((l) => l.msg === 'internal error'), 'not an internal error either')
  t.equal((await fetch(`${srv.url}/healthz`)).status, 200, 'still serving')
})

t.test('client api: a sink that throws answers the frame with E_INTERNAL; the socket and the daemon stay', async (t) => {
  let calls = 0
  const srv = await startApi(t, {
    sinks: {
      receipt: () => {
        if (++calls === 1) throw Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' })
      },
    },
  })
  const ws = await connectWs(t, srv.url, await token('zhangsan'))
  await ws.next((f) => f.t === 'snapshot')
  ws.send({ t: 'ack', seq: 1 })
  t.equal((await ws.next((f) => f.t === 'error')).code, 'E_INTERNAL', 'the failing frame is answered')
  await srv.logs.waitFor((l) => l.msg === 'client frame failed', 'the failure is logged')
  ws.send({ t: 'read', seq: 1 })
  ws.send({ t: 'ack', seq: -1 })
  t.equal((await ws.next((f) => f.t === 'error')).code, 'E_FIELD', 'later frames are still handled')
  t.equal(calls, 2, 'the next receipt reached the sink')
  t.notOk(ws.closed, 'the socket stays open')
})

t.test('client api: the page forbids framing, plugins, <base> and inline script', async (t) => {
  const srv = await startApi(t)
  const res = await fetch(`${srv.url}/`)
  t.equal(res.status, 200)
  const csp = res.headers.get('content-security-policy') ?? ''
  const directives = new Map(csp.split(';').map((d) => d.trim().split(/\s+/)).map(([k, ...v]) => [k!, v.join(' ')]))
  t.equal(directives.get('frame-ancestors'), "'none'", 'never framed (clickjacking the 标记已办 button)')
  t.equal(directives.get('object-src'), "'none'")
  t.equal(directives.get('base-uri'), "'none'")
  t.equal(directives.get('default-src'), "'self'", 'scripts only from the page\'s own origin')
  t.notOk(directives.has('script-src'), 'no script-src that could loosen default-src')
  t.notMatch(csp, /unsafe-inline|unsafe-eval/)
})

t.test('client api: a socket whose token is valid for weeks stays open and live (timers cap at ~24.8 days)', async (t) => {
  const { inner, outer, system } = await startPair(t)
  const tok = await token('zhangsan', 30 * 86_400)
  for (const base of [outer.clientsUrl, inner.portalUrl]) {
    const ws = await connectWs(t, base, tok)
    await ws.next((f) => f.t === 'snapshot')
    t.equal((await push(inner.intakeUrl, record(system.code, 'zhangsan', 3))).status, 200)
    t.equal((await ws.next((f) => f.t === 'update')).t, 'update', `${base === outer.clientsUrl ? 'outer' : 'portal'}: live`)
    t.equal(ws.closed, undefined, 'not closed as if the token had expired')
  }
})
