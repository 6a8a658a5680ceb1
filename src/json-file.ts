import { closeSync, constants, fstatSync, openSync, readFileSync, type Stats } from 'node:fs'
import { open } from 'node:fs/promises'
import { ConfigError, type ConfigIssue } from './errors.js'
import { describeJsonError, duplicateKeys } from './json-error.js'
import { parseWellFormed } from './protocol.js'

/** Every key an object of the file's text holds twice, as config issues: JSON.parse would keep the last one without a word. */
export function duplicateKeyIssues (text: string): ConfigIssue[] {
  return duplicateKeys(text).map(d => ({ path: d.path, message: `given again on line ${d.line} (first on line ${d.first}): JSON would keep only the last` }))
}

// past the config's bound (100 levels, config.ts): what lies deeper is refused there
const MAX_JSON_FILE_DEPTH = 101

/** What the gateway reads whole (a config, a users file, trace's content): far more than any real one, far less than would exhaust the heap. */
export const MAX_FILE_BYTES = 256 * 1024 * 1024

/** A file's kind, as a problem: anything but a regular file (a FIFO would block the read for ever, a device never end). */
export function notRegular (stats: Stats): string | undefined {
  if (stats.isFile()) return undefined
  const kind = stats.isDirectory() ? 'a folder' : stats.isFIFO() ? 'a FIFO' : stats.isSocket() ? 'a socket' : stats.isCharacterDevice() || stats.isBlockDevice() ? 'a device' : 'not a file'
  return `is ${kind}, not a regular file`
}

/**
 * A regular file's text (UTF-8), at most `maxBytes`; else an Error saying why. Opened without blocking
 * (a FIFO with no writer), then checked on the open file, so a symlink swapped meanwhile changes nothing.
 */
export async function readTextFile (file: string, maxBytes = MAX_FILE_BYTES): Promise<string> {
  const handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK)
  try {
    checkReadable(await handle.stat(), maxBytes)
    return await handle.readFile('utf8')
  } finally {
    await handle.close()
  }
}

/** readTextFile's bytes, read at once (certificates and keys, read while the config is checked). */
export function readFileBytesSync (file: string, maxBytes = MAX_FILE_BYTES): Buffer {
  const fd = openSync(file, constants.O_RDONLY | constants.O_NONBLOCK)
  try {
    checkReadable(fstatSync(fd), maxBytes)
    return readFileSync(fd)
  } finally {
    closeSync(fd)
  }
}

function checkReadable (stats: Stats, maxBytes: number): void {
  const problem = notRegular(stats)
  if (problem !== undefined) throw new Error(problem)
  if (stats.size > maxBytes) throw new Error(`is ${stats.size} bytes, more than the ${maxBytes} read`)
}

/** A JSON file's value and the text it was parsed from; a ConfigError at `(file)` when it cannot be read or is not JSON. */
export async function readJsonText (file: string): Promise<{ text: string, value: unknown }> {
  let text: string
  try {
    text = await readTextFile(file)
  } catch (err) {
    throw new ConfigError(file, [{ path: '(file)', message: `cannot read: ${(err as Error).message}` }])
  }
  // editors on Windows save UTF-8 with a byte order mark, which JSON.parse refuses as an unexpected character
  if (text.startsWith('\uFEFF')) text = text.slice(1)
  try {
    // read as the calls are: a name written with a lone surrogate is the U+FFFD one a call carries
    return { text, value: parseWellFormed(text, MAX_JSON_FILE_DEPTH) }
  } catch {
    // JSON.parse's message quotes the file around the error, which may hold a password
    throw new ConfigError(file, [{ path: '(file)', message: `not valid JSON: ${describeJsonError(text, { lines: true })}` }])
  }
}
