/**
 * Why and where `text` is not JSON, e.g. `unexpected character at position 12`, never quoting it:
 * JSON.parse's own message quotes the text, and a body may hold a secret. Runs only after JSON.parse
 * failed; iterative, so any nesting depth is fine.
 */
export function describeJsonError (text: string, { lines = false } = {}): string {
  const found = findJsonError(text)
  if (found === null) return 'syntax error'
  if (!lines) return `${found.kind} at position ${found.at}`
  // a file is read by line and column
  const before = text.slice(0, found.at)
  const newline = before.lastIndexOf('\n')
  return `${found.kind} at line ${before.split('\n').length}, column ${found.at - newline}`
}

const WHITESPACE = new Set([' ', '\t', '\n', '\r'])
const ESCAPES = new Set(['"', '\\', '/', 'b', 'f', 'n', 'r', 't'])
const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y
const HEX4 = /[0-9a-fA-F]{4}/y
const LITERALS = ['true', 'false', 'null']

interface Found { kind: string, at: number }

export function findJsonError (s: string): Found | null {
  const closers: string[] = []
  let state: 'value' | 'first value' | 'after' | 'key' | 'first key' | 'colon' = 'value'
  let i = 0
  const fail = (kind: string): Found => ({ kind, at: i })
  /** i is at the opening quote; on success, just past the closing one */
  const string = (): Found | null => {
    for (i++; i < s.length; i++) {
      const c = s[i]
      if (c === '"') {
        i++
        return null
      }
      if (c < ' ') return fail('control character in string')
      if (c !== '\\') continue
      i++
      if (s[i] === 'u') {
        HEX4.lastIndex = i + 1
        if (!HEX4.test(s)) return fail('bad unicode escape in string')
        i += 4
      } else if (!ESCAPES.has(s[i])) return fail(i < s.length ? 'bad escape in string' : 'unterminated string')
    }
    return fail('unterminated string')
  }
  while (true) {
    while (WHITESPACE.has(s[i])) i++
    if (i >= s.length) return state === 'after' && closers.length === 0 ? null : fail('unexpected end of input')
    const c = s[i]
    const closer = closers[closers.length - 1]
    if (state === 'after') {
      if (closer === undefined) return fail('unexpected data after the JSON value')
      if (c === ',') state = closer === '}' ? 'key' : 'value'
      else if (c === closer) closers.pop()
      else return fail(`expected "," or "${closer}"`)
      i++
    } else if (state === 'colon') {
      if (c !== ':') return fail('expected ":"')
      state = 'value'
      i++
    } else if (state === 'key' || state === 'first key') {
      if (c === '}' && state === 'first key') {
        closers.pop()
        i++
        state = 'after'
      } else if (c !== '"') return fail('expected a property name in double quotes')
      else {
        const bad = string()
        if (bad !== null) return bad
        state = 'colon'
      }
    } else if (c === ']' && state === 'first value') {
      closers.pop()
      i++
      state = 'after'
    } else if (c === '{' || c === '[') {
      closers.push(c === '{' ? '}' : ']')
      i++
      state = c === '{' ? 'first key' : 'first value'
    } else if (c === '"') {
      const bad = string()
      if (bad !== null) return bad
      state = 'after'
    } else if (c === '-' || (c >= '0' && c <= '9')) {
      NUMBER.lastIndex = i
      if (!NUMBER.test(s)) return fail('invalid number')
      i = NUMBER.lastIndex
      state = 'after'
    } else {
      const literal = LITERALS.find(l => s.startsWith(l, i))
      if (literal === undefined) return fail('unexpected character')
      i += literal.length
      state = 'after'
    }
  }
}

/** A key an object of a JSON text holds twice: JSON.parse keeps the last one without a word. */
export interface DuplicateKey { path: string, line: number, first: number }

/**
 * Every key given again in its object, with its path (`users.alice`, `users.bob.ports`) and the
 * lines of both. Runs on text JSON.parse took, so only strings and brackets need reading.
 */
export function duplicateKeys (text: string): DuplicateKey[] {
  interface Frame { keys?: Map<string, number>, path: string, key: string, index: number, expectKey: boolean }
  const found: DuplicateKey[] = []
  const stack: Frame[] = []
  const at = (f: Frame | undefined): string => f === undefined ? '' : f.keys === undefined ? `${f.path}[${f.index}]` : f.path === '' ? f.key : `${f.path}.${f.key}`
  let line = 1
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    const top = stack[stack.length - 1]
    if (c === '\n') line++
    else if (c === '{' || c === '[') stack.push({ keys: c === '{' ? new Map() : undefined, path: at(top), key: '', index: 0, expectKey: c === '{' })
    else if (c === '}' || c === ']') stack.pop()
    else if (c === ',' && top !== undefined) {
      if (top.keys === undefined) top.index++
      else top.expectKey = true
    } else if (c === '"') {
      let end = i + 1
      while (text[end] !== '"') end += text[end] === '\\' ? 2 : 1
      if (top?.keys !== undefined && top.expectKey) {
        top.key = JSON.parse(text.slice(i, end + 1)) as string
        top.expectKey = false
        const first = top.keys.get(top.key)
        if (first === undefined) top.keys.set(top.key, line)
        else found.push({ path: at(top), line, first })
      }
      i = end
    }
  }
  return found
}
