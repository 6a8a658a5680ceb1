import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

export interface Sample {
  note?: string
  query: string
  headers?: Record<string, string>
  body: { version: string, op: string, content: Record<string, any> }
}

/** Requests recorded from a real frps (or shaped like current frps), one per line. */
export function loadSamples (name: string): Sample[] {
  const file = fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url))
  return readFileSync(file, 'utf8').split('\n').filter(line => line.trim() !== '').map(line => JSON.parse(line) as Sample)
}
