import { hash } from 'node:crypto'
import { isSecretName, redactContent } from './log.js'
import { carries, clientIp, clientMetas, clientRunId, clientUser, getIn, OPS, own, proxyMetas, remoteIp, type Content, type Op } from './protocol.js'
import type { ProxyLookup } from './registry/store.js'

/**
 * What a template may read besides the content; `values` holds a step's own names (its `extra`), e.g. a quota's
 * `count`; `proxy`: the registry's record of the call's proxy (NewUserConn, CloseProxy).
 */
export interface TemplateContext { op: Op, reqid: string, retryAfter?: number, ports?: string, values?: Readonly<Record<string, string | number>>, proxy?: ProxyLookup }
/**
 * `masked`, present when the template reads a value that may be a secret (a secret-named meta or
 * field, or an object), renders it for a log line: secret values masked, objects as redactContent.
 */
export type Template = ((content: Content, ctx: TemplateContext) => string) & { masked?: (content: Content, ctx: TemplateContext) => string }

type Getter = ((content: Content, ctx: TemplateContext) => unknown) & { masked?: Getter }

const maskAll = (get: Getter): Getter => (c, ctx) => {
  const value = get(c, ctx)
  return value === undefined || value === null || value === '' ? value : '[redacted]'
}
/** The getter of a name that reads `key` (or a path of keys), with its masked form when it needs one. */
function guarded (get: Getter, keys: readonly string[], object: boolean): Getter {
  if (keys.some(isSecretName)) get.masked = maskAll(get)
  else if (object) get.masked = (c, ctx) => redactContent(get(c, ctx))
  return get
}

const text = (value: unknown): string =>
  value === undefined || value === null ? '' : typeof value === 'object' ? JSON.stringify(value) : String(value)

const NAMES: Record<string, Getter> = {
  op: (_, ctx) => ctx.op,
  reqid: (_, ctx) => ctx.reqid,
  user: (c, ctx) => clientUser(ctx.op, c),
  run_id: (c, ctx) => clientRunId(ctx.op, c),
  client_ip: (c, ctx) => clientIp(ctx.op, c),
  remote_ip: (c, ctx) => remoteIp(ctx.op, c),
  proxy_name: c => own(c, 'proxy_name'),
  proxy_type: c => own(c, 'proxy_type'),
  now: () => Math.floor(Date.now() / 1000)
}

// Counted as templates compile: the runtime compares the count around a step's compilation to learn
// whether the step reads proxy metas, which NewUserConn and CloseProxy get from the registry.
let proxyReads = 0
/** How many templates compiled so far read `proxy_metas.KEY`. */
export const proxyMetaReads = (): number => proxyReads

function getterFor (name: string, step: string, extra: readonly string[]): Getter {
  if (Object.hasOwn(NAMES, name)) return NAMES[name]
  if (name === 'step') return () => step
  if (name === 'retry_after' && extra.includes(name)) return (_, ctx) => ctx.retryAfter
  if (name === 'ports' && extra.includes(name)) return (_, ctx) => ctx.ports
  if (extra.includes(name)) return (_, ctx) => ctx.values?.[name]
  const dot = name.indexOf('.')
  const head = dot === -1 ? name : name.slice(0, dot)
  const rest = name.slice(dot + 1)
  if (dot > 0 && rest !== '') {
    if (head === 'metas') return guarded((c, ctx) => own(clientMetas(ctx.op, c), rest), [rest], false)
    if (head === 'proxy_metas') {
      proxyReads++
      return guarded((c, ctx) => own(proxyMetas(ctx.op, c, ctx.proxy), rest), [rest], false)
    }
    if (head === 'content' && !rest.split('.').includes('')) {
      const path = rest.split('.')
      return guarded(c => getIn(c, path), path, true)
    }
  }
  const known = [...Object.keys(NAMES), 'step', ...extra, 'metas.KEY', 'proxy_metas.KEY', 'content.PATH']
  throw new Error(`unknown template name {{${name}}}: expected one of ${known.join(', ')}`)
}

/** The ops on which a name can render anything but ''; undefined: every op. */
function opsWithValue (name: string): readonly Op[] | undefined {
  if (name === 'client_ip') return ['Login']
  if (name === 'remote_ip') return ['NewUserConn']
  if (name === 'proxy_name' || name === 'proxy_type') return OPS.filter(op => carries(op, [name]))
  if (name.startsWith('proxy_metas.')) return ['NewProxy', 'NewUserConn', 'CloseProxy']
  if (name.startsWith('content.')) return OPS.filter(op => carries(op, name.slice('content.'.length).split('.')))
}

/**
 * Compiles `a {{user}} b` once into a function. Throws naming the offending part when the template
 * is malformed or names something unknown; a value missing at run time renders as ''.
 */
export function compileTemplate (source: string, opts: { step: string, extra?: readonly string[], keyOf?: readonly Op[] }): Template {
  const parts: Array<string | Getter> = []
  let at = 0
  while (at < source.length) {
    const open = source.indexOf('{{', at)
    if (open === -1) { parts.push(source.slice(at)); break }
    const close = source.indexOf('}}', open + 2)
    if (close === -1) throw new Error(`unclosed "{{" at position ${open} in template "${source}"`)
    if (open > at) parts.push(source.slice(at, open))
    const name = source.slice(open + 2, close).trim()
    parts.push(getterFor(name, opts.step, opts.extra ?? []))
    // a key (`keyOf`: the step's ops) meant to tell calls apart: a name empty on all of them makes every call share one
    const on = opts.keyOf === undefined ? undefined : opsWithValue(name)
    if (on !== undefined && !on.some(op => opts.keyOf?.includes(op))) {
      throw new Error(`{{${name}}} is empty on every op of the step (${opts.keyOf?.join(', ')}): only ${on.join(', ')} carr${on.length === 1 ? 'ies' : 'y'} it, so it tells no call apart`)
    }
    at = close + 2
  }
  const template: Template = render(parts)
  if (parts.some(p => typeof p !== 'string' && p.masked !== undefined)) {
    template.masked = render(parts.map(p => typeof p === 'string' ? p : p.masked ?? p))
  }
  return template
}

function render (parts: ReadonlyArray<string | Getter>): Template {
  if (parts.length === 0) return () => ''
  if (parts.length === 1) {
    const only = parts[0]
    return typeof only === 'string' ? () => only : (c, ctx) => text(only(c, ctx))
  }
  return (c, ctx) => {
    let out = ''
    for (const part of parts) out += typeof part === 'string' ? part : text(part(c, ctx))
    return out
  }
}

/** True when the template reads nothing at run time. */
export const isConstantTemplate = (source: string): boolean => !source.includes('{{')

const MAX_KEY_CHARS = 128
// any half of a pair: a key with one (an emoji, or a lone one) is hashed, which is no loss
const SURROGATE = /[\uD800-\uDFFF]/
/**
 * A rendered key (rate-limit bucket, notify throttle) as it is kept: whole when short, else its hash.
 * A key renders caller content (a user name as long as a body) and is kept by the thousand; a lone
 * surrogate would reach Redis as U+FFFD and share another key's bucket. Hashed as UTF-16, which keeps them apart.
 */
export const boundedKey = (rendered: string): string =>
  rendered.length <= MAX_KEY_CHARS && !SURROGATE.test(rendered) ? rendered : `#${hash('sha256', Buffer.from(rendered, 'utf16le'), 'base64')}`
