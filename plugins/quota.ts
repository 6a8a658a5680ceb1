import { z } from 'zod'
import { intIn } from '../src/bounds.js'
import { definePlugin, type CallContext, type Verdict } from '../src/chain.js'
import type { CommitEvent } from '../src/commit.js'
import { BrokenBlock, compileAt } from '../src/errors.js'
import { own, ownText, type Content } from '../src/protocol.js'
import { RESERVATION_GRACE_MS } from '../src/registry/live.js'
import { holdsPort } from '../src/registry/memory.js'
import type { QuotaLimit, QuotaLimits, QuotaResult } from '../src/registry/store.js'
import { MAX_MAX_PROXIES, USER_NAME, type CompiledUser } from '../src/users/record.js'
import type { UserLookup } from '../src/users/table.js'
import { compileTemplate } from '../src/template.js'

/** What each limit counts, as a reason says it ({{counted}}): one, then more. */
const COUNTED: Record<QuotaLimit, readonly [string, string]> = {
  maxProxies: ['proxy', 'proxies'],
  maxProxiesPerClient: ['proxy on this client', 'proxies on this client'],
  maxPorts: ['tcp/udp proxy', 'tcp/udp proxies']
}
const NAMES = ['count', 'limit', 'which', 'counted']
const UNKNOWN: UserLookup<CompiledUser> = Object.freeze({ status: 'unknown' })


/** The proxy of a NewProxy: its user, name and run_id as frps sent them. */
function proxyOf (content: Content): { user: string, name: string, runId: string } {
  const user = own(content, 'user')
  return { user: ownText(user, 'user'), name: ownText(content, 'proxy_name'), runId: ownText(user, 'run_id') }
}

export default definePlugin({
  description: 'limits the proxies a user (and one frpc) has open at once, counted in the registry (top-level `registry` block)',
  ops: ['NewProxy'],
  options: z.strictObject({
    maxProxies: intIn(0, MAX_MAX_PROXIES).optional().describe('proxies one user may have open at once (with fromUsers, a user\'s own maxProxies wins)'),
    maxProxiesPerClient: intIn(0, MAX_MAX_PROXIES).optional().describe('proxies one frpc (one run_id) may have open at once'),
    maxPorts: intIn(0, 65535).optional().describe('tcp and udp proxies (remote ports) one user may have open at once'),
    fromUsers: z.boolean().optional()
      .describe('take maxProxies from the user\'s record in the users table: its maxProxies wins over the step\'s (default: true when the top-level users block is set)'),
    reason: z.string().default('{{user}} has {{count}} {{counted}}, the limit is {{limit}} ({{which}})')
      .describe('template; may use {{count}}, {{limit}}, {{which}} (maxProxies, maxProxiesPerClient or maxPorts) and {{counted}}')
  }).refine(o => o.maxProxies !== undefined || o.maxProxiesPerClient !== undefined || o.maxPorts !== undefined || o.fromUsers === true,
    'expected at least one limit: maxProxies, maxProxiesPerClient, maxPorts, or fromUsers: true'),
  create (options, deps) {
    const reason = compileAt('reason', () => compileTemplate(options.reason, { step: deps.name, extra: NAMES }))
    const registry = deps.registry()
    // a record's maxProxies is there for this step: read whenever there is a table, unless told not to
    const table = options.fromUsers === false
      ? undefined
      : compileAt('fromUsers', () => {
        try {
          return deps.users()
        } catch (err) {
          if (options.fromUsers === undefined) return undefined
          if (err instanceof BrokenBlock) throw err
          throw new Error('fromUsers needs the top-level "users" block: {"file": "users.json"} or {"redis": {}}')
        }
      })
    const { store } = registry
    const failClosed = registry.options.onStoreError === 'reject'
    const limits: QuotaLimits = { maxProxies: options.maxProxies, maxProxiesPerClient: options.maxProxiesPerClient, maxPorts: options.maxPorts }

    /** The store or the table cannot say: the registry's onStoreError decides, the cause is logged either way. */
    const failed = (err: unknown, why = 'registry unavailable'): Verdict =>
      failClosed ? { error: err, reject: `frp-plugin-gateway: step ${deps.name} failed: ${why}`, rule: 'store_error' } : { error: err, rule: 'store_error' }

    // the calls this step holds a reservation for: only those have one to release when frps is told no
    const reserved = new WeakSet<object>()

    const decide = (result: QuotaResult, content: Content, ctx: CallContext): Verdict | undefined => {
      if (result.allowed) {
        reserved.add(ctx)
        return
      }
      const at = { op: ctx.op, reqid: ctx.reqid, values: { count: result.count, limit: result.max, which: result.limit, counted: COUNTED[result.limit][result.count === 1 ? 0 : 1] } }
      return { reject: reason(content, at), loggedReason: reason.masked?.(content, at), rule: result.limit }
    }

    const reserve = (content: Content, ctx: CallContext, applied: QuotaLimits): Verdict | Promise<Verdict | undefined> | undefined => {
      if (applied.maxProxies === undefined && applied.maxProxiesPerClient === undefined && applied.maxPorts === undefined) return
      const { user, name, runId } = proxyOf(content)
      const request = { user, name, run_id: runId, port: holdsPort(ownText(content, 'proxy_type')), ttlMs: ctx.deadline - performance.now() + RESERVATION_GRACE_MS }
      const result = store.reserve(request, applied)
      return result instanceof Promise ? result.then(r => decide(r, content, ctx), err => failed(err)) : decide(result, content, ctx)
    }

    const withUser = (lookup: UserLookup<CompiledUser>, content: Content, ctx: CallContext): Verdict | undefined | Promise<Verdict | undefined> => {
      if (lookup.status === 'found') {
        const mine = lookup.record.record.maxProxies
        return reserve(content, ctx, mine === undefined ? limits : { ...limits, maxProxies: mine })
      }
      if (lookup.status === 'unknown') return reserve(content, ctx, limits)
      return failed(lookup.error, lookup.status === 'invalid' ? `the record of ${proxyOf(content).user} is not valid` : 'user table unavailable')
    }

    /**
     * The reservation this call holds when frps was told no: none when this step refused, did not run (a step
     * before it refused, its when did not match) or could not reserve (the store away).
     */
    const toRelease = (e: CommitEvent): ReturnType<typeof proxyOf> | undefined =>
      e.op === 'NewProxy' && (e.outcome === 'reject' || e.outcome === 'error') && reserved.has(e.call)
        ? proxyOf(e.content)
        : undefined

    return Object.assign(function quota (content: Content, ctx: CallContext) {
      if (table === undefined) return reserve(content, ctx, limits)
      const name = proxyOf(content).user
      const lookup = USER_NAME.test(name) ? table.lookup(name) : UNKNOWN
      return lookup instanceof Promise ? lookup.then(l => withUser(l, content, ctx)) : withUser(lookup, content, ctx)
    }, {
      commit: {
        commit: async (e: CommitEvent) => {
          const proxy = toRelease(e)
          if (proxy !== undefined) await store.release(proxy.user, proxy.name, proxy.runId)
        },
        describe: (e: CommitEvent) => {
          const proxy = toRelease(e)
          return proxy === undefined ? undefined : `would release the reservation of ${proxy.name} (run_id ${proxy.runId}) this call holds`
        }
      }
    })
  }
})
