import type { Cluster, Redis } from 'ioredis'
import { redisError } from './redis-client.js'
import { GCRA_ROUNDING_MS, GCRA_SLACK_MS, MAX_BUCKET_MS, type RateLimitStore, type RateRule, type TakeResult } from './store.js'

// KEYS[1] bucket; ARGV windowMs, limit, burst. Time comes from Redis so every gateway agrees.
// The arithmetic is the memory store's, to the slack (see store.ts).
// tat is stored with %.17g so the double survives the round trip exactly. A TTL of at least 1 ms:
// an interval below a double's precision at today's timestamps (limit 1e9 per second) leaves ahead at 0.
const GCRA_LUA = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1]) / tonumber(ARGV[2])
local tolerance = interval * tonumber(ARGV[3])
local slack = ${GCRA_SLACK_MS} + tonumber(ARGV[3]) * ${GCRA_ROUNDING_MS}
local tat = tonumber(redis.call('GET', KEYS[1]))
-- a value no script wrote (not a number, inf, further ahead than any rule's full bucket) would lock the key out: start
-- afresh; a debt a looser rule left (a burst lowered by a reload) is kept, as the memory store keeps it
if tat == nil or tat ~= tat or tat < now or tat > now + ${2 * MAX_BUCKET_MS} then tat = now end
local newTat = tat + interval
local ahead = newTat - now
if ahead > tolerance + slack then
  return {0, 0, math.max(1, math.ceil(ahead - tolerance))}
end
redis.call('SET', KEYS[1], string.format('%.17g', newTat), 'PX', math.max(1, math.ceil(ahead)))
return {1, math.floor((tolerance - ahead + slack) / interval), 0}
`

interface GcraCommand {
  frpgwGcra(key: string, windowMs: number, limit: number, burst: number): Promise<[number, number, number]>
}

export class RedisStore implements RateLimitStore {
  readonly kind = 'redis' as const
  readonly #client: Redis | Cluster
  readonly #keyPrefix: string

  constructor(client: Redis | Cluster, opts: { keyPrefix: string }) {
    this.#client = client
    this.#keyPrefix = opts.keyPrefix
    client.defineCommand('frpgwGcra', { numberOfKeys: 1, lua: GCRA_LUA })
  }

  /** The Redis key of bucket `key`; the hash tag keeps it on one Cluster slot. */
  redisKey(key: string): string {
    return `${this.#keyPrefix}rl:{${key}}`
  }

  async take(key: string, rule: RateRule): Promise<TakeResult> {
    try {
      const [allowed, remaining, retryAfterMs] = await (this.#client as unknown as GcraCommand).frpgwGcra(this.redisKey(key), rule.windowMs, rule.limit, rule.burst)
      return { allowed: allowed === 1, remaining, retryAfterMs }
    } catch (err) {
      throw redisError(this.#client, err)
    }
  }

  async ping(): Promise<void> {
    await this.#client.ping().catch((err: unknown) => { throw redisError(this.#client, err) })
  }

  /** The client belongs to whoever created it, so it stays open. */
  async close(): Promise<void> {}
}
