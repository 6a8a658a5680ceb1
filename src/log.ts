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
