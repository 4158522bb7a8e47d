#!/usr/bin/env node
// Entry point: the only place that reads argv and exits.
import { run } from './cli.js'

run(process.argv).then((code) => process.exit(code), (e: unknown) => {
  process.stderr.write(`todo-outer: error: ${String(e)}\n`)
  process.exit(1)
})
