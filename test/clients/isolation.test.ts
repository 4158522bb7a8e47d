/**
 * User isolation (DESIGN §3.6: a user never receives another user's data): a token for A never yields
 * B's todos, updates, history or actions — over REST or /ws, with forged `since` values or extra
 * parameters — on the outer and on the inner portal alike.
 */
import t from 'tap'
import { addSystem, connectWs, push, record, startPair, token, waitFor, type Frame } from '../helpers/daemons.js'
import { startCallbackServer } from '../helpers/callback-server.js'
import { traceMessage } from '../../inner/monitor.js'

type Pair = Awaited<ReturnType<typeof startPair>>

async function pushed(p: Pair, code: string, user: string, q: number): Promise<number> {
  const r = await push(p.inner.intakeUrl, record(code, user, q))
  const seq = (r.body.data as { seq: number }).seq
  await waitFor(() => (p.outer.daemon.store.hw ?? 0) >= seq, `outer committed seq ${seq}`)
  return seq
}

async function todos(base: string, tok: string, query = ''): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${base}/api/v1/todos${query}`, { headers: { authorization: `Bearer ${tok}` } })
  return { status: res.status, body: await res.json() as Record<string, unknown> }
}

const users = (items: unknown): string[] => [...new Set((items as { user: string }[]).map((i) => i.user))]

t.test('isolation: a token for A never yields B\'s data, over REST or /ws, with any since', async (t) => {
  const p = await startPair(t)
  const sys2 = await addSystem(p.inner)
  const a = await token('zhangsan')
  const b = await token('lisi')
  const aSeqs = [await pushed(p, p.system.code, 'zhangsan', 2)]
  const bSeqs = [await pushed(p, p.system.code, 'lisi', 5), await pushed(p, sys2.code, 'lisi', 6)]
  aSeqs.push(await pushed(p, sys2.code, 'zhangsan', 1))
  bSeqs.push(await pushed(p, p.system.code, 'lisi', 7))

  for (const [name, base] of [['outer', p.outer.clientsUrl], ['portal', p.inner.portalUrl]] as const) {
    const ra = await todos(base, a, '?user=lisi&since=0')
    t.equal(ra.status, 200)
    t.equal(ra.body.user, 'zhangsan', `${name}: REST answers for the token's user, whatever the query says`)
    t.same(users(ra.body.items), ['zhangsan'])
    t.equal(ra.body.total, 3)
    const rb = await todos(base, b)
    t.same(users(rb.body.items), ['lisi'])
    t.equal(rb.body.total, 13, `${name}: B sees B's current counts (7 + 6)`)

    const epoch = ra.body.epoch as string
    // Forged resumes: from 0, from one of B's seqs, from just below B's latest.
    for (const since of [0, bSeqs[0]!, bSeqs[2]! - 1, aSeqs[0]!]) {
      const ws = await connectWs(t, base, a, `since=${since}&epoch=${epoch}&user=lisi`)
      const got: Frame[] = []
      for (;;) {
        const f = await ws.next()
        if (f.t === 'synced') break
        got.push(f)
      }
      t.ok(got.every((f) => f.t === 'update' && (f.item as { user: string }).user === 'zhangsan'), `${name}: since=${since} yields only A's updates`)
      t.same(got.map((f) => (f.item as { seq: number }).seq), aSeqs.filter((s) => s > since), `${name}: since=${since} exact`)
      ws.close()
    }
    const snap = await (await connectWs(t, base, a, 'user=lisi')).next()
    t.same(users(snap.items), ['zhangsan'], `${name}: the snapshot is A's`)
  }

  // Live: B's updates never reach A's socket; A's next frame is A's own.
  const wsA = await connectWs(t, p.outer.clientsUrl, a)
  await wsA.next((f) => f.t === 'snapshot')
  const pcA = await connectWs(t, p.inner.portalUrl, a)
  await pcA.next((f) => f.t === 'snapshot')
  await pushed(p, p.system.code, 'lisi', 11)
  const mine = await pushed(p, p.system.code, 'zhangsan', 12)
  for (const ws of [wsA, pcA]) {
    const f = await ws.next()
    t.equal(f.t, 'update')
    t.equal((f.item as { seq: number }).seq, mine, 'the first update A hears is A\'s own')
  }
})

t.test('isolation: actions and receipts are the user\'s own', async (t) => {
  const p = await startPair(t)
  const cb = await startCallbackServer(t)
  const sys = await addSystem(p.inner, { callback: cb.url })
  const a = await token('zhangsan')
  const b = await token('lisi')
  const post = (base: string, tok: string) => fetch(`${base}/api/v1/actions`, {
    method: 'POST', headers: { authorization: `Bearer ${tok}`, 'content-type': 'application/json' }, body: JSON.stringify({ system: sys.id, type: 'read' }),
  }).then(async (r) => (await r.json()) as { id: string })
  for (const base of [p.outer.clientsUrl, p.inner.portalUrl]) {
    const { id } = await post(base, b)
    const asA = await fetch(`${base}/api/v1/actions/${id}`, { headers: { authorization: `Bearer ${a}` } })
    t.equal(asA.status, 404, 'A cannot see B\'s action')
    t.equal(((await asA.json()) as { code: string }).code, 'E_NOT_FOUND')
    const unknown = await fetch(`${base}/api/v1/actions/no-such-action`, { headers: { authorization: `Bearer ${a}` } })
    t.equal(unknown.status, 404, 'the same answer as for an id that does not exist')
  }
  // B's sockets hear B's action statuses; A's hear nothing of them.
  const wsA = await connectWs(t, p.outer.clientsUrl, a)
  await wsA.next((f) => f.t === 'snapshot')
  const wsB = await connectWs(t, p.outer.clientsUrl, b)
  await wsB.next((f) => f.t === 'snapshot')
  const { id } = await post(p.outer.clientsUrl, b)
  await wsB.next((f) => f.t === 'action' && f.id === id && f.status === 'delivered', 15_000)
  const ownSeq = await pushed(p, p.system.code, 'zhangsan', 1)
  const first = await wsA.next()
  t.equal((first.item as { seq: number } | undefined)?.seq, ownSeq, 'no action frame of B reached A before A\'s own update')

  // A acknowledging B's message is dropped at the outer; A's own receipt lands.
  const bSeq = await pushed(p, p.system.code, 'lisi', 3)
  wsA.send({ t: 'read', seq: bSeq })
  wsA.send({ t: 'ack', seq: ownSeq })
  await waitFor(() => traceMessage(p.inner.daemon.store, String(ownSeq))?.stages.delivered, 'A\'s receipt recorded at the inner')
  t.notOk(traceMessage(p.inner.daemon.store, String(bSeq))?.stages.read, 'B\'s message is not marked read by A')
  t.equal(p.outer.daemon.store.db.prepare('SELECT count(*) FROM receipts WHERE seq = ?').pluck().get(bSeq), 0, 'never queued')
})
