import { readFile } from 'node:fs/promises'
import { ConfigError, type ConfigIssue } from './errors.js'
import { describeJsonError, duplicateKeys } from './json-error.js'

/** A JSON file's value; a ConfigError at `(file)` when it cannot be read or is not JSON. */
export async function readJsonFile (file: string): Promise<unknown> {
  return (await readJsonText(file)).value
}

/** Every key an object of the file's text holds twice, as config issues: JSON.parse would keep the last one without a word. */
export function duplicateKeyIssues (text: string): ConfigIssue[] {
  return duplicateKeys(text).map(d => ({ path: d.path, message: `given again on line ${d.line} (first on line ${d.first}): JSON would keep only the last` }))
}

/** readJsonFile, with the text the value was parsed from. */
export async function readJsonText (file: string): Promise<{ text: string, value: unknown }> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new ConfigError(file, [{ path: '(file)', message: `cannot read: ${(err as Error).message}` }])
  }
  // editors on Windows save UTF-8 with a byte order mark, which JSON.parse refuses as an unexpected character
  if (text.startsWith('\uFEFF')) text = text.slice(1)
  try {
    return { text, value: JSON.parse(text) }
  } catch {
    // JSON.parse's message quotes the file around the error, which may hold a password
    throw new ConfigError(file, [{ path: '(file)', message: `not valid JSON: ${describeJsonError(text, { lines: true })}` }])
  }
}
