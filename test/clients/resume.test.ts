/**
 * `/ws?since=N&epoch=E` resume (DESIGN §3.6): exactly the user's updates the client missed, in seq order,
 * without duplicates, then `synced`; a snapshot with `reset:true` when the history no longer reaches back
 * (pruned), the epoch is not the current one, `since` is beyond the latest seq, or comes without an epoch.
 */
import t from 'tap'
import { addSystem, connectWs, makeKeys, push, record, startInner, startPair, token, waitFor, type Frame } from '../helpers/daemons.js'
import { PORTAL_RESUME_MAX } from '../../inner/daemon.js'

type Pair = Awaited<ReturnType<typeof startPair>>

/** Pushes one count and returns its seq once the outer has committed it. */
async function pushed(p: Pair, code: string, user: string, q: number): Promise<number> {
  const r = await push(p.inner.intakeUrl, record(code, user, q))
  if (r.status !== 200) throw new Error(`push failed: ${JSON.stringify(r.body)}`)
  const seq = (r.body.data as { seq: number }).seq
  await waitFor(() => (p.outer.daemon.store.hw ?? 0) >= seq, `outer committed seq ${seq}`)
  return seq
}

const seqsOf = (frames: Frame[]): number[] => frames.map((f) => (f.item as { seq: number }).seq)

/** Reads update frames up to `synced`; returns them and the synced frame. */
async function readResume(ws: Awaited<ReturnType<typeof connectWs>>): Promise<{ updates: Frame[]; synced: Frame }> {
  const updates: Frame[] = []
  for (;;) {
    const f = await ws.next()
    if (f.t === 'update') updates.push(f)
    else if (f.t === 'synced') return { updates, synced: f }
    else throw new Error(`unexpected frame ${f.t} during a resume`)
  }
}

// History is pruned only when the test says so.
const OUTER = { history: { minCount: 0, minAgeHours: 0, pruneIntervalSeconds: 86_400 } }

t.test('resume: only the missed updates of this user, in order, no duplicates, then live', async (t) => {
  const p = await startPair(t, { outer: OUTER })
  const other = await addSystem(p.inner)
  const tok = await token('zhangsan')
  const first = await pushed(p, p.system.code, 'zhangsan', 1)
  await pushed(p, p.system.code, 'lisi', 9)

  const ws1 = await connectWs(t, p.outer.clientsUrl, tok)
  const snap = await ws1.next((f) => f.t === 'snapshot')
  const epoch = snap.epoch as string
  t.same((snap.items as { seq: number }[]).map((i) => i.seq), [first])
  const live = await pushed(p, other.code, 'zhangsan', 2)
  t.equal(((await ws1.next((f) => f.t === 'update')).item as { seq: number }).seq, live)
  ws1.close()
  await ws1.waitClose()

  // Missed while away: three of ours, interleaved with someone else's; the same system twice.
  const missed: number[] = []
  missed.push(await pushed(p, p.system.code, 'zhangsan', 3))
  await pushed(p, p.system.code, 'lisi', 8)
  missed.push(await pushed(p, other.code, 'zhangsan', 0))
  await pushed(p, other.code, 'lisi', 7)
  missed.push(await pushed(p, p.system.code, 'zhangsan', 4))
  const hw = p.outer.daemon.store.hw

  const ws2 = await connectWs(t, p.outer.clientsUrl, tok, `since=${live}&epoch=${epoch}`)
  const { updates, synced } = await readResume(ws2)
  t.same(seqsOf(updates), missed, 'exactly the missed updates, in seq order, once each')
  t.ok(updates.every((f) => (f.item as { user: string }).user === 'zhangsan'), 'only this user\'s')
  t.same(updates.map((f) => (f.item as { quantity: number }).quantity), [3, 0, 4], 'a zero count travels too (it clears the entry)')
  t.same(synced, { t: 'synced', seq: hw })
  const next = await pushed(p, other.code, 'zhangsan', 5)
  t.equal(((await ws2.next()).item as { seq: number }).seq, next, 'live updates follow the resume, nothing in between')

  // Resuming from the very start gives the whole history of this user.
  const ws3 = await connectWs(t, p.outer.clientsUrl, tok, `since=0&epoch=${epoch}`)
  const all = await readResume(ws3)
  t.same(seqsOf(all.updates), [first, live, ...missed, next])

  // Resuming at the latest seq: nothing to send, just synced.
  const ws4 = await connectWs(t, p.outer.clientsUrl, tok, `since=${next}&epoch=${epoch}`)
  t.same(await ws4.next(), { t: 'synced', seq: next })
})

t.test('resume: a snapshot with reset:true where an exact resume is impossible', async (t) => {
  const p = await startPair(t, { outer: OUTER })
  const tok = await token('zhangsan')
  const s1 = await pushed(p, p.system.code, 'zhangsan', 1)
  await pushed(p, p.system.code, 'lisi', 5)
  const s3 = await pushed(p, p.system.code, 'zhangsan', 2)
  const ws0 = await connectWs(t, p.outer.clientsUrl, tok)
  const snap = await ws0.next((f) => f.t === 'snapshot')
  const epoch = snap.epoch as string
  t.notOk('reset' in snap, 'a plain connect gets a plain snapshot')

  const expectReset = async (query: string, why: string): Promise<void> => {
    const ws = await connectWs(t, p.outer.clientsUrl, tok, query)
    const f = await ws.next()
    t.equal(f.t, 'snapshot', `${why}: snapshot`)
    t.equal(f.reset, true, `${why}: reset:true`)
    t.equal(f.user, 'zhangsan')
    t.equal(f.epoch, epoch)
    t.same((f.items as { seq: number }[]).map((i) => i.seq), [s3], `${why}: the user's current state only`)
    t.equal(f.total, 2)
    ws.close()
  }
  await expectReset(`since=${s1}&epoch=not-the-epoch`, 'another epoch')
  await expectReset(`since=${s1}`, 'since without epoch')
  await expectReset(`since=${s3 + 5}&epoch=${epoch}`, 'since beyond the latest seq')
  await expectReset(`since=abc&epoch=${epoch}`, 'since not a number')

  // Prune everything held so far: history now starts above the floor.
  const removed = p.outer.daemon.store.prune({ minAgeMs: 0, minCount: 0 }, Date.now() + 1000)
  t.ok(removed >= 3, 'history pruned')
  const floor = p.outer.daemon.store.floor
  t.equal(floor, s3)
  await expectReset(`since=${s1}&epoch=${epoch}`, 'since below the pruned floor')
  // At the floor itself the resume is still exact.
  const ws = await connectWs(t, p.outer.clientsUrl, tok, `since=${floor}&epoch=${epoch}`)
  t.same(await ws.next(), { t: 'synced', seq: s3 })
  const s4 = await pushed(p, p.system.code, 'zhangsan', 6)
  t.equal(((await ws.next()).item as { seq: number }).seq, s4)
})

t.test('resume: the inner portal resumes the same way', async (t) => {
  const p = await startPair(t)
  const tok = await token('zhangsan')
  const s1 = await pushed(p, p.system.code, 'zhangsan', 1)
  const pc = await connectWs(t, p.inner.portalUrl, tok)
  const snap = await pc.next((f) => f.t === 'snapshot')
  pc.close()
  await pc.waitClose()
  await pushed(p, p.system.code, 'lisi', 2)
  const s3 = await pushed(p, p.system.code, 'zhangsan', 3)
  const pc2 = await connectWs(t, p.inner.portalUrl, tok, `since=${s1}&epoch=${snap.epoch as string}`)
  const { updates, synced } = await readResume(pc2)
  t.same(seqsOf(updates), [s3])
  t.equal(synced.seq, s3)
  const pc3 = await connectWs(t, p.inner.portalUrl, tok, `since=${s1}&epoch=wrong`)
  t.equal((await pc3.next()).reset, true)
})

t.test('resume: on the inner portal a gap longer than the resume cap gets a reset snapshot, never a cut list', async (t) => {
  const dir = t.testdir()
  const inner = await startInner(t, dir, makeKeys(dir), undefined, { storage: { synchronous: 'OFF' } })
  const sys = await addSystem(inner, { rateLimit: 10_000_000 })
  const batches = PORTAL_RESUME_MAX / 1000 + 1
  for (let b = 0; b < batches; b++) {
    const r = await push(inner.intakeUrl, Array.from({ length: 1000 }, (_, i) => record(sys.code, 'admin', b * 1000 + i + 1)), 'json')
    if (r.status !== 200) throw new Error(`push failed: ${JSON.stringify(r.body)}`)
  }
  const latest = batches * 1000
  const ws = await connectWs(t, inner.portalUrl, await token('admin'), `since=0&epoch=${inner.daemon.store.epoch}`)
  const first = await ws.next(() => true, 30_000)
  t.equal(first.t, 'snapshot', 'a snapshot, not a resume cut at the cap and then "synced"')
  t.equal(first.reset, true)
  t.equal(first.total, latest, 'the current count')
})
