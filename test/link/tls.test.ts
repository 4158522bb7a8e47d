import t from 'tap'
import { execFileSync } from 'node:child_process'
import { copyFileSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import WebSocket from 'ws'
import { makeKeys, push, record, startInner, startOuter, addSystem, token, waitFor, WsClient } from '../helpers/daemons.js'

/** A self-signed certificate for 127.0.0.1, made with the system's openssl. */
function selfSigned(dir: string): { certFile: string; keyFile: string } {
  const certFile = join(dir, 'cert.pem')
  const keyFile = join(dir, 'key.pem')
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' })
  return { certFile, keyFile }
}

t.test('tls: the link runs over wss with a pinned self-signed certificate, and phones over https/wss', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const tls = selfSigned(dir)
  const outer = await startOuter(t, dir, keys, { tls: { link: tls, clients: tls } })
  t.match(outer.linkUrl, /^wss:\/\//)
  t.match(outer.clientsUrl, /^https:\/\//)
  const inner = await startInner(t, dir, keys, undefined, { outers: [{ url: outer.linkUrl, publicKey: keys.outerPub, ca: tls.certFile }] })
  const system = await addSystem(inner)
  await waitFor(() => inner.daemon.links.every((l) => l.state === 'up'), 'link up over wss')

  const ws = new WebSocket(`${outer.clientsUrl.replace('https', 'wss')}/ws`, { headers: { authorization: `Bearer ${await token('admin')}` }, ca: [readFileSync(tls.certFile)] })
  const phone = new WsClient(ws)
  t.teardown(() => ws.terminate())
  await phone.opened
  await phone.next((f) => f.t === 'snapshot')
  t.equal((await push(inner.intakeUrl, record(system.code, 'admin', 4))).status, 200)
  const upd = await phone.next((f) => f.t === 'update')
  t.equal((upd.item as { quantity: number }).quantity, 4)
})

t.test('tls: an inner that does not trust the outer certificate never brings the link up', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const tls = selfSigned(dir)
  const outer = await startOuter(t, dir, keys, { tls: { link: tls } })
  const inner = await startInner(t, dir, keys, outer.linkUrl)
  const line = await inner.logs.waitFor((l) => l.msg === 'link reconnect scheduled' && typeof l.lastError === 'string', 'a failed TLS connect')
  t.match(String(line.lastError), /certificate/i)
  t.not(inner.daemon.links[0]!.state, 'up')
  t.equal(outer.logs.find((l) => l.msg === 'link up'), undefined, 'the outer never saw an authenticated link')
})

t.test('tls: a missing certificate file fails the start with the key named', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  await t.rejects(startOuter(t, dir, keys, { tls: { clients: { certFile: join(dir, 'nope.pem'), keyFile: join(dir, 'nope.key') } } }), { code: 'ERR_CONFIG_INVALID', message: /tls\.clients/ })
})


t.test('tls: an unreadable outers[].ca fails the inner\'s start with the key named', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  await t.rejects(startInner(t, dir, keys, undefined, { outers: [{ url: 'wss://127.0.0.1:1/link', publicKey: keys.outerPub, ca: join(dir, 'nope.pem') }] }),
    { code: 'ERR_CONFIG_INVALID', message: /outers\[\]\.ca/ })
})

t.test('tls: the CA file is read once, so the link reconnects after the file went away', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const tls = selfSigned(dir)
  const ca = join(dir, 'outer-ca.pem')
  copyFileSync(tls.certFile, ca)
  const first = await startOuter(t, dir, keys, { tls: { link: tls } })
  const inner = await startInner(t, dir, keys, undefined, { outers: [{ url: first.linkUrl, publicKey: keys.outerPub, ca }] })
  await waitFor(() => inner.daemon.links[0]!.state === 'up', 'link up over wss')
  // The file goes (a rotated bundle, a clean-up), then the outer restarts: every reconnect needs the CA.
  rmSync(ca)
  const port = first.daemon.addresses.link!.port
  await first.daemon.close()
  await waitFor(() => inner.daemon.links[0]!.state !== 'up', 'link down')
  await inner.logs.waitFor((l) => l.msg === 'link reconnect scheduled' && typeof l.lastError === 'string', 'a failed reconnect')
  const second = await startOuter(t, dir, keys, { tls: { link: tls }, listen: { link: `127.0.0.1:${port}`, clients: '127.0.0.1:0' } })
  await waitFor(() => inner.daemon.links[0]!.state === 'up', 'link up again with the CA read at the start')
  const system = await addSystem(inner)
  t.equal((await push(inner.intakeUrl, record(system.code, 'admin', 2))).status, 200)
  await waitFor(() => second.daemon.store.hw !== null && second.daemon.store.hw >= 1, 'the message crosses the restored link')
})
