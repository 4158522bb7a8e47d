/** todo-outer's command line (DESIGN §3.1). */
import { Command } from 'commander'
import { addKeygen, exitOverrideAll, runProgram, runUntilSignal } from '../shared/cli-util.js'
import { RelayError } from '../shared/errors.js'
import { mintToken, parseDuration } from '../shared/tokens.js'
import { loadOuterConfig } from './config.js'
import { build } from './daemon.js'

export function createProgram(): Command {
  const program = new Command('todo-outer')
    .description('todo center, DMZ side: accepts only the inner\'s authenticated link and serves mobile clients')
    .showHelpAfterError('(add --help for usage)')

  addKeygen(program, 'outer')

  program.command('serve')
    .description('run the daemon until SIGTERM (a second signal exits at once)')
    .requiredOption('--config <file>', 'outer.json')
    .action(async (opts: { config: string }) => {
      const daemon = build(loadOuterConfig(opts.config))
      await daemon.start()
      await runUntilSignal(daemon, daemon.log)
    })

  program.command('token')
    .description('mint a client token (JWT) for a user; for tests and the demo, where the outer holds a signing key')
    .requiredOption('--config <file>', 'outer.json')
    .requiredOption('--user <login>', 'login name (the token\'s sub)')
    .option('--ttl <duration>', 'lifetime, e.g. 15m, 1h, 7d', '1h')
    .action(async (o: { config: string; user: string; ttl: string }) => {
      if (o.user.length === 0 || o.user.length > 128) throw new RelayError('ERR_CLI_USAGE', { reason: '--user must be 1..128 characters' })
      const ttl = parseDuration(o.ttl)
      if (ttl <= 0) throw new RelayError('ERR_CLI_USAGE', { reason: '--ttl must be positive' })
      const config = loadOuterConfig(o.config)
      process.stdout.write(`${await mintToken(config.tokens, o.user, ttl)}\n`)
    })

  exitOverrideAll(program)
  return program
}

export function run(argv: string[]): Promise<number> {
  return runProgram(createProgram(), argv, 'todo-outer')
}
