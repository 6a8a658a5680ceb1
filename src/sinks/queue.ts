import { SinkError, type Sink } from './sink.js'

/** how long an event waiting for its sink to come back waits at most between two attempts */
const MAX_WAIT_MS = 2000
/**
 * The characters of the events waiting, at most, whatever their number: a caller can make an event
 * as large as a body (1 MiB by default), and 10,000 of them would take gigabytes
 */
export const MAX_QUEUE_CHARS = 32 * 1024 * 1024

export const QUEUE_RESULTS = ['sent', 'retried', 'throttled', 'dropped', 'failed'] as const
export type QueueResult = (typeof QUEUE_RESULTS)[number]

export interface QueueOptions {
  /** events waiting at most; when full the oldest is dropped */
  size: number
  /** sends in flight at once */
  concurrency: number
  /** further attempts of a retryable failure */
  retries: number
  /** the first backoff; doubled at every attempt */
  backoffMs: number
  /** a receiver's Retry-After is followed up to this (one asking for an hour must not hold a send that long) */
  maxRetryAfterMs: number
  count: (result: QueueResult) => void
  /** a send given up (failed) or refused for good, with the reqid of its call: logged by the owner, never thrown */
  onFailure: (err: Error, reqid: string) => void
}

/**
 * A bounded queue in front of one sink: events leave the hot path here and nothing a sink does
 * reaches a caller. Every event ends as sent, dropped (queue full, or left at drain) or failed
 * (retries spent, or refused for good); every further attempt counts as retried.
 */
export class SinkQueue {
  readonly #waiting: string[] = []
  /** the reqid of each waiting event's call, for the line that says it was given up */
  readonly #reqids: string[] = []
  /** what to do when a waiting event is lost (dropped for a newer one, or failed): undefined for most */
  readonly #onLost: Array<(() => void) | undefined> = []
  #head = 0
  #chars = 0
  #inFlight = 0
  #closed = false
  readonly #idle = new Set<() => void>()

  constructor (private readonly sink: Sink, private readonly opts: QueueOptions) {}

  get length (): number {
    return this.#waiting.length - this.#head
  }

  get inFlight (): number {
    return this.#inFlight
  }

  /** `onLost` runs if the event is dropped for a newer one or given up (not at drain: nothing goes after it). */
  push (event: string, reqid = '', onLost?: () => void): void {
    if (this.#closed) {
      this.opts.count('dropped')
      return
    }
    if (event.length > MAX_QUEUE_CHARS) {
      this.opts.count('dropped')
      onLost?.()
      return
    }
    while (this.length > 0 && (this.length >= this.opts.size || this.#chars + event.length > MAX_QUEUE_CHARS)) {
      const lost = this.#onLost[this.#head]
      this.#take()
      this.opts.count('dropped')
      lost?.()
    }
    this.#chars += event.length
    this.#waiting.push(event)
    this.#reqids.push(reqid)
    this.#onLost.push(onLost)
    // the arrays are compacted once half of them is spent, so pushes and shifts stay O(1) on average
    if (this.#head > 1024 && this.#head * 2 > this.#waiting.length) {
      this.#waiting.splice(0, this.#head)
      this.#reqids.splice(0, this.#head)
      this.#onLost.splice(0, this.#head)
      this.#head = 0
    }
    this.#pump()
  }

  /** The oldest waiting event, its slot freed (its reqid and onLost are at #head before). */
  #take (): string {
    const event = this.#waiting[this.#head]
    this.#waiting[this.#head] = ''
    this.#onLost[this.#head++] = undefined
    this.#chars -= event.length
    return event
  }

  #pump (): void {
    while (this.#inFlight < this.opts.concurrency && this.length > 0) {
      const reqid = this.#reqids[this.#head]
      const lost = this.#onLost[this.#head]
      const event = this.#take()
      this.#inFlight++
      void this.#deliver(event, reqid, lost).finally(() => {
        this.#inFlight--
        this.#pump()
        if (this.#inFlight === 0 && this.length === 0) for (const resolve of this.#idle) resolve()
      })
    }
  }

  async #deliver (event: string, reqid: string, lost: (() => void) | undefined): Promise<void> {
    for (let attempt = 0, waited = 0; ; attempt++) {
      try {
        await this.sink.send(event)
        this.opts.count('sent')
        return
      } catch (err) {
        // cut by the sink's close after the drain: left undone, as what still waited
        if (this.#closed) {
          this.opts.count('dropped')
          return
        }
        const waits = err instanceof SinkError && err.waits
        const retryable = !(err instanceof SinkError) || err.retryable
        if (!waits && (!retryable || attempt >= this.opts.retries)) {
          this.opts.count('failed')
          this.opts.onFailure(err as Error, reqid)
          lost?.()
          return
        }
        this.opts.count('retried')
        // a sink away spends no retries: the event waits for it, asked again every MAX_WAIT_MS at most
        const asked = err instanceof SinkError ? Math.min(err.retryAfterMs, this.opts.maxRetryAfterMs) : 0
        const ms = waits ? Math.min(this.opts.backoffMs * 2 ** waited++, MAX_WAIT_MS) : Math.max(this.opts.backoffMs * 2 ** attempt, asked)
        if (waits) attempt--
        // unref: a backoff never holds a stopping process past drainMs
        await new Promise(resolve => setTimeout(resolve, ms).unref())
        // drained meanwhile: the sink may be closed, and is not asked again
        if (this.#closed) {
          this.opts.count('dropped')
          return
        }
      }
    }
  }

  /**
   * Waits for the queue to empty, at most ms; then drops what is still waiting (counted) and stops
   * retrying what is in flight. True when everything was delivered or given up in time.
   */
  async drain (ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined
    let resolveIdle: (() => void) | undefined
    const idle = this.#inFlight === 0 && this.length === 0
      ? Promise.resolve(true)
      : new Promise<boolean>(resolve => { resolveIdle = () => resolve(true); this.#idle.add(resolveIdle) })
    const done = await Promise.race([idle, new Promise<boolean>(resolve => { timer = setTimeout(() => resolve(false), ms) })])
    clearTimeout(timer)
    if (resolveIdle !== undefined) this.#idle.delete(resolveIdle)
    this.#closed = true
    for (let i = this.length; i > 0; i--) this.opts.count('dropped')
    this.#waiting.length = 0
    this.#reqids.length = 0
    this.#onLost.length = 0
    this.#head = 0
    this.#chars = 0
    return done
  }
}
