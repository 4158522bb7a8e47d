/**
 * Crash safety with real processes (dist/; run `npm run build` first): a 200 means committed, so nothing
 * acknowledged is lost when either daemon dies by SIGKILL, and after a restart everything reaches the
 * outer and the phone resumes exactly (DESIGN §3.3, §3.4, §3.6).
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import {
  INNER_BIN, connectWs, innerConfigObject, makeKeys, outerConfigObject, push, record, spawnDaemon, token, waitFor, writeConfig,
  type Child, type Frame,
} from '../helpers/daemons.js'

interface Env { seq: number; user: string; quantity: number }

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [INNER_BIN, ...args], { encoding: 'utf8', timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr })
    })
  })
}

async function addPushSystem(config: string, name: string): Promise<{ id: string; authCode: string }> {
  const r = await cli(['system', 'add', '--config', config, '--name', name, '--mode', 'push', '--json'])
  if (r.code !== 0) throw new Error(`system add failed: ${r.stderr}`)
  return JSON.parse(r.stdout) as { id: string; authCode: string }
}

async function outerHealth(outer: Child): Promise<{ hw: number | null; epoch: string | null }> {
  const res = await fetch(`${outer.urls.admin}/healthz`)
  return res.json() as Promise<{ hw: number | null; epoch: string | null }>
}

async function todos(clientsUrl: string, user: string): Promise<{ items: Env[] }> {
  const res = await fetch(`${clientsUrl}/api/v1/todos`, { headers: { authorization: `Bearer ${await token(user)}` } })
  if (res.status !== 200) throw new Error(`GET /api/v1/todos: ${res.status}`)
  return res.json() as Promise<{ items: Env[] }>
}

const portOf = (url: string): number => Number(new URL(url).port)
const updates = (frames: Frame[]): Env[] => frames.filter((f) => f.t === 'update').map((f) => f.item as Env)

t.test('crash: SIGKILL of the outer while pushes continue loses nothing, and the phone resumes exactly', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const outerObj = outerConfigObject(dir, keys)
  const outer1 = await spawnDaemon(t, 'outer', writeConfig(dir, 'outer.json', outerObj), ['link', 'clients', 'admin'])
  const innerConfig = writeConfig(dir, 'inner.json', innerConfigObject(dir, keys, `${outer1.urls.link!.replace('http', 'ws')}/link`))
  const sys = await addPushSystem(innerConfig, '建设项目')
  const inner = await spawnDaemon(t, 'inner', innerConfig, ['intake', 'portal', 'admin'])
  await outer1.waitLog((l) => l.msg === 'resync complete', 'the outer synced with the inner')

  const users = Array.from({ length: 30 }, (_, i) => `user${i}`)
  const watched = users[0]!
  const phone1 = await connectWs(t, outer1.urls.clients!, await token(watched))
  const snap = await phone1.next((f) => f.t === 'snapshot')
  const epoch = snap.epoch as string
  t.ok(epoch, 'the snapshot carries the epoch')

  // Outer restarted on the same ports (so the inner's configured URL still works) and the same data dir.
  const outer2Config = writeConfig(dir, 'outer-restart.json', {
    ...outerObj,
    listen: { link: `127.0.0.1:${portOf(outer1.urls.link!)}`, clients: `127.0.0.1:${portOf(outer1.urls.clients!)}`, admin: '127.0.0.1:0' },
  })

  const last = new Map<string, number>()
  let lastSeq = 0
  const statuses: number[] = []
  let restarting: Promise<Child> | undefined
  for (let i = 0; i < 300; i++) {
    if (i === 100) {
      await outer1.kill('SIGKILL')
      await phone1.waitClose()
    }
    if (i === 150) restarting = spawnDaemon(t, 'outer', outer2Config, ['link', 'clients', 'admin'])
    const user = users[i % users.length]!
    const r = await push(inner.urls.intake!, record(sys.authCode, user, i + 1))
    statuses.push(r.status)
    if (r.status === 200) {
      last.set(user, i + 1)
      lastSeq = Math.max(lastSeq, (r.body.data as { seq: number }).seq)
    }
  }
  t.ok(statuses.every((s) => s === 200), 'every push got 200 while the outer was dead or restarting')
  t.equal(lastSeq, 300)
  const outer2 = await restarting!

  const seen1 = updates(phone1.frames)
  t.ok(seen1.length > 0, `the phone saw ${seen1.length} updates before the crash`)
  const lastSeen = Math.max(...seen1.map((e) => e.seq))
  const phone2 = await connectWs(t, outer2.urls.clients!, await token(watched), `since=${lastSeen}&epoch=${epoch}`)
  await phone2.next((f) => f.t === 'synced')
  t.notOk(phone2.frames.some((f) => f.t === 'snapshot'), 'an exact resume, not a reset snapshot')
  // The last count may come in the resumed part (before `synced`) or live after it.
  await waitFor(() => updates(phone2.frames).some((e) => e.quantity === last.get(watched)), 'the phone shows the last count', 20_000)

  await waitFor(async () => (await outerHealth(outer2)).hw === lastSeq, 'the restarted outer holds every acknowledged push', 20_000, 50)
  t.equal((await outerHealth(outer2)).epoch, epoch, 'same epoch after the restart')
  for (const u of users) {
    const r = await todos(outer2.urls.clients!, u)
    t.same(r.items.map((e) => e.quantity), [last.get(u)], `${u}: the last quantity pushed`)
  }

  const seen2 = updates(phone2.frames)
  const seqs = [...seen1, ...seen2].map((e) => e.seq)
  t.equal(new Set(seqs).size, seqs.length, `no seq twice across both connections (${seqs.length} updates)`)
  t.ok(seen2.every((e) => e.seq > lastSeen), 'the resume starts after the last seq seen')
  t.ok([...seen1, ...seen2].every((e) => e.user === watched), 'only the phone user\'s updates')
  for (const s of [seen1, seen2]) t.same(s.map((e) => e.seq), [...s.map((e) => e.seq)].sort((a, b) => a - b), 'in seq order')
  t.ok(inner.lines.filter((l) => l.msg === 'link up').length >= 2, 'the inner\'s link came up again after the restart')
})

t.test('crash: SIGKILL of the inner right after a burst of 200s loses nothing; it all reaches the outer after restart', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const outer = await spawnDaemon(t, 'outer', writeConfig(dir, 'outer.json', outerConfigObject(dir, keys)), ['link', 'clients', 'admin'])
  const innerConfig = writeConfig(dir, 'inner.json', innerConfigObject(dir, keys, `${outer.urls.link!.replace('http', 'ws')}/link`))
  const sys = await addPushSystem(innerConfig, '排污许可')
  const inner1 = await spawnDaemon(t, 'inner', innerConfig, ['intake', 'portal', 'admin'])

  // Concurrent pushes: they share group commits, and the 200s come back as each commit lands.
  const results = await Promise.all(Array.from({ length: 120 }, (_, i) => push(inner1.urls.intake!, record(sys.authCode, `user${i % 20}`, i + 1))))
  await inner1.kill('SIGKILL')
  t.ok(results.every((r) => r.status === 200), 'all 120 pushes got 200')
  const acked = results.map((r, i) => ({ ...(r.body.data as { id: string; seq: number }), user: `user${i % 20}`, quantity: i + 1 }))
  t.same(acked.map((a) => a.seq).sort((a, b) => a - b), Array.from({ length: 120 }, (_, i) => i + 1), 'gap-free seqs 1..120')

  // Before any restart: every acknowledged message is in the database file.
  const db = new Database(join(dir, 'inner-data', 'inner.sqlite'), { readonly: true, fileMustExist: true })
  t.teardown(() => { if (db.open) db.close() })
  const find = db.prepare<[string], { seq: number; user: string; quantity: number }>('SELECT seq, user, quantity FROM messages WHERE id = ?')
  const missing = acked.filter((a) => {
    const row = find.get(a.id)
    return !row || row.seq !== a.seq || row.user !== a.user || row.quantity !== a.quantity
  })
  db.close()
  t.same(missing, [], 'every message that got a 200 survived SIGKILL')

  const inner2 = await spawnDaemon(t, 'inner', innerConfig, ['intake', 'portal', 'admin'])
  const newest = acked.reduce((a, b) => (a.seq > b.seq ? a : b))
  const tr = await cli(['trace', newest.id, '--config', innerConfig, '--json'])
  t.equal(tr.code, 0, tr.stderr)
  t.match(JSON.parse(tr.stdout), { id: newest.id, seq: 120, user: newest.user, quantity: newest.quantity }, 'todo-inner trace finds it after restart')

  await waitFor(async () => (await outerHealth(outer)).hw === 120, 'everything reached the outer', 20_000, 50)
  for (let u = 0; u < 20; u++) {
    const user = `user${u}`
    const final = acked.filter((a) => a.user === user).reduce((a, b) => (a.seq > b.seq ? a : b))
    t.same((await todos(outer.urls.clients!, user)).items.map((e) => e.quantity), [final.quantity], `${user}: the newest count`)
  }
  const after = await push(inner2.urls.intake!, record(sys.authCode, 'user0', 999))
  t.equal(after.status, 200, 'the restarted inner takes pushes')
  t.equal((after.body.data as { seq: number }).seq, 121, 'and continues the sequence without a gap')
})
