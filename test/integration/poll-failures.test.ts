/**
 * Misbehaving business systems: a hanging one never delays the others; garbage, HTTP 500, oversized
 * answers, the wrong shape, a timeout and a closed port each end the round with a stable ERR_POLL_*
 * code, back off (never sooner than the interval), show in the durable poll health, and recover.
 */
import t from 'tap'
import { createServer } from 'node:net'
import { readPollHealth } from '../../inner/poll-health.js'
import { importUsers } from '../../inner/users.js'
import { startBusinessSystem, type Behavior } from '../helpers/business-system.js'
import { addSystem, makeKeys, startInner, waitFor, type RunningInner } from '../helpers/daemons.js'

const quantity = (inner: RunningInner, system: string, user: string): number | undefined => inner.daemon.store.getState(system, user)?.quantity

/** A port that was bound and released: connecting to it is refused. */
async function closedPort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  const port = (s.address() as { port: number }).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

t.test('a hanging system does not delay another system\'s polls, and shutdown aborts it at once', async (t) => {
  const dir = t.testdir()
  // Long timeouts: the hanging requests stay pending for the whole test.
  const inner = await startInner(t, dir, makeKeys(dir), undefined, {
    poll: { headersTimeoutMs: 120_000, bodyTimeoutMs: 120_000, requestTimeoutMs: 120_000, concurrency: 2 },
  })
  importUsers(inner.daemon.store.db, 'loginName\nu1\nu2\nu3\n', { maxLoginName: 128, maxName: 256 })
  const hangAll = await startBusinessSystem(t, (b) => { b.behavior = 'hang' })
  const hangUser = await startBusinessSystem(t, (b) => { b.behavior = 'hang' })
  const slow = await startBusinessSystem(t, (b) => { b.delayMs = 300; b.counts.set('s', 1) })
  const ok = await startBusinessSystem(t, (b) => { b.counts.set('u1', 1) })
  const h1 = await addSystem(inner, { mode: 'pull-all', url: `${hangAll.url}/all`, intervalSeconds: 1 })
  const h2 = await addSystem(inner, { mode: 'pull-user', url: `${hangUser.url}/user`, intervalSeconds: 1 })
  const sl = await addSystem(inner, { mode: 'pull-all', url: `${slow.url}/all`, intervalSeconds: 1 })
  const a = await addSystem(inner, { mode: 'pull-all', url: `${ok.url}/all`, intervalSeconds: 1 })
  hangAll.code = h1.code
  hangUser.code = h2.code
  slow.code = sl.code
  ok.code = a.code

  await waitFor(() => hangAll.held.size === 1 && hangUser.held.size === 2, 'hanging requests pending (pull-user: up to poll.concurrency)')
  for (let i = 2; i <= 4; i++) {
    ok.counts.set('u1', i)
    slow.counts.set('s', i)
    await waitFor(() => quantity(inner, a.id, 'u1') === i && quantity(inner, sl.id, 's') === i, `update ${i} arrives`)
  }
  t.equal(hangAll.held.size, 1, 'the pull-all request is still pending')
  t.equal(hangAll.requests.length, 1, 'and it is still the first one')
  t.equal(hangUser.held.size, 2, 'the pull-user requests are still pending')
  t.equal(inner.daemon.poller.health(h1.id)?.lastAttemptAt ?? null, null, 'no round of the hanging system has finished')
  t.ok((inner.daemon.poller.health(a.id)?.pollsOk ?? 0) >= 4, 'the healthy system kept its rhythm')

  const started = Date.now()
  await inner.daemon.close()
  t.ok(Date.now() - started < 3000, `close() aborts hanging polls (${Date.now() - started} ms)`)
  await waitFor(() => hangAll.held.size === 0 && hangUser.held.size === 0, 'hanging requests closed by the inner')
})

t.test('failures: stable codes, backoff never below the interval, durable health, recovery', async (t) => {
  const dir = t.testdir()
  const inner = await startInner(t, dir, makeKeys(dir), undefined, {
    poll: { headersTimeoutMs: 300, bodyTimeoutMs: 300, requestTimeoutMs: 1000, connectTimeoutMs: 500, maxResponseBytes: 64 * 1024, backoffMaxMs: 1500, concurrency: 2 },
  })
  const cases: [Behavior, string][] = [
    ['garbage', 'ERR_POLL_BAD_JSON'], ['error500', 'ERR_POLL_HTTP'], ['big', 'ERR_POLL_TOO_LARGE'], ['object', 'ERR_POLL_SHAPE'], ['hang', 'ERR_POLL_TIMEOUT'],
  ]
  const systems: { id: string; code: string; biz: Awaited<ReturnType<typeof startBusinessSystem>>; expect: string }[] = []
  for (const [behavior, expect] of cases) {
    const biz = await startBusinessSystem(t, (b) => { b.behavior = behavior; b.counts.set('x', 1) })
    const s = await addSystem(inner, { mode: 'pull-all', url: `${biz.url}/all`, intervalSeconds: 1 })
    biz.code = s.code
    systems.push({ ...s, biz, expect })
  }
  const dead = await addSystem(inner, { mode: 'pull-all', url: `http://127.0.0.1:${await closedPort()}/all`, intervalSeconds: 1 })
  // pull-user against a dead system stops after poll.concurrency failed requests, not one per user.
  importUsers(inner.daemon.store.db, ['loginName', ...Array.from({ length: 50 }, (_, i) => `p${i}`)].join('\n'), { maxLoginName: 128, maxName: 256 })
  const deadUser = await addSystem(inner, { mode: 'pull-user', url: `http://127.0.0.1:${await closedPort()}/user`, intervalSeconds: 1 })

  for (const s of [...systems, { ...dead, expect: 'ERR_POLL_CONNECT' }, { ...deadUser, expect: 'ERR_POLL_CONNECT' }]) {
    const h = await waitFor(() => {
      const x = inner.daemon.poller.health(s.id)
      return x && x.consecutiveFailures >= 2 ? x : undefined
    }, `${s.expect} twice`, 20_000)
    t.equal(h.lastErrorCode, s.expect, `${s.expect}`)
    t.equal(h.lastSuccessAt, null)
    t.ok(h.nextPollAt! - h.lastAttemptAt! >= 1000, 'the next poll is at least an interval away')
  }
  // Once poll.concurrency (2) requests failed with no success the round stops; requests already in flight finish.
  const r = inner.daemon.poller.health(deadUser.id)?.requests ?? 0
  t.ok(r >= 2 && r <= 3, `a dead pull-user system costs about poll.concurrency requests per round, not one per user (${r} of 50)`)
  await inner.logs.waitFor((l) => l.msg === 'poll failed' && l.code === 'ERR_POLL_HTTP' && l.system === systems[1]!.id, 'failure logged')

  // Durable, for `system show` and `stats` in another process.
  const stored = readPollHealth(inner.daemon.store.db)
  for (const s of systems) t.equal(stored.get(s.id)?.lastErrorCode, s.expect, `${s.expect} stored`)

  // Backoff: failing requests are never closer together than the interval.
  const failing = systems[1]!.biz
  await waitFor(() => failing.requests.length >= 4, 'four attempts', 20_000)
  const gaps = failing.requests.slice(1).map((r, i) => r.at - failing.requests[i]!.at)
  t.ok(gaps.every((g) => g >= 950), `gaps between failed polls ${gaps.join(', ')} ms`)

  // Recovery: the 500 system answers again.
  failing.behavior = 'ok'
  await waitFor(() => quantity(inner, systems[1]!.id, 'x') === 1, 'recovered system stored', 20_000)
  const h = await waitFor(() => {
    const x = inner.daemon.poller.health(systems[1]!.id)
    return x && x.consecutiveFailures === 0 && x.lastSuccessAt ? x : undefined
  }, 'health reset')
  t.ok(h.pollsFailed >= 2)
  t.equal(h.lastErrorCode, 'ERR_POLL_HTTP', 'the last error stays visible after recovery')
  await inner.logs.waitFor((l) => l.msg === 'poll recovered' && l.system === systems[1]!.id, 'recovery logged')
})
