/**
 * Every wire error code (the `E_…` codes of the intake and client APIs, DESIGN §3.3/§3.6) is documented in
 * README.md's error-code table, so a business-system developer can look up any code they receive.
 */
import t from 'tap'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ERRORS } from '../../shared/errors.js'
import { ROOT } from '../helpers/daemons.js'

const README = join(ROOT, 'README.md')

t.test('errors: every E_ code in shared/errors.ts is documented in README.md', async (t) => {
  const wireCodes = Object.keys(ERRORS).filter((c) => c.startsWith('E_'))
  t.ok(wireCodes.length >= 15, `${wireCodes.length} wire codes`)
  t.ok(existsSync(README), 'README.md exists')
  if (!existsSync(README)) return
  const readme = readFileSync(README, 'utf8')
  const missing = wireCodes.filter((c) => !new RegExp(`\\b${c}\\b`).test(readme))
  t.same(missing, [], 'no undocumented codes')
})

t.test('errors: every code has its HTTP status and both messages', async (t) => {
  for (const [code, spec] of Object.entries(ERRORS)) {
    t.match(code, /^(E_[A-Z_]+|ERR_[A-Z]+_[A-Z_]+)$/, `${code} is named E_… or ERR_<AREA>_<WHAT>`)
    t.ok(Number.isInteger(spec.status) && spec.status >= 400 && spec.status <= 599, `${code} has a 4xx/5xx status`)
    t.ok(spec.zh.length > 0 && /[\u4e00-\u9fff]/.test(spec.zh), `${code} has a Chinese message`)
    t.ok(spec.en.length > 0, `${code} has an English message`)
  }
})
