import { ReplyError, type Cluster, type Redis } from 'ioredis'
import { redisError } from '../stores/redis-client.js'
import { SinkError, type Sink } from './sink.js'

// Redis's answers that say it cannot take a write now (a replica during a failover, loading, busy,
// out of memory): away, as a lost connection is, not a refusal of this event
const AWAY = new Set(['READONLY', 'LOADING', 'MASTERDOWN', 'CLUSTERDOWN', 'TRYAGAIN', 'BUSY', 'NOREPLICAS', 'OOM'])

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
      const away = !(err instanceof ReplyError) || AWAY.has((err as Error).message.split(' ', 1)[0])
      throw new SinkError(`${this.label}: ${redisError(this.client, err).message}`, true, { cause: err, waits: away })
    }
  }

  /** The client belongs to the runtime. */
  async close (): Promise<void> {}
}
