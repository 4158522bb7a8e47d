/**
 * `todo-inner user import FILE.csv` (DESIGN §3.1): RFC 4180 CSV as Excel and scripts write it (quotes,
 * doubled quotes, commas and line breaks inside quotes, CRLF, a UTF-8 BOM), a summary of added, updated,
 * unchanged and invalid rows with the invalid rows' line numbers, idempotent re-import, GBK files, progress
 * on stderr for large files, --strict and --json. The CLI runs as a child process (needs `npm run build`).
 */
import t from 'tap'
import type { T } from '../helpers/daemons.js'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { parseCsv } from '../../inner/csv.js'
import { innerConfigObject, makeKeys, writeConfig } from '../helpers/daemons.js'
import { runInner, runInnerJson } from '../helpers/cli.js'

t.test('csv: a table of well-formed and malformed input', async (t) => {
  const table: [string, string, { line: number; fields: string[]; error?: string }[]][] = [
    ['plain', 'a,b,c\n1,2,3\n', [{ line: 1, fields: ['a', 'b', 'c'] }, { line: 2, fields: ['1', '2', '3'] }]],
    ['CRLF and no final newline', 'a,b\r\n1,2', [{ line: 1, fields: ['a', 'b'] }, { line: 2, fields: ['1', '2'] }]],
    ['BOM skipped', '\ufeffloginName\nx\n', [{ line: 1, fields: ['loginName'] }, { line: 2, fields: ['x'] }]],
    ['quoted comma', '"a,b",c\n', [{ line: 1, fields: ['a,b', 'c'] }]],
    ['doubled quote', '"say ""hi""",x\n', [{ line: 1, fields: ['say "hi"', 'x'] }]],
    ['line break inside quotes', 'h\n"line1\nline2",x\nnext\n', [{ line: 1, fields: ['h'] }, { line: 2, fields: ['line1\nline2', 'x'] }, { line: 4, fields: ['next'] }]],
    ['CRLF inside quotes keeps line numbers', 'h\r\n"a\r\nb"\r\nc\r\n', [{ line: 1, fields: ['h'] }, { line: 2, fields: ['a\r\nb'] }, { line: 4, fields: ['c'] }]],
    ['empty fields', ',,\n', [{ line: 1, fields: ['', '', ''] }]],
    ['blank lines skipped', 'a\n\n\r\nb\n', [{ line: 1, fields: ['a'] }, { line: 4, fields: ['b'] }]],
    ['Chinese and emoji', '张三,建设项目👩‍💻,𠀀\n', [{ line: 1, fields: ['张三', '建设项目👩‍💻', '𠀀'] }]],
    ['stray quote', 'ab"c,d\nok\n', [{ line: 1, fields: ['ab"c', 'd'], error: 'a quote inside an unquoted field (quote the whole field and double the quote)' }, { line: 2, fields: ['ok'] }]],
    ['text after closing quote', '"ab"c,d\n', [{ line: 1, fields: ['abc', 'd'], error: 'text after a closing quote' }]],
    ['unterminated quote', 'x\n"abc\ndef\n', [{ line: 1, fields: ['x'] }, { line: 2, fields: ['abc\ndef\n'], error: 'unterminated quoted field' }]],
    ['empty input', '', []],
  ]
  for (const [name, input, want] of table) t.same(parseCsv(input), want, name)
})

function setup(t: T): { dir: string; config: string; users: () => { login: string; name: string; region: string; updated_at: number }[] } {
  const dir = t.testdir()
  const config = writeConfig(dir, 'inner.json', innerConfigObject(dir, makeKeys(dir), undefined))
  const users = (): { login: string; name: string; region: string; updated_at: number }[] => {
    const db = new Database(join(dir, 'inner-data', 'inner.sqlite'), { readonly: true })
    try {
      return db.prepare('SELECT login, name, region, updated_at FROM users ORDER BY login').all() as { login: string; name: string; region: string; updated_at: number }[]
    } finally {
      db.close()
    }
  }
  return { dir, config, users }
}

interface Summary { rows: number; added: number; updated: number; unchanged: number; invalid: { line: number; reason: string }[]; applied: boolean }

t.test('user import: BOM, CRLF, quotes; invalid rows reported by line; re-import idempotent; updates counted', async (t) => {
  const { dir, config, users } = setup(t)
  const file = join(dir, 'users.csv')
  const lines = [
    'loginName,name,region',
    'admin,管理员,510000',
    '"zhang,san","张三 ""老张""",510100',
    '272670316,"多行\r\n备注",510104', // 4: a line break (a control character) in the name; spans lines 4 and 5
    ',无名,510100', // line 6 (the quoted line break above spans lines 4 and 5): empty loginName
    'bad-region,某人,51-01', // 7
    'dup,一,510100',
    'dup,二,510100', // 9: duplicate
    'too,many,fields,here', // 10
    'bad"quote,x,510100', // 11
    `${'x'.repeat(129)},长,510100`, // 12
    '"ctl\u0007",控制,510100', // 13
    '',
    '  ,  ,  ', // 15: spaces only is an empty loginName
    '王五👩‍💻,王五,',
  ]
  writeFileSync(file, `\ufeff${lines.join('\r\n')}\r\n`)
  const r = await runInner(['user', 'import', file, '--config', config])
  t.equal(r.code, 0, 'valid rows imported even when some are invalid')
  t.match(r.stdout, /^13 rows: 4 added, 0 updated, 0 unchanged, 9 invalid\n$/)
  for (const n of [4, 6, 7, 9, 10, 11, 12, 13, 15]) t.match(r.stderr, new RegExp(`users\\.csv:${n}: `), `line ${n} reported`)
  t.match(r.stderr, /users\.csv:9: loginName dup already on line 8/)
  t.match(r.stderr, /users\.csv:4: name holds control characters/)
  t.same(users().map((u) => [u.login, u.name, u.region]), [
    ['admin', '管理员', '510000'], ['dup', '一', '510100'], ['zhang,san', '张三 "老张"', '510100'], ['王五👩‍💻', '王五', ''],
  ])

  const before = users()
  const again = await runInnerJson<Summary>(['user', 'import', file, '--config', config])
  t.match(again, { rows: 13, added: 0, updated: 0, unchanged: 4, applied: true })
  t.same(again.invalid.map((i) => i.line), [4, 6, 7, 9, 10, 11, 12, 13, 15], '--json lists every invalid line')
  t.same(users(), before, 're-import changes nothing, not even updated_at')

  // Columns in another order, and a file without a name column: names are kept.
  writeFileSync(file, 'region,loginName\n510199,admin\n510100,newbie\n')
  t.match(await runInnerJson<Summary>(['user', 'import', file, '--config', config]), { added: 1, updated: 1, unchanged: 0 })
  t.match(users().find((u) => u.login === 'admin'), { name: '管理员', region: '510199' })
})

t.test('user import: header problems, GBK, --strict', async (t) => {
  const { dir, config, users } = setup(t)
  const file = join(dir, 'u.csv')
  for (const [content, pattern] of [
    ['name,region\nx,510100\n', /needs a loginName column/],
    ['loginName,email\nx,y\n', /unknown column "email"/],
    ['loginName,loginname\nx,y\n', /appears twice/],
    ['', /empty/],
  ] as [string, RegExp][]) {
    writeFileSync(file, content)
    const r = await runInner(['user', 'import', file, '--config', config])
    t.equal(r.code, 1)
    t.match(r.stderr, pattern)
    t.match(r.stderr, /^todo-inner: error: [^\n]+\n$/, 'one line, no stack')
  }
  t.equal((await runInner(['user', 'import', join(dir, 'missing.csv'), '--config', config])).code, 1)

  // "loginName,name,region\nzhangsan,张三,510100\n" as Excel on Chinese Windows saves it (GBK).
  const gbk = Buffer.concat([Buffer.from('loginName,name,region\r\nzhangsan,'), Buffer.from([0xd5, 0xc5, 0xc8, 0xfd]), Buffer.from(',510100\r\n')])
  writeFileSync(file, gbk)
  const asUtf8 = await runInner(['user', 'import', file, '--config', config])
  t.equal(asUtf8.code, 1, 'GBK read as UTF-8 is refused, not imported as mojibake')
  t.match(asUtf8.stderr, /--encoding gbk/)
  t.equal(users().length, 0)
  t.match(await runInnerJson<Summary>(['user', 'import', file, '--config', config, '--encoding', 'gbk']), { added: 1 })
  t.same(users().map((u) => u.name), ['张三'])
  t.equal((await runInner(['user', 'import', file, '--config', config, '--encoding', 'latin-9x'])).code, 2, 'unknown encoding is a usage error')

  writeFileSync(file, 'loginName\nok1\n\u0001bad\nok2\n')
  const strict = await runInner(['user', 'import', file, '--config', config, '--strict'])
  t.equal(strict.code, 1)
  t.match(strict.stdout, /^nothing imported \(--strict\)/)
  t.match(strict.stderr, /u\.csv:3: loginName holds control characters/)
  t.same(users().map((u) => u.login), ['zhangsan'], 'nothing imported')
})

t.test('user import: a large file shows progress on stderr', async (t) => {
  const { dir, config, users } = setup(t)
  const file = join(dir, 'big.csv')
  writeFileSync(file, ['loginName,name,region', ...Array.from({ length: 12_000 }, (_, i) => `u${i},用户${i},510100`)].join('\n'))
  const r = await runInner(['user', 'import', file, '--config', config])
  t.equal(r.code, 0)
  t.match(r.stdout, /12000 rows: 12000 added/)
  t.match(r.stderr, /user import: 5000\/12000 rows written \(41%\)\nuser import: 10000\/12000 rows written \(83%\)\nuser import: 12000\/12000 rows written \(100%\)\n/)
  t.equal(users().length, 12_000)
})
