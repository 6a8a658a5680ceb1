import pino, { type DestinationStream, type Logger } from 'pino'
import { clip } from './protocol.js'

const SECRET_FIELDS = new Set(['privilege_key', 'http_pwd', 'sk', 'group_key'])
// anywhere in a name, any case: api_key, X-Api-Key, Proxy-Authorization, Set-Cookie, sessionId, privateKey
const SECRET_PART = /token|secret|passw|pwd|passphrase|credential|cookie|session|signature|private_?key|api_?key|authori[sz]ation|bearer|jwt/i
// only as a whole word of a name (split at non-alphanumerics and camelCase): auth, x-auth-user, access_key, sig; not monkey, author
const SECRET_WORD = /(?:^|[^a-z0-9])(?:auth|oauth|key|keys|pass|sig|csrf|xsrf)(?:$|[^a-z0-9])/
// a word starts at a capital after a lower-case letter or digit (accessKey), or at the last capital of a run
// before a lower-case letter: an acronym's end (SSHKey, XAuthUser)
const CAMEL_WORD = /([a-z0-9])([A-Z])|([A-Z])([A-Z][a-z])/g
const REDACTED = '[redacted]'
// content deeper than this is not walked for a log line (frp's nests 3 levels)
const MAX_LOG_DEPTH = 32

/** True for a field, meta, annotation or header name that may hold a secret. */
export function isSecretName (name: string): boolean {
  return SECRET_FIELDS.has(name) || SECRET_PART.test(name) ||
    SECRET_WORD.test(name.replace(CAMEL_WORD, '$1$3_$2$4').toLowerCase())
}

/**
 * A copy of content fit for a log line: the value of every key named like a secret, at any depth
 * (frp's secret fields, metas, user.metas, annotations, headers, response_headers), is masked
 * (a boolean, like client_spec.always_auth_pass, holds no secret).
 */
export function redactContent (value: unknown, depth = 0): unknown {
  if (value === null || typeof value !== 'object') return value
  if (depth >= MAX_LOG_DEPTH) return '[too deep]'
  if (Array.isArray(value)) return value.map(v => redactContent(v, depth + 1))
  const out: Record<string, unknown> = {}
  for (const [key, v] of Object.entries(value)) {
    Object.defineProperty(out, key, {
      value: v !== null && v !== '' && typeof v !== 'boolean' && isSecretName(key) ? REDACTED : redactContent(v, depth + 1),
      enumerable: true,
      writable: true,
      configurable: true
    })
  }
  return out
}

// pino escapes only U+0000 to U+001F: these also split or disguise lines (C1 controls and NEL, line and
// paragraph separators, bidi controls, BOM, lone surrogates). They can only occur inside JSON strings.
const UNSAFE = /[\u007f-\u009f\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g
const escapeChar = (c: string): string => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`

/** JSON text with every UNSAFE character as a \u escape: same value, one line on every shipper. */
export const escapeUnsafe = (json: string): string => json.replace(UNSAFE, escapeChar)

const MAX_ECHO = 64
const MAX_LOGGED_REASON = 512

/** A reason as a log line holds it: a template may render caller content (a 1 MiB user name); frpc gets it whole. */
export const loggedReason = (reason: string): string => clip(reason, MAX_LOGGED_REASON)

/** A caller's value for an error message: JSON-escaped, cut after MAX_ECHO characters with a marker. */
export function quote (value: unknown): string {
  const text = typeof value === 'string' ? value : String(JSON.stringify(value))
  if (text.length <= MAX_ECHO) return escapeUnsafe(typeof value === 'string' ? JSON.stringify(text) : text)
  const cut = text.slice(0, MAX_ECHO)
  return `${escapeUnsafe(typeof value === 'string' ? JSON.stringify(cut) : cut)}... (${text.length} characters)`
}

// frps sends 16 hex digits; anything else a caller sends is bounded before it reaches a log line or a downstream
const REQID = /^[\w.:-]{1,64}$/
const REQID_KEPT = 48
let generated = 0

/** The reqid of a call: X-Frp-Reqid as sent when it is 1 to 64 of [A-Za-z0-9_.:-], else made safe, else generated. */
export function reqidOf (header: string | string[] | undefined): string {
  if (typeof header !== 'string' || header === '') {
    generated = (generated + 1) & 0x7fffffff
    return `req-${generated.toString(36)}`
  }
  if (REQID.test(header)) return header
  const safe = header.slice(0, REQID_KEPT).replace(/[^\w.:-]/g, '_')
  return header.length > REQID_KEPT ? `${safe}...+${header.length - REQID_KEPT}` : safe
}

export interface LogOptions {
  level: string
  redact: string[]
  /** a repeated warning (same step, same error code) logs in full once, then one summary line per interval; 0: every one in full */
  repeatIntervalMs?: number
}

const REPEAT_INTERVAL_MS = 10_000

interface Repeats { intervalMs: number, seen: Map<string, { suppressed: number, brief: Record<string, unknown> }> }
const repeatsOf = new WeakMap<Logger, Repeats>()

/** Why pino refuses a redact path (it throws only when a logger is made, after the config is taken), or undefined. */
export function redactPathProblem (path: string): string | undefined {
  try {
    pino({ redact: [path] }, { write () {} })
    return undefined
  } catch (err) {
    return (err as Error).message
  }
}

/**
 * pino's err serializer, whose message appends every cause's: the gateway's errors already quote their
 * cause (`reading K failed: ETIMEDOUT`), which it wrote twice or three times. A cause is appended only when not said.
 */
function serializeErr (err: Error): ReturnType<typeof pino.stdSerializers.err> {
  const out = pino.stdSerializers.err(err)
  if (!(err instanceof Error)) return out
  let message = err.message
  const seen = new Set<unknown>([err])
  for (let cause = err.cause; cause instanceof Error && !seen.has(cause); cause = cause.cause) {
    seen.add(cause)
    if (!message.includes(cause.message)) message += `: ${cause.message}`
  }
  out.message = message
  return out
}

/** pino JSON logs; content is always logged under `content`, through redactContent. */
export function createLogger (options: LogOptions, destination?: DestinationStream): Logger {
  const logger = pino({
    level: options.level,
    redact: { paths: options.redact, censor: REDACTED },
    serializers: { content: redactContent, err: serializeErr },
    hooks: { streamWrite: escapeUnsafe }
    // stdout written synchronously: pino's default buffer is flushed at exit by a loop that retries a
    // broken pipe (a log reader gone) for ever, so a stop never ended
  }, destination ?? pino.destination({ dest: 1, sync: true }))
  repeatsOf.set(logger, { intervalMs: options.repeatIntervalMs ?? REPEAT_INTERVAL_MS, seen: new Map() })
  return logger
}

/**
 * A call's logger, bound to its reqid, whose pino child is made on first use: an allowed call logs
 * nothing, and pino serializes a child's bindings up front.
 */
class CallLogger {
  #child: Logger | undefined
  constructor (readonly parent: Logger, private readonly reqid: string) {}
  get #log (): Logger { return (this.#child ??= this.parent.child({ reqid: this.reqid })) }
  trace (...args: Parameters<Logger['trace']>): void { this.#log.trace(...args) }
  debug (...args: Parameters<Logger['debug']>): void { this.#log.debug(...args) }
  info (...args: Parameters<Logger['info']>): void { this.#log.info(...args) }
  warn (...args: Parameters<Logger['warn']>): void { this.#log.warn(...args) }
  error (...args: Parameters<Logger['error']>): void { this.#log.error(...args) }
  fatal (...args: Parameters<Logger['fatal']>): void { this.#log.fatal(...args) }
  child (bindings: Record<string, unknown>): Logger { return this.#log.child(bindings) }
  isLevelEnabled (level: string): boolean { return this.parent.isLevelEnabled(level) }
}

export const callLogger = (parent: Logger, reqid: string): Logger => new CallLogger(parent, reqid) as unknown as Logger

/**
 * A warning that can repeat at the call rate (a store or a downstream down): the first of `key` logs
 * `full`, the next ones are counted, and every interval in which some were, one line says how many
 * (with `brief` of the last one). A quiet interval ends it: the next one logs in full again.
 */
export function warnRepeated (log: Logger, key: string, full: Record<string, unknown>, brief: Record<string, unknown>, msg: string): void {
  const root = log instanceof CallLogger ? log.parent : log
  let repeats = repeatsOf.get(root)
  if (repeats === undefined) repeatsOf.set(root, repeats = { intervalMs: REPEAT_INTERVAL_MS, seen: new Map() })
  const { seen, intervalMs } = repeats
  if (intervalMs === 0) return log.warn(full, msg)
  const entry = seen.get(key)
  if (entry !== undefined) {
    entry.suppressed++
    entry.brief = brief
    return
  }
  log.warn(full, msg)
  const fresh = { suppressed: 0, brief }
  seen.set(key, fresh)
  const tick = (): void => {
    if (fresh.suppressed === 0) {
      seen.delete(key)
      return
    }
    root.warn({ ...fresh.brief, suppressed: fresh.suppressed, intervalMs }, `${msg} (repeats)`)
    fresh.suppressed = 0
    setTimeout(tick, intervalMs).unref()
  }
  setTimeout(tick, intervalMs).unref()
}
