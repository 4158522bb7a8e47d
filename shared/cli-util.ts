/**
 * What both daemons' command lines share: one-line human errors with no stack trace, exit codes
 * (2 usage, 1 failure), `keygen`, and `serve` with signal handling (first SIGTERM/SIGINT drains and
 * exits 0; a second exits at once).
 */
import { Command, CommanderError } from 'commander'
import { generateKeyFiles } from './crypto.js'
import { isRelayError } from './errors.js'

export interface Closable { close(): Promise<void> }

/** Runs a commander program; returns the process exit code. */
export async function runProgram(program: Command, argv: string[], name: string): Promise<number> {
  // Subcommands copy the parent's output settings only when created, so set them on the whole tree:
  // otherwise `todo-inner system add` errors would lose the program-name prefix.
  const configure = (cmd: Command): void => {
    cmd.exitOverride()
    cmd.configureOutput({ outputError: (str, write) => write(str.trim().startsWith('error:') ? `${name}: ${str.trim()}\n` : str) })
    for (const c of cmd.commands) configure(c)
  }
  configure(program)
  try {
    await program.parseAsync(argv)
    return typeof process.exitCode === 'number' ? process.exitCode : 0
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return 0
      return e.exitCode === 0 ? 0 : 2
    }
    if (isRelayError(e)) {
      process.stderr.write(`${name}: error: ${e.message}\n`)
      return e.code === 'ERR_CLI_USAGE' ? 2 : 1
    }
    const err = e as NodeJS.ErrnoException
    process.stderr.write(`${name}: error: ${err.code ? `${err.code}: ` : ''}${err.message ?? String(e)}\n`)
    return 1
  }
}

/** Applies exitOverride to a subcommand tree (commander sets it per command). */
export function exitOverrideAll(cmd: Command): void {
  cmd.exitOverride()
  for (const c of cmd.commands) exitOverrideAll(c)
}

export function addKeygen(program: Command, name: 'inner' | 'outer'): void {
  program.command('keygen')
    .description(`create an ed25519 key pair: DIR/${name}.key (mode 0600) and DIR/${name}.pub; prints the public key`)
    .requiredOption('--out <dir>', 'folder for the key files')
    .option('--force', 'overwrite an existing key (every peer that pinned the old key must be updated)')
    .action((opts: { out: string; force?: boolean }) => {
      const r = generateKeyFiles(opts.out, name, opts.force === true)
      process.stderr.write(`wrote ${r.keyFile} (0600) and ${r.pubFile}\n`)
      process.stdout.write(`${r.publicKey}\n`)
    })
}

/** Keeps a started daemon running until a signal; resolves after a clean drain. */
export function runUntilSignal(daemon: Closable, log: { info(o: object, m: string): void }): Promise<void> {
  return new Promise((resolve, reject) => {
    let stopping = false
    const onSignal = (sig: NodeJS.Signals): void => {
      if (stopping) {
        log.info({ signal: sig }, 'second signal: exiting now')
        process.exit(1)
      }
      stopping = true
      log.info({ signal: sig }, 'draining')
      daemon.close().then(resolve, reject)
    }
    process.on('SIGTERM', onSignal)
    process.on('SIGINT', onSignal)
  })
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n')
}
