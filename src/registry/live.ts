import type { Logger } from 'pino'
import type { CommitEvent, CommitHook } from '../commit.js'
import { warnRepeated } from '../log.js'
import type { RECONCILE_RESULTS } from '../metrics.js'
import { own, ownText, type Content } from '../protocol.js'
import { onlineProxies, reconcile, type FrpsApiConfig } from './reconcile.js'
import type { ProxyRecord, RegistryStore } from './store.js'

export interface RegistryCounters {
  reconciled: (result: (typeof RECONCILE_RESULTS)[number]) => void
  removed: (n: number) => void
}

export interface RegistryOptions {
  onStoreError: 'allow' | 'reject'
  frpsApi?: FrpsApiConfig
  reconcileEvery: number
}

const strings = (v: unknown): string[] | undefined => Array.isArray(v) && v.length > 0 ? v.filter((s): s is string => typeof s === 'string') : undefined

// A record and a removal are idempotent, so a store that did not answer (Redis restarting, failing
// over) is asked again, about 3 s in all: an outage longer than that loses the change, logged and counted.
const RETRY_DELAYS_MS = [100, 200, 400, 800, 1600]

/**
 * How long past its call's deadline a quota reservation stands. An allowed call's record is written
 * after the answer, on a busy machine or through a Redis outage as late as its retries (3.1 s, and
 * a command timeout an attempt): ended at the deadline, the reservation let a burst's next call in
 * before the record counted, one proxy over the limit.
 */
export const RESERVATION_GRACE_MS = 5000

async function retrying (change: () => Promise<void>): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await change()
    } catch (err) {
      if (attempt >= RETRY_DELAYS_MS.length) throw err
      // unref: a retry never holds a stopping process past drainMs
      await new Promise(resolve => setTimeout(resolve, RETRY_DELAYS_MS[attempt]).unref())
    }
  }
}

/** The registry did not answer before the call's deadline. */
export class DeadlineExceeded extends Error {
  readonly code = 'DEADLINE_EXCEEDED'
  constructor () {
    super('the registry did not answer before the deadline')
    this.name = 'DeadlineExceeded'
  }
}

/**
 * frpc keeps its run_id when it logs in again, and frps sends the old session's CloseProxy calls from
 * a background goroutine once that Login is accepted: one can come after the new session's NewProxy
 * of the same proxy, with the same run_id. For this long after a reconnect Login, a CloseProxy does
 * not remove a record registered since; reconciliation (frpsApi) removes it if frps really closed it.
 */
export const RECONNECT_SETTLE_MS = 5000

const proxyKey = (user: string, name: string): string => `p\n${user}\n${name}`
const loginKey = (user: string): string => `l\n${user}`

/** The record of a NewProxy as frps was told to open it (the final content). */
export function recordOf (content: Content, time: number): ProxyRecord {
  const user = own(content, 'user')
  const record: ProxyRecord = { user: ownText(user, 'user'), name: ownText(content, 'proxy_name'), type: ownText(content, 'proxy_type'), run_id: ownText(user, 'run_id'), registered_at: time }
  const port = own(content, 'remote_port')
  // a port frps could open: anything else it refuses, and the port table is not to hold it
  if ((record.type === 'tcp' || record.type === 'udp') && Number.isInteger(port) && (port as number) > 0 && (port as number) <= 65535) record.remote_port = port as number
  const domains = strings(own(content, 'custom_domains'))
  if (domains !== undefined) record.custom_domains = domains
  const subdomain = own(content, 'subdomain')
  if (typeof subdomain === 'string' && subdomain !== '') record.subdomain = subdomain
  const metas = own(content, 'metas')
  if (metas !== null && typeof metas === 'object' && Object.keys(metas).length > 0) record.metas = { ...metas as Record<string, string> }
  return record
}

/** A record as the admin view shows it: times in ISO 8601. */
export const viewOf = (r: ProxyRecord): Record<string, unknown> => ({
  user: r.user,
  name: r.name,
  type: r.type,
  run_id: r.run_id,
  remote_port: r.remote_port,
  custom_domains: r.custom_domains,
  subdomain: r.subdomain,
  metas: r.metas,
  registered_at: new Date(r.registered_at).toISOString(),
  confirmed_at: r.confirmed_at === undefined ? undefined : new Date(r.confirmed_at).toISOString(),
  first_at: r.first_at === undefined ? undefined : new Date(r.first_at).toISOString()
})

/**
 * The registry of one runtime: its store, the commit hook that records every NewProxy answered
 * allow or modify and every CloseProxy (whatever the steps are), and the reconciliation against
 * frps's dashboard API when one is configured.
 */
export class LiveRegistry {
  readonly store: RegistryStore
  readonly options: RegistryOptions
  readonly hook: CommitHook
  #timer: NodeJS.Timeout | undefined
  #reconciling: Promise<void> | undefined

  constructor (store: RegistryStore, options: RegistryOptions, private readonly counters: RegistryCounters, private readonly log: Logger) {
    this.store = store
    this.options = options
    this.hook = { name: 'registry', commit: async e => await this.#commit(e), describe: e => this.#describe(e) }
  }

  async #commit (event: CommitEvent): Promise<void> {
    if (event.op === 'NewProxy') {
      if (event.outcome !== 'allow' && event.outcome !== 'modify') return
      const record = recordOf(event.content, event.time)
      await this.#inTurn(proxyKey(record.user, record.name), [], async () => { await this.store.register(record) })
    } else if (event.op === 'CloseProxy') {
      const user = own(event.content, 'user')
      const [name, proxy, runId] = [ownText(user, 'user'), ownText(event.content, 'proxy_name'), ownText(user, 'run_id')]
      const settle = { now: event.time, ms: RECONNECT_SETTLE_MS }
      await this.#inTurn(proxyKey(name, proxy), [loginKey(name)], async () => { await this.store.unregister(name, proxy, runId, settle) })
    } else if (event.op === 'Login') {
      const runId = ownText(event.content, 'run_id')
      if (runId === '' || (event.outcome !== 'allow' && event.outcome !== 'modify')) return
      const user = ownText(event.content, 'user')
      await this.#inTurn(loginKey(user), [], async () => { await this.store.noteLogin(user, runId, event.time) })
    }
  }

  /** the last change asked for each proxy (and each user's last Login), while one is in progress */
  readonly #pending = new Map<string, Promise<void>>()

  /**
   * A change, retried, once the changes asked before it for the same key (and the `after` keys) are
   * done or given up: a record still being retried through a Redis outage when its CloseProxy comes
   * would otherwise be written after the removal, and stay for ever.
   */
  async #inTurn (key: string, after: readonly string[], change: () => Promise<void>): Promise<void> {
    const before = [key, ...after].map(k => this.#pending.get(k)).filter(p => p !== undefined)
    const done = before.length === 0 ? retrying(change) : Promise.all(before).then(async () => { await retrying(change) })
    const settled = done.then(() => {}, () => {})
    this.#pending.set(key, settled)
    void settled.then(() => { if (this.#pending.get(key) === settled) this.#pending.delete(key) })
    await done
  }

  #describe (event: CommitEvent): string | undefined {
    if (event.op === 'NewProxy') {
      if (event.outcome !== 'allow' && event.outcome !== 'modify') return `records nothing (the answer is ${event.outcome})`
      const r = recordOf(event.content, event.time)
      return `would record ${r.name} of ${r.user} (${r.type}${r.remote_port !== undefined ? `, remote port ${r.remote_port}` : ''}, run_id ${r.run_id})`
    }
    if (event.op === 'CloseProxy') {
      const user = own(event.content, 'user')
      return `would remove ${ownText(event.content, 'proxy_name')} of ${ownText(user, 'user')} if its run_id is ${ownText(user, 'run_id')}` +
        ` (and it was not registered after a reconnect of that run_id less than ${RECONNECT_SETTLE_MS / 1000} s ago)`
    }
    if (event.op === 'Login') {
      const runId = ownText(event.content, 'run_id')
      if (runId === '' || (event.outcome !== 'allow' && event.outcome !== 'modify')) return undefined
      return `would note a reconnect of run_id ${runId}: for ${RECONNECT_SETTLE_MS / 1000} s, a CloseProxy of its proxies registered since stays unheeded`
    }
    return undefined
  }

  /**
   * The record of (user, name), null when there is none. Rejects when the store fails, and with a
   * DeadlineExceeded error at `deadline` (performance.now()), the call's: the read counts in its time.
   */
  async read (user: string, name: string, deadline: number): Promise<ProxyRecord | null> {
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new DeadlineExceeded()), Math.max(0, Math.ceil(deadline - performance.now())))
    })
    try {
      return await Promise.race([this.store.get(user, name), late]) ?? null
    } finally {
      clearTimeout(timer)
    }
  }

  /** Starts reconciling every reconcileEvery, when frpsApi is set. */
  start (): void {
    const api = this.options.frpsApi
    if (api === undefined || this.#timer !== undefined) return
    this.#timer = setInterval(() => { this.#reconciling ??= this.reconcileOnce(api).finally(() => { this.#reconciling = undefined }) }, this.options.reconcileEvery)
    this.#timer.unref()
  }

  /** One reconciliation: never throws; a failed read removes nothing. */
  async reconcileOnce (api: FrpsApiConfig): Promise<void> {
    try {
      const online = await onlineProxies(api, undefined, this.#stop.signal)
      const { removed, refused, failed } = await reconcile(this.store, online, this.options.reconcileEvery)
      this.counters.removed(removed)
      if (removed > 0) this.log.info({ removed, refused }, 'registry reconciled: records frps does not list removed')
      if (failed.length > 0) throw new Error(`${failed.length} record(s) could not be removed: ${failed[0].message}`, { cause: failed[0] })
      this.counters.reconciled('ok')
    } catch (err) {
      if (this.#stop.signal.aborted) return
      this.counters.reconciled('error')
      warnRepeated(this.log, 'registry\nreconcile', { err }, { error: (err as Error).message }, 'registry reconciliation failed')
    }
  }

  /** a stop (or a reload's retiring runtime) cuts a read of frps's API short: it is bounded by 5 s, not by drainMs */
  readonly #stop = new AbortController()

  async close (): Promise<void> {
    clearInterval(this.#timer)
    this.#stop.abort()
    await this.#reconciling
    await this.store.close()
  }
}
