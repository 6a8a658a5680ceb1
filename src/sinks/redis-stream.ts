import type { Cluster, Redis } from 'ioredis'
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
      // Redis away, a failover, a timeout: the queue keeps the event and asks again
      throw new SinkError(`${this.label}: ${(err as Error).message}`, true, { cause: err })
    }
  }

  /** The client belongs to the runtime. */
  async close (): Promise<void> {}
}
