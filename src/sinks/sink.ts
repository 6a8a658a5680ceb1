/**
 * Where notify events go (issue 13). A sink sends one rendered event; it throws a SinkError that
 * says whether another attempt may succeed (a connection error, a timeout, a 5xx, Redis away) or
 * not (a 4xx: the receiver refuses this event and would refuse it again).
 */
export interface Sink {
  /** what the logs call it: `webhook https://hooks.example.com/...`, `redisStream audit`, `file /var/log/x` */
  readonly label: string
  send (event: string): Promise<void>
  /** the file sink reopens its file here (SIGHUP, logrotate) */
  reopen?: () => Promise<void>
  close (): Promise<void>
}

export class SinkError extends Error {
  readonly retryable: boolean
  /** the sink is away (Redis down): the event waits, asked again without spending its retries, until the sink is back or the queue drops it */
  readonly waits: boolean
  /** the receiver asked for this long before the next attempt (a 429's or 503's Retry-After) */
  readonly retryAfterMs: number
  constructor (message: string, retryable: boolean, options?: ErrorOptions & { waits?: boolean, retryAfterMs?: number }) {
    super(message, options)
    this.name = 'SinkError'
    this.retryable = retryable
    this.waits = options?.waits ?? false
    this.retryAfterMs = options?.retryAfterMs ?? 0
  }
}
