import { existsSync, readFileSync } from 'node:fs'

let found: string | undefined

/** The package's version, from the package.json above this file (dist/src/ when built, src/ under the tests). */
export function packageVersion (): string {
  if (found !== undefined) return found
  for (const up of ['../package.json', '../../package.json']) {
    const file = new URL(up, import.meta.url)
    if (!existsSync(file)) continue
    const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: string, version?: string }
    if (pkg.name === 'frp-plugin-gateway' && typeof pkg.version === 'string') return (found = pkg.version)
  }
  return (found = 'unknown')
}
