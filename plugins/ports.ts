import { z } from 'zod'
import { durationIn } from '../src/bounds.js'
import { definePlugin, type CallContext, type Verdict } from '../src/chain.js'
import { BrokenBlock, compileAt } from '../src/errors.js'
import { portRange, remotePortRange } from '../src/match.js'
import { copy, own, ownText, type Content } from '../src/protocol.js'
import { RESERVATION_GRACE_MS } from '../src/registry/live.js'
import type { PortRanges } from '../src/registry/store.js'
import { compileTemplate } from '../src/template.js'
import { USER_NAME, type CompiledUser } from '../src/users/record.js'
import type { UserLookup, UserTable } from '../src/users/table.js'

const DAY_MS = 86_400_000

/** Ranges of a range option or a user record, both refused with port 0 (remotePortRange): 0 asks frps to pick, which is what this step replaces. */
const rangesOf = (ports: ReadonlyArray<number | string>): PortRanges => ports.map(portRange)

// Every entry is checked on its own with match.ts's parser, so each bad one is reported at its index.
function checkRange (list: Array<number | string>, ctx: z.RefinementCtx): void {
  list.forEach((entry, i) => {
    try {
      remotePortRange(entry)
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: [i], message: (err as Error).message })
    }
  })
}

const holdsPort = (type: unknown): boolean => type === 'tcp' || type === 'udp'

/** Shared verdicts, so an unchanged call allocates none; `rule` is what trace shows. */
const EXPLICIT: Verdict = Object.freeze({ rule: 'explicit' })
const KEPT: Verdict = Object.freeze({ rule: 'kept' })
const NO_RANGE: Verdict = Object.freeze({ rule: 'no_range' })
const UNKNOWN_USER: Verdict = Object.freeze({ rule: 'unknown_user' })

export default definePlugin({
  description: 'remote ports of tcp and udp proxies from a range, held in the registry per user and proxy name (top-level `registry` block)',
  ops: ['NewProxy'],
  options: z.strictObject({
    mode: z.enum(['assign', 'sticky']).default('assign')
      .describe('assign: only when frpc asks for remote port 0 or none; sticky: always, the same user and proxy name getting the same port'),
    range: z.array(z.union([z.number().int(), z.string()])).min(1).max(1000).superRefine(checkRange).optional()
      .describe('ports and "low-high" ranges (1-65535) to assign from; absent: each user\'s `ports` from the users table'),
    releaseAfter: durationIn(1000, 365 * DAY_MS, 'a hold').default(7 * DAY_MS)
      .describe('how long a port stays held for its user and proxy name after the proxy closes: "1h", "7d" or milliseconds, from 1s to 365d'),
    reason: z.string().default('no free remote port for {{user}} in {{ports}}').describe('template for "no free port"; may use {{ports}} (the ranges)')
  }),
  create (options, deps) {
    const registry = deps.registry()
    const { mode, releaseAfter } = options
    const reason = compileAt('reason', () => compileTemplate(options.reason, { step: deps.name, extra: ['ports'] }))
    const fixed = options.range === undefined ? undefined : { ranges: rangesOf(options.range), text: options.range.join(', ') }
    let table: UserTable | undefined
    if (fixed === undefined) {
      table = compileAt('range', () => {
        try {
          return deps.users()
        } catch (err) {
          if (err instanceof BrokenBlock) throw err
          throw new Error('without range, the step assigns from each user\'s ports in the users table: set range, or add the top-level "users" block')
        }
      })
    }

    const failed = (error: unknown, why: string): Verdict => registry.options.onStoreError === 'reject'
      ? { error, reject: `frp-plugin-gateway: step ${deps.name} failed: ${why}`, rule: 'store_error' }
      : { error, rule: 'store_error' }

    const assign = (content: Content, ctx: CallContext, user: string, name: string, ranges: PortRanges, text: string): Verdict | Promise<Verdict> => {
      const port = registry.store.assignPort({ user, name, ranges, holdMs: releaseAfter, pendingMs: ctx.deadline - performance.now() + RESERVATION_GRACE_MS })
      return port instanceof Promise
        ? port.then(p => chosen(p, content, ctx, text), (err: unknown) => failed(err, 'registry unavailable'))
        : chosen(port, content, ctx, text)
    }
    const chosen = (port: number | undefined, content: Content, ctx: CallContext, text: string): Verdict => {
      if (port === undefined) {
        const at = { op: ctx.op, reqid: ctx.reqid, ports: text }
        return { reject: reason(content, at), loggedReason: reason.masked?.(content, at), rule: 'no_free_port' }
      }
      if (own(content, 'remote_port') === port) return KEPT
      const out = copy(content)
      out.remote_port = port
      return { content: out, rule: 'assigned' }
    }

    // a record's ranges, parsed once per record the table hands out (a reload or a Redis read makes a new one)
    const parsed = new WeakMap<CompiledUser, { ranges: PortRanges, text: string }>()
    const fromUser = (lookup: UserLookup<CompiledUser>, content: Content, ctx: CallContext, user: string, name: string): Verdict | Promise<Verdict> => {
      if (lookup.status === 'found') {
        const ports = lookup.record.record.ports
        // a user the table lets use any port, or none: nothing to assign from (the users step decides)
        if (ports === undefined || ports.length === 0) return NO_RANGE
        let cached = parsed.get(lookup.record)
        if (cached === undefined) parsed.set(lookup.record, cached = { ranges: rangesOf(ports), text: ports.join(', ') })
        return assign(content, ctx, user, name, cached.ranges, cached.text)
      }
      if (lookup.status === 'unknown') return UNKNOWN_USER
      return failed(lookup.error, lookup.status === 'invalid' ? `the record of ${user} is not valid` : 'user table unavailable')
    }

    /**
     * A port frpc asked for (assign mode) passes, unless frps refused it to this very proxy (reconciliation found it
     * never open): frpc tries again every 30 s, each try allowed and recorded, counted by quota, refused by frps again.
     */
    const explicit = (user: string, name: string, asked: number): Promise<Verdict> => registry.store.portOwner(asked).then(owner => {
      if (owner?.refused !== true || owner.user !== user || owner.name !== name) return EXPLICIT
      const until = new Date(owner.heldUntil as number).toISOString()
      return { reject: `frps refused remote port ${asked} to ${name} (another program listens there, or allowPorts): ask for another port, or this one after ${until}`, rule: 'refused' }
    }, (err: unknown) => failed(err, 'registry unavailable'))

    return function ports (content, ctx) {
      if (!holdsPort(own(content, 'proxy_type'))) return
      const asked = own(content, 'remote_port')
      const name = own(content, 'proxy_name')
      if (mode === 'assign' && asked !== undefined && asked !== null && asked !== 0) {
        return Number.isInteger(asked) && typeof name === 'string' ? explicit(ownText(own(content, 'user'), 'user'), name, asked as number) : EXPLICIT
      }
      if (typeof name !== 'string' || name === '') return
      const user = ownText(own(content, 'user'), 'user')
      if (fixed !== undefined) return assign(content, ctx, user, name, fixed.ranges, fixed.text)
      if (!USER_NAME.test(user)) return UNKNOWN_USER
      const lookup = (table as UserTable).lookup(user)
      return lookup instanceof Promise ? lookup.then(l => fromUser(l, content, ctx, user, name)) : fromUser(lookup, content, ctx, user, name)
    }
  }
})
