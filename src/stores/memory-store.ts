import { evictLru } from '../lru.js'
import { gcraSlack, type RateLimitStore, type RateRule, type TakeResult } from './store.js'

/** seq: the value of the store's move counter when the bucket last went to the end of the Map's order */
interface Bucket { tat: number; expiresAt: number; seq: number }

export interface MemoryStoreOptions {
  /** default 100_000 */
  maxKeys?: number
  /** default performance.now: the wall clock steps (NTP, a resumed VM), and a step back would close every bucket for as long */
  now?: () => number
}

export class MemoryStore implements RateLimitStore {
  readonly kind = 'memory' as const
  readonly #buckets = new Map<string, Bucket>()
  readonly #maxKeys: number
  readonly #now: () => number
  #moves = 0

  constructor(opts: MemoryStoreOptions = {}) {
    this.#maxKeys = opts.maxKeys ?? 100_000
    this.#now = opts.now ?? (() => performance.now())
  }

  get size(): number {
    return this.#buckets.size
  }

  take(key: string, rule: RateRule): TakeResult {
    const now = this.#now()
    let tat = now
    const bucket = this.#buckets.get(key)
    if (bucket !== undefined && bucket.expiresAt > now) tat = Math.max(bucket.tat, now)
    const interval = rule.windowMs / rule.limit
    const tolerance = interval * rule.burst
    const slack = gcraSlack(rule.burst)
    const newTat = tat + interval
    const ahead = newTat - now
    if (ahead > tolerance + slack) {
      return { allowed: false, remaining: 0, retryAfterMs: Math.max(1, Math.ceil(ahead - tolerance)) }
    }
    const expiresAt = now + Math.max(1, Math.ceil(ahead))
    if (bucket === undefined) {
      this.#buckets.set(key, { tat: newTat, expiresAt, seq: this.#moves++ })
      if (this.#buckets.size > this.#maxKeys) evictLru(this.#buckets, this.#maxKeys, now)
    } else {
      bucket.tat = newTat
      bucket.expiresAt = expiresAt
      // delete + set moves a key to the end of the Map's order, which eviction reaches last. A bucket
      // moved within the last maxKeys/2 moves is in the newer half already and stays put: a hot key
      // costs no Map rewrite per call, and eviction (down to 90%) never reaches the newer half.
      if (this.#moves - bucket.seq > this.#maxKeys / 2) {
        this.#buckets.delete(key)
        this.#buckets.set(key, bucket)
        bucket.seq = this.#moves++
      }
    }
    return { allowed: true, remaining: Math.floor((tolerance - ahead + slack) / interval), retryAfterMs: 0 }
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    this.#buckets.clear()
  }
}
