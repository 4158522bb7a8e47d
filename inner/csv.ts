/**
 * A CSV reader for RFC 4180 files as Excel and scripts write them: comma-separated, fields optionally in
 * double quotes, `""` for a quote inside quotes, commas and line breaks inside quotes, CRLF or LF line ends.
 * It is an explicit state machine over the text and never throws: a malformed record (a quote inside an
 * unquoted field, text after a closing quote, an unterminated quote) comes back with an `error` and the
 * line it started on, so an import can report it and go on with the next record.
 */

export interface CsvRecord {
  /** 1-based physical line where the record starts. */
  line: number
  fields: string[]
  error?: string
}

const S = { FieldStart: 0, Unquoted: 1, Quoted: 2, QuoteInQuoted: 3 } as const
type State = (typeof S)[keyof typeof S]

/** Parses `text` (a leading BOM is skipped). Blank lines yield no record. */
export function parseCsv(text: string): CsvRecord[] {
  const out: CsvRecord[] = []
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0
  let line = 1
  let start = 1
  let state: State = S.FieldStart
  let field = ''
  let fields: string[] = []
  let error: string | undefined
  let blank = true

  const endRecord = (): void => {
    fields.push(field)
    if (!(blank && fields.length === 1 && fields[0] === '' && error === undefined)) {
      out.push(error === undefined ? { line: start, fields } : { line: start, fields, error })
    }
    fields = []
    field = ''
    error = undefined
    blank = true
    state = S.FieldStart
  }

  for (; i < text.length; i++) {
    const c = text[i]!
    const newline = c === '\n' || c === '\r'
    if (newline && state !== S.Quoted) {
      if (c === '\r' && text[i + 1] === '\n') i++
      endRecord()
      line++
      start = line
      continue
    }
    switch (state) {
      case S.FieldStart:
        if (c === '"') { state = S.Quoted; blank = false } else if (c === ',') { fields.push(field); field = ''; blank = false } else { field += c; state = S.Unquoted; blank = false }
        break
      case S.Unquoted:
        if (c === ',') { fields.push(field); field = ''; state = S.FieldStart } else {
          if (c === '"') error ??= 'a quote inside an unquoted field (quote the whole field and double the quote)'
          field += c
        }
        break
      case S.Quoted:
        if (c === '"') state = S.QuoteInQuoted
        else {
          if (c === '\n' || (c === '\r' && text[i + 1] !== '\n')) line++
          field += c
        }
        break
      case S.QuoteInQuoted:
        if (c === '"') { field += '"'; state = S.Quoted } else if (c === ',') { fields.push(field); field = ''; state = S.FieldStart } else {
          error ??= 'text after a closing quote'
          field += c
          state = S.Unquoted
        }
        break
    }
  }
  if (state === S.Quoted) error ??= 'unterminated quoted field'
  if (!blank || field !== '' || fields.length > 0) endRecord()
  return out
}
