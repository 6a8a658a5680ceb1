import { z } from 'zod'
import { durationIn, formatDuration } from '../src/bounds.js'
import { definePlugin, type CallContext, type Verdict } from '../src/chain.js'
import { USERS_RESULTS, type UsersResult } from '../src/metrics.js'
import { clip, copy, hostOf, own, ownText, put, type Content, type Op } from '../src/protocol.js'
import { USER_NAME, type CompiledUser } from '../src/users/record.js'
import type { UserLookup } from '../src/users/table.js'

const USER_OPS = ['Login', 'NewProxy', 'Ping', 'NewWorkConn', 'NewUserConn'] as const satisfies readonly Op[]

/** Shared verdicts, so an allowed call allocates none; `rule` is what trace shows. */
const OK: Verdict = Object.freeze({ rule: 'ok' })
const UNKNOWN_ALLOWED: Verdict = Object.freeze({ rule: 'unknown_user' })
const UNKNOWN: UserLookup<CompiledUser> = Object.freeze({ status: 'unknown' })

/** A store failure tagged for the repeat-limited warning (chain.ts logs it by its `result`). */
const storeFailure = (lookup: UserLookup<CompiledUser> & { status: 'invalid' | 'error' }): Error =>
  Object.assign(new Error(lookup.error.message, { cause: lookup.error }), { result: lookup.status === 'invalid' ? 'invalid_user_record' : 'user_table_unavailable' })

export default definePlugin({
  description: 'the user table (top-level `users` block): who may log in with which secret, and what each user may register',
  ops: USER_OPS,
  options: z.strictObject({
    tokenMeta: z.string().min(1).default('token').describe('the Login meta that carries the secret (frpc: metadatas.token)'),
    requireToken: z.boolean().default(true)
      .describe('true: a record without token or tokenSha256 refuses every Login; false: such records skip the token check'),
    unknownUsers: z.enum(['reject', 'allow']).default('reject').describe('allow: users the table does not know go on to later steps'),
    maxClockSkew: durationIn(1000, 86_400_000, 'a clock skew').optional()
      .describe('refuse a Login whose timestamp is further than this from the gateway\'s clock: "30s", "15m", "1h" or milliseconds, from 1s to 24h (default: off)'),
    stripToken: z.boolean().default(false).describe('remove the secret from the Login metas frps keeps, after checking it'),
    onStoreError: z.enum(['reject', 'allow']).default('reject').describe('what a call gets while the table cannot say (Redis down, a record that does not validate)')
  }),
  create (options, deps) {
    const table = deps.users()
    const { tokenMeta, requireToken, stripToken, maxClockSkew } = options
    const rejectUnknown = options.unknownUsers === 'reject'
    const counters = deps.metrics.usersDecisions
    const count = {} as Record<UsersResult, { inc: () => void }>
    for (const result of USERS_RESULTS) count[result] = counters.labels(deps.name, result)
    const skewText = maxClockSkew === undefined ? '' : formatDuration(maxClockSkew)

    const deny = (rule: UsersResult, reason: string): Verdict => {
      count[rule].inc()
      return { reject: reason, rule }
    }
    const ok = (content?: Content): Verdict => {
      count.ok.inc()
      return content === undefined ? OK : { content, rule: 'ok' }
    }

    /** Enabled, not expired, the token matching: what every op checks. `metas` carry the token at Login, maybe later. */
    const standing = (user: CompiledUser, metas: unknown, login: boolean): Verdict | undefined => {
      const { name, record } = user
      if (!user.enabled) return deny('disabled', `user ${name} is disabled`)
      if (record.expires !== undefined && user.expired(Date.now())) return deny('expired', `user ${name} expired at ${new Date(record.expires).toISOString()}`)
      const secret = own(metas, tokenMeta)
      // after Login the metas carry the token unless stripToken took it out: then Login's check stands
      if (!login && secret === undefined) return
      if (!user.hasToken) {
        if (requireToken) return deny('bad_token', `user ${name} has no token in the user table (token or tokenSha256)`)
      } else if (!user.tokenMatches(secret)) {
        return deny('bad_token', `token does not match for ${name}`)
      }
    }

    const login = (user: CompiledUser, content: Content): Verdict => {
      const metas = own(content, 'metas')
      const refused = standing(user, metas, true)
      if (refused !== undefined) return refused
      const { name, record } = user
      if (record.clientCidrs !== undefined) {
        const ip = hostOf(own(content, 'client_address'))
        if (ip !== '' && !user.cidrAllowed(ip)) return deny('client_cidr', `client address ${ip} is outside the clientCidrs of ${name}`)
      }
      if (maxClockSkew !== undefined) {
        const timestamp = own(content, 'timestamp')
        if (typeof timestamp !== 'number' || timestamp === 0) return deny('clock_skew', `Login of ${name} carries no timestamp (maxClockSkew ${skewText})`)
        // frpc's timestamp is whole seconds (Unix time): compared at that resolution
        const behind = Math.floor(Date.now() / 1000) - timestamp
        if (Math.abs(behind) * 1000 > maxClockSkew) {
          return deny('clock_skew', `Login timestamp of ${name} is ${Math.abs(behind)} s ${behind > 0 ? 'behind' : 'ahead of'} the gateway's clock (maxClockSkew ${skewText}): check the client's clock`)
        }
      }
      let next: Content | undefined
      const set = record.metas
      if (set !== undefined) {
        // never the token's key: frps hands these metas to every later call, whose token check would then fail
        for (const key in set) if (key !== tokenMeta && own(metas, key) !== set[key]) put(next ??= copy(metas), key, set[key])
      }
      if (stripToken && own(next ?? metas, tokenMeta) !== undefined) delete (next ??= copy(metas))[tokenMeta]
      if (next === undefined) return ok()
      const out = copy(content)
      out.metas = next
      return ok(out)
    }

    const newProxy = (user: CompiledUser, content: Content): Verdict => {
      const refused = standing(user, own(own(content, 'user'), 'metas'), false)
      if (refused !== undefined) return refused
      const { name, record } = user
      const type = own(content, 'proxy_type')
      if (typeof type === 'string' && type !== '' && !user.typeAllowed(type)) return deny('proxy_type', `proxy type ${clip(type)} is not allowed for ${name}`)
      if (record.ports !== undefined && (type === 'tcp' || type === 'udp')) {
        if (record.ports.length === 0) return deny('port', `${name} may have no tcp or udp proxy (ports is empty)`)
        const port = own(content, 'remote_port') ?? 0
        if (port === 0) return deny('port', `${name} may use the ports ${user.portsText} only: set remotePort on the proxy (frps would pick a port)`)
        if (typeof port === 'number' && !user.portAllowed(port)) return deny('port', `remote port ${port} is outside ${name}'s ports ${user.portsText}`)
      }
      if (record.domains !== undefined) {
        const domains = own(content, 'custom_domains')
        if (Array.isArray(domains)) {
          for (const domain of domains) {
            if (typeof domain === 'string' && domain !== '' && !user.domainAllowed(domain)) return deny('domain', `domain ${clip(domain)} is not one of ${name}'s domains`)
          }
        }
      }
      if (record.subdomains !== undefined) {
        const subdomain = own(content, 'subdomain')
        if (typeof subdomain === 'string' && subdomain !== '' && !user.subdomainAllowed(subdomain)) {
          return deny('subdomain', `subdomain ${clip(subdomain)} is not one of ${name}'s subdomains`)
        }
      }
      if (record.proxyNames !== undefined) {
        const full = own(content, 'proxy_name')
        // frps prefixes the proxy name with `user.` when frpc sets a user
        const proxy = typeof full === 'string' && full.startsWith(`${name}.`) ? full.slice(name.length + 1) : full
        if (typeof proxy === 'string' && !user.nameAllowed(proxy)) return deny('proxy_name', `proxy name ${clip(proxy)} is not one of ${name}'s proxyNames`)
      }
      const limit = record.bandwidthLimit
      if (limit === undefined || (own(content, 'bandwidth_limit') === limit && own(content, 'bandwidth_limit_mode') === 'server')) return ok()
      const out = copy(content)
      out.bandwidth_limit = limit
      out.bandwidth_limit_mode = 'server'
      return ok(out)
    }

    const decide = (lookup: UserLookup<CompiledUser>, name: string, content: Content, ctx: CallContext): Verdict => {
      if (lookup.status === 'found') {
        const user = lookup.record
        if (ctx.op === 'Login') return login(user, content)
        if (ctx.op === 'NewProxy') return newProxy(user, content)
        return standing(user, own(own(content, 'user'), 'metas'), false) ?? ok()
      }
      if (lookup.status === 'unknown') {
        if (!rejectUnknown) {
          count.unknown_user.inc()
          return UNKNOWN_ALLOWED
        }
        return deny('unknown_user', name === '' ? 'unknown user: frpc sets no user (set user in the frpc config)' : `unknown user ${clip(name)}`)
      }
      count.store_error.inc()
      const error = storeFailure(lookup)
      if (options.onStoreError === 'allow') return { error, rule: 'store_error' }
      const why = lookup.status === 'invalid' ? `the record of ${name} is not valid` : 'user table unavailable'
      return { error, reject: `frp-plugin-gateway: step ${deps.name} failed: ${why}`, rule: 'store_error' }
    }

    return function users (content, ctx) {
      // Login carries the client's own user; every later op the client's (for NewUserConn: the proxy owner's)
      const name = ownText(ctx.op === 'Login' ? content : own(content, 'user'), 'user')
      // no table holds a name outside USER_NAME: such a name reaches no Redis key and no cache entry
      const lookup = USER_NAME.test(name) ? table.lookup(name) : UNKNOWN
      return lookup instanceof Promise ? lookup.then(l => decide(l, name, content, ctx)) : decide(lookup, name, content, ctx)
    }
  }
})
