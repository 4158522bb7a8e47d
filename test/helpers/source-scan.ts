/**
 * Reading TypeScript sources as text for structural tests (import edges, what a daemon may call): comments
 * stripped, module specifiers listed.
 */

/** The source without comments (strings survive, which is what the scans want). */
export function stripComments(source: string): string {
  return source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1')
}

/** Every module specifier in `source`: import/export … from '…', import '…', import('…'), require('…'). */
export function specifiers(source: string): string[] {
  // Comments could mention imports; strip them first.
  const code = stripComments(source)
  const out: string[] = []
  const patterns = [
    /\b(?:import|export)\s+(?:type\s+)?[^'"`;]*?\bfrom\s*['"]([^'"]+)['"]/g,
    /\bimport\s*['"]([^'"]+)['"]/g,
    /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
    /\brequire\s*\(\s*['"]([^'"]+)['"]\s*\)/g,
  ]
  for (const re of patterns) for (const m of code.matchAll(re)) out.push(m[1]!)
  return out
}
