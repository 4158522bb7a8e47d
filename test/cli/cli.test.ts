/**
 * Both command lines as real child processes from dist/ (DESIGN §3.1): help, one-line errors without a
 * stack trace on bad input, keygen, system registration taking effect in a running daemon within a
 * second, token minting, trace and stats. Run `npm run build` first.
 */
import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import nacl from 'tweetnacl'
import { createTokenVerifier } from '../../shared/tokens.js'
import {
  INNER_BIN, OUTER_BIN, TOKENS, addSystem, innerConfigObject, makeKeys, outerConfigObject, push, record, startInner, waitFor, writeConfig,
} from '../helpers/daemons.js'

interface Run { code: number | null; stdout: string; stderr: string }

/** Runs a CLI to completion without blocking the event loop (a daemon may run in this process). */
function cli(bin: string, args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 20_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr })
    })
  })
}
const inner = (...args: string[]): Promise<Run> => cli(INNER_BIN, args)
const outer = (...args: string[]): Promise<Run> => cli(OUTER_BIN, args)

/** Non-zero exit, one `NAME: error: …` line (plus at most a usage hint), no stack trace. */
function failsCleanly(t: Test, r: Run, name: 'todo-inner' | 'todo-outer', what: string): void {
  t.ok(r.code !== 0 && r.code !== null, `${what}: non-zero exit (${r.code})`)
  t.notOk(r.stderr.includes('    at '), `${what}: no stack trace`)
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '')
  const errors = lines.filter((l) => /error/i.test(l))
  t.equal(errors.length, 1, `${what}: exactly one error line`)
  t.match(errors[0] ?? '', new RegExp(`^${name}: error: \\S`), `${what}: the error line names the command`)
  t.ok(lines.length <= 2, `${what}: at most the error and a usage hint`)
  t.equal(r.stdout, '', `${what}: nothing on stdout`)
}

t.test('cli: --help exits 0', async (t) => {
  const runs: [string, Promise<Run>][] = [
    ['todo-inner --help', inner('--help')], ['todo-outer --help', outer('--help')],
    ['todo-inner system add --help', inner('system', 'add', '--help')], ['todo-outer token --help', outer('token', '--help')],
  ]
  for (const [what, p] of runs) {
    const r = await p
    t.equal(r.code, 0, `${what} exits 0`)
    t.match(r.stdout, /Usage:/, `${what} prints usage`)
  }
  t.match((await runs[2]![1]).stdout, /--mode/, 'system add documents --mode')
})

t.test('cli: bad input exits non-zero with a one-line error and no stack trace', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const good = writeConfig(dir, 'inner.json', innerConfigObject(dir, keys, undefined))
  const unknownKey = writeConfig(dir, 'bad-inner.json', { ...innerConfigObject(dir, keys, undefined), colour: 'blue' })
  const unknownNested = writeConfig(dir, 'bad-nested.json', { ...innerConfigObject(dir, keys, undefined), intake: { maxBodyByte: 5 } })
  const badOuter = writeConfig(dir, 'bad-outer.json', { ...outerConfigObject(dir, keys), lnk: {} })
  const badKeyFile = join(dir, 'bad.key')
  writeFileSync(badKeyFile, 'not a key\n')
  const badKey = writeConfig(dir, 'badkey.json', { ...innerConfigObject(dir, keys, undefined), keyFile: badKeyFile })
  const missing = join(dir, 'nope.json')

  // Independent runs, started together.
  const [unknownCmd, noConfig, badMode, noUrl, missingFile, unknown, nested, outerUnknown, malformedKey] = await Promise.all([
    inner('frobnicate'),
    inner('system', 'add', '--name', 'x', '--mode', 'push'),
    inner('system', 'add', '--config', good, '--name', 'x', '--mode', 'smoke-signals'),
    inner('system', 'add', '--config', good, '--name', 'x', '--mode', 'pull-all'),
    inner('system', 'list', '--config', missing),
    inner('system', 'list', '--config', unknownKey),
    inner('serve', '--config', unknownNested),
    outer('serve', '--config', badOuter),
    inner('serve', '--config', badKey),
  ])
  failsCleanly(t, unknownCmd!, 'todo-inner', 'unknown command')
  failsCleanly(t, noConfig!, 'todo-inner', 'missing --config')
  failsCleanly(t, badMode!, 'todo-inner', 'bad --mode')
  failsCleanly(t, noUrl!, 'todo-inner', 'pull-all without --url')
  failsCleanly(t, missingFile!, 'todo-inner', 'a missing config file')
  t.match(missingFile!.stderr, /ENOENT/, 'says the file does not exist')
  failsCleanly(t, unknown!, 'todo-inner', 'a config with an unknown key')
  t.match(unknown!.stderr, /\bcolour\b/, 'names the unknown key')
  failsCleanly(t, nested!, 'todo-inner', 'serve with an unknown nested key')
  t.match(nested!.stderr, /intake\.maxBodyByte\b/, 'names the nested key by its path')
  failsCleanly(t, outerUnknown!, 'todo-outer', 'outer: a config with an unknown key')
  t.match(outerUnknown!.stderr, /\blnk\b/, 'names the unknown key')
  failsCleanly(t, malformedKey!, 'todo-inner', 'serve with a malformed key file')
})

t.test('cli: keygen writes the key files and prints the public key', async (t) => {
  const dir = t.testdir()
  const first = { inner: inner('keygen', '--out', join(dir, 'inner')), outer: outer('keygen', '--out', join(dir, 'outer')) }
  for (const [which, run] of [['inner', inner], ['outer', outer]] as const) {
    const out = join(dir, which)
    const r = await first[which]
    t.equal(r.code, 0, `${which} keygen exits 0`)
    t.match(r.stdout, /^[A-Za-z0-9+/]{43}=\n$/, 'prints only the public key')
    const seed = Buffer.from(readFileSync(join(out, `${which}.key`), 'utf8').trim(), 'base64')
    t.equal(seed.length, 32)
    t.equal(statSync(join(out, `${which}.key`)).mode & 0o777, 0o600, 'key file is 0600')
    const pub = readFileSync(join(out, `${which}.pub`), 'utf8')
    t.equal(pub, r.stdout, '.pub holds the printed key')
    t.equal(pub.trim(), Buffer.from(nacl.sign.keyPair.fromSeed(seed).publicKey).toString('base64'), 'tweetnacl-compatible')
    const again = await run('keygen', '--out', out)
    failsCleanly(t, again, `todo-${which}`, `${which} keygen over an existing key`)
    t.equal(readFileSync(join(out, `${which}.pub`), 'utf8'), pub, 'the existing key is kept')
  }
})

t.test('cli: system changes take effect in a running daemon within a second', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const config = writeConfig(dir, 'inner.json', innerConfigObject(dir, keys, undefined))
  const daemon = await startInner(t, dir, keys, undefined)

  const added = await inner('system', 'add', '--config', config, '--name', '建设项目', '--mode', 'push', '--scope', 'province',
    '--scope', 'city', '--description', '建设项目审批', '--json')
  t.equal(added.code, 0, `system add exits 0 ${added.stderr}`)
  const sys = JSON.parse(added.stdout) as { id: string; authCode: string; name: string; mode: string; scopes: string[]; enabled: boolean }
  t.match(sys.authCode, /^[0-9a-f]{32}$/, 'a 32-hex-digit auth code')
  t.type(sys.id, 'string')
  t.not(sys.id, sys.authCode, 'the public id is not the auth code')
  t.match(sys, { name: '建设项目', mode: 'push', scopes: ['province', 'city'], enabled: true })
  const addedAt = Date.now()
  await waitFor(async () => (await push(daemon.intakeUrl, record(sys.authCode, 'admin', 1))).status === 200, 'the new code is accepted', 1500, 50)
  t.ok(Date.now() - addedAt < 1500, `accepted after ${Date.now() - addedAt} ms`)

  const [plain, dup] = await Promise.all([
    inner('system', 'add', '--config', config, '--name', '排污许可', '--mode', 'push'),
    inner('system', 'add', '--config', config, '--name', '建设项目', '--mode', 'push'),
  ])
  t.equal(plain!.code, 0)
  t.match(plain!.stdout, /^[0-9a-f]{32}\n$/, 'without --json: prints only the auth code')
  failsCleanly(t, dup!, 'todo-inner', 'a duplicate name')

  const disabled = await inner('system', 'disable', sys.id, '--config', config, '--json')
  t.equal(disabled.code, 0)
  t.equal((JSON.parse(disabled.stdout) as { enabled: boolean }).enabled, false)
  const disabledAt = Date.now()
  await waitFor(async () => (await push(daemon.intakeUrl, record(sys.authCode, 'admin', 2))).body.code === 'E_SYSTEM_DISABLED', 'the system is refused', 1500, 50)
  t.ok(Date.now() - disabledAt < 1500, `refused after ${Date.now() - disabledAt} ms`)

  t.equal((await inner('system', 'enable', '建设项目', '--config', config)).code, 0, 'enable by name')
  await waitFor(async () => (await push(daemon.intakeUrl, record(sys.authCode, 'admin', 3))).status === 200, 'accepted again', 1500, 50)

  const rotated = await inner('system', 'rotate-code', sys.id, '--config', config, '--grace', '0', '--json')
  t.equal(rotated.code, 0)
  const newCode = (JSON.parse(rotated.stdout) as { authCode: string }).authCode
  t.match(newCode, /^[0-9a-f]{32}$/)
  await waitFor(async () => (await push(daemon.intakeUrl, record(sys.authCode, 'admin', 4))).body.code === 'E_AUTH_CODE', 'the old code is refused', 1500, 50)
  t.equal((await push(daemon.intakeUrl, record(newCode, 'admin', 4))).status, 200, 'the new code is accepted')

  const [listRun, showRun] = await Promise.all([
    inner('system', 'list', '--config', config, '--json'), inner('system', 'show', sys.id, '--config', config, '--json'),
  ])
  const list = JSON.parse(listRun!.stdout) as { id: string; name: string }[]
  t.same(list.map((s) => s.name).sort(), ['建设项目', '排污许可'].sort())
  t.notOk(JSON.stringify(list).includes(newCode), 'system list does not print auth codes')
  const show = JSON.parse(showRun!.stdout) as { authCodes: { code: string }[] }
  t.ok(show.authCodes.some((c) => c.code === newCode), 'system show does, for the administrator')
})

t.test('cli: todo-outer token prints only a JWT the outer accepts', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const config = writeConfig(dir, 'outer.json', outerConfigObject(dir, keys))
  const r = await outer('token', '--config', config, '--user', '张三', '--ttl', '15m')
  t.equal(r.code, 0)
  t.match(r.stdout, /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\n$/, 'one line: a JWT')
  const v = await (await createTokenVerifier(TOKENS)).verify(r.stdout.trim())
  t.equal(v.user, '张三')
  const ttl = v.exp - Date.now() / 1000
  t.ok(ttl > 14 * 60 && ttl <= 15 * 60 + 1, 'honours --ttl')
})

t.test('cli: trace and stats after a push', async (t) => {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const config = writeConfig(dir, 'inner.json', innerConfigObject(dir, keys, undefined))
  const daemon = await startInner(t, dir, keys, undefined)
  const sys = await addSystem(daemon)
  const r1 = await push(daemon.intakeUrl, record(sys.code, 'admin', 10))
  const r2 = await push(daemon.intakeUrl, record(sys.code, 'admin', 4))
  const { id, seq } = r1.body.data as { id: string; seq: number }

  const [trace, byUser, stats, human] = await Promise.all([
    inner('trace', id, '--config', config, '--json'),
    inner('trace', '--user', 'admin', '--config', config, '--json'),
    inner('stats', '--config', config, '--json'),
    inner('stats', '--config', config),
  ])
  t.equal(trace!.code, 0, trace!.stderr)
  const tr = JSON.parse(trace!.stdout) as { id: string; seq: number; system: string; user: string; quantity: number; stages: Record<string, number> }
  t.match(tr, { id, seq, system: sys.id, user: 'admin', quantity: 10 })
  t.type(tr.stages.received, 'number')
  t.type(tr.stages.stored, 'number')
  t.type(tr.stages.superseded, 'number', 'the second push superseded the first')
  t.ok(tr.stages.stored! >= tr.stages.received!)
  t.equal(byUser!.code, 0, byUser!.stderr)
  t.same((JSON.parse(byUser!.stdout) as { id: string }[]).map((x) => x.id), [(r2.body.data as { id: string }).id, id], 'trace --user, newest first')

  t.equal(stats!.code, 0, stats!.stderr)
  const st = JSON.parse(stats!.stdout) as { center: { lastSeq: number }; totals: { produced: number; superseded: number }; systems: { id: string; produced: number }[] }
  t.equal(st.center.lastSeq, 2)
  t.equal(st.totals.produced, 2)
  t.equal(st.totals.superseded, 1)
  t.match(st.systems, [{ id: sys.id, produced: 2 }])
  t.equal(human!.code, 0)
  t.match(human!.stdout, sys.id, 'human output names the system')
})
