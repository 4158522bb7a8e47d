// Copies the static web files next to the compiled code, since tsc only emits .ts output: the client page
// (shared/web → dist/shared/web) and the inner's admin console (inner/admin-web → dist/inner/admin-web).
// Plain Node, no dependencies: it runs inside `npm run build`.
import { cpSync, existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const folders = [['shared', 'web'], ['inner', 'admin-web']]
const missing = folders.map((f) => join(root, ...f)).filter((from) => !existsSync(from))
if (missing.length > 0) {
  console.error(`copy-assets: missing ${missing.join(', ')}`)
  process.exit(1)
}
for (const f of folders) cpSync(join(root, ...f), join(root, 'dist', ...f), { recursive: true })
