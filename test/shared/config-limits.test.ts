/**
 * The inner's intake limits can be lowered, never raised past what an envelope may carry: the outer
 * refuses a batch holding a longer login name (or URL, name, larger quantity), so a record accepted
 * beyond those limits would be answered 200 and then hold the link up for every user, forever.
 */
import t from 'tap'
import { parseInnerConfig } from '../../inner/config.js'
import { ENVELOPE_LIMITS, validateEnvelope } from '../../shared/protocol.js'

const base = { centerId: 'c', dataDir: 'data', keyFile: 'k', listen: {} }

t.test('config: intake limits above what the link carries are refused, naming the key', async (t) => {
  const over = { maxLoginName: ENVELOPE_LIMITS.user + 1, maxUrl: ENVELOPE_LIMITS.url + 1, maxName: ENVELOPE_LIMITS.systemName + 1, maxQuantity: ENVELOPE_LIMITS.quantity + 1 }
  for (const [key, value] of Object.entries(over)) {
    t.throws(() => parseInnerConfig({ ...base, intake: { [key]: value } }, '/x/inner.json'), { code: 'ERR_CONFIG_INVALID', message: new RegExp(`intake\\.${key}`) }, key)
  }
})

t.test('config: the largest allowed intake limits are exactly what an envelope may carry', async (t) => {
  const c = parseInnerConfig({
    ...base, intake: { maxLoginName: ENVELOPE_LIMITS.user, maxUrl: ENVELOPE_LIMITS.url, maxName: ENVELOPE_LIMITS.systemName, maxQuantity: ENVELOPE_LIMITS.quantity },
  }, '/x/inner.json')
  const env = {
    seq: 1, id: 'm', system: 'sys-1', systemName: 'n'.repeat(c.intake.maxName), user: 'u'.repeat(c.intake.maxLoginName), level: 1,
    quantity: c.intake.maxQuantity, url: 'h'.repeat(c.intake.maxUrl), ts: 1, center: 'c', sig: 'A'.repeat(86) + '==',
  }
  t.equal(typeof validateEnvelope(env), 'object', 'an envelope at every limit passes the outer\'s validator')
})

t.test('config: a listener port beyond 65535 is refused at validation, naming the listener', async (t) => {
  for (const port of ['0', '8080', '65535']) t.doesNotThrow(() => parseInnerConfig({ ...base, listen: { intake: `127.0.0.1:${port}` } }, '/x/inner.json'), port)
  for (const port of ['65536', '70000', '99999']) {
    t.throws(() => parseInnerConfig({ ...base, listen: { admin: `[::1]:${port}` } }, '/x/inner.json'), { code: 'ERR_CONFIG_INVALID', message: /listen\.admin: does not match "host:port"/ }, port)
  }
})
