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

/**
 * The rounding of one addition to tat: half a ulp of a ms timestamp below 2^42 (until the year 2109).
 * Taking a burst at one instant adds the interval burst times, so tat drifts up to burst of these.
 */
export const GCRA_ROUNDING_MS = 2 ** -12

/** The slack of a bucket: the fixed one plus the drift of a whole burst, so the last token of a burst is never lost. */
export const gcraSlack = (burst: number): number => GCRA_SLACK_MS + burst * GCRA_ROUNDING_MS

/**
 * True when both stores count a bucket of `burst` refilled every `interval` ms exactly: the slack
 * and the drift of one more token stay below one interval, so no burst gains a token either.
 */
export const countsExactly = (interval: number, burst: number): boolean =>
  GCRA_SLACK_MS + (2 * burst + 1) * GCRA_ROUNDING_MS < interval

/** The fastest refill a rule may ask for (window / limit). */
export const MIN_INTERVAL_MS = 0.1

/**
 * The longest a whole bucket may take to refill (burst × interval, in ms): a year keeps tat a double
 * with a ulp far below GCRA_SLACK_MS and the Lua script's TTL (PX) an integer Redis accepts; 1e-300
 * tokens per hour made the script fail on every call.
 */
export const MAX_BUCKET_MS = 365 * 24 * 3_600_000
