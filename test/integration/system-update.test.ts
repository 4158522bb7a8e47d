/**
 * `system update` from the command line (child processes next to a running daemon sharing the database):
 * a registration changes in place — id, auth codes and users' counts stay — and a running daemon follows
 * within a second: new `--allow-ip` ranges refuse or accept pushes, a pull system's new `--url` is what
 * the poller asks next. Bad input (unknown system, a mode change, a bad CIDR or URL, nothing to change…)
 * gives a one-line error, a non-zero exit and changes nothing. Needs `npm run build`.
 */
import t from 'tap'
import { startBusinessSystem } from '../helpers/business-system.js'
import { innerConfigObject, makeKeys, push, record, waitFor, writeConfig } from '../helpers/daemons.js'
import { runInner, runInnerJson, startInnerWithConfig, type SystemJson } from '../helpers/cli.js'

const EXTRA = { poll: { backoffMaxMs: 500, headersTimeoutMs: 2000, requestTimeoutMs: 3000 } }

type Shown = SystemJson & { authCodes: { code: string }[]; createdAt: number; updatedAt: number; rateLimit: number | null; changed?: string[] }

t.test('system update: new --allow-ip ranges refuse and accept pushes in the running daemon within a second; counts and codes stay', async (t) => {
  const { config, inner } = await startInnerWithConfig(t, EXTRA)
  const added = await runInnerJson<SystemJson>(['system', 'add', '--config', config, '--name', '建设项目审批', '--mode', 'push',
    '--allow-ip', '127.0.0.0/8', '--allow-ip', '::1/128', '--scope', 'province'])
  t.equal((await push(inner.intakeUrl, record(added.authCode, 'admin', 3))).status, 200, 'accepted from loopback')

  const before = Date.now()
  const narrowed = await runInnerJson<Shown>(['system', 'update', added.id, '--config', config, '--allow-ip', '10.0.0.0/8'])
  const t0 = Date.now()
  t.same(narrowed.allowIps, ['10.0.0.0/8'], 'the given list replaces the whole list')
  t.same(narrowed.changed, ['allowIps'])
  t.same(narrowed.scopes, ['province'], 'what was not given stays')
  t.equal(narrowed.id, added.id)
  t.same(narrowed.authCodes.map((c) => c.code), [added.authCode], 'the auth code stays')
  t.ok(narrowed.updatedAt >= before && narrowed.updatedAt <= t0, 'updated_at is set')
  t.ok(narrowed.createdAt <= narrowed.updatedAt)
  let accepted = 3
  const refused = await waitFor(async () => {
    const r = await push(inner.intakeUrl, record(added.authCode, 'admin', 4))
    if (r.status === 200) accepted = 4 // pushed before the daemon reloaded
    return r.status === 403 ? r : undefined
  }, 'the narrowed whitelist takes effect', 1000)
  t.equal(refused.body.code, 'E_IP_DENIED', `refused within ${Date.now() - t0} ms of the command returning`)
  t.equal(inner.daemon.store.getState(added.id, 'admin')?.quantity, accepted, 'the user\'s count was not touched (remove + add would zero it)')

  await runInnerJson(['system', 'update', '建设项目审批', '--config', config, '--allow-ip', '127.0.0.1/32', '--allow-ip', '::1'])
  const t1 = Date.now()
  await waitFor(async () => (await push(inner.intakeUrl, record(added.authCode, 'admin', 5))).status === 200, 'widened whitelist (by name)', 1000)
  t.pass(`accepted again within ${Date.now() - t1} ms`)
  t.equal(inner.daemon.store.getState(added.id, 'admin')?.quantity, 5)

  // Text output: one line on stderr naming what changed, then the system as `system show` prints it.
  const text = await runInner(['system', 'update', added.id, '--config', config, '--clear-allow-ip', '--rate', '50', '--description', '省级系统'])
  t.equal(text.code, 0)
  t.equal(text.stderr, 'updated allowIps, description, rateLimit\n')
  const shownText = await runInner(['system', 'show', added.id, '--config', config])
  // The rejection counts may grow meanwhile (the daemon records the refused pushes above in the background).
  const stable = (out: string): string => out.replace(/^rejected: .*$/m, 'rejected: …')
  t.equal(stable(text.stdout), stable(shownText.stdout), 'prints what `system show` prints')
  t.match(text.stdout, /^rejected: /m)
  t.match(text.stdout, /allow-ip:\s+any\n/)
  t.match(text.stdout, /rate limit:\s+50\/s\n/)
  await waitFor(async () => (await push(inner.intakeUrl, record(added.authCode, 'admin', 6))).status === 200, 'any address', 1000)

  // The same values again: nothing is written, updated_at stays.
  const same = await runInnerJson<Shown>(['system', 'update', added.id, '--config', config, '--rate', '50'])
  const shown = await runInnerJson<Shown>(['system', 'show', added.id, '--config', config])
  t.same(same.changed, [])
  t.equal(same.updatedAt, shown.updatedAt, 'a no-op update leaves updated_at')
  const cleared = await runInnerJson<Shown>(['system', 'update', added.id, '--config', config, '--clear-rate'])
  t.equal(cleared.rateLimit, null, '--clear-rate goes back to the configured default')
})

t.test('system update: a pull system\'s new --url is polled within a second, the old one no more; its users\' counts stay', async (t) => {
  const { config, inner } = await startInnerWithConfig(t, EXTRA)
  const oldBiz = await startBusinessSystem(t, (b) => b.counts.set('张三', 2))
  const newBiz = await startBusinessSystem(t, (b) => b.counts.set('张三', 2))
  const added = await runInnerJson<SystemJson>(['system', 'add', '--config', config, '--name', '排污许可', '--mode', 'pull-all',
    '--url', `${oldBiz.url}/all`, '--interval', '1'])
  oldBiz.code = added.authCode
  newBiz.code = added.authCode
  await waitFor(() => inner.daemon.store.getState(added.id, '张三')?.quantity === 2, 'the old URL polled and stored')

  const updated = await runInnerJson<Shown>(['system', 'update', added.id, '--config', config, '--url', `${newBiz.url}/all`, '--interval', '2'])
  const returned = Date.now()
  t.same(updated.changed, ['url', 'intervalSeconds'])
  t.match(updated, { url: `${newBiz.url}/all`, intervalSeconds: 2, mode: 'pull-all', enabled: true })
  await waitFor(() => newBiz.requests.length > 0, 'the new URL polled', 1500)
  t.ok(newBiz.requests[0]!.at - returned < 1000, 'the new URL polled within a second of the command returning')
  t.equal(newBiz.requests[0]!.path, '/all')
  await inner.logs.waitFor((l) => l.msg === 'polling stopped' && l.system === added.id && l.reason === 'registration changed', 'restart logged', 1000)
  t.equal(inner.daemon.store.getState(added.id, '张三')?.quantity, 2, 'the count survived the change (no zeroing)')

  const oldCount = oldBiz.requests.length
  newBiz.counts.set('张三', 7)
  await waitFor(() => inner.daemon.store.getState(added.id, '张三')?.quantity === 7, 'the new system\'s answer stored', 5000)
  await waitFor(() => newBiz.requests.length >= 2, 'a second poll of the new URL', 5000)
  t.equal(oldBiz.requests.length, oldCount, 'the old URL is not asked again')
})

t.test('system update: bad input exits non-zero with a one-line error and changes nothing', async (t) => {
  // No daemon: nothing else writes, so `system show --json` before and after must be identical.
  const dir = t.testdir()
  const config = writeConfig(dir, 'inner.json', innerConfigObject(dir, makeKeys(dir), undefined))
  const push1 = await runInnerJson<SystemJson>(['system', 'add', '--config', config, '--name', 'push-sys', '--mode', 'push',
    '--allow-ip', '10.0.0.0/8', '--scope', 'city', '--rate', '10', '--callback', 'http://10.0.0.1/cb'])
  const pull1 = await runInnerJson<SystemJson>(['system', 'add', '--config', config, '--name', 'pull-sys', '--mode', 'pull-user',
    '--url', 'http://10.0.0.2/count', '--interval', '300'])
  const gone = await runInnerJson<SystemJson>(['system', 'add', '--config', config, '--name', 'gone-sys', '--mode', 'push'])
  t.match(await runInnerJson(['system', 'remove', gone.id, '--config', config, '--force', '--wait', '0']), { status: 'pending' }, 'a removal pending (no daemon)')
  const snapshot = async (): Promise<string[]> => Promise.all([push1.id, pull1.id, gone.id].map(async (id) => (await runInner(['system', 'show', id, '--config', config, '--json'])).stdout))
  const before = await snapshot()

  const cases: [string, string[], number, RegExp][] = [
    ['unknown system', ['nope', '--rate', '5'], 1, /no such business system: nope/],
    ['mode change', [push1.id, '--mode', 'pull-all'], 2, /mode .* is push and cannot change to pull-all: run `system remove` and `system add`/],
    ['mode change with other changes', [pull1.id, '--mode', 'push', '--interval', '60'], 2, /cannot change/],
    ['same mode only', [push1.id, '--mode', 'push'], 2, /nothing to change/],
    ['nothing to change', [push1.id], 2, /nothing to change/],
    ['bad CIDR prefix', [push1.id, '--allow-ip', '10.0.0.0/33'], 2, /CIDR 10\.0\.0\.0\/33/],
    ['bad IPv6 CIDR', [push1.id, '--allow-ip', '127.0.0.1/32', '--allow-ip', 'fe80::zz/64'], 2, /CIDR fe80::zz\/64/],
    ['bad URL scheme', [pull1.id, '--url', 'ftp://h/x'], 2, /http\(s\)/],
    ['not a URL', [pull1.id, '--url', 'not a url'], 2, /not a URL/],
    ['bad callback', [push1.id, '--callback', 'file:///etc/passwd'], 2, /http\(s\)/],
    ['a pull system keeps its URL', [pull1.id, '--url', ''], 2, /--url is required/],
    ['interval out of range', [pull1.id, '--interval', '86401'], 2, /--interval must be 1\.\.86400/],
    ['interval on a push system', [push1.id, '--interval', '60'], 2, /--interval applies to pull/],
    ['bad scope', [push1.id, '--scope', 'country'], 2, /--scope must be one of/],
    ['bad action type', [push1.id, '--action-types', 'Read'], 2, /bad action type/],
    ['bad rate', [push1.id, '--rate', '0'], 2, /--rate must be a positive integer/],
    ['empty name', [push1.id, '--name', '  '], 2, /--name must be/],
    ['name taken', [push1.id, '--name', 'pull-sys'], 1, /a system with this name exists/],
    ['one bad value among good ones', [push1.id, '--rate', '99', '--description', 'x', '--allow-ip', '300.0.0.1'], 2, /bad address in CIDR/],
    ['removal pending', [gone.id, '--description', 'x'], 1, /being removed/],
  ]
  await Promise.all(cases.map(async ([what, args, code, reason]) => {
    const r = await runInner(['system', 'update', ...args, '--config', config])
    t.equal(r.code, code, `${what}: exit ${code}`)
    t.match(r.stderr, /^todo-inner: error: [^\n]+\n$/, `${what}: one line`)
    t.match(r.stderr, reason, `${what}: says why`)
    t.notMatch(r.stderr, /\n\s+at /, `${what}: no stack trace`)
    t.equal(r.stdout, '', `${what}: prints no system`)
  }))

  // Contradictory options are refused by the option parser (exit 2, no stack trace).
  for (const args of [['--allow-ip', '10.0.0.0/8', '--clear-allow-ip'], ['--rate', '5', '--clear-rate'], ['--callback', 'http://h/x', '--clear-callback']]) {
    const r = await runInner(['system', 'update', push1.id, '--config', config, ...args])
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`)
    t.match(r.stderr, /^todo-inner: error: option '--clear-[a-z-]+' cannot be used with option/)
    t.notMatch(r.stderr, /\n\s+at /)
  }

  t.same(await snapshot(), before, 'system show --json is unchanged for every system')
})
