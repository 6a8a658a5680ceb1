import { z } from 'zod'
import { definePlugin, type CallContext, type Verdict } from '../src/chain.js'
import { compileAt } from '../src/errors.js'
import { OPS, type Content } from '../src/protocol.js'
import type { TakeResult } from '../src/stores/store.js'
import { compileTemplate } from '../src/template.js'

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }

const window = z.union([
  z.number().int().positive(),
  z.string().regex(/^\d+(ms|s|m|h)$/, 'expected a duration like "1s", "10s", "1m", "1h" or milliseconds')
]).transform(w => typeof w === 'number' ? w : Number(/^\d+/.exec(w)?.[0]) * UNITS[w.replace(/^\d+/, '')])
  .refine(ms => ms > 0, 'must be longer than 0')
  .describe('the period in which `limit` tokens refill: "1s", "10s", "1m", "1h" or milliseconds')

export default definePlugin({
  description: 'GCRA rate limit: a bucket of `burst` tokens per key, refilled at `limit` per `window`, in Redis or memory',
  ops: OPS,
  options: z.strictObject({
    key: z.string().default('{{op}}:{{user}}').describe('template: what is counted (e.g. {{client_ip}}, {{user}})'),
    limit: z.number().positive().describe('tokens refilled per window'),
    window,
    burst: z.number().int().positive().optional().describe('bucket size: calls allowed at once (default: limit)'),
    store: z.enum(['auto', 'memory', 'redis']).default('auto').describe('auto: redis when the redis block is configured, else memory'),
    onStoreError: z.enum(['allow', 'reject']).default('allow').describe('what a call gets while the store does not answer'),
    reason: z.string().default('rate limit exceeded by {{step}}: retry in {{retry_after}}s').describe('template; may use {{retry_after}} (seconds)')
  }),
  create (options, deps) {
    const key = compileAt('key', () => compileTemplate(options.key, { step: deps.name }))
    const reason = compileAt('reason', () => compileTemplate(options.reason, { step: deps.name, extra: ['retry_after'] }))
    const store = compileAt('store', () => deps.store(options.store))
    const rule = { limit: options.limit, windowMs: options.window, burst: options.burst ?? Math.max(1, Math.ceil(options.limit)) }
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
      const at = { op: ctx.op, reqid: ctx.reqid, retryAfter: Math.ceil(result.retryAfterMs / 1000) }
      return { reject: reason(content, at), loggedReason: reason.masked?.(content, at) }
    }
    const prefix = `${deps.name}:`
    return function rateLimit (content, ctx) {
      let result
      try {
        result = store.take(prefix + key(content, ctx), rule)
      } catch (err) {
        return failed(err)
      }
      return result instanceof Promise ? result.then(r => decide(r, content, ctx), failed) : decide(result, content, ctx)
    }
  }
})
