/**
 * Polling managed from the command line (child processes next to a running daemon): a pull-all system
 * added with `system add` is polled within a second, `system show` and `stats` report its poll health,
 * `system disable` stops its polling within a second and `enable` resumes it. Needs `npm run build`.
 */
import t from 'tap'
import { startBusinessSystem } from '../helpers/business-system.js'
import { waitFor } from '../helpers/daemons.js'
import { runInner, runInnerJson, startInnerWithConfig, type SystemJson } from '../helpers/cli.js'

const EXTRA = { poll: { backoffMaxMs: 500, headersTimeoutMs: 2000, requestTimeoutMs: 3000 } }

t.test('cli: a pull-all system is polled within a second of `system add`; show and stats report its health; disable stops it', async (t) => {
  const { config, inner } = await startInnerWithConfig(t, EXTRA)
  const biz = await startBusinessSystem(t, (b) => b.counts.set('张三', 2))
  const added = await runInnerJson<SystemJson>(['system', 'add', '--config', config, '--name', '排污许可', '--mode', 'pull-all', '--url', `${biz.url}/all`, '--interval', '1'])
  biz.code = added.authCode
  const returned = Date.now()
  await waitFor(() => biz.requests.length > 0, 'first poll', 1500)
  t.ok(biz.requests[0]!.at - returned < 1000, `polled ${biz.requests[0]!.at - returned} ms after the command returned`)
  await waitFor(() => inner.daemon.store.getState(added.id, '张三')?.quantity === 2, 'stored')

  const shown = await runInnerJson<{ poll: Record<string, unknown> }>(['system', 'show', added.id, '--config', config])
  t.match(shown.poll, { systemId: added.id, consecutiveFailures: 0, lastSuccessAt: Number, latencyMs: Number, pollsOk: Number, nextPollAt: Number })
  t.match((await runInner(['system', 'show', added.id, '--config', config])).stdout, /poll:\s+last ok \d{4}-.*consecutive failures 0/)

  biz.behavior = 'error500'
  await waitFor(() => inner.daemon.poller.health(added.id)?.consecutiveFailures, 'a failure')
  const stats = await runInnerJson<{ systems: { id: string; mode: string; poll: Record<string, unknown> | null }[] }>(['stats', '--config', config])
  t.match(stats.systems.find((s) => s.id === added.id), { mode: 'pull-all', poll: { lastErrorCode: 'ERR_POLL_HTTP', consecutiveFailures: Number, pollsOk: Number } })
  const text = await runInner(['stats', '--config', config])
  t.equal(text.code, 0)
  t.match(text.stdout, new RegExp(`polls:\\n\\s+${added.id}\\s+pull-all\\s+last ok .*ERR_POLL_HTTP`))

  await runInnerJson(['system', 'disable', added.id, '--config', config])
  const off = Date.now()
  await inner.logs.waitFor((l) => l.msg === 'polling stopped' && l.system === added.id, 'polling stopped', 1500)
  t.ok(Date.now() - off < 1000, 'polling stops within a second')
  biz.behavior = 'ok'
  const n = biz.requests.length
  // Another system keeps polling; the disabled one is not asked again.
  const other = await startBusinessSystem(t)
  const o = await runInnerJson<SystemJson>(['system', 'add', '--config', config, '--name', 'other', '--mode', 'pull-all', '--url', `${other.url}/all`, '--interval', '1'])
  other.code = o.authCode
  await waitFor(() => other.requests.length >= 3, 'three polls of the other system', 10_000)
  t.equal(biz.requests.length, n, 'the disabled system was not polled again')
  await runInnerJson(['system', 'enable', added.id, '--config', config])
  await waitFor(() => biz.requests.length > n, 're-enabled system polled again', 1500)

  // Removing a pull system stops its polling and zeroes what it reported.
  t.match(await runInnerJson(['system', 'remove', added.id, '--config', config, '--force']), { status: 'removed', clearedUsers: 1 })
  t.ok(inner.logs.lines.filter((l) => l.msg === 'polling stopped' && l.system === added.id).length >= 2, 'stopped again')
  t.equal(inner.daemon.store.getState(added.id, '张三')?.quantity, 0)
  t.notOk(inner.daemon.poller.polled().includes(added.id))
})
