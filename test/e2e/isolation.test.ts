/**
 * A user never receives another user's data (DESIGN §3.6), on any path: the /ws snapshot, live updates,
 * the `?since=&epoch=` resume and REST. And the auth code (授权码) never leaves the private network
 * (DESIGN §3.5): no frame to a client and no byte of the outer's data folder holds it.
 */
import t from 'tap'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { addSystem, connectWs, push, record, startPair, token, waitFor, type Frame, type WsClient } from '../helpers/daemons.js'

interface Env { seq: number; user: string; system: string; quantity: number; [k: string]: unknown }

function filesUnder(dir: string): string[] {
  const out: string[] = []
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    if (e.isDirectory()) out.push(...filesUnder(p))
    else if (e.isFile()) out.push(p)
  }
  return out
}

/** Every envelope a frame carries. */
function envelopesOf(f: Frame): Env[] {
  if (f.t === 'update') return [f.item as Env]
  if (f.t === 'snapshot') return f.items as Env[]
  return []
}

async function rest(clientsUrl: string, user: string): Promise<{ user: string; total: number; items: Env[] }> {
  const res = await fetch(`${clientsUrl}/api/v1/todos`, { headers: { authorization: `Bearer ${await token(user)}` } })
  if (res.status !== 200) throw new Error(`GET /api/v1/todos for ${user}: HTTP ${res.status}`)
  return res.json() as Promise<{ user: string; total: number; items: Env[] }>
}

t.test('isolation: each user sees only their own todos, and the auth code never reaches the DMZ', async (t) => {
  const { inner, outer, system } = await startPair(t)
  const second = await addSystem(inner)
  const clients: WsClient[] = []
  const record_ = (c: WsClient): WsClient => {
    clients.push(c)
    return c
  }

  // Before any push, both phones are connected: A's and B's live updates travel at the same time.
  const phoneA = record_(await connectWs(t, outer.clientsUrl, await token('userA')))
  const phoneB = record_(await connectWs(t, outer.clientsUrl, await token('userB'), '', false))
  const snapA0 = await phoneA.next((f) => f.t === 'snapshot')
  const epoch = snapA0.epoch as string
  t.type(epoch, 'string')
  t.same(snapA0.items, [])

  const pushes: [string, string, number][] = [
    [system.code, 'userA', 3], [system.code, 'userB', 5], [second.code, 'userB', 7], [second.code, 'userA', 1],
    [system.code, 'userC', 9], [system.code, 'userA', 4], [second.code, 'userB', 0], [system.code, 'userB', 6],
  ]
  for (const [code, user, q] of pushes) t.equal((await push(inner.intakeUrl, record(code, user, q))).status, 200)
  // The last push for each phone's user marks the end of its stream.
  await phoneA.next((f) => f.t === 'update' && (f.item as Env).user === 'userA' && (f.item as Env).quantity === 4)
  await phoneB.next((f) => f.t === 'update' && (f.item as Env).user === 'userB' && (f.item as Env).quantity === 6)

  // Later connections: a snapshot, and a resume from the start of the epoch.
  const snapA = await (record_(await connectWs(t, outer.clientsUrl, await token('userA')))).next((f) => f.t === 'snapshot')
  const snapB = await (record_(await connectWs(t, outer.clientsUrl, await token('userB')))).next((f) => f.t === 'snapshot')
  t.same((snapA.items as Env[]).map((e) => [e.system, e.quantity]).sort(), [[second.id, 1], [system.id, 4]].sort(), 'A\'s snapshot')
  t.equal(snapA.total, 5)
  t.same((snapB.items as Env[]).map((e) => [e.system, e.quantity]), [[system.id, 6]], 'B\'s snapshot (the cleared item is left out)')

  const resumeA = record_(await connectWs(t, outer.clientsUrl, await token('userA'), `since=0&epoch=${epoch}`))
  const syncedA = await resumeA.next((f) => f.t === 'synced')
  const resumedA = resumeA.frames.slice(0, resumeA.frames.indexOf(syncedA))
  t.ok(resumedA.every((f) => f.t === 'update'), 'a resume sends updates, not a snapshot')
  t.same(resumedA.map((f) => (f.item as Env).quantity), [3, 1, 4], 'A gets exactly A\'s updates, in order')
  const resumeB = record_(await connectWs(t, outer.clientsUrl, await token('userB'), `since=0&epoch=${epoch}`))
  const syncedB = await resumeB.next((f) => f.t === 'synced')
  t.same(resumeB.frames.slice(0, resumeB.frames.indexOf(syncedB)).map((f) => (f.item as Env).quantity), [5, 7, 0, 6], 'B gets exactly B\'s updates')

  const resumeAfter = record_(await connectWs(t, outer.clientsUrl, await token('userA'), `since=${(resumedA[0]!.item as Env).seq}&epoch=${epoch}`))
  const syncedAfter = await resumeAfter.next((f) => f.t === 'synced')
  t.same(resumeAfter.frames.slice(0, resumeAfter.frames.indexOf(syncedAfter)).map((f) => (f.item as Env).quantity), [1, 4], 'a resume mid-way sends only the rest')

  const restA = await rest(outer.clientsUrl, 'userA')
  const restB = await rest(outer.clientsUrl, 'userB')
  const restC = await rest(outer.clientsUrl, 'userC')
  t.equal(restA.user, 'userA')
  t.same(restA.items.map((e) => e.user), ['userA', 'userA'])
  t.equal(restA.total, 5)
  t.same(restB.items.map((e) => [e.user, e.quantity]), [['userB', 6]])
  t.same(restC.items.map((e) => [e.user, e.quantity]), [['userC', 9]])
  const restNobody = await rest(outer.clientsUrl, 'nobody')
  t.same(restNobody.items, [], 'a user with no todos sees none')

  // Every frame any A-client got is A's, every frame any B-client got is B's.
  for (const [who, clients] of [['userA', [phoneA, resumeA, resumeAfter]], ['userB', [phoneB, resumeB]]] as const) {
    const users = new Set(clients.flatMap((c) => c.frames.flatMap(envelopesOf)).map((e) => e.user))
    t.same([...users], [who], `${who}'s sockets carried only ${who}'s envelopes`)
  }
  t.equal(phoneA.frames.filter((f) => f.t === 'update').length, 3, 'A\'s live socket got A\'s 3 updates')
  t.equal(phoneB.frames.filter((f) => f.t === 'update').length, 4, 'B\'s live socket got B\'s 4 updates')

  // The auth codes: never in a frame, never in the outer's files (database, WAL, shm), never in its logs.
  await waitFor(() => outer.daemon.store.hw === inner.daemon.store.lastSeq, 'outer caught up')
  const codes = [system.code, second.code]
  const texts = clients.flatMap((c) => c.frames.map((f) => JSON.stringify(f)))
  t.ok(texts.length > 10, `${texts.length} frames inspected`)
  for (const code of codes) {
    t.notOk(texts.some((s) => s.includes(code)), 'no client frame holds the auth code')
    t.notOk(JSON.stringify(outer.logs.lines).includes(code), 'no outer log line holds the auth code')
  }
  const files = filesUnder(outer.config.dataDir)
  t.ok(files.some((f) => f.endsWith('-wal')), `the WAL file is among the ${files.length} files inspected`)
  for (const f of files) {
    if (!statSync(f).isFile()) continue
    const bytes = readFileSync(f)
    for (const code of codes) {
      t.equal(bytes.indexOf(Buffer.from(code, 'latin1')), -1, `${f.slice(outer.config.dataDir.length + 1)} does not hold the auth code`)
      t.equal(bytes.indexOf(Buffer.from(code.toUpperCase(), 'latin1')), -1, `${f.slice(outer.config.dataDir.length + 1)} does not hold it upper-cased`)
    }
  }
})

t.test('isolation: a token for one user cannot read another user\'s todos', async (t) => {
  const { inner, outer, system } = await startPair(t)
  t.equal((await push(inner.intakeUrl, record(system.code, 'victim', 8))).status, 200)
  await waitFor(() => outer.daemon.store.hw === inner.daemon.store.lastSeq, 'outer caught up')
  const tok = await token('attacker')
  // Query parameters never select the user: the token's sub does.
  for (const q of ['?user=victim', '?sub=victim', '?loginName=victim']) {
    const res = await fetch(`${outer.clientsUrl}/api/v1/todos${q}`, { headers: { authorization: `Bearer ${tok}` } })
    const body = await res.json() as { user: string; items: Env[] }
    t.equal(body.user, 'attacker', q)
    t.same(body.items, [], `${q}: nothing of the victim's`)
  }
  const ws = await connectWs(t, outer.clientsUrl, tok, 'user=victim')
  const snap = await ws.next((f) => f.t === 'snapshot')
  t.equal(snap.user, 'attacker')
  t.same(snap.items, [])
  const res = await fetch(`${outer.clientsUrl}/api/v1/todos`)
  t.equal(res.status, 401, 'no token, no todos')
  t.equal((await res.json() as { code: string }).code, 'E_UNAUTHORIZED')
})
