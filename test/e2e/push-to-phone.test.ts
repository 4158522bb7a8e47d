import t from 'tap'
import nacl from 'tweetnacl'
import { canonicalBytes } from '../../shared/crypto.js'
import { connectWs, push, record, startPair, token } from '../helpers/daemons.js'

t.test('e2e: a spec push reaches the phone as an envelope signed by the inner', async (t) => {
  const { inner, outer, system, keys } = await startPair(t)
  const phone = await connectWs(t, outer.clientsUrl, await token('admin'))
  const snap = await phone.next((f) => f.t === 'snapshot')
  t.same(snap.items, [])
  const r = await push(inner.intakeUrl, record(system.code, 'admin', '10'))
  t.equal(r.status, 200)
  t.equal(r.body.code, 0)
  const upd = await phone.next((f) => f.t === 'update')
  const env = upd.item as Record<string, unknown>
  t.equal(env.quantity, 10)
  t.equal(env.system, system.id)
  const { sig, ...rest } = env
  t.ok(nacl.sign.detached.verify(canonicalBytes(rest), Buffer.from(sig as string, 'base64'), Buffer.from(keys.innerPub, 'base64')), 'tweetnacl verifies the envelope')
})
