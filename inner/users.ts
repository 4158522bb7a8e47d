/**
 * `todo-inner user import USERS.csv` (DESIGN §3.1): the known users that pull-user systems are asked
 * about, with their display name and region (city code, e.g. 510100, used for two-level distribution).
 *
 * The file has a header naming its columns — `loginName,name,region`, in any order, case-insensitive;
 * only `loginName` is required, and a column left out is left unchanged for existing users. Rows are
 * checked like pushed login names (length, no control characters); a bad row is reported with its line
 * number and the others are imported (or, with `strict`, nothing is). Import is idempotent: a row equal
 * to what is stored changes nothing and counts as `unchanged`. Rows are written in chunks of a few
 * thousand per transaction, so a running daemon sharing the file is never blocked for long.
 */
import type { DB } from '../shared/sqlite.js'
import { RelayError } from '../shared/errors.js'
import { parseCsv } from './csv.js'
import { hasControl } from './record.js'

export interface ImportOptions {
  maxLoginName: number
  maxName: number
  /** Import nothing when any row is invalid. */
  strict?: boolean
  /** Rows per transaction. */
  chunk?: number
  /** Called after each chunk with rows written so far and the total. */
  progress?: (done: number, total: number) => void
  now?: () => number
}

export interface InvalidRow { line: number; reason: string }

export interface ImportSummary {
  /** Data rows in the file (blank lines not counted). */
  rows: number
  added: number
  updated: number
  unchanged: number
  invalid: InvalidRow[]
  /** False when `strict` refused the file. */
  applied: boolean
}

const COLUMNS = { loginname: 'loginName', name: 'name', region: 'region' } as const
type Column = (typeof COLUMNS)[keyof typeof COLUMNS]
const REGION = /^\d{6}$/

export const IMPORT_ENCODINGS = ['utf-8', 'gbk', 'gb18030'] as const

/**
 * Decodes the file strictly. A CSV that Excel saved on a Chinese-language Windows is GBK; decoding it as
 * UTF-8 would import mojibake, so that is an error that names the option to use.
 */
export function decodeImportFile(bytes: Uint8Array, encoding: string = 'utf-8'): string {
  let decoder: InstanceType<typeof TextDecoder>
  try {
    decoder = new TextDecoder(encoding, { fatal: true })
  } catch {
    throw new RelayError('ERR_CLI_USAGE', { reason: `unknown encoding ${encoding} (use ${IMPORT_ENCODINGS.join(', ')})` })
  }
  try {
    return decoder.decode(bytes)
  } catch {
    throw new RelayError('ERR_USER_IMPORT', {
      reason: encoding === 'utf-8' ? 'the file is not valid UTF-8 (a CSV saved by Excel on Chinese Windows is GBK: add --encoding gbk)' : `the file is not valid ${encoding}`,
    })
  }
}

function header(fields: string[]): Column[] {
  const cols = fields.map((f) => {
    const c = COLUMNS[f.trim().toLowerCase() as keyof typeof COLUMNS]
    if (!c) throw new RelayError('ERR_USER_IMPORT', { reason: `line 1: unknown column "${f.trim().slice(0, 40)}" (the header is loginName,name,region)` })
    return c
  })
  if (new Set(cols).size !== cols.length) throw new RelayError('ERR_USER_IMPORT', { reason: 'line 1: a column appears twice' })
  if (!cols.includes('loginName')) throw new RelayError('ERR_USER_IMPORT', { reason: 'line 1: the header needs a loginName column (loginName,name,region)' })
  return cols
}

function checkText(v: string, what: string, max: number): string | undefined {
  if (v.length > max) return `${what} longer than ${max} characters`
  if (hasControl(v)) return `${what} holds control characters`
  if (!v.isWellFormed()) return `${what} is not valid Unicode`
  return undefined
}

interface Row { line: number; login: string; name?: string; region?: string }

export function importUsers(db: DB, text: string, opts: ImportOptions): ImportSummary {
  const records = parseCsv(text)
  const head = records.shift()
  if (!head) throw new RelayError('ERR_USER_IMPORT', { reason: 'the file is empty (the header is loginName,name,region)' })
  if (head.error) throw new RelayError('ERR_USER_IMPORT', { reason: `line ${head.line}: ${head.error}` })
  const cols = header(head.fields)
  const invalid: InvalidRow[] = []
  const rows: Row[] = []
  const firstLine = new Map<string, number>()
  let count = 0
  for (const r of records) {
    if (r.fields.length === 1 && r.fields[0]!.trim() === '' && !r.error) continue // a line of spaces
    count++
    if (r.error) { invalid.push({ line: r.line, reason: r.error }); continue }
    if (r.fields.length !== cols.length) { invalid.push({ line: r.line, reason: `expected ${cols.length} fields, got ${r.fields.length}` }); continue }
    const v: Partial<Record<Column, string>> = {}
    cols.forEach((c, i) => { v[c] = r.fields[i]!.trim() })
    const login = v.loginName ?? ''
    const problem = login === '' ? 'loginName is empty'
      : checkText(login, 'loginName', opts.maxLoginName)
        ?? (v.name !== undefined ? checkText(v.name, 'name', opts.maxName) : undefined)
        ?? (v.region !== undefined && v.region !== '' && !REGION.test(v.region) ? `region "${v.region.slice(0, 20)}" is not a 6-digit code like 510100` : undefined)
    if (problem) { invalid.push({ line: r.line, reason: problem }); continue }
    const dup = firstLine.get(login)
    if (dup !== undefined) { invalid.push({ line: r.line, reason: `loginName ${login} already on line ${dup}` }); continue }
    firstLine.set(login, r.line)
    rows.push({ line: r.line, login, ...(v.name !== undefined ? { name: v.name } : {}), ...(v.region !== undefined ? { region: v.region } : {}) })
  }
  invalid.sort((a, b) => a.line - b.line)
  const summary: ImportSummary = { rows: count, added: 0, updated: 0, unchanged: 0, invalid, applied: true }
  if (opts.strict && invalid.length > 0) return { ...summary, applied: false }

  const get = db.prepare<[string], { name: string; region: string }>('SELECT name, region FROM users WHERE login = ?')
  const insert = db.prepare('INSERT INTO users(login, name, region, updated_at) VALUES (?, ?, ?, ?)')
  const update = db.prepare('UPDATE users SET name = ?, region = ?, updated_at = ? WHERE login = ?')
  const chunk = opts.chunk ?? 5000
  const now = opts.now ?? Date.now
  for (let i = 0; i < rows.length; i += chunk) {
    db.transaction(() => {
      const t = now()
      for (const r of rows.slice(i, i + chunk)) {
        const old = get.get(r.login)
        if (!old) {
          insert.run(r.login, r.name ?? '', r.region ?? '', t)
          summary.added++
          continue
        }
        const name = r.name ?? old.name
        const region = r.region ?? old.region
        if (name === old.name && region === old.region) summary.unchanged++
        else {
          update.run(name, region, t, r.login)
          summary.updated++
        }
      }
    })()
    opts.progress?.(Math.min(i + chunk, rows.length), rows.length)
  }
  return summary
}
