/**
 * pull-user (spec §6.2.1, DESIGN §3.3) against a real HTTP business system: every known user — imported
 * or seen in any record — is asked for with `loginName=` UTF-8 percent-encoded (Chinese, spaces, `&`,
 * emoji, rare CJK), the per-system concurrency limit holds, connections are kept alive, an answer for
 * another user is rejected, and an empty array sends a user with a count to 0.
 */
import t from 'tap'
import { userUrl } from '../../inner/poll-round.js'
import { importUsers } from '../../inner/users.js'
import { startBusinessSystem } from '../helpers/business-system.js'
import { addSystem, makeKeys, push, record, startInner, waitFor, type RunningInner } from '../helpers/daemons.js'

const quantity = (inner: RunningInner, system: string, user: string): number | undefined => inner.daemon.store.getState(system, user)?.quantity

t.test('pull-user: the loginName parameter is appended and UTF-8 percent-encoded', async (t) => {
  t.equal(userUrl('http://10.0.0.1:8080/todo/count', '张三').href, 'http://10.0.0.1:8080/todo/count?loginName=%E5%BC%A0%E4%B8%89')
  t.equal(userUrl('http://h/x?sys=a%20b&k=1', 'a b&c=d').href, 'http://h/x?sys=a%20b&k=1&loginName=a%20b%26c%3Dd', 'existing query kept as is')
  t.equal(userUrl('http://h/x?', 'u').href, 'http://h/x?loginName=u')
  t.equal(new URL(userUrl('http://h/x', '𠀀👩‍💻').href).searchParams.get('loginName'), '𠀀👩‍💻')
})

t.test('pull-user: asks for every known user, within the concurrency limit, over kept-alive connections', async (t) => {
  const dir = t.testdir()
  const inner = await startInner(t, dir, makeKeys(dir), undefined, { poll: { concurrency: 3, backoffMaxMs: 500, keepAliveTimeoutMs: 30_000 } })
  const pusher = await addSystem(inner)
  // Known users: 40 imported (some with characters that need encoding) plus one only seen in a push.
  const special = ['张三', 'a b&c=d', '𠀀', '王五👩‍💻', '100%']
  const csv = ['loginName,name,region', ...special.map((u) => `"${u}",,510100`), ...Array.from({ length: 35 }, (_, i) => `user${i},用户${i},510100`)].join('\n')
  const imported = importUsers(inner.daemon.store.db, csv, { maxLoginName: 128, maxName: 256 })
  t.equal(imported.added, 40)
  t.equal((await push(inner.intakeUrl, record(pusher.code, 'seen-only', 1))).status, 200)

  const biz = await startBusinessSystem(t, (b) => {
    b.delayMs = 20
    b.counts.set('张三', 5)
    b.counts.set('a b&c=d', 2)
    b.counts.set('𠀀', 1)
    b.counts.set('seen-only', 9)
  })
  const sys = await addSystem(inner, { mode: 'pull-user', url: `${biz.url}/user`, intervalSeconds: 1 })
  biz.code = sys.code

  await waitFor(() => quantity(inner, sys.id, '张三') === 5 && quantity(inner, sys.id, 'a b&c=d') === 2
    && quantity(inner, sys.id, '𠀀') === 1 && quantity(inner, sys.id, 'seen-only') === 9, 'counts stored')
  await waitFor(() => inner.daemon.poller.health(sys.id)?.pollsOk, 'one round done')
  const asked = new Set(biz.requestsFor('/user').map((r) => r.loginName))
  for (const u of [...special, 'seen-only', 'user0', 'user34']) t.ok(asked.has(u), `asked for ${u}`)
  t.equal(asked.size, 41, 'every known user and no one else')
  t.ok(biz.maxInFlight <= 3, `at most poll.concurrency requests at once (saw ${biz.maxInFlight})`)
  t.ok(biz.maxInFlight >= 2, 'requests do run in parallel')
  t.ok(biz.connections <= 3, `keep-alive: ${biz.connections} connections for ${biz.requests.length} requests`)
  t.equal(inner.daemon.store.db.prepare('SELECT count(*) FROM messages WHERE system_id = ?').pluck().get(sys.id), 4,
    'users with nothing open (QUANTITY 0, never counted) produce no message')

  // A round later nothing changed: still four messages; then one change travels.
  const n = biz.requests.length
  await waitFor(() => biz.requests.length >= n + 41, 'another round')
  t.equal(inner.daemon.store.db.prepare('SELECT count(*) FROM messages WHERE system_id = ?').pluck().get(sys.id), 4)
  biz.counts.set('张三', 0)
  await waitFor(() => quantity(inner, sys.id, '张三') === 0, 'completion (办结) travels')
})

t.test('pull-user: an answer for another user is rejected; an empty array sends a user with a count to 0', async (t) => {
  const dir = t.testdir()
  const inner = await startInner(t, dir, makeKeys(dir), undefined, { poll: { backoffMaxMs: 500 } })
  importUsers(inner.daemon.store.db, 'loginName\nalice\nbob\n', { maxLoginName: 128, maxName: 256 })
  const biz = await startBusinessSystem(t, (b) => { b.counts.set('alice', 3); b.counts.set('bob', 4) })
  const sys = await addSystem(inner, { mode: 'pull-user', url: `${biz.url}/user`, intervalSeconds: 1 })
  biz.code = sys.code
  await waitFor(() => quantity(inner, sys.id, 'alice') === 3 && quantity(inner, sys.id, 'bob') === 4, 'stored')

  // The business system now answers bob's question with carol's record.
  biz.name = '建设项目'
  const orig = biz.record.bind(biz)
  biz.record = (u: string) => (u === 'bob' ? { ...orig(u), LOGINNAME: 'carol' } : orig(u))
  const line = await inner.logs.waitFor((l) => l.msg === 'poll record rejected' && l.field === 'LOGINNAME', 'mismatch rejected')
  t.equal(line.code, 'E_FIELD')
  t.equal(line.system, sys.id)
  t.equal(quantity(inner, sys.id, 'bob'), 4, 'bob unchanged')
  t.equal(quantity(inner, sys.id, 'carol'), undefined, 'carol not stored')

  // `[]` for alice: she has nothing open any more.
  biz.record = (u: string) => orig(u)
  const server = biz.server
  server.removeAllListeners('request')
  server.on('request', (req, res) => {
    const login = new URL(req.url ?? '/', 'http://x').searchParams.get('loginName')
    const body = login === 'alice' ? '[]' : JSON.stringify(orig(login ?? ''))
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(body)
  })
  await waitFor(() => quantity(inner, sys.id, 'alice') === 0, 'alice zeroed by an empty answer')
  t.equal(quantity(inner, sys.id, 'bob'), 4)
})
