/**
 * The seed's wire format (spec §6.2.1.2–§6.2.3.3, DESIGN §2): parsing intake bodies and validating todo
 * count records. Values may arrive as JSON strings or numbers (the spec's Java client sends LEVEL and
 * QUANTITY as numbers, its examples show strings); `BUSSINESS` keeps the spec's double S.
 * Unknown fields are ignored so that later extensions (e.g. an ITEMS array) do not break old centers.
 */
import { RelayError } from '../shared/errors.js'

export interface RecordLimits {
  maxLoginName: number
  maxUrl: number
  maxName: number
  maxQuantity: number
  maxBatch: number
  maxDepth: number
}

/** A record that passed validation; `code` is still to be checked against the registry. */
export interface ParsedRecord {
  code: string
  user: string
  level: 1 | 2 | 3
  quantity: number
  url: string
  /** BUSSINESSNAME, or '' when absent (the registered name is used then). */
  name: string
}

// C0, DEL and C1 control characters, the line/paragraph separators, and the bidi embedding, override
// and isolate controls (the "Trojan Source" characters, CVE-2021-42574) that can make a login name or a
// display name read as something else. None belongs in a login name, URL or display name. Everything
// else (CJK of every plane, emoji with ZWJ and variation selectors) is kept exactly.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/

/** Whether `s` holds a character that no login name, URL or display name may hold (see CONTROL). */
export function hasControl(s: string): boolean {
  return CONTROL.test(s)
}

const UTF8 = new TextDecoder('utf-8', { fatal: true })

/**
 * Decodes bytes as UTF-8, refusing invalid sequences (E_ENCODING) instead of silently replacing them
 * with U+FFFD: a GBK body decoded leniently would store mojibake. A leading BOM is dropped.
 */
export function decodeUtf8(bytes: Uint8Array): string {
  try {
    return UTF8.decode(bytes)
  } catch {
    throw new RelayError('E_ENCODING', { reason: 'not valid UTF-8' })
  }
}

function decodeFormComponent(s: string): string {
  // As WHATWG URL's form parser: '+' is a space and a '%' not followed by two hex digits stays literal;
  // unlike it, a percent-encoded byte sequence that is not UTF-8 is an error rather than U+FFFD.
  const t = s.replaceAll('+', ' ').replace(/%(?![0-9A-Fa-f]{2})/g, '%25')
  try {
    return decodeURIComponent(t)
  } catch {
    throw new RelayError('E_ENCODING', { reason: 'form data is not percent-encoded UTF-8' })
  }
}

/** Every value of field `name` in an application/x-www-form-urlencoded body, decoded strictly. */
export function formValues(text: string, name: string): string[] {
  const out: string[] = []
  for (const part of text.split('&')) {
    if (part === '') continue
    const eq = part.indexOf('=')
    if (decodeFormComponent(eq === -1 ? part : part.slice(0, eq)) === name) out.push(eq === -1 ? '' : decodeFormComponent(part.slice(eq + 1)))
  }
  return out
}

/**
 * Rejects nesting deeper than `max` before JSON.parse sees the text, so hostile input can neither blow
 * the parser's stack nor cost a full parse. Counts brackets outside strings.
 */
export function checkDepth(text: string, max: number): void {
  let depth = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === 92 /* \ */) i++
      else if (c === 34 /* " */) inString = false
    } else if (c === 34) inString = true
    else if (c === 123 || c === 91) {
      if (++depth > max) throw new RelayError('E_TOO_DEEP', { reason: `more than ${max} levels` })
    } else if (c === 125 || c === 93) depth--
  }
}

export function parseJsonText(text: string, maxDepth: number): unknown {
  checkDepth(text, maxDepth)
  try {
    return JSON.parse(text)
  } catch (e) {
    // V8's message quotes a snippet of the input, which may hold part of an auth code: keep only the position.
    const pos = /position (\d+)/.exec((e as Error).message)?.[1]
    throw new RelayError('E_BAD_JSON', { reason: pos === undefined ? 'not valid JSON' : `not valid JSON at position ${pos}` })
  }
}

/**
 * Extracts the raw record(s) from an intake body. `batch` is true when the body (or form field) held an
 * array — the reply's `data` is then an array too.
 */
export function parseIntakeBody(contentType: string | undefined, body: Buffer, limits: RecordLimits): { batch: boolean; raws: unknown[] } {
  const [type, ...params] = (contentType ?? '').split(';').map((s) => s.trim().toLowerCase())
  const charset = params.find((p) => p.startsWith('charset='))?.slice(8).replace(/"/g, '')
  if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') {
    throw new RelayError('E_CONTENT_TYPE', { reason: `charset ${charset} not supported; send UTF-8` })
  }
  let text: string
  if (type === 'application/x-www-form-urlencoded') {
    const values = formValues(decodeUtf8(body), 'message')
    if (values.length !== 1) throw new RelayError('E_FIELD', { field: 'message', reason: values.length === 0 ? 'form field message is required' : 'form field message given more than once' })
    text = values[0]!
  } else if (type === 'application/json') {
    text = decodeUtf8(body)
  } else {
    throw new RelayError('E_CONTENT_TYPE', { reason: `${type || '(none)'}; use application/x-www-form-urlencoded or application/json` })
  }
  if (text.trim().length === 0) throw new RelayError('E_BAD_JSON', { reason: 'empty message' })
  const parsed = parseJsonText(text, limits.maxDepth)
  if (Array.isArray(parsed)) {
    if (parsed.length === 0) throw new RelayError('E_EMPTY_BATCH')
    if (parsed.length > limits.maxBatch) throw new RelayError('E_BATCH_TOO_LARGE', { reason: `${parsed.length} > ${limits.maxBatch}` })
    return { batch: true, raws: parsed }
  }
  return { batch: false, raws: [parsed] }
}

function fieldError(prefix: string, field: string, reason: string): RelayError {
  return new RelayError('E_FIELD', { field: `${prefix}${field}`, reason: `${prefix}${field}: ${reason}` })
}

function text(v: unknown, prefix: string, field: string, max: number, required: boolean): string {
  if (v === undefined || v === null) {
    if (required) throw fieldError(prefix, field, 'required')
    return ''
  }
  let s: string
  if (typeof v === 'string') s = v
  else if (typeof v === 'number' && Number.isFinite(v)) s = String(v)
  else throw fieldError(prefix, field, 'must be a string')
  if (required && s.length === 0) throw fieldError(prefix, field, 'must not be empty')
  if (s.length > max) throw fieldError(prefix, field, `longer than ${max} characters`)
  if (CONTROL.test(s)) throw fieldError(prefix, field, 'control characters are not allowed')
  if (!s.isWellFormed()) throw fieldError(prefix, field, 'invalid Unicode (lone surrogate)')
  return s
}

function integer(v: unknown, prefix: string, field: string, min: number, max: number): number {
  let n: number
  if (typeof v === 'number') n = v
  else if (typeof v === 'string' && /^\s*\d{1,16}\s*$/.test(v)) n = Number(v)
  else throw fieldError(prefix, field, `must be an integer ${min}..${max}`)
  if (!Number.isInteger(n) || n < min || n > max) throw fieldError(prefix, field, `must be an integer ${min}..${max}`)
  return n === 0 ? 0 : n // -0 (a valid JSON number) is stored and signed as 0
}

/** Validates one raw record; `index` (batch position) prefixes field names as `[3].QUANTITY`. */
export function validateRecord(raw: unknown, limits: RecordLimits, index?: number): ParsedRecord {
  const prefix = index === undefined ? '' : `[${index}].`
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw fieldError(prefix, 'message', 'a record must be a JSON object')
  const r = raw as Record<string, unknown>
  if (typeof r.BUSSINESS !== 'string' || r.BUSSINESS.length === 0) throw fieldError(prefix, 'BUSSINESS', 'the auth code is required')
  if (r.BUSSINESS.length > 64) throw new RelayError('E_AUTH_CODE')
  const levelRaw = r.LEVEL
  const level = levelRaw === undefined || levelRaw === null || levelRaw === '' ? 1 : integer(levelRaw, prefix, 'LEVEL', 1, 3)
  return {
    code: r.BUSSINESS,
    user: text(r.LOGINNAME, prefix, 'LOGINNAME', limits.maxLoginName, true),
    level: level as 1 | 2 | 3,
    quantity: r.QUANTITY === undefined || r.QUANTITY === null || r.QUANTITY === ''
      ? (() => { throw fieldError(prefix, 'QUANTITY', 'required') })()
      : integer(r.QUANTITY, prefix, 'QUANTITY', 0, limits.maxQuantity),
    url: text(r.URL, prefix, 'URL', limits.maxUrl, false),
    name: text(r.BUSSINESSNAME, prefix, 'BUSSINESSNAME', limits.maxName, false),
  }
}
