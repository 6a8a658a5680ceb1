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
 * A child logger that is made on first use. fastify makes one per request to bind its reqid, but an
 * allowed call logs nothing: pino's child (bindings serialized up front) would be made for nothing.
 */
export function lazyChild (parent: Logger, bindings: Record<string, unknown>): Logger {
  let child: Logger | undefined
  const log = (): Logger => (child ??= parent.child(bindings))
  return {
    trace: (...args: Parameters<Logger['trace']>) => log().trace(...args),
    debug: (...args: Parameters<Logger['debug']>) => log().debug(...args),
    info: (...args: Parameters<Logger['info']>) => log().info(...args),
    warn: (...args: Parameters<Logger['warn']>) => log().warn(...args),
    error: (...args: Parameters<Logger['error']>) => log().error(...args),
    fatal: (...args: Parameters<Logger['fatal']>) => log().fatal(...args),
    silent: () => {},
    child: (more: Record<string, unknown>) => log().child(more),
    isLevelEnabled: (level: string) => parent.isLevelEnabled(level),
    get level () { return parent.level }
  } as unknown as Logger
}
