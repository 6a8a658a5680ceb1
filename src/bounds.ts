import { X509Certificate } from 'node:crypto'
import { z } from 'zod'
import { compileAt } from './errors.js'
import { readFileBytesSync } from './json-file.js'

/**
 * frpc waits 10 s for the answer to its Login (frp client/service.go: SetReadDeadline 10 s before
 * reading LoginResp), and then gives up: no call needs a longer deadline.
 */
export const MAX_DEADLINE_MS = 10_000
/** the longest drainMs: work after answers (records, events) a stop waits for */
export const MAX_DRAIN_MS = 60_000

/**
 * undici's header and body timers tick every 499 ms and count from the tick before they were set: one
 * can fire up to 499 ms before its time. Given half a second more they fire no earlier than `ms`, so
 * the caller's own timer (an AbortSignal) ends a call on time, and where there is none, a call ends
 * between `ms` and `ms` plus one second.
 */
export const undiciTimeouts = (ms: number): { headersTimeout: number, bodyTimeout: number } => ({ headersTimeout: ms + 500, bodyTimeout: ms + 500 })

/** An integer config value; every error names the range the code accepts. */
export function intIn (min: number, max: number, unit = ''): z.ZodNumber {
  const error = `expected an integer from ${min} to ${max}${unit}`
  return z.number({ error }).int({ error }).min(min, { error }).max(max, { error })
}

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** Milliseconds as a duration is written in the config: "8760h", "15m", "30s", "1 ms". */
export const formatDuration = (ms: number): string =>
  ms % 3_600_000 === 0 ? `${ms / 3_600_000}h` : ms % 60_000 === 0 ? `${ms / 60_000}m` : ms % 1000 === 0 ? `${ms / 1000}s` : `${ms} ms`

/** A duration in the config: "30s", "15m", "1h", "7d" (units ms, s, m, h, d) or milliseconds, parsed to milliseconds within the range. */
export function durationIn (minMs: number, maxMs: number, what: string): z.ZodType<number, number | string> {
  const range = `from ${formatDuration(minMs)} to ${formatDuration(maxMs)}`
  return z.union([
    intIn(minMs, maxMs, ` (milliseconds: ${range})`),
    z.string().regex(/^\d+(ms|s|m|h|d)$/, `expected a duration like "1s", "10s", "1m", "1h", "1d" or milliseconds, ${range}`)
  ], { error: `expected milliseconds or a duration like "1s", "10s", "1m", "1h", "1d", ${range}` })
    .transform(d => typeof d === 'number' ? d : Number(/^\d+/.exec(d)?.[0]) * UNITS[d.replace(/^\d+/, '')])
    .refine(ms => ms >= minMs && ms <= maxMs, `expected ${what} ${range}`)
}

/** An http(s) URL for undici, which sends no credentials written in it: refused at config time, not lost at every call. */
export function parseHttpUrl (raw: string): URL {
  const url = new URL(raw)
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`expected an http:// or https:// URL, got ${url.protocol}`)
  if (url.username !== '' || url.password !== '') throw new Error('credentials in the URL are not sent: put an Authorization header in headers')
  return url
}

/**
 * A value in one of several forms, each an object named by its key (`{"webhook": {...}}`, `{"file":
 * {...}}`): parsed as the form its one key names, so a bad value inside a form is reported at
 * its path and why (a union answers it with the forms' names alone). The union stays for the type
 * and the JSON Schema.
 */
export function oneFormOf<const F extends Record<string, z.ZodType>> (forms: F, error: string) {
  const union = z.union(Object.values(forms) as [F[keyof F], ...Array<F[keyof F]>], { error })
  return z.preprocess((raw, ctx) => {
    const keys = typeof raw === 'object' && raw !== null ? Object.keys(forms).filter(k => Object.hasOwn(raw, k)) : []
    // none, or two forms at once: the union's error names the forms
    const parsed = keys.length === 1 ? forms[keys[0]].safeParse(raw) : undefined
    if (parsed?.success === false) for (const issue of parsed.error.issues) ctx.addIssue({ ...issue, input: undefined } as Parameters<typeof ctx.addIssue>[0])
    return raw
  }, union)
}

/** The `tls` option of an https client (forward, a notify webhook): `what` is what the URL names. */
export const clientTls = (what: string) => z.strictObject({
  verify: z.boolean().default(true).describe(`check the certificate of an https ${what}`),
  ca: z.string().optional().describe('path of a PEM file of the CA certificates to trust instead of the system ones')
}).prefault({})

/** tls.connect's options for `url` from a `tls` option, checked at load: a CA file read and parsed, no tls for http://. */
export function connectTls (url: URL | undefined, tls: { verify: boolean, ca?: string }, resolvePath: (path: string) => string): { rejectUnauthorized: boolean, ca?: Buffer } {
  if (url?.protocol === 'http:' && (tls.ca !== undefined || !tls.verify)) compileAt('tls', () => { throw new Error('tls applies to https:// URLs only') })
  const { ca } = tls
  if (ca === undefined) return { rejectUnauthorized: tls.verify }
  return {
    rejectUnauthorized: tls.verify,
    ca: compileAt('tls.ca', () => {
      const path = resolvePath(ca)
      const pem = readFileBytesSync(path)
      try {
        // parsing is the check: a bad file would otherwise only fail at the first connection
        new X509Certificate(pem)
      } catch {
        throw new Error(`${path} holds no PEM certificate`)
      }
      return pem
    })
  }
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/
/** What frames a request: undici sets these, and refuses or garbles a request given one of its own. */
export const FRAMING_HEADERS = ['host', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'expect', 'te', 'trailer']

/**
 * An extra request header of the config, checked once: undici refuses a bad name or value on every
 * request, which would fail every call; `reserved` (lower case) are headers the gateway sets itself;
 * `seen`, the names checked before it in the same object, by their lower case.
 */
export function checkHeader (name: string, value: string, reserved: ReadonlySet<string>, why: string, seen: Map<string, string>): void {
  if (!TOKEN.test(name)) throw new Error('not a valid header name')
  const lower = name.toLowerCase()
  if (reserved.has(lower)) throw new Error(why)
  if (!FIELD_VALUE.test(value)) throw new Error('the value holds a control character')
  const first = seen.get(lower)
  if (first !== undefined) throw new Error(`the same header as ${first} (header names ignore case): both would be sent`)
  seen.set(lower, name)
}

/** A body past its bound: read no further (leaving the loop that reads it destroys the stream). */
export class BodyTooLarge extends Error {}

/** An answer's body as UTF-8 text, read to maxBytes at most as it comes (a chunked one has no Content-Length to check first). */
export async function readBounded (body: AsyncIterable<Buffer>, maxBytes: number): Promise<string> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of body) {
    size += chunk.length
    if (size > maxBytes) throw new BodyTooLarge(`a body of more than ${maxBytes} bytes`)
    chunks.push(chunk)
  }
  return Buffer.concat(chunks, size).toString('utf8')
}
