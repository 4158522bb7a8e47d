// Copies the web page's static files (shared/web) next to the compiled code (dist/shared/web),
// since tsc only emits .ts output. Plain Node, no dependencies: it runs inside `npm run build`.
import { cpSync, existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const from = join(root, 'shared', 'web')
const to = join(root, 'dist', 'shared', 'web')
if (!existsSync(from)) {
  console.error(`copy-assets: ${from} is missing`)
  process.exit(1)
}
cpSync(from, to, { recursive: true })
