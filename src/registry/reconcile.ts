import { request } from 'undici'
import { readBounded, undiciTimeouts } from '../bounds.js'
import { describeJsonError } from '../json-error.js'
import { PROXY_TYPES } from '../protocol.js'
import type { RegistryStore } from './store.js'

export interface FrpsApiConfig {
  /** frps's webServer, e.g. http://127.0.0.1:7500 */
  url: string
  user?: string
  password?: string
}

const READ_TIMEOUT_MS = 5000
// frps answers one list per proxy type, each proxy in about 400 bytes (its conf, traffic and status):
// room for some 40,000 proxies of one type
const MAX_BODY_BYTES = 16 * 1024 * 1024
// and 20 to 30 JSON values each; a body of tiny values ({}, 0) would make far more objects than its bytes say
const MAX_VALUES = 2_000_000

/** An upper bound on the values JSON.parse would make of `text`: every value but the first follows a comma or opens a container. */
function valuesIn (text: string): number {
  let n = 1
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 44 || c === 91 || c === 123) n++ // , [ {
  }
  return n
}

/** The names frps lists online, and the remote port each tcp/udp one has open, as read at `readAt` (ms since the epoch). */
export class Online extends Set<string> {
  readonly ports = new Map<number, string>()
  readonly readAt = Date.now()
}

const listedPort = (conf: unknown): unknown => conf !== null && typeof conf === 'object'
  // 0.52 and later name it remotePort, older frps remote_port
  ? (conf as { remotePort?: unknown }).remotePort ?? (conf as { remote_port?: unknown }).remote_port
  : undefined

/**
 * The proxies frps lists as online, by the name frps gives them (`alice.p1`), read from its
 * dashboard API: `GET /api/proxy/TYPE` for every type, answering `{"proxies": [{"name", "status", "conf"}]}`.
 * Throws, naming the URL, when frps cannot be read or answers anything else: a registry is never
 * emptied on a failed read.
 */
export async function onlineProxies (api: FrpsApiConfig, types: readonly string[] = PROXY_TYPES, stop?: AbortSignal): Promise<Online> {
  const headers: Record<string, string> = {}
  if (api.user !== undefined) headers.authorization = `Basic ${Buffer.from(`${api.user}:${api.password ?? ''}`).toString('base64')}`
  const online = new Online()
  // one body at a time: at most one answer of MAX_BODY_BYTES is held
  for (const type of types) {
    const url = new URL(`api/proxy/${type}`, api.url.endsWith('/') ? api.url : `${api.url}/`)
    const where = `frps API ${url.href}`
    let res
    try {
      const timeout = AbortSignal.timeout(READ_TIMEOUT_MS)
      res = await request(url, { headers, ...undiciTimeouts(READ_TIMEOUT_MS), signal: stop === undefined ? timeout : AbortSignal.any([stop, timeout]) })
    } catch (err) {
      throw new Error(`${where}: ${(err as Error).message}`, { cause: err })
    }
    if (res.statusCode !== 200) {
      await res.body.dump()
      throw new Error(`${where}: HTTP ${res.statusCode}${res.statusCode === 401 ? ' (registry.frpsApi user and password: frps\'s webServer.user and webServer.password)' : ''}`)
    }
    const length = Number(res.headers['content-length'] ?? 0)
    if (length > MAX_BODY_BYTES) {
      await res.body.dump()
      throw new Error(`${where}: a body of ${length} bytes is more than ${MAX_BODY_BYTES}`)
    }
    let text
    try {
      text = await readBounded(res.body, MAX_BODY_BYTES)
    } catch (err) {
      throw new Error(`${where}: ${(err as Error).message}`, { cause: err })
    }
    const values = valuesIn(text)
    if (values > MAX_VALUES) throw new Error(`${where}: a body of up to ${values} JSON values is more than ${MAX_VALUES}, not frps's answer`)
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch (err) {
      throw new Error(`${where}: not JSON: ${describeJsonError(text)}`, { cause: err })
    }
    // frps always sends the key ({"proxies": []}, or null in some versions): a body without it is not
    // frps's answer (a wrong URL, a proxy in front), and taking it for "none online" would empty the registry
    if (body === null || typeof body !== 'object' || Array.isArray(body) || !Object.hasOwn(body, 'proxies')) {
      throw new Error(`${where}: expected {"proxies": [...]}, not frps's answer`)
    }
    const proxies = (body as { proxies: unknown }).proxies
    if (proxies === null) continue
    if (!Array.isArray(proxies)) throw new Error(`${where}: expected {"proxies": [...]}`)
    for (const [i, p] of proxies.entries()) {
      const { name, status, conf } = (p !== null && typeof p === 'object' ? p : {}) as { name?: unknown, status?: unknown, conf?: unknown }
      // frps lists every proxy with its name and status: an item without them would read as "not online", and its record be removed
      if (typeof name !== 'string' || typeof status !== 'string') throw new Error(`${where}: proxies[${i}]: expected {"name": "...", "status": "..."}, not frps's answer`)
      if (status !== 'online') continue
      online.add(name)
      const port = listedPort(conf)
      if ((type === 'tcp' || type === 'udp') && Number.isInteger(port) && (port as number) > 0 && (port as number) <= 65535) online.ports.set(port as number, name)
    }
  }
  return online
}

/**
 * How long the port of a proxy frps never opened is held for no one: long against a reading period, so a
 * port another program keeps costs at most one refused proxy an hour, yet short enough that a port let go
 * (or refused for a passing cause) comes back to its range the same day, not after releaseAfter.
 */
export const REFUSED_HOLD_MS = 3_600_000

/**
 * Removes the records frps does not list online and that are older than `graceMs` (a proxy
 * registered a moment ago may not be listed yet; one never confirmed, from its first_at) and registered before
 * `readAt`, when frps was read. Each goes only if it is still the record listed
 * (same run_id and registration time), so a proxy re-registered meanwhile stays. A removal that
 * fails does not stop the others. The records listed online are confirmed; the port of one removed
 * that never was (frps refused it: another program on the port, allowPorts) is held for no one, the
 * proxy included, for REFUSED_HOLD_MS or two periods. The ports frps lists open are held for their
 * proxies until two periods later (holdOpen). Answers the records removed, those of them refused, and
 * the changes that failed.
 */
export async function reconcile (store: RegistryStore, online: ReadonlySet<string> | Online, graceMs: number, now = Date.now(),
  readAt = online instanceof Online ? online.readAt : now): Promise<{ removed: number, refused: number, failed: Error[] }> {
  let removed = 0
  let refused = 0
  const failed: Error[] = []
  const fail = (err: unknown): void => { failed.push(err as Error) }
  if (online instanceof Online) await store.holdOpen(online.ports, 2 * graceMs, online.readAt).catch(fail)
  const records = await store.list()
  const unconfirmed = records.filter(r => online.has(r.name) && r.confirmed_at === undefined)
  if (unconfirmed.length > 0) await store.confirm(unconfirmed, readAt).catch(fail)
  const refusedMs = Math.max(REFUSED_HOLD_MS, 2 * graceMs)
  for (const record of records) {
    // a refused proxy tried again (every 30 s) is judged from its first try, but a try since the reading is not judged by it
    const since = record.confirmed_at === undefined ? record.first_at ?? record.registered_at : record.registered_at
    if (online.has(record.name) || now - since <= graceMs || record.registered_at >= readAt) continue
    try {
      if (await store.unregister(record.user, record.name, record.run_id, undefined, record.registered_at, refusedMs)) {
        removed++
        if (record.confirmed_at === undefined && record.remote_port !== undefined) refused++
      }
    } catch (err) {
      failed.push(err as Error)
    }
  }
  return { removed, refused, failed }
}
