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
  /** how long the reservation stands if nothing commits it (the call's deadline) */
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
}

export interface PortOwner { user: string, name: string, heldUntil?: number }

export interface RegistryStore {
  readonly kind: 'memory' | 'redis'
  /** A NewProxy answered allow or modify: replaces the record of (user, name), ends its reservation, and marks its remote port used. */
  register (record: ProxyRecord): Promise<void>
  /**
   * A CloseProxy, or reconciliation finding the proxy gone: removes the record only when its run_id
   * matches (a late CloseProxy of an old session leaves the new one alone); its port is then held for
   * its holdMs. True when removed.
   */
  unregister (user: string, name: string, runId: string): Promise<boolean>
  get (user: string, name: string): Promise<ProxyRecord | undefined>
  /** Every record, or one user's, ordered by user then name. */
  list (user?: string): Promise<ProxyRecord[]>
  /** The records of every user. */
  count (): Promise<number>
  /** Counts the user's records and live reservations and reserves one more when every limit allows it, atomically. */
  reserve (request: QuotaRequest, limits: QuotaLimits): Promise<QuotaResult>
  /** Ends the reservation of (user, name) made by run_id, when the call was answered reject or error. */
  release (user: string, name: string, runId: string): Promise<void>
  /**
   * The port of (user, name): the one it holds when that is inside the ranges (sticky), else the
   * first free port of the ranges. It is then held for (user, name) for holdMs, or until its proxy
   * registers (in use) and for holdMs after that proxy closes. undefined when no port is free.
   */
  assignPort (request: PortRequest): Promise<number | undefined>
  /** Who has a port: in use (no heldUntil) or held until heldUntil (ms since the epoch); undefined when free. */
  portOwner (port: number): Promise<PortOwner | undefined>
  ping (): Promise<void>
  close (): Promise<void>
}
