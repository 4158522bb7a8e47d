/**
 * Runs `todo-inner …` as the operator does: a child process of dist/inner/main.js (run `npm run build`
 * first), with its exit code, stdout and stderr, and a JSON helper for `--json` commands.
 */
import { execFile } from 'node:child_process'
import { INNER_BIN, innerConfigObject, makeKeys, startInner, writeConfig, type Keys, type RunningInner, type T } from './daemons.js'

export interface CliResult { code: number; stdout: string; stderr: string }

export function runInner(args: string[], timeoutMs = 30_000): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [INNER_BIN, ...args], { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0
      resolve({ code, stdout, stderr })
    })
  })
}

/** Runs a `--json` command that must succeed and parses its output. */
export async function runInnerJson<T = Record<string, unknown>>(args: string[]): Promise<T> {
  const r = await runInner([...args, '--json'])
  if (r.code !== 0) throw new Error(`todo-inner ${args.join(' ')} exited ${r.code}: ${r.stderr}`)
  return JSON.parse(r.stdout) as T
}

/** An in-process daemon plus its config file on disk, so that CLI child processes share its database. */
export async function startInnerWithConfig(t: T, extra: Record<string, unknown> = {}): Promise<{ dir: string; keys: Keys; config: string; inner: RunningInner }> {
  const dir = t.testdir()
  const keys = makeKeys(dir)
  const config = writeConfig(dir, 'inner.json', innerConfigObject(dir, keys, undefined, extra))
  const inner = await startInner(t, dir, keys, undefined, extra)
  return { dir, keys, config, inner }
}

/** A system as `system add|show|list --json` prints it. */
export interface SystemJson { id: string; name: string; authCode: string; enabled: boolean; scopes: string[]; allowIps: string[]; mode: string; [k: string]: unknown }
