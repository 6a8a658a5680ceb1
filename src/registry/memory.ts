import type { PortOwner, PortRequest, ProxyRecord, QuotaLimits, QuotaRequest, QuotaResult, RecordKey, RegistryStore, Settle } from './store.js'

interface Reservation { run_id: string, port: boolean, expiresAt: number }
/** run_id and `at` (registered_at): the record using it, so a removal releases only the port of the record it removed */
interface PortEntry { user: string, name: string, holdMs: number, heldUntil?: number, run_id?: string, at?: number, refused?: true }

/** tcp and udp proxies hold a remote port: they are what maxPorts counts. */
export const holdsPort = (type: string): boolean => type === 'tcp' || type === 'udp'

// the length first: a user name with a newline in it cannot make another user's key
const ownerKey = (user: string, name: string): string => `${user.length}\n${user}\n${name}`
const inRanges = (port: number, ranges: PortRequest['ranges']): boolean => ranges.some(([lo, hi]) => port >= lo && port <= hi)
/** The order of list(): by user, then proxy name. */
export const byUserThenName = (a: ProxyRecord, b: ProxyRecord): number => a.user < b.user ? -1 : a.user > b.user ? 1 : a.name < b.name ? -1 : a.name > b.name ? 1 : 0
/** A record apart from the caller's: its two containers copied (structuredClone cost a NewProxy 4 us, most of the commit). */
function copy (record: ProxyRecord): ProxyRecord {
  const out = { ...record }
  if (record.custom_domains !== undefined) out.custom_domains = [...record.custom_domains]
  if (record.metas !== undefined) out.metas = { ...record.metas }
  return out
}

/** The registry of one gateway process; `now` is injectable for tests of holds and reservations. */
export class MemoryRegistry implements RegistryStore {
  readonly kind = 'memory' as const
  readonly #records = new Map<string, Map<string, ProxyRecord>>()
  readonly #reservations = new Map<string, Map<string, Reservation>>()
  readonly #ports = new Map<number, PortEntry>()
  readonly #owners = new Map<string, number>()
  /** ownerKey -> registered_at of the first of the unconfirmed tries the record replaced (its first_at) */
  readonly #firstAt = new Map<string, number>()
  /** "user\nrun_id" -> when that client last logged in again */
  readonly #logins = new Map<string, number>()
  readonly #now: () => number

  constructor (now: () => number = Date.now) {
    this.#now = now
  }

  async register (record: ProxyRecord): Promise<void> {
    const { user, name } = record
    const port = record.remote_port !== undefined && record.remote_port > 0 ? record.remote_port : undefined
    if (port !== undefined) this.#claim(user, name, port, record)
    let records = this.#records.get(user)
    if (records === undefined) this.#records.set(user, records = new Map())
    const replaced = records.get(name)
    // the proxy's previous port, when this record does not use it (no port, another, or one refused): released as at a close
    if (replaced?.remote_port !== undefined && replaced.remote_port !== port) this.#release(replaced.remote_port, user, name, replaced)
    // kept apart from the record: a property added to a record copied by spread cost each NewProxy about 4 us
    const key = ownerKey(user, name)
    if (replaced !== undefined && replaced.confirmed_at === undefined && replaced.run_id === record.run_id && replaced.remote_port === record.remote_port) {
      if (!this.#firstAt.has(key)) this.#firstAt.set(key, replaced.registered_at)
    } else this.#firstAt.delete(key)
    records.set(name, copy(record))
    this.#endReservation(user, name)
  }

  #endReservation (user: string, name: string): void {
    const reservations = this.#reservations.get(user)
    if (reservations?.delete(name) === true && reservations.size === 0) this.#reservations.delete(user)
  }

  // the port is in use by (user, name) from now on, whoever held it (a hold ends here), unless another proxy has it open
  #claim (user: string, name: string, port: number, record: ProxyRecord): void {
    const key = ownerKey(user, name)
    const entry = this.#ports.get(port)
    const own = entry !== undefined && entry.user === user && entry.name === name
    // another proxy has it open: frps refuses this one (port in use), and reconciliation removes its record
    if (entry !== undefined && !own && entry.heldUntil === undefined) return
    if (entry !== undefined && !own) this.#owners.delete(ownerKey(entry.user, entry.name))
    const previous = this.#owners.get(key)
    // a port only held goes; one in use by the record replaced is released by register, as at a close (it may still be
    // open at frps: a second frpc with the proxy's name is refused there)
    if (previous !== undefined && previous !== port && this.#ports.get(previous)?.heldUntil !== undefined) this.#ports.delete(previous)
    this.#ports.set(port, { user, name, holdMs: own ? entry.holdMs : 0, run_id: record.run_id, at: record.registered_at })
    this.#owners.set(key, port)
  }

  async noteLogin (user: string, runId: string, at: number): Promise<void> {
    const key = ownerKey(user, runId)
    this.#logins.delete(key)
    this.#logins.set(key, at)
    // oldest first: what is past any settle period goes once the map grows
    if (this.#logins.size > 10_000) for (const [k] of this.#logins) { if (this.#logins.size <= 9_000) break; this.#logins.delete(k) }
  }

  async unregister (user: string, name: string, runId: string, settle?: Settle, registeredAt?: number, refusedMs?: number): Promise<boolean> {
    const records = this.#records.get(user)
    const record = records?.get(name)
    if (records === undefined || record === undefined || record.run_id !== runId) return false
    if (registeredAt !== undefined && record.registered_at !== registeredAt) return false
    if (settle !== undefined && settling(record, this.#logins.get(ownerKey(user, runId)), settle)) return false
    records.delete(name)
    this.#firstAt.delete(ownerKey(user, name))
    if (records.size === 0) this.#records.delete(user)
    if (record.remote_port !== undefined) this.#release(record.remote_port, user, name, record, record.confirmed_at === undefined ? refusedMs : undefined)
    return true
  }

  async confirm (listed: readonly RecordKey[], at: number): Promise<void> {
    for (const { user, name, run_id: runId, registered_at: registeredAt } of listed) {
      const record = this.#records.get(user)?.get(name)
      if (record !== undefined && record.run_id === runId && record.registered_at === registeredAt) record.confirmed_at ??= at
    }
  }

  /**
   * The port the record of (user, name) had in use, that record gone: held for its holdMs, or freed; not one a newer record claimed.
   * With refusedMs, held that long for no one: the proxy no longer owns it.
   */
  #release (port: number, user: string, name: string, record: ProxyRecord, refusedMs?: number): void {
    const entry = this.#ports.get(port)
    if (entry === undefined || entry.user !== user || entry.name !== name || entry.heldUntil !== undefined) return
    if (entry.run_id !== record.run_id || entry.at !== record.registered_at) return
    if (refusedMs !== undefined) {
      this.#free(port, entry)
      this.#ports.set(port, { user, name, holdMs: 0, heldUntil: this.#now() + refusedMs, refused: true })
    } else if (entry.holdMs > 0) entry.heldUntil = this.#now() + entry.holdMs
    else this.#free(port, entry)
  }

  #free (port: number, entry: PortEntry): void {
    this.#ports.delete(port)
    const key = ownerKey(entry.user, entry.name)
    if (this.#owners.get(key) === port) this.#owners.delete(key)
  }

  async get (user: string, name: string): Promise<ProxyRecord | undefined> {
    const record = this.#records.get(user)?.get(name)
    return record === undefined ? undefined : this.#out(record)
  }

  #out (record: ProxyRecord): ProxyRecord {
    const firstAt = this.#firstAt.get(ownerKey(record.user, record.name))
    return firstAt === undefined ? copy(record) : { ...copy(record), first_at: firstAt }
  }

  async list (user?: string): Promise<ProxyRecord[]> {
    const users = user === undefined ? [...this.#records.values()] : [this.#records.get(user) ?? new Map<string, ProxyRecord>()]
    return users.flatMap(records => [...records.values()].map(r => this.#out(r))).sort(byUserThenName)
  }

  async count (): Promise<number> {
    let n = 0
    for (const records of this.#records.values()) n += records.size
    return n
  }

  reserve (request: QuotaRequest, limits: QuotaLimits): QuotaResult {
    const now = this.#now()
    const { user, name } = request
    const records = this.#records.get(user)
    let reservations = this.#reservations.get(user)
    if (reservations !== undefined) {
      for (const [n, r] of reservations) if (r.expiresAt <= now) reservations.delete(n)
      if (reservations.size === 0) {
        this.#reservations.delete(user)
        reservations = undefined
      }
    }
    if (records?.has(name) === true) return { allowed: true }
    let proxies = 0
    let client = 0
    let ports = 0
    for (const r of records?.values() ?? []) {
      proxies++
      if (r.run_id === request.run_id) client++
      if (holdsPort(r.type)) ports++
    }
    for (const [n, r] of reservations ?? []) {
      // the same proxy: not counted twice, but the others still count (another quota step of the same call checks its own limits)
      if (n === name) continue
      proxies++
      if (r.run_id === request.run_id) client++
      if (r.port) ports++
    }
    const over = exceeded(limits, request.port, proxies, client, ports)
    if (over !== undefined) return over
    if (reservations?.has(name) === true) return { allowed: true }
    if (reservations === undefined) this.#reservations.set(user, reservations = new Map())
    reservations.set(name, { run_id: request.run_id, port: request.port, expiresAt: now + request.ttlMs })
    return { allowed: true }
  }

  async release (user: string, name: string, runId: string): Promise<void> {
    if (this.#reservations.get(user)?.get(name)?.run_id === runId) this.#endReservation(user, name)
  }

  assignPort ({ user, name, ranges, holdMs, pendingMs = holdMs }: PortRequest): number | undefined {
    const now = this.#now()
    const until = now + Math.ceil(pendingMs)
    const key = ownerKey(user, name)
    const held = this.#owners.get(key)
    const entry = held === undefined ? undefined : this.#ports.get(held)
    if (held !== undefined && entry !== undefined && live(entry, now) && inRanges(held, ranges)) {
      entry.holdMs = holdMs
      if (entry.heldUntil !== undefined) entry.heldUntil = Math.max(entry.heldUntil, until)
      return held
    }
    for (const [lo, hi] of ranges) {
      for (let port = lo; port <= hi; port++) {
        const taken = this.#ports.get(port)
        // a port held for this very proxy (its record moved to another port meanwhile, or frps listed it open: user "") is its own to take back
        if (taken !== undefined && live(taken, now) && !(taken.heldUntil !== undefined && taken.refused !== true && taken.name === name && (taken.user === user || taken.user === ''))) continue
        // a hold for this proxy is never shortened by a call frps may not be told of
        const heldUntil = taken !== undefined && live(taken, now) ? Math.max(taken.heldUntil as number, until) : until
        if (taken !== undefined) this.#free(port, taken)
        if (held !== undefined && entry !== undefined) this.#free(held, entry)
        this.#ports.set(port, { user, name, holdMs, heldUntil })
        this.#owners.set(key, port)
        return port
      }
    }
    return undefined
  }

  async holdOpen (listed: ReadonlyMap<number, string>, holdMs: number, since: number): Promise<void> {
    const until = this.#now() + holdMs
    for (const [port, name] of listed) {
      const entry = this.#ports.get(port)
      if (entry !== undefined && entry.name === name && entry.refused !== true) {
        if (entry.heldUntil !== undefined && entry.heldUntil < until) entry.heldUntil = until
        continue
      }
      if (entry !== undefined && entry.heldUntil === undefined && (entry.at ?? 0) >= since) continue
      if (entry !== undefined) this.#free(port, entry)
      this.#ports.set(port, { user: '', name, holdMs: 0, heldUntil: until })
    }
  }

  async portOwner (port: number): Promise<PortOwner | undefined> {
    const entry = this.#ports.get(port)
    if (entry === undefined || !live(entry, this.#now())) return undefined
    if (entry.heldUntil === undefined) return { user: entry.user, name: entry.name }
    return entry.refused === true ? { user: entry.user, name: entry.name, heldUntil: entry.heldUntil, refused: true } : { user: entry.user, name: entry.name, heldUntil: entry.heldUntil }
  }

  async ping (): Promise<void> {}

  async close (): Promise<void> {}
}

/** The record came with a session that logged in again less than settle.ms ago: a CloseProxy now may be the old session's. */
export const settling = (record: ProxyRecord, loginAt: number | undefined, settle: Settle): boolean =>
  loginAt !== undefined && record.registered_at >= loginAt && settle.now - loginAt < settle.ms

const live = (entry: PortEntry, now: number): boolean => entry.heldUntil === undefined || entry.heldUntil > now

/** The first limit a new proxy would pass, in the order maxProxies, maxProxiesPerClient, maxPorts. */
export function exceeded (limits: QuotaLimits, port: boolean, proxies: number, client: number, ports: number): QuotaResult | undefined {
  if (limits.maxProxies !== undefined && proxies >= limits.maxProxies) return { allowed: false, limit: 'maxProxies', count: proxies, max: limits.maxProxies }
  if (limits.maxProxiesPerClient !== undefined && client >= limits.maxProxiesPerClient) return { allowed: false, limit: 'maxProxiesPerClient', count: client, max: limits.maxProxiesPerClient }
  if (port && limits.maxPorts !== undefined && ports >= limits.maxPorts) return { allowed: false, limit: 'maxPorts', count: ports, max: limits.maxPorts }
  return undefined
}
