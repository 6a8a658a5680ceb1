import { z } from 'zod'
import { GatewayError } from './errors.js'
import type { ProxyLookup } from './registry/store.js'

/** The six operations frps sends to a server plugin. */
export const OPS = ['Login', 'NewProxy', 'CloseProxy', 'Ping', 'NewWorkConn', 'NewUserConn'] as const
export type Op = (typeof OPS)[number]
export type Content = Record<string, unknown>

const OP_SET: ReadonlySet<string> = new Set(OPS)
const hasOwn = Object.hasOwn
export const isOp = (value: unknown): value is Op => typeof value === 'string' && OP_SET.has(value)
const received = (v: unknown): string => v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v

/** The proxy types frps knows: a closed set, so a misspelt one in a config would match nothing. */
export const PROXY_TYPES = ['tcp', 'udp', 'http', 'https', 'stcp', 'xtcp', 'sudp', 'tcpmux'] as const
// a list or an object is named, not quoted: JSON.stringify of one nested deep enough (a users hash field) overflows the stack
const shown = (v: unknown): string => v !== null && typeof v === 'object' ? `an ${received(v)}` : clip(JSON.stringify(v) ?? String(v))
export const proxyTypeSchema = z.enum(PROXY_TYPES, {
  error: issue => `${shown(issue.input)} is not a proxy type frps knows: ${PROXY_TYPES.join(', ')}`
})

// frps < 0.4x sends zero values and nil maps as null, newer frps omits them: every field is optional and nullable.
const opt = <T extends z.ZodType>(type: T) => type.nullable().optional()
/** A JSON object: not null, not an array. */
export const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v)
const isStrMap = (v: unknown): boolean => {
  if (!isObject(v)) return false
  for (const key in v) if (typeof v[key] !== 'string') return false
  return true
}
// Not z.record: it skips a "__proto__" key, which would let a non-string meta through unchecked.
const checkStrMap = (value: unknown, ctx: z.RefinementCtx): void => {
  if (!isObject(value)) {
    ctx.addIssue({ code: 'custom', message: `Invalid input: expected record, received ${received(value)}` })
    return
  }
  for (const [key, v] of Object.entries(value)) {
    if (typeof v !== 'string') ctx.addIssue({ code: 'custom', path: [key], message: `Invalid input: expected string, received ${received(v)}` })
  }
}

/**
 * A content field: its zod schema, which names what is wrong, and the same rule as a plain test, which
 * answers the common case (all is well) in a fraction of the time.
 */
interface Field {
  zod: z.ZodType
  ok: (value: unknown) => boolean
  /** what it is, for config errors: "a string", "a list of strings" */
  kind: string
  /** what lies below it (checked when the config is compiled): an element, a map value or the fields of an object */
  item?: Field
  list?: boolean
  fields?: Record<string, Field>
}
const field = (kind: string, zod: z.ZodType, test: (value: unknown) => boolean, below: Partial<Field> = {}): Field =>
  ({ zod: opt(zod), ok: value => value === undefined || value === null || test(value), kind, ...below })

const str = field('a string', z.string(), v => typeof v === 'string')
const int = field('a number', z.number().int(), v => Number.isSafeInteger(v))
const bool = field('a boolean', z.boolean(), v => typeof v === 'boolean')
// a loop, not every(): every() skips the holes a list can have (sent to frps as null)
const strList = field('a list of strings', z.array(z.string()), v => {
  if (!Array.isArray(v)) return false
  for (let i = 0; i < v.length; i++) if (typeof v[i] !== 'string') return false
  return true
}, { item: str, list: true })
const strMap = field('a map of strings', z.unknown().superRefine(checkStrMap), isStrMap, { item: str })

/** How deep objects and arrays may nest in content, content itself being level 1 (frps sends 3). */
export const MAX_CONTENT_DEPTH = 32
/** True when value nests more than `room` levels of objects and arrays; recurses at most room + 1 deep. */
export function nestsDeeper (value: unknown, room: number): boolean {
  if (value === null || typeof value !== 'object') return false
  if (room === 0) return true
  if (Array.isArray(value)) return value.some(item => nestsDeeper(item, room - 1))
  for (const key in value) if (nestsDeeper((value as Content)[key], room - 1)) return true
  return false
}

/**
 * A content object of known fields at `path` (level `level`). Known fields are shallow and typed, so
 * only an unknown field can nest deep enough to overflow the stack of whatever serializes or walks
 * the content later: its depth is checked where it is met, which ordinary calls never reach.
 */
function object (fields: Record<string, Field>, path: string, level: number): Field {
  const entries = Object.entries(fields)
  const zod = z.looseObject(Object.fromEntries(entries.map(([key, f]) => [key, f.zod])))
  // walks the keys the content has (for...in: own keys of a JSON object), about half the time of
  // looking up every known field; a Map, so a key such as "constructor" finds no field
  const known = new Map(entries.map(([key, f]) => [key, f.ok]))
  return field('an object', zod, v => {
    if (!isObject(v)) return false
    // a field of the wrong type does not end the walk: content too deep is refused whatever else is wrong with it
    let fits = true
    for (const key in v) {
      const ok = known.get(key)
      if (ok === undefined) {
        if (nestsDeeper(v[key], MAX_CONTENT_DEPTH - level)) throw new GatewayError('FRPGW_ERR_TOO_DEEP', `${path}.${clip(key)}`, MAX_CONTENT_DEPTH)
      } else if (!ok(v[key])) fits = false
    }
    return fits
  }, { fields })
}
/** A caller's string as an error message quotes it: at most `max` characters. */
/**
 * JSON.parse of a call's text, with every lone surrogate (a \ud800 escape without its pair) read as
 * U+FFFD, in values and keys, as Go's encoding/json reads it: frps, a Go plugin downstream and Redis all
 * see U+FFFD, so a user "a\ud800" is the same user everywhere (before, the memory registry told it from
 * "a\ufffd" and Redis did not). The walk runs only on a text holding such an escape, and stops at the
 * depth past which checkContent refuses the call anyway.
 */
export function parseCall (text: string): unknown {
  return parseWellFormed(text, MAX_CONTENT_DEPTH + 1)
}

/** JSON.parse, lone surrogates read as U+FFFD down to `levels` deep (the config and users files too: their names meet the calls'). */
export function parseWellFormed (text: string, levels: number): unknown {
  const value: unknown = JSON.parse(text)
  return SURROGATE_ESCAPE.test(text) ? wellFormed(value, levels) : value
}

const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/

// ES2024, in Node.js 20 (V8 11.3); the project compiles against ES2023 (Node.js 20 lacks other ES2024 parts)
declare global {
  interface String { toWellFormed: () => string }
}

function wellFormed (value: unknown, room: number): unknown {
  if (typeof value === 'string') return value.toWellFormed()
  if (value === null || typeof value !== 'object' || room === 0) return value
  if (Array.isArray(value)) return value.map(item => wellFormed(item, room - 1))
  // fromEntries defines each key as an own property: "__proto__" stays a plain key, as JSON.parse made it
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k.toWellFormed(), wellFormed(v, room - 1)]))
}

export const clip = (text: string, max = 64): string => text.length > max ? `${text.slice(0, max)}...` : text

/**
 * A string -> string map in the config (metas) that keeps a `__proto__` key as a plain own key, where
 * z.record would drop it without a word. The parsed value is the input object itself.
 */
export const stringRecord = (): z.ZodType<Record<string, string>> => z.any().superRefine(checkStrMap)
  .meta({ type: 'object', propertyNames: { type: 'string' }, additionalProperties: { type: 'string' } })

/** An object of JSON values in the config that keeps a `__proto__` key as a plain own key (see stringRecord). */
export const jsonRecord = (): z.ZodType<Record<string, unknown>> => z.any().superRefine((value, ctx) => {
  if (!isObject(value)) ctx.addIssue({ code: 'custom', message: `Invalid input: expected record, received ${received(value)}` })
}).meta({ type: 'object', propertyNames: { type: 'string' } })

const userInfo = { user: str, metas: strMap, run_id: str }
const user = object(userInfo, 'content.user', 2)

/** Content fields per op, with their types; unknown fields pass through (newer frps adds fields). */
const CONTENT: Record<Op, Record<string, Field>> = {
  Login: {
    version: str, hostname: str, os: str, arch: str, user: str, privilege_key: str, timestamp: int,
    run_id: str, client_id: str, metas: strMap, client_spec: object({ type: str, always_auth_pass: bool }, 'content.client_spec', 2),
    pool_count: int, client_address: str
  },
  NewProxy: {
    user, proxy_name: str, proxy_type: str, use_encryption: bool, use_compression: bool,
    bandwidth_limit: str, bandwidth_limit_mode: str, group: str, group_key: str, metas: strMap,
    annotations: strMap, remote_port: int, custom_domains: strList, subdomain: str, locations: strList,
    http_user: str, http_pwd: str, host_header_rewrite: str, headers: strMap, response_headers: strMap,
    route_by_http_user: str, sk: str, allow_users: strList, multiplexer: str
  },
  CloseProxy: { user, proxy_name: str },
  Ping: { user, privilege_key: str, timestamp: int },
  NewWorkConn: { user, run_id: str, privilege_key: str, timestamp: int },
  NewUserConn: { user, proxy_name: str, proxy_type: str, remote_addr: str }
}
/**
 * NewProxy fields that frpc and frps must agree on, each with what breaks when only frps sees a change
 * (frp: server/proxy/proxy.go wraps a work connection by the proxy's transport flags; frpc finds its
 * proxy by the name in NewProxyResp and StartWorkConn; visitors and xtcp peers prove themselves with sk).
 * A plugin may reject on them; it must never change them.
 */
export const AGREED_FIELDS: ReadonlyMap<string, string> = new Map([
  ['proxy_name', 'frpc finds its proxy by the name frps answers with (NewProxyResp, StartWorkConn): a renamed proxy never starts'],
  ['proxy_type', 'frps would serve another kind of proxy than the one frpc runs'],
  ['use_encryption', 'frps would encrypt (or not) the stream to frpc where frpc does the opposite: every connection breaks'],
  ['use_compression', 'frps would compress (or not) the stream to frpc where frpc does the opposite: every connection breaks'],
  ['sk', "visitors present the secret key the proxy's owner gave them (xtcp peers also encrypt with it): they would be refused"]
])
/** The op whose answer frps acts on with these fields (CloseProxy and NewUserConn answers are ignored). */
export const AGREED_OP: Op = 'NewProxy'

/** The agreed field an answer changed (absent, null and the zero value are equal: frps 0.4x+ omits zero values), or undefined. */
export function changedAgreedField (before: Content, after: Content): string | undefined {
  for (const key of AGREED_FIELDS.keys()) {
    const a = own(before, key)
    const b = own(after, key)
    if (a !== b && !(isZero(a) && isZero(b)) && !sameJson(a, b)) return key
  }
  return undefined
}
const isZero = (v: unknown): boolean => v === undefined || v === null || v === false || v === '' || v === 0

const contents = Object.fromEntries(OPS.map(op => [op, object(CONTENT[op], 'content', 1)])) as Record<Op, Field>

/** Content schemas per op (zod): field types only; unknown fields pass through. */
export const contentSchemas = Object.fromEntries(OPS.map(op => [op, contents[op].zod])) as Record<Op, z.ZodType>

// Go's encoding/json matches a key to a field whatever its case (folding \u017f to s, the Kelvin sign
// to k, the Turkish i's to i), the last one winning: a key that is no field's name but folds to one
// reaches frps as that field
export const goFold = (key: string): string => key.replace(/[\u017f\u212a\u0130\u0131]/g, c => GO_FOLDS[c]).toLowerCase()
const GO_FOLDS: Record<string, string> = { '\u017f': 's', '\u212a': 'k', '\u0130': 'i', '\u0131': 'i' }
const foldedNames = new WeakMap<Record<string, Field>, Map<string, string>>()

/** The first key of content frps would read as a field it is not named (`PROXY_NAME`: proxy_name), with that field; undefined when none. */
export function foldedField (op: Op, content: Content): string | undefined {
  return foldedIn(CONTENT[op], content, 'content')
}

function foldedNamesOf (fields: Record<string, Field>): Map<string, string> {
  let names = foldedNames.get(fields)
  if (names === undefined) foldedNames.set(fields, names = new Map(Object.keys(fields).map(name => [goFold(name), name])))
  return names
}

/** Why a config path names a field of the op's content by another case (`USE_ENCRYPTION`); undefined when it does not. */
export function foldedPath (op: Op, path: readonly string[]): string | undefined {
  let fields: Record<string, Field> | undefined = CONTENT[op]
  for (let i = 0; i < path.length && fields !== undefined; i++) {
    const key = path[i]
    if (hasOwn(fields, key)) {
      fields = fields[key].fields
      continue
    }
    const name = foldedNamesOf(fields).get(goFold(key))
    if (name === undefined) return undefined
    const field = [...path.slice(0, i), name].join('.')
    return `${path.slice(0, i + 1).join('.')} is no field name, but frps reads it as ${field} (Go matches keys whatever their case): write ${field}`
  }
  return undefined
}

function foldedIn (fields: Record<string, Field>, value: Content, path: string): string | undefined {
  const names = foldedNamesOf(fields)
  for (const key in value) {
    if (Object.hasOwn(fields, key)) {
      const below = fields[key].fields
      const inner = value[key]
      const found = below !== undefined && isObject(inner) ? foldedIn(below, inner, `${path}.${key}`) : undefined
      if (found !== undefined) return found
      continue
    }
    const name = names.get(goFold(key))
    if (name !== undefined) return `${path}.${clip(key)}, which frps reads as ${path}.${name}`
  }
  return undefined
}

/** Dotted path of a value inside content, as an operator would write it: `user.metas.team`, `locations[1]`. */
export function formatPath (path: readonly PropertyKey[]): string {
  let out = ''
  for (const key of path) {
    out += typeof key === 'number' ? `[${key}]` : out === '' ? String(key) : `.${String(key)}`
  }
  return out
}

/**
 * Checks content against the op's schema. Returns null when it fits, else a reason naming the field.
 * The parsed copy zod builds is thrown away: the original object (and its key order) is what travels on.
 * Content nested deeper than MAX_CONTENT_DEPTH is a reason too (a downstream's answer, say).
 */
export function checkContent (op: Op, content: unknown): string | null {
  try {
    return checkCall(op, content)
  } catch (err) {
    if (err instanceof GatewayError) return `invalid ${op} content: ${err.message}`
    throw err
  }
}

/** checkContent for a call from frps: content nested too deep throws FRPGW_ERR_TOO_DEEP (a 400, not a reject). */
export function checkCall (op: Op, content: unknown): string | null {
  if (!isObject(content)) return 'content must be a JSON object'
  return contents[op].ok(content) ? null : reason(op, contentSchemas[op].safeParse(content), [])
}

function reason (op: Op, result: z.ZodSafeParseResult<unknown>, at: PropertyKey[]): string | null {
  if (result.success) return null
  const issue = result.error.issues[0]
  return `invalid ${op} content: ${formatPath(['content', ...at, ...issue.path])}: ${issue.message}`
}

/** checkContent for the top-level fields a step changed: the others were checked when the call came in. */
export function checkFields (op: Op, content: Content, keys: readonly string[]): string | null {
  const fields = CONTENT[op]
  for (const key of keys) {
    const f = hasOwn(fields, key) ? fields[key] : undefined
    const value = own(content, key)
    const invalid = f === undefined || f.ok(value) ? null : reason(op, f.zod.safeParse(value), [key])
    if (invalid !== null) return invalid
  }
  return null
}


/** Own property or undefined: never reads through the prototype (a key named `constructor` is just a key). */
export function own (obj: unknown, key: string): unknown {
  return obj !== null && typeof obj === 'object' && hasOwn(obj, key) ? (obj as Content)[key] : undefined
}

/** An own property that is a string, else '' (a field frps left out, or a caller sent wrong). */
export function ownText (obj: unknown, key: string): string {
  const v = own(obj, key)
  return typeof v === 'string' ? v : ''
}

/** Sets an own data property; `__proto__` is defined as a plain key instead of reaching the prototype setter. */
export function put (obj: Content, key: string, value: unknown): void {
  if (key === '__proto__') Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true })
  else obj[key] = value
}

/**
 * A shallow copy that keeps every own key. Object.assign makes a copy that takes new keys many times
 * faster than a spread copy does, but it would hand a `__proto__` key to the prototype setter: such an
 * object is copied by spread, which defines keys instead of assigning them.
 */
export const copy = (obj: unknown): Content => {
  if (!isObject(obj)) return {}
  return hasOwn(obj, '__proto__') ? { ...obj } : Object.assign({}, obj)
}

/** Login carries the client's own fields; every other op nests them under `user`. */
export function clientUser (op: Op, content: Content): unknown {
  return op === 'Login' ? own(content, 'user') : own(own(content, 'user'), 'user')
}
export function clientMetas (op: Op, content: Content): unknown {
  return op === 'Login' ? own(content, 'metas') : own(own(content, 'user'), 'metas')
}
export function clientRunId (op: Op, content: Content): unknown {
  return op === 'Login' ? own(content, 'run_id') : own(own(content, 'user'), 'run_id')
}

/** Outside Login, whether `after` has another `user.user` or `user.run_id` than `before` (absent is ''). */
export function changedSession (op: Op, before: Content, after: Content): boolean {
  if (op === 'Login') return false
  const was = own(before, 'user')
  const is = own(after, 'user')
  return ownText(was, 'user') !== ownText(is, 'user') || ownText(was, 'run_id') !== ownText(is, 'run_id')
}

/** `after` with the `user` and `run_id` of `before` under `user` (the whole `user` of `before` where `after` has none). */
export function withSession (before: Content, after: Content): Content {
  const was = own(before, 'user')
  const is = own(after, 'user')
  const next = copy(after)
  if (!isObject(is)) {
    if (was === undefined) delete next.user
    else next.user = was
    return next
  }
  const user = copy(is)
  for (const key of ['user', 'run_id']) {
    const value = own(was, key)
    if (value === undefined) delete user[key]
    else user[key] = value
  }
  next.user = user
  return next
}

/**
 * A proxy's metas: NewProxy's own; NewUserConn and CloseProxy carry none, so the registry's record of the proxy (read before
 * the chain), when it is of the client frps names: a record of another run_id is a second frpc's NewProxy of that name,
 * which frps refused ("already exists") without a word to the gateway, and its metas are not those of the proxy open.
 */
export function proxyMetas (op: Op, content: Content, proxy: ProxyLookup | undefined): unknown {
  if (op === 'NewProxy') return own(content, 'metas')
  if (typeof proxy !== 'object' || proxy === null || (op !== 'NewUserConn' && op !== 'CloseProxy')) return undefined
  const runId = ownText(own(content, 'user'), 'run_id')
  return runId !== '' && proxy.run_id !== '' && runId !== proxy.run_id ? undefined : proxy.metas
}

/** `1.2.3.4:5`, `[2001:db8::1]:5` or a bare address -> the address without port; '' when absent. */
export function hostOf (addr: unknown): string {
  if (typeof addr !== 'string' || addr === '') return ''
  if (addr.charCodeAt(0) === 91 /* [ */) {
    const end = addr.indexOf(']')
    return end > 0 ? addr.slice(1, end) : ''
  }
  const colon = addr.indexOf(':')
  if (colon === -1) return addr
  return addr.indexOf(':', colon + 1) === -1 ? addr.slice(0, colon) : addr
}

export const clientIp = (op: Op, content: Content): string => op === 'Login' ? hostOf(own(content, 'client_address')) : ''
export const remoteIp = (op: Op, content: Content): string => op === 'NewUserConn' ? hostOf(own(content, 'remote_addr')) : ''

/** JSON value equality, ignoring key order (frps decodes into structs, so order never matters). */
export function sameJson (a: unknown, b: unknown): boolean {
  if (a === b) return true
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false
    for (let i = 0; i < a.length; i++) if (!sameJson(a[i], b[i])) return false
    return true
  }
  if (Array.isArray(b)) return false
  const ka = Object.keys(a)
  if (ka.length !== Object.keys(b).length) return false
  for (const k of ka) {
    if (!hasOwn(b, k) || !sameJson((a as Content)[k], (b as Content)[k])) return false
  }
  return true
}

/**
 * frps quirk (0.41 to 0.46): NewWorkConn was sent as `op=Ping`. Such a Ping has `run_id` at the top level.
 * Returns the op whose steps and metrics apply.
 */
export const effectiveOp = (op: Op, content: Content): Op =>
  op === 'Ping' && hasOwn(content, 'run_id') ? 'NewWorkConn' : op

// Answers always carry JSON booleans; frps cannot decode "false" strings.
export const ALLOW_UNCHANGED = '{"reject":false,"unchange":true}'
/**
 * frps passes the reason to frpc in one message, and frpc drops its whole session (every proxy, then
 * a new login) on a message over 10,240 bytes. Go's JSON writes a character in up to 6 bytes
 * (`\u003c`): 1,000 leave room for the message's other fields.
 */
export const MAX_REJECT_REASON = 1000
const frpcReason = (reason: string): string => {
  if (reason.length <= MAX_REJECT_REASON) return reason
  // never half of a surrogate pair
  const end = /[\ud800-\udbff]/.test(reason[MAX_REJECT_REASON - 1]) ? MAX_REJECT_REASON - 1 : MAX_REJECT_REASON
  return `${reason.slice(0, end)}...`
}
export const answerReject = (reason: string): string =>
  `{"reject":true,"reject_reason":${JSON.stringify(frpcReason(reason))},"unchange":true}`
/** frps decodes the content into an empty struct and replaces its own: it must be whole. */
export const answerModified = (content: Content): string =>
  `{"reject":false,"unchange":false,"content":${JSON.stringify(content)}}`
/**
 * The body frps gets for a chain's result: the whole content when modified, else reject or allow unchanged.
 * frps ignores a CloseProxy answer: allow, whatever the result (content of the wrong type is still logged and counted).
 */
export const answerFor = (op: Op, result: { outcome: string, reason?: string, content?: Content }): string =>
  result.outcome === 'modify'
    ? answerModified(result.content as Content)
    : result.reason !== undefined && op !== 'CloseProxy' ? answerReject(result.reason) : ALLOW_UNCHANGED

const PROTO_NAMES = new Set(['__proto__', 'constructor', 'prototype'])

/** Splits `user.metas.team` into keys; throws on an empty segment and on a prototype name (no content field is called so). */
export function parsePath (path: string): string[] {
  const keys = path.split('.')
  if (keys.some(k => k === '')) throw new Error(`"${path}" is not a dotted path like "user.metas.team"`)
  const proto = keys.find(k => PROTO_NAMES.has(k))
  if (proto !== undefined) throw new Error(`"${path}" goes through "${proto}": no frp field is named so, and a path must never reach a prototype`)
  return keys
}

/** Where a path leads in an op's content: a known field (`field`), or somewhere frps has no type for (`field` undefined). */
export interface PathTarget { field?: { kind: string, ok: (value: unknown) => boolean }, inList: boolean }

/**
 * Walks a parsed path through the op's field table. Throws, naming the field, when the path cannot exist in
 * that op's content (it descends into a string, number or boolean, or names a list element by a non-number);
 * below a field frps does not know anything goes (newer frps adds fields, and they pass through).
 */
export function pathTarget (op: Op, path: readonly string[]): PathTarget {
  let table: Record<string, Field> | undefined = CONTENT[op]
  let f: Field | undefined
  let inList = false
  for (let i = 0; i < path.length; i++) {
    const key = path[i]
    if (table !== undefined) {
      f = hasOwn(table, key) ? table[key] : undefined
      if (f === undefined) return { inList }
    } else if (f?.item !== undefined && (f.list !== true || /^\d+$/.test(key))) {
      inList ||= f.list === true
      f = f.item
    } else {
      const why = f?.list === true ? 'only a number names one of its elements' : 'nothing is inside it'
      throw new Error(`${path.slice(0, i).join('.')} is ${f?.kind ?? 'a value'} in ${op} content: ${why}`)
    }
    table = f.fields
  }
  return { field: f, inList }
}

/**
 * Whether the op's content can hold the path: false when the path cannot exist there (see pathTarget), or when
 * its field belongs to other ops only (`use_encryption` in a Login); a field no op knows may be anywhere.
 */
export function carries (op: Op, path: readonly string[]): boolean {
  if (!hasOwn(CONTENT[op], path[0]) && OPS.some(o => hasOwn(CONTENT[o], path[0]))) return false
  try {
    pathTarget(op, path)
    return true
  } catch {
    return false
  }
}

export function getIn (root: unknown, path: readonly string[]): unknown {
  let value = root
  for (const key of path) value = Array.isArray(value) && /^\d+$/.test(key) ? value[Number(key)] : own(value, key)
  return value
}

/**
 * Returns root with the value at path replaced, copying only the objects on the path; returns root itself
 * when the value is already equal (so an unchanged step costs no copy). `undefined` removes the key.
 * A numeric key inside an array addresses an element, as in getIn.
 */
export function setIn (root: Content, path: readonly string[], value: unknown, at = 0): Content {
  const key = path[at]
  // an element as getIn reads it ("01" is element 1): a root that is a list is reached by a numeric key only
  const list = Array.isArray(root)
  const current = list ? root[Number(key)] : own(root, key)
  let next = value
  if (at < path.length - 1) {
    // an array is walked into only by a numeric key; anything else on the path becomes an object
    const descend = current !== null && typeof current === 'object' && (!Array.isArray(current) || /^\d+$/.test(path[at + 1]))
    if (!descend && value === undefined) return root
    next = setIn(descend ? current as Content : {}, path, value, at + 1)
    if (next === current) return root
  } else if (value === undefined ? !(list ? Number(key) < root.length : hasOwn(root, key)) : sameJson(value, current)) {
    return root
  }
  if (list) {
    const items: unknown[] = [...root]
    if (next === undefined) items.splice(Number(key), 1)
    else items[Number(key)] = next
    return items as unknown as Content
  }
  const out = copy(root)
  if (next === undefined) delete out[key]
  else put(out, key, next)
  return out
}
