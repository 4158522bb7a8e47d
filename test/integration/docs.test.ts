/**
 * docs/integration.md is what a business-system developer reads: every intake error code and every poll
 * error code has a row in its tables with the status, Chinese and English text from shared/errors.ts,
 * and every `poll` config key is documented with its default.
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ERRORS, type ErrorCode } from '../../shared/errors.js'
import { INNER_SCHEMA } from '../../inner/config.js'
import { ROOT } from '../helpers/daemons.js'

const doc = readFileSync(join(ROOT, 'docs', 'integration.md'), 'utf8')

/** The codes a push can be answered with (DESIGN §3.3), and what a poll can fail with. */
const INTAKE: ErrorCode[] = [
  'E_BAD_JSON', 'E_ENCODING', 'E_FIELD', 'E_EMPTY_BATCH', 'E_BATCH_TOO_LARGE', 'E_TOO_DEEP', 'E_AUTH_CODE', 'E_IP_DENIED',
  'E_SYSTEM_DISABLED', 'E_NOT_FOUND', 'E_METHOD', 'E_TOO_LARGE', 'E_CONTENT_TYPE', 'E_RATE', 'E_STORAGE', 'E_SHUTTING_DOWN', 'E_INTERNAL',
]
const POLL = (Object.keys(ERRORS) as ErrorCode[]).filter((c) => c.startsWith('ERR_POLL_'))

t.test('docs: every intake error code has a row with its status, 中文 and English', async (t) => {
  for (const code of INTAKE) {
    const spec = ERRORS[code]
    const row = doc.split('\n').find((l) => l.startsWith(`| \`${code}\` |`))
    t.ok(row, `${code} documented`)
    t.ok(row?.includes(`| ${spec.status} |`), `${code}: status ${spec.status}`)
    t.ok(row?.includes(spec.zh), `${code}: 中文`)
    t.ok(row?.includes(spec.en), `${code}: English`)
  }
})

t.test('docs: every poll error code has a row', async (t) => {
  t.ok(POLL.length >= 7)
  for (const code of POLL) {
    const row = doc.split('\n').find((l) => l.startsWith(`| \`${code}\` |`))
    t.ok(row?.includes(ERRORS[code].zh) && row.includes(ERRORS[code].en), `${code} documented`)
  }
})

t.test('docs: every poll config key is documented with its default', async (t) => {
  const props = INNER_SCHEMA.properties.poll.properties as Record<string, { default: number }>
  for (const [key, { default: d }] of Object.entries(props)) {
    t.match(doc, new RegExp(`\\| \`poll\\.${key}\` \\| ${d} `), `poll.${key} = ${d}`)
  }
})
