/**
 * Command-line parts of business-system integration, registered on the program by cli.ts:
 * `system remove`, `user import`, and the poll-health and rejection lines of `system show` and `stats`.
 */
import { readFileSync } from 'node:fs'
import type { Command } from 'commander'
import { printJson } from '../shared/cli-util.js'
import { RelayError } from '../shared/errors.js'
import type { DB } from '../shared/sqlite.js'
import { loadInnerConfig } from './config.js'
import { InnerStore } from './store.js'
import { Registry, type SystemInfo } from './registry.js'
import { describePollHealth, readSystemPollHealth, type PollHealth } from './poll-health.js'
import { rejectionCounts, type RejectionCounts } from './rejections.js'
import { decodeImportFile, importUsers, IMPORT_ENCODINGS } from './users.js'
import type { Stats } from './monitor.js'

export function fmtTime(ms: number | null | undefined): string {
  return ms ? new Date(ms).toISOString() : '-'
}

/** Opens the daemon's database from the CLI (a longer busy timeout: the CLI may wait for the daemon's commit). */
export function openStore(configPath: string): { store: InnerStore; config: ReturnType<typeof loadInnerConfig> } {
  const config = loadInnerConfig(configPath)
  return { config, store: new InnerStore(config.dataDir, { synchronous: config.storage.synchronous, busyTimeoutMs: 5000 }) }
}

function nonNegativeInt(name: string) {
  return (v: string): number => {
    if (!/^\d+$/.test(v)) throw new RelayError('ERR_CLI_USAGE', { reason: `${name} must be a whole number` })
    return Number(v)
  }
}

export interface IntegrationDetails { poll: PollHealth | null; rejected: RejectionCounts | null }

/** What `system show` adds for a system: its poll health and rejection counts. */
export function integrationDetails(db: DB, s: SystemInfo): IntegrationDetails {
  return {
    poll: s.mode === 'push' ? null : readSystemPollHealth(db, s.id) ?? null,
    rejected: rejectionCounts(db).get(s.id) ?? null,
  }
}

export function describeIntegration(s: SystemInfo, d: IntegrationDetails): string {
  const lines: string[] = []
  if (s.removingAt !== null) lines.push(`removing:    since ${fmtTime(s.removingAt)} (the running daemon completes it)`)
  if (s.mode !== 'push') lines.push(`poll:        ${describePollHealth(d.poll ?? undefined, fmtTime)}`)
  const r = d.rejected
  lines.push(`rejected:    ${r ? `${r.total} (${Object.entries(r.byCode).map(([c, n]) => `${c} ${n}`).join(', ')}); last ${fmtTime(r.lastAt)}${r.lastReason ? `: ${r.lastReason}` : ''}` : '0'}`)
  return lines.join('\n') + '\n'
}

/** The poll-health and rejection sections of `stats`. */
export function writeIntegrationStats(w: { write(s: string): unknown }, stats: Stats): void {
  const polled = stats.systems.filter((s) => s.mode !== 'push')
  if (polled.length > 0) {
    w.write('\npolls:\n')
    for (const s of polled) w.write(`  ${s.id.padEnd(16)}  ${s.mode.padEnd(9)}  ${describePollHealth(s.poll ?? undefined, fmtTime)}\n`)
  }
  w.write(`\nrejected: ${stats.totals.rejected} (auth code matching no system: ${stats.rejectedUnknownSystem})\n`)
  for (const s of stats.systems) {
    if (s.rejected > 0) w.write(`  ${s.id.padEnd(16)}  ${Object.entries(s.rejectedByCode).map(([c, n]) => `${c} ${n}`).join(', ')}\n`)
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

export function addSystemRemove(system: Command): void {
  system.command('remove')
    .description('remove a system: every user\'s count from it goes to 0 with signed messages (phones and portals clear the entry), '
      + 'then the running daemon deletes it with its auth codes; its messages stay in history. Disable it first, or pass --force')
    .argument('<system>', 'id or name')
    .requiredOption('--config <file>', 'inner.json')
    .option('--force', 'remove a system that is still enabled')
    .option('--wait <seconds>', 'how long to wait for the running daemon to complete the removal (0: do not wait)', nonNegativeInt('--wait'), 10)
    .option('--json', 'print JSON')
    .action(async (id: string, o: { config: string; force?: boolean; wait: number; json?: boolean }) => {
      const { store } = openStore(o.config)
      try {
        const reg = new Registry(store.db)
        const s = reg.requestRemoval(id, o.force === true)
        const clearing = reg.nonZeroUsers(s.id)
        const deadline = Date.now() + o.wait * 1000
        let removed = !reg.exists(s.id)
        while (!removed && Date.now() < deadline) {
          await sleep(100)
          removed = !reg.exists(s.id)
        }
        const result = { id: s.id, name: s.name, status: removed ? 'removed' : 'pending', clearedUsers: clearing }
        if (o.json) return printJson(result)
        process.stdout.write(removed
          ? `${s.id} ${s.name}: removed; ${clearing} users' counts were set to 0\n`
          : `${s.id} ${s.name}: disabled and marked for removal; todo-inner serve completes it (sets ${clearing} users' counts to 0, then deletes the system) when it runs\n`)
      } finally {
        store.close()
      }
    })
}

/** Progress on stderr for files of at least this many rows. */
const PROGRESS_ROWS = 10_000
const MAX_LISTED = 100

export function addUserCommands(program: Command): void {
  const user = program.command('user').description('known users: whom pull-user systems are asked about, and their regions')
  user.command('import')
    .description('import users from a CSV file with the header loginName,name,region (re-importing is idempotent); '
      + 'bad rows are reported by line number and skipped')
    .argument('<file>', 'CSV file')
    .requiredOption('--config <file>', 'inner.json')
    .option('--encoding <name>', `file encoding: ${IMPORT_ENCODINGS.join(', ')} (Excel on Chinese Windows saves GBK)`, 'utf-8')
    .option('--strict', 'import nothing when any row is invalid, and exit 1')
    .option('--json', 'print JSON')
    .action((file: string, o: { config: string; encoding: string; strict?: boolean; json?: boolean }) => {
      const { store, config } = openStore(o.config)
      try {
        let bytes: Buffer
        try {
          bytes = readFileSync(file)
        } catch (e) {
          throw new RelayError('ERR_USER_IMPORT', { reason: `${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}` })
        }
        const text = decodeImportFile(bytes, o.encoding.toLowerCase())
        const tty = process.stderr.isTTY === true
        const summary = importUsers(store.db, text, {
          maxLoginName: config.intake.maxLoginName, maxName: config.intake.maxName, strict: o.strict === true,
          progress: (done, total) => {
            if (total < PROGRESS_ROWS) return
            const line = `user import: ${done}/${total} rows written (${Math.floor((done / total) * 100)}%)`
            process.stderr.write(tty ? `\r${line}${done === total ? '\n' : ''}` : `${line}\n`)
          },
        })
        if (o.json) printJson({ file, ...summary })
        else {
          for (const r of summary.invalid.slice(0, MAX_LISTED)) process.stderr.write(`${file}:${r.line}: ${r.reason}\n`)
          if (summary.invalid.length > MAX_LISTED) process.stderr.write(`… and ${summary.invalid.length - MAX_LISTED} more invalid rows (--json lists all)\n`)
          process.stdout.write(`${summary.applied ? '' : 'nothing imported (--strict): '}${summary.rows} rows: ${summary.added} added, `
            + `${summary.updated} updated, ${summary.unchanged} unchanged, ${summary.invalid.length} invalid\n`)
        }
        if (!summary.applied) process.exitCode = 1
      } finally {
        store.close()
      }
    })
}
