/**
 * Headless Chromium for browser tests, through playwright-core and Debian's /usr/bin/chromium — never a
 * browser downloaded by Playwright, so tests run offline and against the browser CI installs with apt.
 *
 * Usage:
 *   const NO_BROWSER = chromiumPath() ? false : 'no /usr/bin/chromium: apt-get install -y chromium'
 *   t.test('page: …', { skip: NO_BROWSER }, async (t) => {
 *     const b = await launchBrowser()
 *     t.teardown(() => b.close())
 *     const page = await b.newPage({ viewport: { width: 390, height: 844 } })
 *   })
 */
import { existsSync } from 'node:fs'
import { chromium, type Browser, type BrowserContextOptions, type Page } from 'playwright-core'

export const CHROMIUM_PATH = '/usr/bin/chromium'

/** Flags for a quiet, deterministic headless run: no sandbox (containers), no GPU, no background traffic. */
export const CHROMIUM_ARGS: readonly string[] = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

/** Path of the system Chromium, or undefined when it is not installed (the test should `t.skip`). */
export function chromiumPath(): string | undefined {
  return existsSync(CHROMIUM_PATH) ? CHROMIUM_PATH : undefined
}

export interface TestBrowser {
  readonly browser: Browser
  /** A page in its own context, so cookies and sessionStorage never leak between pages of a test. */
  newPage(options?: BrowserContextOptions): Promise<Page>
  /** Closes every context and the browser. Idempotent. */
  close(): Promise<void>
}

/** Launches the system Chromium; throws when it is missing (check `chromiumPath()` first). */
export async function launchBrowser(): Promise<TestBrowser> {
  const executablePath = chromiumPath()
  if (!executablePath) throw new Error(`${CHROMIUM_PATH} not found: apt-get install -y chromium`)
  const browser = await chromium.launch({ executablePath, args: [...CHROMIUM_ARGS] })
  let closing: Promise<void> | undefined
  return {
    browser,
    async newPage(options?: BrowserContextOptions): Promise<Page> {
      const context = await browser.newContext(options)
      return context.newPage()
    },
    close(): Promise<void> {
      closing ??= browser.close().catch(() => {})
      return closing
    },
  }
}
