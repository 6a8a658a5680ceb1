import { BlockList, isIP } from 'node:net'
import { z } from 'zod'
import { compileAt } from './errors.js'
import {
  carries, clientIp, clientMetas, clientUser, foldedPath, getIn, isObject, jsonRecord, OPS, own, parsePath, pathTarget, proxyMetas, proxyTypeSchema, remoteIp, sameJson,
  stringRecord, type Content, type Op
} from './protocol.js'
import type { ProxyLookup } from './registry/store.js'

export interface When {
  users?: string[]
  proxyTypes?: string[]
  proxyNames?: string[]
  metas?: Record<string, string>
  proxyMetas?: Record<string, string | string[]>
  clientCidrs?: string[]
  remoteCidrs?: string[]
  remotePorts?: Array<number | string>
  fields?: Record<string, unknown>
  not?: When
}

const list = z.array(z.string()).min(1)
// frps omits an empty value (0.4x+), so "" would match only what frps 0.33 sends for a missing one
const names = z.array(z.string().min(1, 'an empty name never matches: frps omits empty values')).min(1)
// like stringRecord, a `__proto__` key stays a plain key
const metaValues = z.any().superRefine((value, ctx) => {
  if (!isObject(value)) {
    ctx.addIssue({ code: 'custom', message: 'expected an object of meta names to a value or a list of values' })
    return
  }
  for (const [key, v] of Object.entries(value)) {
    const ok = typeof v === 'string' || (Array.isArray(v) && v.length > 0 && v.every(item => typeof item === 'string'))
    if (!ok) ctx.addIssue({ code: 'custom', path: [key], message: 'expected a string or a non-empty list of strings' })
  }
}).meta({ type: 'object', propertyNames: { type: 'string' }, additionalProperties: { anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' }, minItems: 1 }] } })

// like an empty list, a condition with no key checks nothing; under `not` it makes a step that never runs (`not: {}` too: compileWhen)
const someKey = <T extends z.ZodType>(schema: T, what: string) =>
  schema.refine(v => !isObject(v) || Object.keys(v).length > 0, `an empty ${what} holds on every call (under not: on none); give a key or leave it out`)

export const whenSchema: z.ZodType<When> = z.lazy(() => z.strictObject({
  users: names.optional().describe('client user names (Login: user; other ops: user.user)'),
  proxyTypes: z.array(proxyTypeSchema).min(1).optional().describe('proxy types: tcp, udp, http, https, stcp, xtcp, sudp, tcpmux'),
  proxyNames: names.optional().describe('globs against proxy_name (* and ?); frps prefixes it with "user."'),
  metas: someKey(stringRecord(), 'metas condition').optional().describe('client metas that must have these exact values'),
  proxyMetas: someKey(metaValues, 'proxyMetas condition').optional().describe('proxy metas -> a value or a list of values (any of them). NewProxy: its own metas; ' +
    'NewUserConn, CloseProxy: the metas the registry holds for the proxy (needs the registry block)'),
  fields: someKey(jsonRecord(), 'fields condition').optional().describe('content fields by dotted path -> a JSON value or a list of values (any of them); ' +
    'null: absent or null; a list field is matched by a list of lists'),
  clientCidrs: list.optional().describe("CIDRs or addresses against Login's client_address"),
  remoteCidrs: list.optional().describe("CIDRs or addresses against NewUserConn's remote_addr"),
  remotePorts: z.array(z.union([z.number().int(), z.string()])).min(1).optional().describe('ports or "low-high" ranges against NewProxy\'s remote_port'),
  not: whenSchema.optional().describe('a condition that must not hold')
}))

/** What a matcher reads besides the content: the registry's record of the call's proxy, on the ops that read one. */
export interface MatchContext { proxy?: ProxyLookup }

/** Returns null when the condition holds, else the name of the first condition that failed (for trace). */
export type Matcher = (op: Op, content: Content, ctx?: MatchContext) => string | null

type Check = (op: Op, content: Content, ctx?: MatchContext) => boolean

/** Where a `when` reads proxy metas (`proxyMetas`, `not.proxyMetas`...), or undefined. */
export function proxyMetasPath (when: When | undefined): string | undefined {
  if (when === undefined) return undefined
  if (when.proxyMetas !== undefined) return 'proxyMetas'
  const inner = proxyMetasPath(when.not)
  return inner === undefined ? undefined : `not.${inner}`
}

function addCidr (block: BlockList, cidr: string): void {
  const [addr, bits, extra] = cidr.split('/')
  const family = isIP(addr)
  const prefix = bits === undefined ? (family === 6 ? 128 : 32) : /^\d+$/.test(bits) ? Number(bits) : NaN
  if (family === 0 || extra !== undefined || !Number.isInteger(prefix) || prefix < 0 || prefix > (family === 6 ? 128 : 32) || bits === '') {
    throw new Error(`"${cidr}" is not an IPv4 or IPv6 address or CIDR`)
  }
  block.addSubnet(addr, prefix, family === 6 ? 'ipv6' : 'ipv4')
}

// Each entry is checked on its own, so one bad entry hides none of the others.
export function cidrList (cidrs: string[]): (ip: string) => boolean {
  const block = new BlockList()
  cidrs.forEach((cidr, i) => { compileAt(`[${i}]`, () => addCidr(block, cidr)) })
  return ip => {
    const family = isIP(ip)
    if (family === 0) return false
    if (family === 6 && ip.toLowerCase().startsWith('::ffff:') && isIP(ip.slice(7)) === 4) {
      return block.check(ip.slice(7), 'ipv4') || block.check(ip, 'ipv6')
    }
    return block.check(ip, family === 6 ? 'ipv6' : 'ipv4')
  }
}

/** One port or "low-high" range as the config writes it; throws naming the entry. */
export function portRange (p: number | string): [number, number] {
  const m = /^(\d+)(?:-(\d+))?$/.exec(String(p))
  const lo = m ? Number(m[1]) : NaN
  const hi = m?.[2] !== undefined ? Number(m[2]) : lo
  if (!(lo >= 0 && hi <= 65535 && lo <= hi)) throw new Error(`"${p}" is not a port or a "low-high" range within 0-65535`)
  return [lo, hi]
}

/** A port or range a proxy may be given (a ports step's range, a user's ports): frpc's remote_port 0 asks frps to pick, so no range holds it. */
export function remotePortRange (p: number | string): [number, number] {
  const range = portRange(p)
  if (range[0] === 0) throw new Error(`"${p}" includes port 0, which asks frps to pick a port: ranges start at 1`)
  return range
}

export function portRanges (ports: Array<number | string>): (port: number) => boolean {
  const ranges = ports.flatMap((p, i) => compileAt(`[${i}]`, () => [portRange(p)]) ?? [])
  return port => ranges.some(([lo, hi]) => port >= lo && port <= hi)
}

// A glob piece between two `*`: literal runs and `?` (null), each `?` one character (a surrogate pair is one).
type Piece = Array<string | null>
const isHigh = (c: number): boolean => c >= 0xd800 && c <= 0xdbff
const isLow = (c: number): boolean => c >= 0xdc00 && c <= 0xdfff
const nextChar = (s: string, i: number): number => isHigh(s.charCodeAt(i)) && isLow(s.charCodeAt(i + 1)) ? i + 2 : i + 1
const prevChar = (s: string, i: number): number => isLow(s.charCodeAt(i - 1)) && isHigh(s.charCodeAt(i - 2)) ? i - 2 : i - 1

/** End of the piece matched at `at`, or -1. */
function matchAt (s: string, piece: Piece, at: number): number {
  for (const part of piece) {
    if (part === null) {
      if (at >= s.length) return -1
      at = nextChar(s, at)
    } else {
      if (!s.startsWith(part, at)) return -1
      at += part.length
    }
  }
  return at
}

/** End of the leftmost match of the piece at or after `from`, or -1. */
function find (s: string, piece: Piece, from: number): number {
  const head = piece[0]
  for (let at = from; at <= s.length; at = typeof head === 'string' ? at + 1 : nextChar(s, at)) {
    if (typeof head === 'string' && (at = s.indexOf(head, at)) === -1) return -1
    const end = matchAt(s, piece, at)
    if (end !== -1) return end
  }
  return -1
}

/**
 * Compiles a glob (`*` any run, `?` one character). A regex of `.*` per `*` backtracks polynomially on a
 * long name; here the first piece is anchored at the start, the last at the end, and each piece between
 * takes its leftmost match (which never loses a match): time linear in the name for a given glob.
 */
export function compileGlob (glob: string): (name: string) => boolean {
  const pieces: Piece[] = glob.split('*').map(text => text.split(/(\?)/).filter(p => p !== '').map(p => p === '?' ? null : p))
  const first = pieces[0]
  if (pieces.length === 1) return name => matchAt(name, first, 0) === name.length
  const last = pieces[pieces.length - 1]
  const middle = pieces.slice(1, -1).filter(p => p.length > 0)
  const lastChars = last.reduce((n, p) => n + (p === null ? 1 : [...p].length), 0)
  return name => {
    let at = matchAt(name, first, 0)
    for (let i = 0; i < middle.length && at !== -1; i++) at = find(name, middle[i], at)
    if (at === -1) return false
    let start = name.length
    for (let i = 0; i < lastChars && start >= at; i++) start = prevChar(name, start)
    return start >= at && matchAt(name, last, start) === name.length
  }
}

/**
 * Whether a name matches one of the globs: names without `*` or `?` by a Set, `*SUFFIX` and `PREFIX*`
 * globs by the name's endings and beginnings of their lengths, a wildcard inside (`web*.example.com`) only
 * on names that begin with its literal head or end with its literal tail, the rest one by one. A user's 1000
 * domain globs against a call's thousands of custom_domains stay thousands of lookups, not millions of matches.
 */
export function anyGlob (globs: readonly string[]): (name: string) => boolean {
  const exact = new Set<string>()
  const suffixes = new Set<string>()
  const prefixes = new Set<string>()
  // a wildcard inside: tried only on names that start with its literal head (or, with none, end with its literal tail)
  const byHead = new Map<string, Array<(name: string) => boolean>>()
  const byTail = new Map<string, Array<(name: string) => boolean>>()
  const others: Array<(name: string) => boolean> = []
  const plain = (text: string): boolean => !/[*?]/.test(text)
  const file = (map: Map<string, Array<(name: string) => boolean>>, key: string, match: (name: string) => boolean): void => {
    const list = map.get(key)
    if (list === undefined) map.set(key, [match])
    else list.push(match)
  }
  for (const glob of globs) {
    if (plain(glob)) exact.add(glob)
    else if (glob.startsWith('*') && plain(glob.slice(1))) suffixes.add(glob.slice(1))
    else if (glob.endsWith('*') && plain(glob.slice(0, -1))) prefixes.add(glob.slice(0, -1))
    else {
      const head = glob.slice(0, glob.search(/[*?]/))
      const tail = glob.slice(Math.max(glob.lastIndexOf('*'), glob.lastIndexOf('?')) + 1)
      if (head !== '') file(byHead, head, compileGlob(glob))
      else if (tail !== '') file(byTail, tail, compileGlob(glob))
      else others.push(compileGlob(glob))
    }
  }
  const lengths = (keys: Iterable<string>): number[] => [...new Set([...keys].map(s => s.length))]
  const [ends, starts, heads, tails] = [lengths(suffixes), lengths(prefixes), lengths(byHead.keys()), lengths(byTail.keys())]
  const tryAll = (list: Array<(name: string) => boolean> | undefined, name: string): boolean => list !== undefined && list.some(match => match(name))
  return name => exact.has(name) ||
    ends.some(n => n <= name.length && suffixes.has(name.slice(name.length - n))) ||
    starts.some(n => n <= name.length && prefixes.has(name.slice(0, n))) ||
    heads.some(n => n <= name.length && tryAll(byHead.get(name.slice(0, n)), name)) ||
    tails.some(n => n <= name.length && tryAll(byTail.get(name.slice(name.length - n)), name)) ||
    others.some(match => match(name))
}

/** One `when.fields` entry: the ops whose content can hold the path, and a test of its value. */
function fieldCheck (raw: string, wanted: unknown): { ops: ReadonlySet<Op>, check: Check } {
  const path = parsePath(raw)
  // frps never sends such a key: the condition would read a field that is always absent
  for (const op of OPS) {
    const folded = foldedPath(op, path)
    if (folded !== undefined) throw new Error(folded)
  }
  const values = Array.isArray(wanted) ? wanted : [wanted]
  if (values.length === 0) throw new Error('an empty list matches nothing')
  const ops = new Set(OPS.filter(op => carries(op, path)))
  // a value the field can never hold is a mistake, most often a list meant as the value of a list field
  for (const value of values) {
    if (value === null) continue
    const fits = [...ops].some(op => pathTarget(op, path).field?.ok(value) ?? true)
    if (!fits) {
      const kind = [...ops].map(op => pathTarget(op, path).field?.kind)[0]
      const hint = Array.isArray(wanted) && kind?.startsWith('a list') === true ? ' (a list of values matches any of them: match a list with [[...]])' : ''
      throw new Error(`${JSON.stringify(value)} can never match: ${ops.size === 0 ? 'no op carries this field' : `${raw} is ${kind}`}${hint}`)
    }
    // frps's proxy types are a closed set: "TCP" would match nothing, as in when.proxyTypes
    if (path.length === 1 && path[0] === 'proxy_type') {
      const known = proxyTypeSchema.safeParse(value)
      if (!known.success) throw new Error(known.error.issues[0].message)
    }
  }
  return {
    ops,
    check: (op, c) => {
      if (!ops.has(op)) return false
      const value = getIn(c, path)
      for (const w of values) if (w === null ? value == null : sameJson(value, w)) return true
      return false
    }
  }
}

const inSet = (values: string[]) => {
  const set = new Set(values)
  return (value: unknown) => typeof value === 'string' && set.has(value)
}

const opsCarrying = (field: string): ReadonlySet<Op> => new Set(OPS.filter(op => carries(op, [field])))

const only = (...ops: Op[]): ReadonlySet<Op> => new Set(ops)

/**
 * A condition that holds on none of the step's ops (`clientCidrs` on a NewProxy step) makes a step that never
 * runs, which no one means: a config error naming it. Under `not` such a condition holds on every call instead.
 */
function checkOps (holds: Array<[string, ReadonlySet<Op>]>, stepOps: readonly Op[]): void {
  const on = (ops: ReadonlySet<Op>): string => `only on ${[...ops].join(', ')}`
  const never = `the step runs on ${stepOps.join(', ')}: it would never run; set its "ops" or drop the condition`
  let joint: readonly Op[] = stepOps
  for (const [name, ops] of holds) {
    if (!stepOps.some(op => ops.has(op))) compileAt(name, () => { throw new Error(`this holds ${on(ops)}, and ${never}`) })
    joint = joint.filter(op => ops.has(op))
  }
  if (joint.length === 0 && holds.every(([, ops]) => stepOps.some(op => ops.has(op)))) {
    throw new Error(`its conditions hold together on no op the step runs on (${holds.map(([name, ops]) => `${name} ${on(ops)}`).join('; ')}): it would never run`)
  }
}

/**
 * Compiles a `when` once; every CIDR, glob and range is checked here, not per call (errors: OptionError with the key's path).
 * With `stepOps`, a condition that can hold on none of them is an error too.
 */
export function compileWhen (when: When | undefined, stepOps?: readonly Op[]): Matcher {
  if (when === undefined) return () => null
  const checks: Array<[string, Check]> = []
  // the ops on which a condition can hold, for those that cannot hold on every op
  const holds: Array<[string, ReadonlySet<Op>]> = []
  if (when.users) {
    const has = inSet(when.users)
    checks.push(['users', (op, c) => has(clientUser(op, c))])
  }
  if (when.proxyTypes) {
    const has = inSet(when.proxyTypes)
    // an unknown field of that name in another op's content is not the proxy's
    const typed = opsCarrying('proxy_type')
    holds.push(['proxyTypes', typed])
    checks.push(['proxyTypes', (op, c) => typed.has(op) && has(own(c, 'proxy_type'))])
  }
  if (when.proxyNames) {
    const matches = anyGlob(when.proxyNames)
    const named = opsCarrying('proxy_name')
    holds.push(['proxyNames', named])
    checks.push(['proxyNames', (op, c) => {
      const name = own(c, 'proxy_name')
      return named.has(op) && typeof name === 'string' && matches(name)
    }])
  }
  if (when.metas) {
    const wanted = Object.entries(when.metas)
    checks.push(['metas', (op, c) => {
      const metas = clientMetas(op, c)
      return wanted.every(([k, v]) => own(metas, k) === v)
    }])
  }
  if (when.proxyMetas) {
    const wanted = Object.entries(when.proxyMetas).map(([k, v]) => [k, Array.isArray(v) ? v : [v]] as const)
    checks.push(['proxyMetas', (op, c, ctx) => {
      const metas = proxyMetas(op, c, ctx?.proxy)
      return wanted.every(([k, values]) => {
        const value = own(metas, k)
        return typeof value === 'string' && values.includes(value)
      })
    }])
  }
  if (when.clientCidrs) {
    const inside = compileAt('clientCidrs', () => cidrList(when.clientCidrs as string[]))
    holds.push(['clientCidrs', only('Login')])
    checks.push(['clientCidrs', (op, c) => inside(clientIp(op, c))])
  }
  if (when.remoteCidrs) {
    const inside = compileAt('remoteCidrs', () => cidrList(when.remoteCidrs as string[]))
    holds.push(['remoteCidrs', only('NewUserConn')])
    checks.push(['remoteCidrs', (op, c) => inside(remoteIp(op, c))])
  }
  if (when.remotePorts) {
    const inside = compileAt('remotePorts', () => portRanges(when.remotePorts as Array<number | string>))
    holds.push(['remotePorts', only('NewProxy')])
    checks.push(['remotePorts', (op, c) => {
      // frps omits a zero remote_port (frps picks the port): absent and null mean 0
      const port = own(c, 'remote_port') ?? 0
      return op === 'NewProxy' && typeof port === 'number' && inside(port)
    }])
  }
  if (when.fields) {
    const fields = Object.entries(when.fields).map(([raw, wanted]) => compileAt(`fields.${raw}`, () => fieldCheck(raw, wanted)))
    for (const [i, raw] of Object.keys(when.fields).entries()) if (fields[i] !== undefined) holds.push([`fields.${raw}`, fields[i].ops])
    checks.push(['fields', (op, c) => fields.every(field => field.check(op, c))])
  }
  if (when.not) {
    const inner = compileAt('not', () => {
      if (Object.keys(when.not as When).length === 0) throw new Error('an empty condition holds on every call, so under not on none: the step would never run')
      return compileWhen(when.not)
    })
    checks.push(['not', (op, c, ctx) => inner(op, c, ctx) !== null])
  }
  if (stepOps !== undefined) checkOps(holds, stepOps)
  // while the registry cannot be read (onStoreError allow), a `when` that reads it does not hold, even under `not`
  if (proxyMetasPath(when) !== undefined) checks.unshift(['proxyMetas', (_op, _c, ctx) => ctx?.proxy !== 'error'])
  return (op, content, ctx) => {
    for (const [name, check] of checks) if (!check(op, content, ctx)) return name
    return null
  }
}
