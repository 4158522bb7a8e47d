/**
 * Client tokens (DESIGN §3.6): a bad, foreign, wrong-audience or expired token gets 401 and never data;
 * a socket is closed with 4401 when its token expires; EdDSA tokens work end to end (also for actions,
 * which the inner verifies itself), and an HS256 token is refused where EdDSA is configured.
 */
import t from 'tap'
import { join } from 'node:path'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { SignJWT } from 'jose'
import { generateKeyFiles } from '../../shared/crypto.js'
import { CLOSE } from '../../shared/protocol.js'
import { createTokenVerifier, type TokenConfig } from '../../shared/tokens.js'
import { addSystem, connectWs, push, record, startPair, token, upgradeStatus, waitFor, TOKENS } from '../helpers/daemons.js'
import { startCallbackServer, signatureValid } from '../helpers/callback-server.js'

async function rest(base: string, tok: string | undefined): Promise<{ status: number; code: unknown }> {
  const res = await fetch(`${base}/api/v1/todos`, { headers: tok ? { authorization: `Bearer ${tok}` } : {} })
  return { status: res.status, code: ((await res.json()) as { code?: string }).code }
}

const secretBytes = (s: string): Uint8Array => new TextEncoder().encode(s)

t.test('tokens: bad tokens get 401 on REST and at the upgrade, never data', async (t) => {
  const { outer, inner } = await startPair(t)
  const now = Math.floor(Date.now() / 1000)
  const cases: [string, string | undefined][] = [
    ['no token', undefined],
    ['garbage', 'not.a.jwt'],
    ['another secret', await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('zhangsan').setAudience('todo-relay').setExpirationTime(now + 600).sign(secretBytes('some-other-secret-0123456789'))],
    ['wrong audience', await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('zhangsan').setAudience('another-app').setExpirationTime(now + 600).sign(secretBytes(TOKENS.secret!))],
    ['no exp', await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('zhangsan').setAudience('todo-relay').sign(secretBytes(TOKENS.secret!))],
    ['no sub', await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setAudience('todo-relay').setExpirationTime(now + 600).sign(secretBytes(TOKENS.secret!))],
    ['expired beyond the skew', await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('zhangsan').setAudience('todo-relay').setExpirationTime(now - 120).sign(secretBytes(TOKENS.secret!))],
    ['not yet valid', await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('zhangsan').setAudience('todo-relay').setNotBefore(now + 600).setExpirationTime(now + 1200).sign(secretBytes(TOKENS.secret!))],
  ]
  for (const base of [outer.clientsUrl, inner.portalUrl]) {
    for (const [name, tok] of cases) {
      t.same(await rest(base, tok), { status: 401, code: 'E_UNAUTHORIZED' }, `${name}: REST 401`)
      t.equal(await upgradeStatus(base, tok), 401, `${name}: upgrade refused with 401`)
      if (tok) t.equal(await upgradeStatus(base, tok, { viaQuery: true }), 401, `${name}: ?token= refused too`)
    }
    const good = await token('zhangsan')
    t.equal((await rest(base, good)).status, 200)
    t.equal(await upgradeStatus(base, good, { viaQuery: true }), 101, 'a good token via ?token= (browsers) is accepted')
  }
})

t.test('tokens: a socket is closed with 4401 when its token expires; REST then answers 401', async (t) => {
  const skew0 = { tokens: { ...TOKENS, clockSkewSeconds: 0 } }
  const { outer, inner, system } = await startPair(t, { outer: skew0, inner: skew0 })
  // exp is whole seconds, so this token lives 4-5 s: room for two upgrades, a push and its update on a busy CI machine.
  const tok = await token('zhangsan', 5)
  const ws = await connectWs(t, outer.clientsUrl, tok)
  const pc = await connectWs(t, inner.portalUrl, tok)
  await ws.next((f) => f.t === 'snapshot')
  await pc.next((f) => f.t === 'snapshot')
  await push(inner.intakeUrl, record(system.code, 'zhangsan', 4))
  t.equal((await ws.next((f) => f.t === 'update')).t, 'update', 'live while the token is valid')
  const exp = (JSON.parse(Buffer.from(tok.split('.')[1]!, 'base64url').toString()) as { exp: number }).exp
  for (const s of [ws, pc]) {
    const closed = await s.waitClose(10_000)
    t.equal(closed.code, CLOSE.UNAUTHORIZED, 'closed with 4401 at expiry')
    t.ok(Date.now() >= exp * 1000 - 50, 'not before the token expired')
  }
  await waitFor(async () => (await rest(outer.clientsUrl, tok)).status === 401, 'REST refuses the expired token', 3000)
  t.same(await rest(outer.clientsUrl, tok), { status: 401, code: 'E_UNAUTHORIZED' })
  t.same(await rest(inner.portalUrl, tok), { status: 401, code: 'E_UNAUTHORIZED' })
  t.equal(await upgradeStatus(outer.clientsUrl, tok), 401)
})

t.test('tokens: EdDSA tokens work end to end; HS256 is refused where EdDSA is configured', async (t) => {
  // The login service's key pair, outside the pair's folder (startPair takes t.testdir() over).
  const keyDir = mkdtempSync(join(tmpdir(), 'todo-relay-login-'))
  t.teardown(() => rmSync(keyDir, { recursive: true, force: true }))
  const k = generateKeyFiles(keyDir, 'login')
  const eddsa: TokenConfig = { alg: 'EdDSA', publicKey: k.publicKey, signingKeyFile: k.keyFile, audience: 'huanbaotong' }
  const { outer, inner, system } = await startPair(t, { outer: { tokens: eddsa }, inner: { tokens: eddsa } })
  const cb = await startCallbackServer(t)
  const sys = await addSystem(inner, { callback: cb.url })
  const tok = await token('zhangsan', 600, eddsa)
  t.equal(JSON.parse(Buffer.from(tok.split('.')[0]!, 'base64url').toString()).alg, 'EdDSA')
  await push(inner.intakeUrl, record(system.code, 'zhangsan', 3))
  await waitFor(() => (outer.daemon.store.hw ?? 0) >= 1, 'outer committed')
  const r = await fetch(`${outer.clientsUrl}/api/v1/todos`, { headers: { authorization: `Bearer ${tok}` } })
  t.equal(r.status, 200)
  t.equal(((await r.json()) as { total: number }).total, 3)
  const ws = await connectWs(t, outer.clientsUrl, tok)
  t.equal((await ws.next()).total, 3)

  // The inner verifies the forwarded EdDSA token itself before calling back.
  ws.send({ t: 'action', system: sys.id, type: 'handle' })
  const q = await ws.next((f) => f.t === 'action')
  await ws.next((f) => f.t === 'action' && f.id === q.id && f.status === 'delivered', 15_000)
  t.ok(signatureValid((await cb.waitForRequests(1))[0]!, sys.code))

  const hs = await token('zhangsan', 600, { ...TOKENS, audience: 'huanbaotong' })
  t.same(await rest(outer.clientsUrl, hs), { status: 401, code: 'E_UNAUTHORIZED' }, 'an HS256 token is refused (no algorithm confusion)')
  t.equal(await upgradeStatus(inner.portalUrl, hs), 401)
  t.same(await rest(outer.clientsUrl, await token('zhangsan', 600, { ...eddsa, audience: 'todo-relay' })), { status: 401, code: 'E_UNAUTHORIZED' },
    'the configured audience is required')
})

t.test('tokens: the queueing grace lets an action\'s token be expired, never not yet valid', async (t) => {
  const verifier = await createTokenVerifier(TOKENS)
  const now = Math.floor(Date.now() / 1000)
  const mint = (claims: { nbf?: number; exp: number }): Promise<string> => {
    const jwt = new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('admin').setAudience('todo-relay').setExpirationTime(claims.exp)
    if (claims.nbf !== undefined) jwt.setNotBefore(claims.nbf)
    return jwt.sign(secretBytes(TOKENS.secret!))
  }
  const grace = { maxExpiredSeconds: 86_400 }
  t.equal((await verifier.verify(await mint({ exp: now - 3600 }), grace)).user, 'admin', 'expired an hour ago: within the grace')
  t.equal((await verifier.verify(await mint({ nbf: now + 30, exp: now + 7200 }), grace)).user, 'admin', 'nbf within the clock skew')
  await t.rejects(verifier.verify(await mint({ nbf: now + 3600, exp: now + 7200 }), grace), { code: 'E_UNAUTHORIZED' }, 'nbf an hour ahead: refused despite the grace')
  await t.rejects(verifier.verify(await mint({ nbf: now + 3600, exp: now + 7200 })), { code: 'E_UNAUTHORIZED' }, 'and without it')
})
