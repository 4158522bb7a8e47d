/**
 * The client page (DESIGN §3.6) in headless Chromium against the real daemons: served by the outer for
 * 环保通 phones and by the inner's portal for PC users; it shows the count, updates live, marks each item
 * verified from the inner's signature, sends receipts that reach the inner's lifecycle, submits actions
 * that reach the business system; and an envelope altered on a compromised DMZ host shows as not verified.
 */
import t from 'tap'
import { traceMessage } from '../../inner/monitor.js'
import { chromiumPath, launchBrowser } from '../helpers/browser.js'
import { addSystem, push, record, startPair, token, waitFor } from '../helpers/daemons.js'
import { signatureValid, startCallbackServer } from '../helpers/callback-server.js'

const NO_BROWSER = chromiumPath() ? false : 'no /usr/bin/chromium: apt-get install -y chromium'

type Pair = Awaited<ReturnType<typeof startPair>>

async function pushed(p: Pair, code: string, user: string, q: number, extra: Record<string, unknown> = {}): Promise<number> {
  const r = await push(p.inner.intakeUrl, record(code, user, q, extra))
  const seq = (r.body.data as { seq: number }).seq
  await waitFor(() => (p.outer.daemon.store.hw ?? 0) >= seq, `outer committed seq ${seq}`)
  return seq
}

for (const where of ['outer', 'portal'] as const) {
  t.test(`page (${where}): count, live update, verified mark, receipts and an action, against the real daemons`, { skip: NO_BROWSER }, async (t) => {
    const p = await startPair(t)
    const cb = await startCallbackServer(t)
    const base = where === 'outer' ? p.outer.clientsUrl : p.inner.portalUrl
    // The item's URL is one the browser can open quickly here.
    const itemUrl = `${base}/healthz`
    const sysA = await addSystem(p.inner, { name: '建设项目审批', callback: cb.url })
    const sysB = await addSystem(p.inner, { name: '排污许可' })
    const a1 = await pushed(p, sysA.code, 'zhangsan', 3, { BUSSINESSNAME: '建设项目', URL: itemUrl })
    const b1 = await pushed(p, sysB.code, 'zhangsan', 2, { BUSSINESSNAME: '排污许可', LEVEL: 2, URL: itemUrl })
    await pushed(p, sysA.code, 'lisi', 40)

    const browser = await launchBrowser()
    t.teardown(() => browser.close())
    const page = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true })
    page.setDefaultTimeout(10_000)
    const pageErrors: string[] = []
    page.on('pageerror', (e) => pageErrors.push(e.message))

    await page.goto(`${base}/?token=${await token('zhangsan')}`)
    await page.waitForSelector(`li.todo[data-seq="${a1}"][data-verified="true"]`)
    await page.waitForSelector(`li.todo[data-seq="${b1}"][data-verified="true"]`)
    t.equal(await page.textContent('#total'), '5', 'the count is the sum of the user\'s items')
    t.equal(await page.textContent('#user'), 'zhangsan')
    t.equal(await page.locator('li.todo').count(), 2, 'only this user\'s systems')
    t.match(await page.textContent(`li.todo[data-seq="${a1}"]`), /已验签/)
    t.equal(await page.textContent('#status'), '已连接')

    // The page acknowledges what it displayed: delivered in the inner's lifecycle.
    await waitFor(() => traceMessage(p.inner.daemon.store, String(b1))?.stages.delivered, 'delivered recorded at the inner')

    // Live: a new count replaces the old one.
    const a2 = await pushed(p, sysA.code, 'zhangsan', 7, { BUSSINESSNAME: '建设项目', URL: itemUrl })
    await page.waitForSelector(`li.todo[data-system="${sysA.id}"][data-seq="${a2}"][data-verified="true"]`)
    await page.waitForFunction(() => document.getElementById('total')?.textContent === '9')
    t.equal(await page.textContent(`li.todo[data-seq="${a2}"] .badge`), '7')

    // Tap: opens the item and sends read.
    const popup = page.context().waitForEvent('page')
    await page.tap(`li.todo[data-seq="${a2}"] .name`)
    await (await popup).close()
    await waitFor(() => traceMessage(p.inner.daemon.store, String(a2))?.stages.read, 'read recorded at the inner')

    // 标记已办: the action reaches the business system's callback, signed; the page shows 已送达.
    await page.tap(`li.todo[data-seq="${a2}"] .handle`)
    const [req] = await cb.waitForRequests(1)
    t.ok(signatureValid(req!, sysA.code), 'the callback carries a valid signature')
    t.match(req!.body, { system: sysA.id, user: 'zhangsan', type: 'handle' })
    await page.waitForFunction(() => document.getElementById('toast')?.textContent?.includes('已送达'))

    t.same(pageErrors, [], 'no uncaught errors in the page')
  })
}

t.test('page (outer): an envelope altered on the DMZ host shows as not verified', { skip: NO_BROWSER }, async (t) => {
  const p = await startPair(t)
  const s1 = await pushed(p, p.system.code, 'zhangsan', 3)
  const sys2 = await addSystem(p.inner)
  const s2 = await pushed(p, sys2.code, 'zhangsan', 1)
  // A compromised outer rewrites the stored replica: more items, same signature.
  const db = p.outer.daemon.store.db
  const env = JSON.parse(db.prepare('SELECT envelope FROM state WHERE seq = ?').pluck().get(s1) as string) as Record<string, unknown>
  const forged = JSON.stringify({ ...env, quantity: 99 })
  db.prepare('UPDATE state SET envelope = ?, quantity = 99 WHERE seq = ?').run(forged, s1)

  const browser = await launchBrowser()
  t.teardown(() => browser.close())
  const page = await browser.newPage()
  page.setDefaultTimeout(10_000)
  await page.goto(`${p.outer.clientsUrl}/?token=${await token('zhangsan')}`)
  await page.waitForSelector(`li.todo[data-seq="${s1}"]`)
  t.equal(await page.getAttribute(`li.todo[data-seq="${s1}"]`, 'data-verified'), 'false', 'the altered envelope fails verification')
  const text = (await page.textContent(`li.todo[data-seq="${s1}"]`)) ?? ''
  t.notMatch(text, /已验签/, 'never the positive mark')
  t.match(text, /验签失败/)
  t.equal(await page.getAttribute(`li.todo[data-seq="${s2}"]`, 'data-verified'), 'true', 'the untouched one still verifies')
})
