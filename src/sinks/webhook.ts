import { Pool } from 'undici'
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
  readonly #headers: Record<string, string>
  readonly #timeoutMs: number

  constructor (opts: WebhookOptions) {
    this.#url = new URL(opts.url)
    // the path only: a token in the query (Slack, Discord and Feishu hooks carry one) stays out of logs
    this.label = `webhook ${this.#url.origin}${this.#url.pathname.replace(/\/[^/]{16,}/g, '/***')}`
    // the pool's own timeouts bound an attempt (connect, then headers, then body): an AbortSignal.timeout per event cost more than the request itself
    this.#pool = new Pool(this.#url.origin, { connections: 8, connect: { timeout: opts.timeoutMs } })
    this.#headers = { ...opts.headers, 'content-type': 'application/json' }
    this.#timeoutMs = opts.timeoutMs
  }

  async send (event: string): Promise<void> {
    let res
    try {
      res = await this.#pool.request({
        method: 'POST',
        path: `${this.#url.pathname}${this.#url.search}`,
        headers: this.#headers,
        body: event,
        headersTimeout: this.#timeoutMs,
        bodyTimeout: this.#timeoutMs
      })
    } catch (err) {
      const { code } = err as { code?: string }
      const why = code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT' ? `no answer within ${this.#timeoutMs} ms` : (err as Error).message
      throw new SinkError(`${this.label}: ${why}`, true, { cause: err })
    }
    // dump, not an async iterator: no promise per chunk; past the limit it destroys the body
    await res.body.dump({ limit: MAX_ANSWER_BYTES }).catch(() => {})
    if (res.statusCode >= 200 && res.statusCode < 300) return
    throw new SinkError(`${this.label}: HTTP ${res.statusCode}`, res.statusCode >= 500 || res.statusCode === 429)
  }

  async close (): Promise<void> {
    await this.#pool.close()
  }
}
