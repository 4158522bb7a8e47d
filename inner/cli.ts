/**
 * todo-inner's command line (DESIGN §3.1). Registry commands write straight into the daemon's SQLite
 * file; a running daemon picks the change up within a second.
 */
import { Command, Option } from 'commander'
import { addKeygen, exitOverrideAll, printJson, runProgram, runUntilSignal } from '../shared/cli-util.js'
import { RelayError } from '../shared/errors.js'
import { parseDuration } from '../shared/tokens.js'
import { loadInnerConfig } from './config.js'
import { build } from './daemon.js'
import type { InnerStore } from './store.js'
import { MODES, Registry, SCOPES, parseActionTypes, type Mode, type Scope, type SystemInfo, type SystemUpdate } from './registry.js'
import { collectStats, traceMessage, traceUser, type Trace } from './monitor.js'
import {
  addSystemRemove, addUserCommands, describeIntegration, fmtTime, integrationDetails, openStore, writeIntegrationStats, type IntegrationDetails,
} from './cli-integration.js'

const collect = (v: string, prev: string[] = []): string[] => [...prev, v]

function withRegistry<T>(configPath: string, fn: (r: Registry, store: InnerStore) => T): T {
  const { store } = openStore(configPath)
  try {
    return fn(new Registry(store.db), store)
  } finally {
    store.close()
  }
}

function describeSystem(s: SystemInfo): string {
  return [
    `id:          ${s.id}`,
    `name:        ${s.name}`,
    `mode:        ${s.mode}`,
    `enabled:     ${s.enabled ? 'yes' : 'no (停用)'}`,
    `url:         ${s.url ?? '-'}`,
    `interval:    ${s.intervalSeconds === null ? '-' : `${s.intervalSeconds}s`}`,
    `scope:       ${s.scopes.join(', ') || '-'}`,
    `allow-ip:    ${s.allowIps.join(', ') || 'any'}`,
    `callback:    ${s.callback ?? '-'}`,
    `actions:     ${s.actionTypes.join(', ') || '-'}`,
    `rate limit:  ${s.rateLimit === null ? 'default' : `${s.rateLimit}/s`}`,
    `description: ${s.description || '-'}`,
    `created:     ${fmtTime(s.createdAt)}`,
    `updated:     ${fmtTime(s.updatedAt)}`,
  ].join('\n')
}

/** What `system show` (and `system update`) prints: the registration, its auth codes, poll health and rejections. */
function systemView(r: Registry, store: InnerStore, s: SystemInfo): { s: SystemInfo; codes: ReturnType<Registry['codes']>; details: IntegrationDetails } {
  return { s, codes: r.codes(s.id), details: integrationDetails(store.db, s) }
}

function printSystemView({ s, codes, details }: ReturnType<typeof systemView>, json: boolean, extra: Record<string, unknown> = {}): void {
  if (json) return printJson({ ...s, authCodes: codes, ...details, ...extra })
  process.stdout.write(describeSystem(s) + '\n')
  for (const c of codes) process.stdout.write(`auth code:   ${c.code}  ${c.expiresAt === null ? '(current)' : `(expires ${fmtTime(c.expiresAt)})`}\n`)
  process.stdout.write(describeIntegration(s, details))
}

function parsePositiveInt(name: string) {
  return (v: string): number => {
    if (!/^\d+$/.test(v) || Number(v) < 1) throw new RelayError('ERR_CLI_USAGE', { reason: `${name} must be a positive integer` })
    return Number(v)
  }
}

function printTrace(t: Trace): void {
  process.stdout.write(`message ${t.id}  seq ${t.seq}  system ${t.system}  user ${t.user}  quantity ${t.quantity}  source ${t.source}\n`)
  const base = t.stages.received ?? 0
  for (const [stage, at] of Object.entries(t.stages)) {
    process.stdout.write(`  ${stage.padEnd(11)} ${fmtTime(at)}  (+${at - base} ms)\n`)
  }
}

export function createProgram(): Command {
  const program = new Command('todo-inner')
    .description('todo center, private-network side: intake, storage, signing, portal, link to the DMZ')
    .showHelpAfterError('(add --help for usage)')

  addKeygen(program, 'inner')

  program.command('serve')
    .description('run the daemon until SIGTERM (a second signal exits at once)')
    .requiredOption('--config <file>', 'inner.json')
    .action(async (opts: { config: string }) => {
      const daemon = build(loadInnerConfig(opts.config))
      await daemon.start()
      await runUntilSignal(daemon, daemon.log)
    })

  const system = program.command('system').description('register and manage business systems (注册, 白名单)')

  system.command('add')
    .description('register a business system; prints its auth code (授权码)')
    .requiredOption('--config <file>', 'inner.json')
    .requiredOption('--name <name>', 'system name shown to users, e.g. 建设项目')
    .addOption(new Option('--mode <mode>', 'integration mode').choices(MODES as string[]).makeOptionMandatory())
    .option('--url <url>', 'poll URL (pull-user, pull-all)')
    .option('--interval <seconds>', 'poll interval in seconds (default 60)', parsePositiveInt('--interval'))
    .addOption(new Option('--scope <scope>', 'levels that use the system (repeatable)').choices(SCOPES as string[]).argParser(collect))
    .option('--allow-ip <cidr>', 'only accept pushes from this address range (repeatable; IPv4 or IPv6)', collect)
    .option('--callback <url>', 'where user actions are POSTed')
    .option('--action-types <list>', 'action types users may send to the callback, comma-separated (default read,handle)', parseActionTypes)
    .option('--description <text>', 'free text')
    .option('--rate <perSecond>', 'records per second before E_RATE (default: config intake.ratePerSecond)', parsePositiveInt('--rate'))
    .option('--json', 'print JSON')
    .action((o: { config: string; name: string; mode: Mode; url?: string; interval?: number; scope?: Scope[]; allowIp?: string[]; callback?: string; actionTypes?: string[]; description?: string; rate?: number; json?: boolean }) => {
      const { system: s, authCode } = withRegistry(o.config, (r) => r.add({
        name: o.name, mode: o.mode,
        ...(o.url !== undefined ? { url: o.url } : {}),
        ...(o.interval !== undefined ? { intervalSeconds: o.interval } : {}),
        scopes: o.scope ?? [], allowIps: o.allowIp ?? [],
        ...(o.callback !== undefined ? { callback: o.callback } : {}),
        ...(o.actionTypes !== undefined ? { actionTypes: o.actionTypes } : {}),
        ...(o.description !== undefined ? { description: o.description } : {}),
        ...(o.rate !== undefined ? { rateLimit: o.rate } : {}),
      }))
      if (o.json) return printJson({ ...s, authCode })
      process.stderr.write(`registered ${s.name} as ${s.id} (mode ${s.mode}); its auth code (授权码):\n`)
      process.stdout.write(`${authCode}\n`)
    })

  system.command('list')
    .description('list registered systems')
    .requiredOption('--config <file>', 'inner.json')
    .option('--json', 'print JSON')
    .action((o: { config: string; json?: boolean }) => {
      const list = withRegistry(o.config, (r) => r.list())
      if (o.json) return printJson(list)
      if (list.length === 0) return void process.stdout.write('no systems registered (todo-inner system add --help)\n')
      for (const s of list) process.stdout.write(`${s.id}  ${s.enabled ? 'enabled ' : 'disabled'}  ${s.mode.padEnd(9)}  ${s.name}\n`)
    })

  system.command('show')
    .description('show one system (by id or name), with its auth codes')
    .argument('<system>', 'id or name')
    .requiredOption('--config <file>', 'inner.json')
    .option('--json', 'print JSON')
    .action((id: string, o: { config: string; json?: boolean }) => {
      printSystemView(withRegistry(o.config, (r, store) => systemView(r, store, r.get(id))), o.json === true)
    })

  system.command('update')
    .description('change a registration in place: id, auth codes and users\' counts stay (remove + add would zero the counts); '
      + 'given lists replace the whole list; prints the system as `system show` does')
    .argument('<system>', 'id or name')
    .requiredOption('--config <file>', 'inner.json')
    .option('--name <name>', 'new name')
    .addOption(new Option('--mode <mode>', 'cannot change: accepted only when equal to the current mode (to change it, remove the system and add it again)').choices(MODES as string[]))
    .option('--url <url>', 'poll URL (a pull system always keeps one)')
    .option('--interval <seconds>', 'poll interval in seconds (pull systems)', parsePositiveInt('--interval'))
    .addOption(new Option('--scope <scope>', 'levels that use the system (repeatable; replaces the list)').choices(SCOPES as string[]).argParser(collect))
    .option('--allow-ip <cidr>', 'accept pushes only from these address ranges (repeatable; replaces the list)', collect)
    .addOption(new Option('--clear-allow-ip', 'accept pushes from any address').conflicts('allowIp'))
    .option('--callback <url>', 'where user actions are POSTed')
    .addOption(new Option('--clear-callback', 'remove the callback (actions are refused with E_ACTION_NO_CALLBACK)').conflicts('callback'))
    .option('--action-types <list>', 'action types users may send to the callback, comma-separated (replaces the list)', parseActionTypes)
    .option('--description <text>', 'free text')
    .option('--rate <perSecond>', 'records per second before E_RATE', parsePositiveInt('--rate'))
    .addOption(new Option('--clear-rate', 'use the config\'s intake.ratePerSecond again').conflicts('rate'))
    .option('--json', 'print JSON (as `system show --json`, plus `changed`)')
    .action((id: string, o: {
      config: string; name?: string; mode?: Mode; url?: string; interval?: number; scope?: Scope[]; allowIp?: string[]; clearAllowIp?: boolean
      callback?: string; clearCallback?: boolean; actionTypes?: string[]; description?: string; rate?: number; clearRate?: boolean; json?: boolean
    }) => {
      const changes: SystemUpdate = {
        ...(o.mode !== undefined ? { mode: o.mode } : {}),
        ...(o.name !== undefined ? { name: o.name } : {}),
        ...(o.url !== undefined ? { url: o.url } : {}),
        ...(o.interval !== undefined ? { intervalSeconds: o.interval } : {}),
        ...(o.scope !== undefined ? { scopes: o.scope } : {}),
        ...(o.allowIp !== undefined ? { allowIps: o.allowIp } : o.clearAllowIp ? { allowIps: [] } : {}),
        ...(o.callback !== undefined ? { callback: o.callback } : o.clearCallback ? { callback: null } : {}),
        ...(o.actionTypes !== undefined ? { actionTypes: o.actionTypes } : {}),
        ...(o.description !== undefined ? { description: o.description } : {}),
        ...(o.rate !== undefined ? { rateLimit: o.rate } : o.clearRate ? { rateLimit: null } : {}),
      }
      const { view, changed } = withRegistry(o.config, (r, store) => {
        const u = r.update(id, changes)
        return { view: systemView(r, store, u.system), changed: u.changed }
      })
      if (!o.json) process.stderr.write(changed.length === 0 ? 'nothing changed: the given values are the current ones\n' : `updated ${changed.join(', ')}\n`)
      printSystemView(view, o.json === true, { changed })
    })

  for (const [verb, enabled] of [['enable', true], ['disable', false]] as const) {
    system.command(verb)
      .description(enabled ? 'accept the system\'s messages again' : 'refuse the system\'s messages (E_SYSTEM_DISABLED) without deleting anything')
      .argument('<system>', 'id or name')
      .requiredOption('--config <file>', 'inner.json')
      .option('--json', 'print JSON')
      .action((id: string, o: { config: string; json?: boolean }) => {
        const s = withRegistry(o.config, (r) => r.setEnabled(id, enabled))
        if (o.json) return printJson(s)
        process.stdout.write(`${s.id} ${s.name}: ${enabled ? 'enabled' : 'disabled'}\n`)
      })
  }

  system.command('rotate-code')
    .description('issue a new auth code; old codes keep working for the grace period')
    .argument('<system>', 'id or name')
    .requiredOption('--config <file>', 'inner.json')
    .option('--grace <duration>', 'how long the old code stays valid (e.g. 30m, 24h, 0)', '24h')
    .option('--json', 'print JSON')
    .action((id: string, o: { config: string; grace: string; json?: boolean }) => {
      const r = withRegistry(o.config, (reg) => reg.rotateCode(id, parseDuration(o.grace)))
      if (o.json) return printJson({ ...r.system, authCode: r.authCode, oldCodesExpireAt: r.oldCodesExpireAt })
      process.stderr.write(`new auth code for ${r.system.name} (${r.system.id}); old codes valid until ${fmtTime(r.oldCodesExpireAt)}:\n`)
      process.stdout.write(`${r.authCode}\n`)
    })

  addSystemRemove(system)
  addUserCommands(program)

  program.command('trace')
    .description('lifecycle of one message (by id or seq), or of a user\'s recent messages')
    .argument('[message]', 'message id or seq')
    .requiredOption('--config <file>', 'inner.json')
    .option('--user <login>', 'trace a user\'s recent messages')
    .option('--system <id>', 'with --user: only this system')
    .option('--json', 'print JSON')
    .action((id: string | undefined, o: { config: string; user?: string; system?: string; json?: boolean }) => {
      if (!id && !o.user) throw new RelayError('ERR_CLI_USAGE', { reason: 'give a MESSAGE_ID or --user LOGIN' })
      const { store } = openStore(o.config)
      try {
        if (id) {
          const t = traceMessage(store, id)
          if (!t) throw new RelayError('ERR_MESSAGE_NOT_FOUND', { reason: id })
          return o.json ? printJson(t) : printTrace(t)
        }
        const list = traceUser(store, o.user!, o.system)
        if (o.json) return printJson(list)
        if (list.length === 0) process.stdout.write(`no messages for ${o.user}\n`)
        for (const t of list) printTrace(t)
      } finally {
        store.close()
      }
    })

  program.command('stats')
    .description('produced, forwarded, acked, delivered, read, backlog and latencies, per system and overall')
    .requiredOption('--config <file>', 'inner.json')
    .option('--json', 'print JSON')
    .action((o: { config: string; json?: boolean }) => {
      const { store } = openStore(o.config)
      try {
        const stats = collectStats(store, new Registry(store.db).list())
        if (o.json) return printJson(stats)
        const w = process.stdout
        w.write(`center epoch ${stats.center.epoch}, last seq ${stats.center.lastSeq}\n\n`)
        w.write('system            produced  forwarded  acked  delivered  read  superseded  name\n')
        for (const s of stats.systems) {
          w.write(`${s.id.padEnd(16)}  ${String(s.produced).padStart(8)}  ${String(s.forwarded).padStart(9)}  ${String(s.acked).padStart(5)}  ${String(s.delivered).padStart(9)}  ${String(s.read).padStart(4)}  ${String(s.superseded).padStart(10)}  ${s.name}${s.enabled ? '' : ' (disabled)'}\n`)
        }
        const t = stats.totals
        w.write(`${'total'.padEnd(16)}  ${String(t.produced).padStart(8)}  ${String(t.forwarded).padStart(9)}  ${String(t.acked).padStart(5)}  ${String(t.delivered).padStart(9)}  ${String(t.read).padStart(4)}  ${String(t.superseded).padStart(10)}\n\n`)
        for (const p of stats.peers) w.write(`peer ${p.kind} ${p.url}: acked ${p.ackedSeq}, backlog ${p.backlog}, connected ${fmtTime(p.connectedAt)}${p.lastError ? `, last error: ${p.lastError}` : ''}\n`)
        const l = stats.latency
        const fmt = (p: typeof l.storedToAcked): string => (p.n === 0 ? 'n/a' : `p50 ${p.p50} ms, p95 ${p.p95} ms, p99 ${p.p99} ms (n=${p.n})`)
        w.write(`latency received→stored: ${fmt(l.receivedToStored)}\nlatency stored→acked:    ${fmt(l.storedToAcked)}\nlatency stored→delivered: ${fmt(l.storedToDelivered)}\n`)
        const a = stats.actions
        w.write(`actions: ${a.forwarded} being delivered, ${a.delivered} delivered, ${a.failed} failed\n`)
        writeIntegrationStats(w, stats)
      } finally {
        store.close()
      }
    })

  exitOverrideAll(program)
  return program
}

export function run(argv: string[]): Promise<number> {
  return runProgram(createProgram(), argv, 'todo-inner')
}
