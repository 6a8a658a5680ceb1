import pino, { type DestinationStream, type Logger } from 'pino'

const SECRET_FIELDS = new Set(['privilege_key', 'http_pwd', 'sk', 'group_key'])
const SECRET_META = /token|secret|password|passwd/i
const REDACTED = '[redacted]'

/** A copy of content fit for a log line: frp's secret fields and secret-looking metas are masked. */
export function redactContent (value: unknown, inMetas = false): unknown {
  if (value === null || typeof value !== 'object') return value
  if (Array.isArray(value)) return value.map(v => redactContent(v))
  const out: Record<string, unknown> = {}
  for (const [key, v] of Object.entries(value)) {
    const secret = SECRET_FIELDS.has(key) || (inMetas && SECRET_META.test(key))
    Object.defineProperty(out, key, {
      value: secret && v !== null && v !== '' ? REDACTED : redactContent(v, key === 'metas'),
      enumerable: true,
      writable: true,
      configurable: true
    })
  }
  return out
}

export interface LogOptions { level: string, redact: string[] }

/** pino JSON logs; content is always logged under `content`, through redactContent. */
export function createLogger (options: LogOptions, destination?: DestinationStream): Logger {
  return pino({
    level: options.level,
    redact: { paths: options.redact, censor: REDACTED },
    serializers: { content: redactContent, err: pino.stdSerializers.err }
  }, destination)
}

/**
 * A call's logger, bound to its reqid, whose pino child is made on first use: an allowed call logs
 * nothing, and pino serializes a child's bindings up front.
 */
class CallLogger {
  #child: Logger | undefined
  constructor (private readonly parent: Logger, private readonly reqid: string) {}
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
