import { z } from 'zod'
import { durationIn, formatDuration, intIn } from '../src/bounds.js'
import { definePlugin, type CallContext, type Verdict } from '../src/chain.js'
import { compileAt } from '../src/errors.js'
import { OPS, type Content } from '../src/protocol.js'
import { countsExactly, GCRA_ROUNDING_MS, GCRA_SLACK_MS, MAX_BUCKET_MS, MIN_INTERVAL_MS, type TakeResult } from '../src/stores/store.js'
import { boundedKey, compileTemplate } from '../src/template.js'

const window = durationIn(1, MAX_BUCKET_MS, 'a window')
  .describe(`the period in which \`limit\` tokens refill: "1s", "10s", "1m", "1h" or milliseconds, from ${formatDuration(1)} to ${formatDuration(MAX_BUCKET_MS)}`)

export const defaultBurst = (limit: number): number => Math.max(1, Math.ceil(limit))

/** limit, window and burst together: both stores count such a bucket exactly (see stores/store.ts). */
function checkRule ({ limit, window, burst }: { limit: number, window: number, burst?: number }, ctx: z.RefinementCtx): void {
  if (!(limit > 0 && window >= 1 && window <= MAX_BUCKET_MS)) return // reported on its own
  const interval = window / limit
  if (interval < MIN_INTERVAL_MS) {
    ctx.addIssue({ code: 'custom', path: ['limit'], message: `expected at most ${window / MIN_INTERVAL_MS} per window of ${window} ms (one token per ${MIN_INTERVAL_MS} ms)` })
    return
  }
  const size = burst ?? defaultBurst(limit)
  if (!countsExactly(interval, size)) {
    const most = Math.ceil((interval - GCRA_SLACK_MS - GCRA_ROUNDING_MS) / (2 * GCRA_ROUNDING_MS)) - 1
    ctx.addIssue({
      code: 'custom',
      path: [burst === undefined ? 'limit' : 'burst'],
      message: `a bucket of ${size} at one token per ${interval} ms: expected a burst of at most ${most} (what both stores count exactly at this rate), or a lower limit`
    })
  } else if (interval * size > MAX_BUCKET_MS) {
    const days = interval * size / 86_400_000
    ctx.addIssue({
      code: 'custom',
      path: [burst === undefined ? 'limit' : 'burst'],
      message: `a bucket of ${size} at ${limit} per ${window} ms refills in ${days < 1e9 ? Math.ceil(days) : days.toExponential(1)} days: expected at most 365 (a larger limit or a smaller burst)`
    })
  }
}

export default definePlugin({
  description: 'GCRA rate limit: a bucket of `burst` tokens per key, refilled at `limit` per `window`, in Redis or memory',
  ops: OPS,
  options: z.strictObject({
    key: z.string().default('{{op}}:{{user}}').describe('template: what is counted (e.g. {{client_ip}}, {{user}})'),
    limit: z.number().positive('expected a number above 0').describe('tokens refilled per window (at most one per 0.1 ms)'),
    window,
    burst: intIn(1, 1_000_000_000).optional().describe('bucket size: calls allowed at once (default: limit); refilled whole within 365 days'),
    store: z.enum(['auto', 'memory', 'redis']).default('auto').describe('auto: redis when the redis block is configured, else memory'),
    onStoreError: z.enum(['allow', 'reject']).default('allow').describe('what a call gets while the store does not answer'),
    reason: z.string().default('rate limit exceeded by {{step}}: retry in {{retry_after}}s').describe('template; may use {{retry_after}} (seconds)')
  }).superRefine(checkRule),
  create (options, deps) {
    const key = compileAt('key', () => compileTemplate(options.key, { step: deps.name, keyOf: deps.ops }))
    const reason = compileAt('reason', () => compileTemplate(options.reason, { step: deps.name, extra: ['retry_after'] }))
    const store = compileAt('store', () => deps.store(options.store))
    const rule = { limit: options.limit, windowMs: options.window, burst: options.burst ?? defaultBurst(options.limit) }
    const counters = deps.metrics.rateLimitDecisions
    const allowed = counters.labels(deps.name, 'allowed')
    const limited = counters.labels(deps.name, 'limited')
    const storeError = counters.labels(deps.name, 'store_error')
    const failed = (err: unknown): Verdict => {
      storeError.inc()
      return options.onStoreError === 'reject'
        ? { error: err, reject: `frp-plugin-gateway: step ${deps.name} failed: rate-limit store unavailable` }
        : { error: err }
    }
    const decide = (result: TakeResult, content: Content, ctx: CallContext): Verdict | undefined => {
      if (result.allowed) {
        allowed.inc()
        return
      }
      limited.inc()
      const at = { op: ctx.op, reqid: ctx.reqid, proxy: ctx.proxy, retryAfter: Math.ceil(result.retryAfterMs / 1000) }
      return { reject: reason(content, at), loggedReason: reason.masked?.(content, at) }
    }
    const prefix = `${deps.name}:`
    return function rateLimit (content, ctx) {
      let result
      try {
        result = store.take(prefix + boundedKey(key(content, ctx)), rule)
      } catch (err) {
        return failed(err)
      }
      return result instanceof Promise ? result.then(r => decide(r, content, ctx), failed) : decide(result, content, ctx)
    }
  }
})
