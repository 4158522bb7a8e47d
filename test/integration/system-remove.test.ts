/**
 * `system remove` (child processes next to a running daemon): refused for an enabled system without
 * --force; every user's count from the system goes to 0 with signed messages (so phones and portals
 * clear it), then the system and its auth codes are deleted while its history stays; a removal requested
 * while no daemon runs completes when the daemon starts. Needs `npm run build`.
 */
import t from 'tap'
import { innerConfigObject, makeKeys, push, record, startInner, token, waitFor, writeConfig } from '../helpers/daemons.js'
import { runInner, runInnerJson, startInnerWithConfig, type SystemJson } from '../helpers/cli.js'

const EXTRA = { poll: { backoffMaxMs: 500, headersTimeoutMs: 2000, requestTimeoutMs: 3000 } }

t.test('cli: system remove zeroes every user\'s count with signed messages, then deletes the system', async (t) => {
  const { config, inner } = await startInnerWithConfig(t, EXTRA)
  const s = await runInnerJson<SystemJson>(['system', 'add', '--config', config, '--name', '待删除', '--mode', 'push'])
  for (const [u, q] of [['a', 3], ['b', 5], ['c', 0]] as const) t.equal((await push(inner.intakeUrl, record(s.authCode, u, q))).status, 200)
  const tok = await token('a')
  const items = async (): Promise<unknown[]> => ((await (await fetch(`${inner.portalUrl}/api/v1/todos`, { headers: { authorization: `Bearer ${tok}` } })).json()) as { items: unknown[] }).items
  t.equal((await items()).length, 1)

  const refused = await runInner(['system', 'remove', s.id, '--config', config])
  t.equal(refused.code, 2, 'an enabled system needs disable first or --force')
  t.match(refused.stderr, /system disable/)
  t.equal(inner.daemon.store.getState(s.id, 'a')?.quantity, 3, 'nothing changed')

  const removed = await runInnerJson<{ status: string; clearedUsers: number }>(['system', 'remove', s.id, '--config', config, '--force'])
  t.match(removed, { id: s.id, status: 'removed', clearedUsers: 2 })
  const zeros = inner.daemon.store.db.prepare("SELECT user, quantity, envelope FROM messages WHERE system_id = ? AND source = 'admin' ORDER BY user").all(s.id) as { user: string; quantity: number; envelope: string }[]
  t.same(zeros.map((z) => [z.user, z.quantity]), [['a', 0], ['b', 0]], 'a signed 0 for each user who had a count')
  t.match(JSON.parse(zeros[0]!.envelope), { system: s.id, quantity: 0, sig: String })
  t.same(await items(), [], 'the portal shows nothing for the removed system')
  t.same((await runInnerJson<SystemJson[]>(['system', 'list', '--config', config])).map((x) => x.id), [])
  await waitFor(async () => (await push(inner.intakeUrl, record(s.authCode, 'a', 1))).body.code === 'E_AUTH_CODE', 'code gone', 1000)
  const tr = await runInnerJson<{ source: string }[]>(['trace', '--user', 'a', '--config', config])
  t.equal(tr[0]!.source, 'admin', 'history kept: trace shows the zeroing message')
  t.equal((await runInner(['system', 'show', s.id, '--config', config])).code, 1, 'show: no such system')
})

t.test('cli: a removal requested while no daemon runs is pending until the daemon starts', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const config = writeConfig(dir, 'inner.json', innerConfigObject(dir, keys, undefined, EXTRA))
  const s = await runInnerJson<SystemJson>(['system', 'add', '--config', config, '--name', 'later', '--mode', 'push'])
  await runInnerJson(['system', 'disable', s.id, '--config', config])
  const pending = await runInnerJson<{ status: string }>(['system', 'remove', s.id, '--config', config, '--wait', '0'])
  t.equal(pending.status, 'pending')
  const en = await runInner(['system', 'enable', s.id, '--config', config])
  t.equal(en.code, 1, 'a system being removed cannot be enabled')
  t.match(en.stderr, /being removed/)
  t.match((await runInner(['system', 'show', s.id, '--config', config])).stdout, /removing:\s+since/)

  const inner = await startInner(t, dir, keys, undefined, EXTRA)
  await inner.logs.waitFor((l) => l.msg === 'system removed' && l.system === s.id, 'removal completed at start')
  t.same(inner.daemon.registry.systems(), [], 'the system is gone')
})
