/** One bucket's rule: a token bucket of `burst` tokens refilled at `limit` tokens per `windowMs` (GCRA). */
export interface RateRule { limit: number; windowMs: number; burst: number }

export interface TakeResult {
  allowed: boolean
  /** tokens left after this decision (integer, >= 0) */
  remaining: number
  /** when not allowed: ms until one token is available (> 0); 0 when allowed */
  retryAfterMs: number
}

export interface RateLimitStore {
  readonly kind: 'memory' | 'redis'
  /** Take one token from bucket `key`. The memory store answers synchronously. */
  take(key: string, rule: RateRule): TakeResult | Promise<TakeResult>
  /** Resolves when the backing service answers; rejects with the reason otherwise (used by /readyz). */
  ping(): Promise<void>
  close(): Promise<void>
}

/**
 * Floating-point slack (ms) in the GCRA comparisons of both stores: tat is a fractional
 * ms timestamp near 1.7e12, where one double ulp is ~0.0002 ms, so a burst that exactly
 * fills the tolerance could otherwise be refused by rounding noise.
 */
export const GCRA_SLACK_MS = 0.01
