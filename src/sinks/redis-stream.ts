import { ReplyError, type Cluster, type Redis } from 'ioredis'
import { SinkError, type Sink } from './sink.js'

/**
 * XADDs each event to a stream, field `event`, trimmed to about maxLen entries (MAXLEN ~). The
 * stream's name is used as written, not under keyPrefix: its consumers name it.
 */
export class RedisStreamSink implements Sink {
  readonly label: string
  constructor (private readonly client: Redis | Cluster, private readonly stream: string, private readonly maxLen: number) {
    this.label = `redisStream ${stream}`
  }

  async send (event: string): Promise<void> {
    try {
      await this.client.xadd(this.stream, 'MAXLEN', '~', this.maxLen, '*', 'event', event)
    } catch (err) {
      // Redis answered no (the key holds another type): tried again as a webhook's 5xx would be, then given up.
      // Anything else is Redis away (down, a failover, a timeout): the event waits in the queue for it
      throw new SinkError(`${this.label}: ${(err as Error).message}`, true, { cause: err, waits: !(err instanceof ReplyError) })
    }
  }

  /** The client belongs to the runtime. */
  async close (): Promise<void> {}
}
