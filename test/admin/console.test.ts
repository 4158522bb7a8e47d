/**
 * The admin web console (DESIGN §3.7) on the inner's admin listener, against a real linked pair: the JSON
 * it reads (`/api/stats`, `/api/trace`), the static files with their CSP, read-only methods, and the page
 * itself in headless Chromium — the systems table, the link state, poll health and the trace box.
 */
import t from 'tap'
import { chromiumPath, launchBrowser } from '../helpers/browser.js'
import { startBusinessSystem } from '../helpers/business-system.js'
import { addSystem, push, record, startPair, waitFor } from '../helpers/daemons.js'
import type { AdminStats } from '../../inner/admin.js'
import type { Trace } from '../../inner/monitor.js'

const NO_BROWSER = chromiumPath() ? false : 'no /usr/bin/chromium: apt-get install -y chromium'
const USERS = ['zhangsan', 'lisi', 'wangwu']

async function get<B>(url: string, init: RequestInit = {}): Promise<{ status: number; headers: Headers; body: B }> {
  const res = await fetch(url, init)
  const text = await res.text()
  const type = res.headers.get('content-type') ?? ''
  return { status: res.status, headers: res.headers, body: (type.startsWith('application/json') ? JSON.parse(text) : text) as B }
}

t.test('admin console: stats, trace and the page against a linked pair', async (t) => {
  const p = await startPair(t)
  const admin = p.inner.adminUrl
  // A polled system whose business system answers HTTP 500: poll health and a poll error to show.
  const failing = await startBusinessSystem(t, (b) => { b.behavior = 'error500' })
  const polled = await addSystem(p.inner, { name: '排污许可', mode: 'pull-all', url: `${failing.url}/all`, intervalSeconds: 1 })
  failing.code = polled.code
  const seqs: number[] = []
  const ids: string[] = []
  for (const [i, user] of USERS.entries()) {
    const r = await push(p.inner.intakeUrl, record(p.system.code, user, i + 1))
    t.equal(r.status, 200, `push for ${user} stored`)
    const d = r.body.data as { seq: number; id: string }
    seqs.push(d.seq)
    ids.push(d.id)
  }
  const bad = await push(p.inner.intakeUrl, record(p.system.code, 'zhaoliu', 'many'))
  t.equal(bad.body.code, 'E_FIELD', 'the bad quantity is rejected')
  const lastSeq = seqs.at(-1)!

  // Acks and rejection counts are written in batches: wait until the stats show them and a failed poll.
  const stats = await waitFor(async () => {
    const s = (await get<AdminStats>(`${admin}/api/stats`)).body
    const sys = s.systems.find((x) => x.id === p.system.id)
    const pull = s.systems.find((x) => x.id === polled.id)
    return sys?.acked === USERS.length && sys.rejected === 1 && (pull?.poll?.consecutiveFailures ?? 0) >= 1 ? s : undefined
  }, 'stats with acks, the rejection and a failed poll')

  t.test('/api/stats carries what the page shows', async (t) => {
    t.match(stats.center, { epoch: String, lastSeq, firstSeq: Number })
    t.type(stats.now, 'number')
    t.match(stats.totals, { produced: USERS.length, forwarded: USERS.length, acked: USERS.length, rejected: 1, delivered: 0, read: 0, superseded: 0 })
    t.equal(stats.systems.length, 2)
    t.match(stats.systems.find((s) => s.id === p.system.id), {
      id: p.system.id, name: p.system.name, mode: 'push', enabled: true,
      produced: USERS.length, forwarded: USERS.length, acked: USERS.length, delivered: 0, read: 0, superseded: 0,
      rejected: 1, rejectedByCode: { E_FIELD: 1 }, lastMessageAt: Number, poll: null,
    })
    t.equal(stats.links.length, 1)
    t.match(stats.links[0], {
      peer: p.keys.outerPub.slice(0, 8), publicKey: p.keys.outerPub, url: p.outer.linkUrl, state: 'up',
      ackedSeq: lastSeq, backlog: 0, connectedAt: Number, lastError: null,
    })
    for (const k of ['receivedToStored', 'storedToAcked'] as const) {
      t.equal(stats.latency[k].n, USERS.length, `${k}: one sample per message`)
      t.type(stats.latency[k].p50, 'number')
      t.type(stats.latency[k].p99, 'number')
    }
    t.match(stats.latency.storedToDelivered, { n: 0, p50: null })
    t.match(stats.systems.find((s) => s.id === polled.id), {
      name: '排污许可', mode: 'pull-all', enabled: true, produced: 0, rejected: 0,
      poll: { systemId: polled.id, lastErrorCode: 'ERR_POLL_HTTP', lastError: String, lastErrorAt: Number, lastSuccessAt: null, pollsOk: 0 },
    })
    t.ok(stats.errors.some((e) => e.kind === 'rejection' && e.source === 'push' && e.system === p.system.id && e.code === 'E_FIELD' && e.count === 1),
      'the rejected push is among the recent errors')
    t.ok(stats.errors.some((e) => e.kind === 'poll' && e.source === 'poll' && e.system === polled.id && e.code === 'ERR_POLL_HTTP' && e.count >= 1),
      'so is the failed poll')
    t.same([...stats.errors].sort((a, b) => b.at - a.at), stats.errors, 'newest first')
  })

  t.test('/api/trace?user= lists a user\'s messages; bad queries are E_FIELD', async (t) => {
    const r = await get<{ user: string; system: string | null; messages: Trace[] }>(`${admin}/api/trace?user=lisi&system=${p.system.id}`)
    t.equal(r.status, 200)
    t.equal(r.body.user, 'lisi')
    t.equal(r.body.system, p.system.id)
    t.match(r.body.messages, [{ id: ids[1], seq: seqs[1], system: p.system.id, user: 'lisi', quantity: 2, stages: { received: Number, stored: Number, acked: Number } }])
    t.same((await get<{ messages: Trace[] }>(`${admin}/api/trace?user=nobody`)).body.messages, [])
    for (const q of ['', '?user=', `?user=${'x'.repeat(129)}`, '?user=lisi&system=a%20b']) {
      const e = await get<{ code: string }>(`${admin}/api/trace${q}`)
      t.equal(e.status, 400, `GET /api/trace${q.slice(0, 30)}`)
      t.equal(e.body.code, 'E_FIELD')
    }
    const byId = await get<Trace>(`${admin}/api/trace/${ids[0]}`)
    t.match(byId, { status: 200, body: { id: ids[0], seq: seqs[0], user: 'zhangsan' } }, 'by id still works')
  })

  t.test('static files carry a strict CSP; the listener is read-only', async (t) => {
    const page = await get<string>(`${admin}/`)
    t.equal(page.status, 200)
    t.match(page.headers.get('content-type'), /^text\/html/)
    t.match(page.headers.get('content-security-policy'), /^default-src 'self';/)
    t.match(page.headers.get('content-security-policy'), /frame-ancestors 'none'/)
    t.equal(page.headers.get('x-content-type-options'), 'nosniff')
    t.notMatch(page.body, /<script>|<style|\sstyle=|\son[a-z]+=/i, 'no inline script, style or handler')
    for (const [file, type] of [['admin.js', /^text\/javascript/], ['admin.css', /^text\/css/]] as const) {
      const a = await get<string>(`${admin}/admin-assets/${file}`)
      t.equal(a.status, 200, file)
      t.match(a.headers.get('content-type'), type)
      t.match(a.headers.get('content-security-policy'), /^default-src 'self';/)
    }
    t.notMatch((await get<string>(`${admin}/admin-assets/admin.js`)).body, /innerHTML|outerHTML|insertAdjacentHTML|document\.write/, 'text only')
    for (const path of ['/admin-assets/missing.js', '/admin-assets/index.html', '/admin-assets/..%2Fadmin.ts', '/admin-web/admin.js']) {
      const r = await get<{ code: string }>(`${admin}${path}`)
      t.equal(r.status, 404, path)
      t.equal(r.body.code, 'E_NOT_FOUND', path)
    }
    for (const method of ['POST', 'PUT', 'DELETE', 'PATCH']) {
      for (const path of ['/', '/api/stats', `/api/trace/${seqs[0]}`]) {
        const r = await get<{ code: string }>(`${admin}${path}`, { method, body: method === 'DELETE' ? null : '{}' })
        t.equal(r.status, 405, `${method} ${path}`)
        t.equal(r.body.code, 'E_METHOD')
        t.equal(r.headers.get('allow'), 'GET')
      }
    }
  })

  t.test('page: systems table, link state and the trace box in Chromium', { skip: NO_BROWSER }, async (t) => {
    const browser = await launchBrowser()
    t.teardown(() => browser.close())
    const page = await browser.newPage({ viewport: { width: 1440, height: 1100 } })
    page.setDefaultTimeout(10_000)
    const pageErrors: string[] = []
    page.on('pageerror', (e) => pageErrors.push(e.message))
    const consoleErrors: string[] = []
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()) })

    await page.goto(`${admin}/`)
    const row = `#systems tr[data-system="${p.system.id}"]`
    await page.waitForSelector(`${row} td[data-col="produced"]`)
    t.equal(await page.textContent(`${row} td[data-col="produced"]`), String(USERS.length), 'produced = N')
    t.equal(await page.textContent(`${row} td[data-col="acked"]`), String(USERS.length))
    t.equal(await page.textContent(`${row} td[data-col="rejected"]`), '1')
    t.match(await page.textContent(row), p.system.name)
    await page.waitForSelector('#links tr[data-state="up"] .link-state[data-state="up"]')
    t.equal(await page.locator('#links tr').count(), 1)
    t.equal(await page.textContent('#last-seq'), String(lastSeq))
    t.equal(await page.textContent('#epoch'), stats.center.epoch)
    await page.waitForSelector('#errors tr[data-kind="rejection"][data-code="E_FIELD"]')
    await page.waitForSelector('#errors tr[data-kind="poll"][data-code="ERR_POLL_HTTP"]')
    await page.waitForSelector(`#systems tr[data-system="${polled.id}"] td[data-poll="failing"]`)
    t.match(await page.textContent(`#systems tr[data-system="${polled.id}"] td[data-poll]`), /ERR_POLL_HTTP/)
    await page.waitForSelector('#refresh[data-state="live"]')

    // Auto-refresh: a new message shows up without a reload.
    const more = await push(p.inner.intakeUrl, record(p.system.code, 'zhaoliu', 9))
    t.equal(more.status, 200)
    const n = String(USERS.length + 1)
    await page.waitForFunction(({ sel, n }) => document.querySelector(sel)?.textContent === n, { sel: `${row} td[data-col="produced"]`, n })

    // The trace box: by id, then by seq.
    await page.fill('#trace-id', ids[0]!)
    await page.click('#trace-form button[type="submit"]')
    await page.waitForSelector(`#trace-result [data-id="${ids[0]}"] li[data-stage="acked"][data-done="true"]`)
    for (const stage of ['received', 'stored', 'forwarded', 'acked']) {
      t.equal(await page.getAttribute(`#trace-result li[data-stage="${stage}"]`, 'data-done'), 'true', `${stage} shown`)
      t.match(await page.textContent(`#trace-result li[data-stage="${stage}"] .plus`), /^\+[\d,]+ ms$/, `${stage}: +ms since received`)
    }
    t.equal(await page.getAttribute('#trace-result li[data-stage="read"]', 'data-done'), 'false', 'not read yet')
    await page.screenshot({ path: '/tmp/admin.png', fullPage: true })

    await page.fill('#trace-id', String(seqs[2]))
    await page.press('#trace-id', 'Enter')
    await page.waitForSelector(`#trace-result [data-seq="${seqs[2]}"]`)
    t.match(await page.textContent('#trace-result .meta'), /wangwu/)

    await page.fill('#trace-id', '999999')
    await page.press('#trace-id', 'Enter')
    await page.waitForSelector('#trace-error:not([hidden])')
    t.match(await page.textContent('#trace-error'), /未找到/)

    // A user's messages, then one of them opened in the trace box.
    await page.fill('#trace-user', 'lisi')
    await page.click('#user-form button[type="submit"]')
    await page.waitForSelector(`#user-result tr[data-seq="${seqs[1]}"]`)
    await page.click(`#user-result tr[data-seq="${seqs[1]}"] button`)
    await page.waitForSelector(`#trace-result [data-id="${ids[1]}"]`)

    t.same(pageErrors, [], 'no uncaught errors in the page')
    t.same(consoleErrors.filter((m) => !/404/.test(m)), [], 'no CSP violations or other console errors')
  })
})
