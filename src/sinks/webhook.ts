import { Pool, type Dispatcher } from 'undici'
import { undiciTimeouts } from '../bounds.js'
import { SinkError, type Sink } from './sink.js'

export interface WebhookOptions {
  url: string
  headers: Record<string, string>
  timeoutMs: number
}

// a receiver's answer is read only to free the connection: a chat API answers a few bytes
const MAX_ANSWER_BYTES = 64 * 1024

/** POSTs each event as JSON. A connection error, a timeout or a 5xx may pass on another attempt; any other non-2xx will not. */
export class WebhookSink implements Sink {
  readonly label: string
  readonly #pool: Pool
  readonly #url: URL
  readonly #path: string
  readonly #headers: Record<string, string>
  readonly #timeoutMs: number

  constructor (opts: WebhookOptions) {
    this.#url = new URL(opts.url)
    // the path only: a token in the query (Slack, Discord and Feishu hooks carry one) stays out of logs
    this.label = `webhook ${this.#url.origin}${this.#url.pathname.replace(/\/[^/]{16,}/g, '/***')}`
    // the pool's own timeouts bound an attempt (connect, then headers, then body): an AbortSignal.timeout per event cost more than the request itself
    this.#pool = new Pool(this.#url.origin, { connections: 8, connect: { timeout: opts.timeoutMs } })
    this.#path = `${this.#url.pathname}${this.#url.search}`
    this.#headers = { ...opts.headers, 'content-type': 'application/json' }
    this.#timeoutMs = opts.timeoutMs
  }

  /**
   * One POST through the pool's dispatcher with a handler of its own: no response object, body
   * stream or promise per chunk (a `request` and its `body.dump` cost about as much again).
   */
  async send (event: string): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      let status = 0
      let bytes = 0
      let tooLong = false
      const settle = (): void => {
        if (status >= 200 && status < 300) return resolve()
        reject(new SinkError(`${this.label}: HTTP ${status}`, status >= 500 || status === 429))
      }
      let abort: (err: Error) => void = () => {}
      // undici's own handler shape (onConnect ... onError): the newer onRequestStart shape is wrapped into this one per request
      this.#pool.dispatch({ method: 'POST', path: this.#path, headers: this.#headers, body: event, ...undiciTimeouts(this.#timeoutMs) }, {
        onConnect: (stop: (err: Error) => void) => { abort = stop },
        onHeaders: (statusCode: number) => { status = statusCode; return true },
        // the answer is read only to free the connection; past the limit the connection is dropped
        onData: (chunk: Buffer) => {
          bytes += chunk.length
          if (bytes > MAX_ANSWER_BYTES && !tooLong) {
            tooLong = true
            abort(new Error(`answer over ${MAX_ANSWER_BYTES} bytes`))
          }
          return true
        },
        onComplete: settle,
        onError: (err: Error) => {
          if (tooLong) return settle()
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
  }
}
