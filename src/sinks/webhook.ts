import { Pool, type Dispatcher } from 'undici'
import { undiciTimeouts } from '../bounds.js'
import { SinkError, type Sink } from './sink.js'

export interface WebhookOptions {
  url: string
  headers: Record<string, string>
  timeoutMs: number
  /** the step's concurrency (default 4): a send past the pool's connections would wait for one, outside its timeout */
  connections?: number
  /** an https URL's certificate check: the system's CAs by default */
  tls?: { rejectUnauthorized: boolean, ca?: Buffer }
  /** where a 2xx answer's JSON says the message was refused (default: by the URL's host, see CODE_IN_ANSWER) */
  codeInAnswer?: CodeInAnswer
}

/** The field of a JSON answer holding a code (0: taken) and the one saying why not. */
export interface CodeInAnswer { code: string, why: string }
const ERRCODE: CodeInAnswer = { code: 'errcode', why: 'errmsg' }
const FEISHU: CodeInAnswer = { code: 'code', why: 'msg' }
/**
 * Chat APIs that answer 200 to a message they refuse (a keyword check, a bad token, too fast) and say so
 * in the body: without reading it, every refused event would count as sent.
 */
const CODE_IN_ANSWER: Record<string, CodeInAnswer> = {
  'oapi.dingtalk.com': ERRCODE,
  'qyapi.weixin.qq.com': ERRCODE,
  'open.feishu.cn': FEISHU,
  'open.larksuite.com': FEISHU
}

export const codeInAnswerOf = (url: URL): CodeInAnswer | undefined => Object.hasOwn(CODE_IN_ANSWER, url.hostname) ? CODE_IN_ANSWER[url.hostname] : undefined

/** The start of a refused attempt's answer, on one line, as its log line shows it: '' for none. */
function reasonIn (body: string): string {
  const line = body.replace(/[\u0000-\u001f\u007f]+/g, ' ').replace(/ {2,}/g, ' ').trim()
  return line.length > MAX_REASON_CHARS ? `${line.slice(0, MAX_REASON_CHARS)}...` : line
}

/** The refusal a 2xx answer's body states, or undefined: taken, or a body that is not the JSON expected. */
function refusalIn (body: string, where: CodeInAnswer): string | undefined {
  let answer: unknown
  try {
    answer = JSON.parse(body)
  } catch {
    return undefined
  }
  if (typeof answer !== 'object' || answer === null) return undefined
  const code = (answer as Record<string, unknown>)[where.code]
  if (typeof code !== 'number' || code === 0) return undefined
  const why = (answer as Record<string, unknown>)[where.why]
  const said = typeof why === 'string' ? reasonIn(why) : ''
  return `refused: ${where.code} ${code}${said === '' ? '' : `: ${said}`}`
}

// a receiver's answer is read only to free the connection: a chat API answers a few bytes
const MAX_ANSWER_BYTES = 64 * 1024
/** what of a refused attempt's answer its error keeps */
const MAX_REASON_BYTES = 1024
const MAX_REASON_CHARS = 200
// undici's timers bound the wait for the headers and between chunks, not a whole answer dripped
// slowly: attempts past timeoutMs + CUT_AFTER_MS are cut at the next sweep (within timeoutMs + 1 s)
const CUT_AFTER_MS = 500
const SWEEP_MS = 500

/**
 * The wait a Retry-After asks for, in ms from `now`: delay-seconds or an HTTP-date (RFC 9110 10.2.3);
 * 0 for none, a date past, or a value that is neither.
 */
export function retryAfter (value: string | undefined, now: number): number {
  if (value === undefined) return 0
  const v = value.trim()
  if (/^\d+$/.test(v)) return Number(v) * 1000
  const at = /^[A-Za-z]{3}, \d{2} [A-Za-z]{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/.test(v) ? Date.parse(v) : NaN
  return Number.isNaN(at) ? 0 : Math.max(0, at - now)
}

/** POSTs each event as JSON. A connection error, a timeout, a 429 or a 5xx may pass on another attempt; any other non-2xx will not, nor a 2xx whose body says the message was refused (CODE_IN_ANSWER). */
export class WebhookSink implements Sink {
  readonly label: string
  readonly #pool: Pool
  readonly #path: string
  readonly #headers: Record<string, string>
  readonly #timeoutMs: number
  readonly #codeInAnswer: CodeInAnswer | undefined
  /** attempts in flight: when each is cut, and how */
  readonly #inFlight = new Map<() => void, number>()
  #sweeper: NodeJS.Timeout | undefined

  constructor (opts: WebhookOptions) {
    const url = new URL(opts.url)
    // the path only: a token in the query (Slack, Discord and Feishu hooks carry one) stays out of logs
    this.label = `webhook ${url.origin}${url.pathname.replace(/\/[^/]{16,}/g, '/***')}`
    // the pool's own timeouts bound an attempt's waits (connect, then headers, then each chunk) and a
    // sweep its whole: an AbortSignal.timeout per event cost more than the request itself
    this.#pool = new Pool(url.origin, { connections: opts.connections ?? 4, connect: { ...opts.tls, timeout: opts.timeoutMs } })
    this.#path = `${url.pathname}${url.search}`
    this.#headers = { ...opts.headers, 'content-type': 'application/json' }
    this.#timeoutMs = opts.timeoutMs
    this.#codeInAnswer = opts.codeInAnswer ?? codeInAnswerOf(url)
  }

  #sweep (): void {
    const now = performance.now()
    for (const [cut, at] of this.#inFlight) if (at <= now) cut()
    if (this.#inFlight.size === 0) {
      clearInterval(this.#sweeper)
      this.#sweeper = undefined
    }
  }

  /**
   * One POST through the pool's dispatcher with a handler of its own: no response object, body
   * stream or promise per chunk (a `request` and its `body.dump` cost about as much again).
   */
  async send (event: string): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      let status = 0
      let retryAfterValue: string | undefined
      let bytes = 0
      /** the answer's body, kept only where it may say the message was refused */
      let read: Buffer[] | undefined
      let cut: 'too long' | 'too slow' | undefined
      const done = (): void => { this.#inFlight.delete(stop) }
      // an answer whose status came is judged by it (a 2xx answered slowly was received: not sent twice)
      const settle = (): void => {
        done()
        if (status >= 200 && status < 300) {
          const refusal = read === undefined || this.#codeInAnswer === undefined || cut !== undefined ? undefined : refusalIn(Buffer.concat(read).toString('utf8'), this.#codeInAnswer)
          return refusal === undefined ? resolve() : reject(new SinkError(`${this.label}: ${refusal}`, false))
        }
        if (status === 0) return reject(new SinkError(`${this.label}: no answer within ${this.#timeoutMs} ms`, true))
        const retryAfterMs = status === 429 || status === 503 ? retryAfter(retryAfterValue, Date.now()) : 0
        const said = read === undefined ? '' : reasonIn(Buffer.concat(read).subarray(0, MAX_REASON_BYTES).toString('utf8'))
        reject(new SinkError(`${this.label}: HTTP ${status}${retryAfterMs > 0 ? ` (Retry-After ${retryAfterValue as string})` : ''}${said === '' ? '' : `: ${said}`}`,
          status >= 500 || status === 429, { retryAfterMs }))
      }
      let abort: ((err: Error) => void) | undefined
      const stop = (): void => {
        cut ??= 'too slow'
        if (abort !== undefined) abort(new Error('the answer took too long'))
        else settle()
      }
      this.#inFlight.set(stop, performance.now() + this.#timeoutMs + CUT_AFTER_MS)
      if (this.#sweeper === undefined) {
        this.#sweeper = setInterval(() => this.#sweep(), SWEEP_MS)
        this.#sweeper.unref()
      }
      // undici's own handler shape (onConnect ... onError): the newer onRequestStart shape is wrapped into this one per request
      this.#pool.dispatch({ method: 'POST', path: this.#path, headers: this.#headers, body: event, ...undiciTimeouts(this.#timeoutMs) }, {
        onConnect: (stop: (err: Error) => void) => { abort = stop },
        onHeaders: (statusCode: number, headers: Buffer[]) => {
          status = statusCode
          // a refusal's body says why (Slack: no_service, Discord: {"message": ...}); a 2xx's only where it may hold a refusal
          if (statusCode >= 300 || this.#codeInAnswer !== undefined) read = []
          if (statusCode === 429 || statusCode === 503) {
            for (let i = 0; i + 1 < headers.length; i += 2) if (headers[i].length === 11 && headers[i].toString('latin1').toLowerCase() === 'retry-after') retryAfterValue = headers[i + 1].toString('latin1')
          }
          return true
        },
        // the answer is read only to free the connection; past the limit the connection is dropped
        onData: (chunk: Buffer) => {
          bytes += chunk.length
          if (read !== undefined && (status < 300 ? bytes <= MAX_ANSWER_BYTES : bytes - chunk.length < MAX_REASON_BYTES)) read.push(chunk)
          if (bytes > MAX_ANSWER_BYTES && cut === undefined) {
            cut = 'too long'
            abort?.(new Error(`answer over ${MAX_ANSWER_BYTES} bytes`))
          }
          return true
        },
        onComplete: settle,
        onError: (err: Error) => {
          // a 2xx that came before the answer stalled (undici's body timeout) was received, as when the sweep cuts it
          if (cut !== undefined || (status >= 200 && status < 300)) return settle()
          done()
          const { code } = err as { code?: string }
          const why = code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT'
            ? `no answer within ${this.#timeoutMs} ms`
            : err.message
          reject(new SinkError(`${this.label}: ${why}`, true, { cause: err }))
        }
      } as unknown as Dispatcher.DispatchHandler)
    })
  }

  /** After the queue's drain: a send still in flight is cut (pool.close would wait for it, up to timeoutMs past drainMs). */
  async close (): Promise<void> {
    await this.#pool.destroy()
    clearInterval(this.#sweeper)
  }
}
