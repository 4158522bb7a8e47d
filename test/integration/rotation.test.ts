/**
 * `system rotate-code` (the whitelist's 授权码): while a business system is redeployed, pushes carrying the
 * old code keep working for the grace period, the new code works the moment the command returns, both
 * map to the same public system id, no push is lost across the switch, and after the grace the old code
 * gets 401 E_AUTH_CODE. The rotation is made on a separate database connection, as the CLI does.
 */
import t from 'tap'
import { join } from 'node:path'
import { Registry } from '../../inner/registry.js'
import { openDatabase } from '../../shared/sqlite.js'
import { addSystem, makeKeys, push, record, startInner, waitFor, type PushResult } from '../helpers/daemons.js'

t.test('rotation: old code valid during the grace, new code at once, none lost, old code refused after', async (t) => {
  const dir = t.testdir()
  const inner = await startInner(t, dir, makeKeys(dir), undefined)
  const sys = await addSystem(inner)
  const cli = openDatabase(join(inner.config.dataDir, 'inner.sqlite'), { busyTimeoutMs: 5000 })
  t.teardown(() => cli.close())
  const registry = new Registry(cli)

  const accepted: { id: string; seq: number; quantity: number; user: string }[] = []
  const failures: PushResult[] = []
  let q = 0
  /** Pushes as one deployment of the business system would, remembering what was accepted. */
  async function pushAs(code: string, user: string): Promise<void> {
    const quantity = ++q
    const r = await push(inner.intakeUrl, record(code, user, quantity))
    if (r.status === 200) accepted.push({ ...(r.body.data as { id: string; seq: number }), quantity, user })
    else failures.push(r)
  }

  for (let i = 0; i < 10; i++) await pushAs(sys.code, 'old-deployment')
  const graceSeconds = 4
  const rotated = registry.rotateCode(sys.id, graceSeconds)
  t.not(rotated.authCode, sys.code)
  t.match(rotated.authCode, /^[0-9a-f]{32}$/)
  t.equal(rotated.system.id, sys.id, 'same public id')

  // A rolling redeploy: old and new deployments push side by side during the grace.
  let during = 0
  while (Date.now() < rotated.oldCodesExpireAt - 1500 && during < 30) {
    await Promise.all([pushAs(sys.code, 'old-deployment'), pushAs(rotated.authCode, 'new-deployment')])
    during++
  }
  t.ok(during >= 5, `${during} rounds of pushes with both codes during the grace`)
  t.same(failures, [], 'no push refused before the grace ended')

  await waitFor(() => Date.now() > rotated.oldCodesExpireAt, 'the grace period to end', (graceSeconds + 5) * 1000, 50)
  const late = await push(inner.intakeUrl, record(sys.code, 'old-deployment', 999))
  t.equal(late.status, 401, 'old code refused after the grace')
  t.equal(late.body.code, 'E_AUTH_CODE')
  for (let i = 0; i < 5; i++) await pushAs(rotated.authCode, 'new-deployment')
  t.same(failures, [], 'the new code keeps working')

  // None lost: every accepted push is stored, under the same public system id, in order.
  const rows = inner.daemon.store.db.prepare('SELECT id, seq, user, quantity, system_id FROM messages WHERE system_id = ? ORDER BY seq').all(sys.id) as
    { id: string; seq: number; user: string; quantity: number; system_id: string }[]
  t.equal(rows.length, accepted.length, `${accepted.length} accepted, ${rows.length} stored`)
  const byId = new Map(rows.map((r) => [r.id, r]))
  t.ok(accepted.every((a) => byId.get(a.id)?.seq === a.seq && byId.get(a.id)?.quantity === a.quantity), 'each accepted push stored as answered')
  t.equal(inner.daemon.store.getState(sys.id, 'new-deployment')?.quantity, q, 'the latest count is current')
  t.notOk(rows.some((r) => JSON.stringify(r).includes(sys.code) || JSON.stringify(r).includes(rotated.authCode)), 'codes never stored in messages')

  // A second rotation with no grace ends every older code at once.
  const again = registry.rotateCode(sys.id, 0)
  // A hit is served from the cache, which follows the database within a second (DESIGN §3.1).
  await waitFor(() => inner.daemon.registry.lookup(rotated.authCode) === undefined, 'the daemon to see the rotation', 1000)
  t.equal((await push(inner.intakeUrl, record(rotated.authCode, 'u', 1))).body.code, 'E_AUTH_CODE', 'previous code ends with grace 0')
  t.equal((await push(inner.intakeUrl, record(again.authCode, 'u', 1))).status, 200, 'the newest code works at once')
  t.same(registry.codes(sys.id).map((c) => c.code), [again.authCode], 'expired codes are deleted')
})
