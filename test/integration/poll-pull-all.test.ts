/**
 * pull-all (spec §6.2.2, DESIGN §3.3) against a real HTTP business system: values as strings or numbers,
 * Chinese names, only changes travel, the answer is the whole truth (a missing user goes to 0), records
 * with another system's code are rejected and logged while the rest count, GBK answers are decoded when
 * declared, and the envelopes are signed like pushes.
 */
import t from 'tap'
import { verifyEnvelope } from '../../shared/crypto.js'
import { startBusinessSystem } from '../helpers/business-system.js'
import { addSystem, makeKeys, startInner, waitFor, type RunningInner } from '../helpers/daemons.js'

const FAST_POLL = { poll: { connectTimeoutMs: 1000, headersTimeoutMs: 5000, bodyTimeoutMs: 5000, requestTimeoutMs: 10_000, backoffMaxMs: 500 } }

function quantity(inner: RunningInner, system: string, user: string): number | undefined {
  return inner.daemon.store.getState(system, user)?.quantity
}

function messageCount(inner: RunningInner, system: string): number {
  return (inner.daemon.store.db.prepare('SELECT count(*) AS n FROM messages WHERE system_id = ?').get(system) as { n: number }).n
}

t.test('pull-all: strings or numbers, only changes travel, a missing user goes to 0', async (t) => {
  const dir = t.testdir()
  const inner = await startInner(t, dir, makeKeys(dir), undefined, FAST_POLL)
  const biz = await startBusinessSystem(t, (b) => {
    b.counts.set('admin', 10)
    b.counts.set('张三', 3)
    b.counts.set('272670316', 11)
  })
  const sys = await addSystem(inner, { mode: 'pull-all', url: `${biz.url}/all`, intervalSeconds: 1 })
  biz.code = sys.code // set before the first poll, which runs on a later turn of the event loop

  await waitFor(() => quantity(inner, sys.id, 'admin') === 10 && quantity(inner, sys.id, '张三') === 3 && quantity(inner, sys.id, '272670316') === 11, 'first poll stored')
  t.equal(messageCount(inner, sys.id), 3, 'one message per user')
  const row = inner.daemon.store.db.prepare('SELECT envelope, source FROM messages WHERE system_id = ? AND user = ?').get(sys.id, '张三') as { envelope: string; source: string }
  t.equal(row.source, 'pull')
  const env = JSON.parse(row.envelope) as Record<string, unknown>
  t.match(env, { system: sys.id, systemName: '建设项目', user: '张三', level: 1, quantity: 3, url: '10.194.5.72' })
  t.ok(verifyEnvelope(env as never, inner.daemon.key.publicKeyObject), 'signed by the inner like a push')
  t.notOk(row.envelope.includes(sys.code), 'the envelope does not hold the auth code')

  // The same counts, now as JSON numbers: nothing changed, so nothing travels.
  biz.numbers = true
  const seen = biz.requests.length
  await waitFor(() => biz.requests.length >= seen + 3, 'three more polls')
  t.equal(messageCount(inner, sys.id), 3, 'unchanged answers (strings or numbers) produce no message')

  biz.counts.set('admin', 12)
  await waitFor(() => quantity(inner, sys.id, 'admin') === 12, 'a changed count travels')
  t.equal(messageCount(inner, sys.id), 4)

  // 张三 is missing from the answer now: the answer is the whole truth, so 张三 goes to 0.
  biz.counts.delete('张三')
  await waitFor(() => quantity(inner, sys.id, '张三') === 0, 'missing user zeroed')
  t.equal(messageCount(inner, sys.id), 5)
  const zero = inner.daemon.store.db.prepare('SELECT envelope FROM messages WHERE system_id = ? AND user = ? ORDER BY seq DESC').get(sys.id, '张三') as { envelope: string }
  t.match(JSON.parse(zero.envelope), { quantity: 0, systemName: '建设项目', user: '张三' })
  const seen2 = biz.requests.length
  await waitFor(() => biz.requests.length >= seen2 + 2, 'two more polls')
  t.equal(messageCount(inner, sys.id), 5, 'a user already at 0 is not zeroed again')
  const health = await waitFor(() => inner.daemon.poller.health(sys.id)?.pollsOk, 'health')
  t.ok(health >= 5)
})

t.test('pull-all: a record with another system\'s code is rejected and logged; the rest count and its user is not zeroed', async (t) => {
  const dir = t.testdir()
  const inner = await startInner(t, dir, makeKeys(dir), undefined, FAST_POLL)
  const other = await addSystem(inner)
  const biz = await startBusinessSystem(t, (b) => {
    b.counts.set('alice', 4)
    b.counts.set('bob', 6)
  })
  const sys = await addSystem(inner, { mode: 'pull-all', url: `${biz.url}/all`, intervalSeconds: 1 })
  biz.code = sys.code
  await waitFor(() => quantity(inner, sys.id, 'alice') === 4 && quantity(inner, sys.id, 'bob') === 6, 'first poll stored')

  // bob's record now carries another system's code, plus two malformed elements.
  biz.codeFor.set('bob', other.code)
  biz.counts.set('alice', 5)
  biz.extra = [{ BUSSINESS: sys.code, LOGINNAME: 'carol', QUANTITY: -1 }, 'not a record']
  await waitFor(() => quantity(inner, sys.id, 'alice') === 5, 'alice updated')
  const line = await inner.logs.waitFor((l) => l.msg === 'poll record rejected' && l.code === 'E_AUTH_CODE', 'rejection logged')
  t.equal(line.system, sys.id)
  t.equal(line.user, 'bob')
  t.equal(typeof line.codeTag, 'string')
  const logText = JSON.stringify(inner.logs.lines)
  t.notOk(logText.includes(other.code) || logText.includes(sys.code), 'no auth code in clear in any log line')
  await inner.logs.waitFor((l) => l.msg === 'poll record rejected' && l.code === 'E_FIELD' && l.field === '[2].QUANTITY', 'field rejection logged')
  t.equal(quantity(inner, sys.id, 'bob'), 6, 'bob was in the answer (rejected), so he is not zeroed')
  t.equal(quantity(inner, other.id, 'bob'), undefined, 'nothing stored for the other system')
  t.equal(inner.daemon.store.db.prepare('SELECT count(*) AS n FROM state WHERE user = ?').pluck().get('carol'), 0, 'carol not stored')

  // Counted durably (flushed about once a second) and in the health of the round.
  const counts = await waitFor(() => {
    const rows = inner.daemon.store.db.prepare('SELECT code, count FROM rejections WHERE system_id = ? AND source = ?').all(sys.id, 'pull') as { code: string; count: number }[]
    const m = Object.fromEntries(rows.map((r) => [r.code, r.count]))
    return m.E_AUTH_CODE && m.E_FIELD ? m : undefined
  }, 'rejections counted')
  t.ok(counts.E_AUTH_CODE! >= 1 && counts.E_FIELD! >= 2)
  t.ok((inner.daemon.poller.health(sys.id)?.rejected ?? 0) >= 3, 'the round reports its rejected records')
})

t.test('pull-all: a GBK answer is decoded when its charset is declared, refused (ERR_POLL_ENCODING) when not', async (t) => {
  const dir = t.testdir()
  const inner = await startInner(t, dir, makeKeys(dir), undefined, FAST_POLL)
  const gbk = await startBusinessSystem(t, (b) => { b.behavior = 'gbk'; b.counts.set('张三', 7) })
  const bare = await startBusinessSystem(t, (b) => { b.behavior = 'gbk-undeclared'; b.counts.set('张三', 7) })
  const a = await addSystem(inner, { mode: 'pull-all', url: `${gbk.url}/all`, intervalSeconds: 1 })
  const b = await addSystem(inner, { mode: 'pull-all', url: `${bare.url}/all`, intervalSeconds: 1 })
  gbk.code = a.code
  bare.code = b.code
  await waitFor(() => quantity(inner, a.id, '张三') === 7, 'GBK answer stored')
  const env = JSON.parse((inner.daemon.store.db.prepare('SELECT envelope FROM messages WHERE system_id = ?').get(a.id) as { envelope: string }).envelope) as Record<string, unknown>
  t.equal(env.systemName, '建设项目', 'no mojibake')
  const h = await waitFor(() => inner.daemon.poller.health(b.id)?.lastErrorCode, 'undeclared GBK fails')
  t.equal(h, 'ERR_POLL_ENCODING')
  t.equal(quantity(inner, b.id, '张三'), undefined, 'nothing stored from an undecodable answer')
})
