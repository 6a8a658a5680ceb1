/**
 * The live proxy registry (issue 12): what frps was told about each proxy, keyed by (user, proxy
 * name), and the remote ports held for them. Two implementations answer the same contract
 * (test/registry/contract.ts): memory, for one gateway, and Redis, for every gateway sharing it.
 */

/** One proxy frps was told to open. `name` is the proxy name as frps sends it (`alice.p1`). */
export interface ProxyRecord {
  user: string
  name: string
  type: string
  run_id: string
  remote_port?: number
  custom_domains?: string[]
  subdomain?: string
  metas?: Record<string, string>
  /** ms since the epoch */
  registered_at: number
  /** when a reconciliation reading first listed the proxy online (ms since the epoch): frps did open it */
  confirmed_at?: number
  /**
   * registered_at of the first of the records this one replaced, unconfirmed, of the same run_id and remote port: frpc
   * tries a refused proxy again every 30 s, each try a new record, and reconciliation judges the proxy from its first
   */
  first_at?: number
}

/** The record of a call's proxy as read before its chain: null when the registry has none, 'error' when it could not be read. */
export type ProxyLookup = ProxyRecord | null | 'error'

export interface QuotaLimits {
  /** proxies of the user at once */
  maxProxies?: number
  /** proxies of one run_id (one frpc) at once */
  maxProxiesPerClient?: number
  /** tcp/udp proxies (remote ports) of the user at once */
  maxPorts?: number
}

export type QuotaLimit = keyof QuotaLimits

/** A NewProxy under a quota: the proxy it would open. */
export interface QuotaRequest {
  user: string
  name: string
  run_id: string
  /** a tcp/udp proxy: counted by maxPorts */
  port: boolean
  /** how long the reservation stands if nothing commits it (past the call's deadline: RESERVATION_GRACE_MS) */
  ttlMs: number
}

/** allowed: reserved (or the name was registered already: a reconnect is not a second proxy). */
export type QuotaResult = { allowed: true } | { allowed: false, limit: QuotaLimit, count: number, max: number }

/** Ranges of ports, inclusive. */
export type PortRanges = ReadonlyArray<readonly [number, number]>

export interface PortRequest {
  user: string
  name: string
  ranges: PortRanges
  /** how long the port stays held for this user and name after its proxy closes */
  holdMs: number
  /**
   * How long a port handed out now is held before its proxy registers: the call's time left and
   * RESERVATION_GRACE_MS (its record is committed after the answer). A call answered reject or error
   * commits no record, so the port is free again once that passed. A longer hold the port already had
   * for this proxy (after its close) is kept. Default holdMs.
   */
  pendingMs?: number
}

/** `now` (ms since the epoch, the gateway's clock, as registered_at) and how long after a reconnect Login a CloseProxy is doubted. */
export interface Settle { now: number, ms: number }

/** refused: held for no one, the proxy's included (frps never opened it there: another program may have the port) */
export interface PortOwner { user: string, name: string, heldUntil?: number, refused?: true }

/** The record a reconciliation reading listed: only that one is changed, not one registered again since. */
export type RecordKey = Pick<ProxyRecord, 'user' | 'name' | 'run_id' | 'registered_at'>

export interface RegistryStore {
  readonly kind: 'memory' | 'redis'
  /**
   * A NewProxy answered allow or modify: replaces the record of (user, name), ends its reservation, and
   * marks its remote port used; the port of the record it replaces, if this one does not use it, is
   * released as at a close.
   */
  register (record: ProxyRecord): Promise<void>
  /**
   * A CloseProxy, or reconciliation finding the proxy gone: removes the record only when its run_id
   * matches; its port is then held for its holdMs. With `settle`, a record registered after a
   * reconnect Login of that run_id less than settle.ms ago stays (see noteLogin). With `registeredAt`
   * (reconciliation), only the record registered then goes, not one registered again since. With `refusedMs`
   * (reconciliation), a record never confirmed that has a remote port was refused by frps: its port is taken from
   * the proxy and held for no one for refusedMs, so the proxy's next try gets another. True when removed.
   */
  unregister (user: string, name: string, runId: string, settle?: Settle, registeredAt?: number, refusedMs?: number): Promise<boolean>
  /** Sets confirmed_at (at) on each record still as listed and not confirmed yet: frps listed its proxy online. */
  confirm (records: readonly RecordKey[], at: number): Promise<void>
  /**
   * A Login of a client that has a run_id already: a reconnect. frpc keeps its run_id, and frps sends
   * the old session's CloseProxy calls from a background goroutine, so one can arrive after the new
   * session's NewProxy of the same proxy, with the same run_id: unregister with `settle` ignores it.
   */
  noteLogin (user: string, runId: string, at: number): Promise<void>
  get (user: string, name: string): Promise<ProxyRecord | undefined>
  /** Every record, or one user's, ordered by user then name. */
  list (user?: string): Promise<ProxyRecord[]>
  /** The records of every user. */
  count (): Promise<number>
  /**
   * Counts the user's records and live reservations and reserves one more when every limit allows it,
   * atomically. The memory store answers at once (as assignPort): a chain on it stays synchronous,
   * with no promise or deadline timer per call.
   */
  reserve (request: QuotaRequest, limits: QuotaLimits): QuotaResult | Promise<QuotaResult>
  /** Ends the reservation of (user, name) made by run_id, when the call was answered reject or error. */
  release (user: string, name: string, runId: string): Promise<void>
  /**
   * The port of (user, name): the one it holds when that is inside the ranges (sticky), else the
   * first free port of the ranges. It is then held for (user, name) for pendingMs (or as long as it was held already),
   * until its proxy registers (in use), and for holdMs after that proxy closes. undefined when no port is free.
   */
  assignPort (request: PortRequest): number | undefined | Promise<number | undefined>
  /**
   * The tcp/udp ports frps's dashboard lists open (port -> proxy name), read at `since` (ms since the epoch): each is held
   * holdMs for that name, unless the table has it for that name already (a hold then lasts at least holdMs) or a record
   * registered since uses it. So a port open at frps that the registry does not know (it started empty, or lost its
   * records) is not handed to another proxy, which frps would refuse at every retry.
   */
  holdOpen (listed: ReadonlyMap<number, string>, holdMs: number, since: number): Promise<void>
  /** Who has a port: in use (no heldUntil) or held until heldUntil (ms since the epoch); undefined when free. */
  portOwner (port: number): Promise<PortOwner | undefined>
  ping (): Promise<void>
  close (): Promise<void>
}
