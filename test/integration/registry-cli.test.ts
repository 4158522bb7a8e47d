/**
 * The registry and whitelist from the command line (DESIGN §3.1), as real child processes next to a
 * running daemon sharing the database: `system add|list|show|disable|enable|rotate-code|remove`, all with
 * `--json`; scopes and address ranges recorded; changes effective in the daemon within a second; poll
 * health and rejection counts in `system show` and `stats`; `system remove` zeroing counts with signed
 * messages. Needs `npm run build`.
 */
import t from 'tap'
import { push, record, waitFor } from '../helpers/daemons.js'
import { runInner, runInnerJson, startInnerWithConfig, type SystemJson } from '../helpers/cli.js'

const EXTRA = { poll: { backoffMaxMs: 500, headersTimeoutMs: 2000, requestTimeoutMs: 3000 } }

t.test('cli: system add, list, show, disable, enable, rotate-code — with --json, effective in the running daemon', async (t) => {
  const { config, inner } = await startInnerWithConfig(t, EXTRA)
  const added = await runInnerJson<SystemJson>(['system', 'add', '--config', config, '--name', '建设项目审批', '--mode', 'push',
    '--scope', 'province', '--scope', 'city', '--allow-ip', '127.0.0.0/8', '--allow-ip', '::1/128', '--description', '省级系统'])
  t.match(added, { name: '建设项目审批', mode: 'push', enabled: true, scopes: ['province', 'city'], allowIps: ['127.0.0.0/8', '::1/128'], description: '省级系统' })
  t.match(added.authCode, /^[0-9a-f]{32}$/, 'a 32-hex-digit auth code, as in the spec')
  t.match(added.id, /^sys-[0-9a-f]+$/)
  t.equal((await push(inner.intakeUrl, record(added.authCode, 'admin', 3))).status, 200, 'the code works as soon as the command returns')

  // Bad input: a one-line error, exit 2 (usage) or 1, no stack trace.
  const bad: Promise<void>[] = []
  for (const [args, code] of [
    [['--name', 'x', '--mode', 'push', '--allow-ip', '10.0.0.0/33'], 2],
    [['--name', 'x', '--mode', 'push', '--allow-ip', 'fe80::zz/64'], 2],
    [['--name', 'x', '--mode', 'pull-all'], 2],
    [['--name', 'x', '--mode', 'push', '--scope', 'country'], 2],
    [['--name', 'x', '--mode', 'pull-user', '--url', 'ftp://h/x'], 2],
    [['--name', '建设项目审批', '--mode', 'push'], 1],
  ] as [string[], number][]) bad.push(runInner(['system', 'add', '--config', config, ...args]).then((r) => {
    t.equal(r.code, code, `${args.join(' ')}: exit ${code}`)
    t.match(r.stderr, /^todo-inner: error: .+\n$/, 'one line')
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace')
  }))
  await Promise.all(bad)

  const list = await runInnerJson<SystemJson[]>(['system', 'list', '--config', config])
  t.same(list.map((s) => s.id), [added.id], 'the failed adds left nothing behind')
  const shown = await runInnerJson<SystemJson & { authCodes: { code: string; expiresAt: number | null }[]; rejected: unknown; poll: unknown }>(['system', 'show', added.id, '--config', config])
  t.same(shown.authCodes.map((c) => c.code), [added.authCode])
  t.equal(shown.poll, null, 'a push system has no poll health')

  const disabled = await runInnerJson<SystemJson>(['system', 'disable', '建设项目审批', '--config', config])
  t.equal(disabled.enabled, false, 'by name')
  const t0 = Date.now()
  const refused = await waitFor(async () => {
    const r = await push(inner.intakeUrl, record(added.authCode, 'admin', 4))
    return r.status === 403 ? r : undefined
  }, 'disable takes effect', 1000)
  t.equal(refused.body.code, 'E_SYSTEM_DISABLED', `refused within ${Date.now() - t0} ms`)
  t.equal((await runInnerJson<SystemJson>(['system', 'enable', added.id, '--config', config])).enabled, true)
  await waitFor(async () => (await push(inner.intakeUrl, record(added.authCode, 'admin', 5))).status === 200, 'enable takes effect', 1000)

  const rot = await runInnerJson<SystemJson & { oldCodesExpireAt: number }>(['system', 'rotate-code', added.id, '--config', config, '--grace', '2h'])
  t.not(rot.authCode, added.authCode)
  t.ok(Math.abs(rot.oldCodesExpireAt - (Date.now() + 7_200_000)) < 60_000, 'old code valid for the given grace')
  const def = await runInnerJson<SystemJson & { oldCodesExpireAt: number }>(['system', 'rotate-code', added.id, '--config', config])
  t.ok(Math.abs(def.oldCodesExpireAt - (Date.now() + 86_400_000)) < 60_000, 'default grace 24 h')
  const codes = (await runInnerJson<{ authCodes: { code: string; expiresAt: number | null }[] }>(['system', 'show', added.id, '--config', config])).authCodes
  t.equal(codes[0]!.code, def.authCode, 'current code first')
  t.equal(codes[0]!.expiresAt, null)
  t.same(new Set(codes.map((c) => c.code)), new Set([added.authCode, rot.authCode, def.authCode]))
  const expiry = new Map(codes.map((c) => [c.code, c.expiresAt ?? 0]))
  t.ok(Math.abs(expiry.get(added.authCode)! - (Date.now() + 7_200_000)) < 60_000, 'a later rotation never extends an older grace')
  t.ok(Math.abs(expiry.get(rot.authCode)! - (Date.now() + 86_400_000)) < 60_000, 'the previous current code gets the new grace')
  for (const c of [added.authCode, rot.authCode, def.authCode]) t.equal((await push(inner.intakeUrl, record(c, 'admin', 6))).status, 200, 'all three codes valid now')
  const text = await runInner(['system', 'show', added.id, '--config', config])
  t.match(text.stdout, /scope:\s+province, city/)
  t.match(text.stdout, /allow-ip:\s+127\.0\.0\.0\/8, ::1\/128/)
})

t.test('cli: rejections are counted per system in show and stats', async (t) => {
  const { config, inner } = await startInnerWithConfig(t, EXTRA)
  const added = await runInnerJson<SystemJson>(['system', 'add', '--config', config, '--name', 'push-sys', '--mode', 'push', '--allow-ip', '10.0.0.0/8'])
  for (let i = 0; i < 3; i++) await push(inner.intakeUrl, record(added.authCode, 'u', 1))
  await push(inner.intakeUrl, record('f'.repeat(32), 'u', 1))
  await waitFor(() => inner.daemon.store.db.prepare('SELECT sum(count) FROM rejections').pluck().get() === 4, 'counted')
  const shown = await runInnerJson<{ rejected: { total: number; byCode: Record<string, number> } }>(['system', 'show', added.id, '--config', config])
  t.match(shown.rejected, { total: 3, byCode: { E_IP_DENIED: 3 } })
  const stats = await runInnerJson<{ totals: { rejected: number }; rejectedUnknownSystem: number }>(['stats', '--config', config])
  t.equal(stats.totals.rejected, 4)
  t.equal(stats.rejectedUnknownSystem, 1)
  t.match((await runInner(['stats', '--config', config])).stdout, /rejected: 4 \(auth code matching no system: 1\)/)
})
