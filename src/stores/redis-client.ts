import { Cluster, Redis, type RedisOptions } from 'ioredis'

export type RedisConfig =
  | { url: string; keyPrefix?: string }
  | { cluster: string[]; keyPrefix?: string }
  | SentinelConfig

export interface SentinelConfig {
  sentinels: { host: string; port: number }[]
  name: string
  keyPrefix?: string
  /** of the master and replicas */
  username?: string
  password?: string
  /** of the Sentinels */
  sentinelUsername?: string
  sentinelPassword?: string
  /** to the Sentinels and to the master */
  tls?: boolean
}

export interface RedisClientOptions {
  onUp?: (up: boolean) => void
  /** default 500 */
  connectTimeoutMs?: number
  /** default 300 */
  commandTimeoutMs?: number
}

/**
 * What the cluster's URLs say of every node: ioredis reads rediss:// and credentials only from the
 * seeds' URLs, and connects the nodes it discovers with redisOptions alone (no TLS, no password).
 */
export function clusterNodeOptions (urls: readonly string[]): RedisOptions {
  const out: RedisOptions = {}
  // the config takes redis:// and rediss:// URLs only; "host:port" (ioredis takes it too) says nothing more
  if (!/^rediss?:\/\//.test(urls[0])) return out
  const url = new URL(urls[0])
  if (url.protocol === 'rediss:') out.tls = {}
  if (url.username !== '') out.username = decodeURIComponent(url.username)
  if (url.password !== '') out.password = decodeURIComponent(url.password)
  return out
}

/** ioredis's options for a Sentinel set: it sends the Sentinels' credentials and TLS to them alone, the others to the master. */
function sentinelOptions (cfg: SentinelConfig): RedisOptions {
  const { sentinels, name, username, password, sentinelUsername, sentinelPassword } = cfg
  // without enableTLSForSentinelMode ioredis connects the master in plain TCP whatever tls says
  const tls = cfg.tls === true ? { tls: {}, sentinelTLS: {}, enableTLSForSentinelMode: true } : {}
  return { sentinels, name, username, password, sentinelUsername, sentinelPassword, ...tls }
}

/**
 * A Redis that connects again after an end it was not asked for. ioredis ends a Sentinel client for
 * good when a failover's +switch-master reaches it while it reconnects (the master had died, so its
 * detector was never cleaned up): "Connection is closed.", every command refused until a restart.
 */
class LastingRedis extends Redis {
  closing = false
  override disconnect (reconnect = false): void {
    if (!reconnect) this.closing = true
    super.disconnect(reconnect)
  }
}

/** The Redis of the config as a message names it, without its password. */
export function redisName (cfg: RedisConfig): string {
  // the password runs to the last @ before the path (ioredis reads the URL so), or is a query parameter
  const hide = (url: string): string => url.replace(/^([a-z]+:\/\/[^:/?#]*):[^/?#]*@/, '$1:***@').replace(/([?&]password=)[^&#]*/g, '$1***')
  if ('url' in cfg) return hide(cfg.url)
  if ('cluster' in cfg) return `cluster ${cfg.cluster.map(hide).join(', ')}`
  return `sentinels ${cfg.sentinels.map(s => `${s.host}:${s.port}`).join(', ')} (${cfg.name})`
}

interface ClientState { name: string, commandTimeoutMs: number, lastError?: Error }
const states = new WeakMap<Redis | Cluster, ClientState>()

/** Why a connection failed. ioredis says "Protocol error, got "H" as reply type byte. Please report this." of a server that is not a Redis (an HTTP one). */
export const connectionFailure = (err: Error): string => err.name === 'ParserError'
  ? `what answers there does not speak the Redis protocol (${err.message.replace(/\. Please report this\.$/, '')}): is it the port of a Redis?`
  : err.message

const OFFLINE = /enableOfflineQueue options is false/
const CLOSED = 'the connection closed'

function unreachable (client: Redis | Cluster, state: ClientState, where: string): Error & { code?: unknown } {
  const last = state.lastError
  const out: Error & { code?: unknown } = new Error(`redis ${where} is not reachable: ${last === undefined ? `not connected (${client.status})` : connectionFailure(last)}`)
  out.code = (last as { code?: unknown } | undefined)?.code
  return out
}

/** Why a client is not ready, naming its Redis: its connection's last error (a wrong password, a refused connection). */
export function whyNotReady (client: Redis | Cluster): string {
  const state = states.get(client)
  return state === undefined ? `not connected (${client.status})` : unreachable(client, state, state.name).message
}

/**
 * A failed command's error, saying which Redis and why: ioredis says "Stream isn't writeable and
 * enableOfflineQueue options is false" (or "Cluster isn't ready ...") for a client that is not
 * connected, which names neither; the connection's last error does. Its code (ECONNREFUSED, a
 * reply's first word such as READONLY or OOM) is what repeated failures are counted under in the logs.
 */
export function redisError (client: Redis | Cluster, err: unknown, node?: string): Error {
  const state = states.get(client)
  if (state === undefined || !(err instanceof Error) || err.message.startsWith('redis ')) return err as Error
  const { message } = err
  const where = node === undefined ? state.name : `${state.name} (${node})`
  let out: Error & { code?: unknown }
  if (OFFLINE.test(message)) {
    out = unreachable(client, state, where)
  } else if (err.name === 'MaxRetriesPerRequestError') {
    // ioredis's word for a command in flight when its connection closed (it retries none: maxRetriesPerRequest 0)
    const last = state.lastError
    const why = last === undefined || last.message === CLOSED ? '' : ` (${connectionFailure(last)})`
    out = new Error(`redis ${where}: the connection closed before the answer${why}`)
    out.code = (last as { code?: unknown } | undefined)?.code ?? 'ECONNRESET'
  } else if (message === 'Command timed out') {
    out = timedOut(`redis ${where} did not answer within ${state.commandTimeoutMs} ms`)
  } else {
    out = new Error(`redis ${where}: ${message}`)
    out.code = (err as { code?: unknown }).code ?? (err.name === 'ReplyError' ? message.split(' ', 1)[0] : undefined)
  }
  return out
}

/**
 * Resolves when the Redis answers; rejects with what, where and why otherwise. With `probeKey` (a part
 * of the gateway writes) it must take a write there: a replica (READONLY) or a Redis out of memory
 * (OOM) answers a PING and refuses every bucket and record. A Cluster answers only when every master
 * that holds slots does, says cluster_state:ok and takes the write on a slot of its own: any node
 * answers a PING, and one master down, full (or the cluster state fail) fails the buckets of its
 * slots (or all of them).
 */
export async function checkRedis (client: Redis | Cluster, probeKey?: string): Promise<void> {
  try {
    if (!(client instanceof Cluster)) {
      if (probeKey === undefined) await client.ping()
      else await client.set(probeKey, '1', 'PX', 60_000)
      return
    }
    const pool = new Map(client.nodes('master').map(node => [`${node.options.host}:${node.options.port}`, node]))
    const owners = new Set<string>()
    for (const slot of client.slots) if (slot?.[0] !== undefined) owners.add(slot[0])
    if (owners.size === 0) throw new Error('no master holds slots')
    await Promise.all([...owners].map(async key => {
      const node = pool.get(key)
      if (node === undefined) throw new Error(`the master ${key} is not connected`)
      const named = (err: Error): never => { throw redisError(client, err, `the master ${key}`) }
      const info = await node.cluster('INFO').catch(named)
      const state = /cluster_state:(\w+)/.exec(info)?.[1]
      if (state !== 'ok') throw new Error(`the master ${key} says cluster_state:${state ?? '?'}`)
      if (probeKey !== undefined) await node.set(`${probeKey}{${tagOnSlotOf(client, key)}}`, '1', 'PX', 60_000).catch(named)
    }))
  } catch (err) {
    throw redisError(client, err)
  }
}

/** The CRC16 (XMODEM) of a key's hash tag; its slot is this modulo 16384 (the Redis Cluster specification). */
function crc16 (text: string): number {
  let crc = 0
  for (const byte of Buffer.from(text)) {
    crc ^= byte << 8
    for (let bit = 0; bit < 8; bit++) crc = (crc & 0x8000) !== 0 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
  }
  return crc
}

/** A hash tag on a slot the master `key` holds, so a write of the probe there is that master's to take. */
function tagOnSlotOf (client: Cluster, key: string): string {
  for (let n = 0; ; n++) {
    const tag = `readyz-${n}`
    if (client.slots[crc16(tag) % 16384]?.[0] === key) return tag
  }
}

/**
 * Drops a connection whose oldest command has had no reply for two to three command timeouts. A Redis
 * that holds its connections and answers nothing (paused, swapping) would otherwise keep every command
 * sent to it in ioredis's queue (it matches replies in order), timed out or not: memory grew with every
 * call for as long as it hung. Dropped, the queue is emptied, and the new connection refuses commands
 * at once until it is ready.
 * Drops too a connection ended on our side whose peer never closes it (a hung master that a Sentinel
 * failover's disconnect ended): ioredis waits for its close, still 'ready', refusing every command.
 */
function watchdog (redis: Redis, timeoutMs: number, dropped: (why: Error) => void): void {
  let head: unknown
  let ticks = 0
  let ended = 0
  const timer = setInterval(() => {
    ended = redis.status === 'ready' && redis.stream?.writable === false ? ended + 1 : 0
    if (ended >= 2) {
      ended = 0
      dropped(timedOut(`the connection was ended and not closed for ${timeoutMs} ms, connecting again`))
      redis.stream.destroy()
      return
    }
    const first = redis.commandQueue.length > 0 ? redis.commandQueue.peekFront() : undefined
    ticks = first !== undefined && first === head ? ticks + 1 : 0
    head = first
    if (ticks < 2) return
    ticks = 0
    head = undefined
    dropped(timedOut(`no answer for ${2 * timeoutMs} ms, connecting again`))
    redis.stream?.destroy()
  }, timeoutMs)
  timer.unref()
  redis.once('end', () => clearInterval(timer))
}

const timedOut = (message: string): Error => Object.assign(new Error(message), { code: 'ETIMEDOUT' })

/**
 * A connection's error, saying for a Sentinel set whether the Sentinels or the master gave it: ioredis
 * says "All sentinels are unreachable. Retrying from scratch after 100ms. Last error: ..." of the
 * first, and a master's "WRONGPASS ..." names nothing.
 */
export function connectionError (client: Redis | Cluster, err: Error & { lastNodeError?: Error }): Error {
  // a Cluster's is "Failed to refresh slots cache." whatever each node answered
  if (client instanceof Cluster) return err.lastNodeError ?? err
  if (client.options.sentinels == null) return err
  const sentinels = /^All sentinels are unreachable\..*?(?: Last error: (.*))?$/s.exec(err.message)
  const master = client.stream?.remoteAddress === undefined ? 'the master' : `the master ${client.stream.remoteAddress}:${client.stream.remotePort}`
  const out = new Error(sentinels === null ? `${master}: ${err.message}` : `no Sentinel gave the master's address${sentinels[1] === undefined ? '' : `: ${sentinels[1]}`}`)
  // the name too: a ParserError (not a Redis at that port) is told apart by it
  return Object.assign(out, { code: (err as { code?: unknown }).code, name: err.name })
}

/** Keep reconnecting forever so a Redis that comes back is used again without a restart. */
const retry = (times: number): number => Math.min(times * 100, 1000)

/**
 * An ioredis client for the gateway's hot path: commands fail fast (no offline queue, no
 * per-request retries, short timeouts) instead of piling up while Redis is away.
 * cfg.keyPrefix is not applied here: RedisStore prefixes its own keys.
 */
export function createRedisClient(cfg: RedisConfig, opts: RedisClientOptions = {}): Redis | Cluster {
  const perConnection = {
    connectTimeout: opts.connectTimeoutMs ?? 500,
    commandTimeout: opts.commandTimeoutMs ?? 300,
    maxRetriesPerRequest: 0,
    // a disconnect comes after the last answer we wait for: ioredis's 2 s wait for the server to close the
    // socket (one it has already lost, with a Redis away or silent) held a stop, trace or users command that long
    disconnectTimeout: 0,
  } satisfies RedisOptions
  const common = { ...perConnection, enableOfflineQueue: false, lazyConnect: false, retryStrategy: retry } satisfies RedisOptions

  let client: Redis | Cluster
  if ('cluster' in cfg) {
    client = new Cluster(cfg.cluster, {
      redisOptions: { ...perConnection, ...clusterNodeOptions(cfg.cluster) },
      enableOfflineQueue: false,
      lazyConnect: false,
      clusterRetryStrategy: retry,
      // a cluster in state fail answers CLUSTERDOWN to every slot: retried every 100 ms, each call waited the
      // command timeout to fail. (retryDelayOnFailover stays: its retries carry the first commands of new nodes)
      retryDelayOnClusterDown: 0,
    })
  } else if ('sentinels' in cfg) {
    // failoverDetector: a master that hangs (paused, cut off) keeps its connection open, so without the
    // Sentinels' +switch-master the client would stay on it for as long as it hangs
    // sentinelCommandTimeout: a Sentinel that hangs (paused, cut off) held the resolve of the master for ever, never asking the next one
    client = new LastingRedis({ ...common, ...sentinelOptions(cfg), sentinelRetryStrategy: retry, sentinelCommandTimeout: perConnection.commandTimeout, failoverDetector: true })
  } else {
    client = new LastingRedis(cfg.url, common)
  }

  let up: boolean | undefined
  const report = (next: boolean): void => {
    if (next === up) return
    up = next
    opts.onUp?.(next)
  }
  const state: ClientState = { name: redisName(cfg), commandTimeoutMs: perConnection.commandTimeout }
  states.set(client, state)
  const dropped = (why: Error): void => { state.lastError = why }
  if (client instanceof Cluster) client.on('+node', (node: Redis) => watchdog(node, perConnection.commandTimeout, dropped))
  else watchdog(client, perConnection.commandTimeout, dropped)
  let revivals = 0
  client.on('ready', () => {
    revivals = 0
    state.lastError = undefined
    report(true)
  })
  client.on('close', () => {
    state.lastError ??= new Error(CLOSED)
    report(false)
  })
  client.on('end', () => {
    report(false)
    if (client instanceof LastingRedis && !client.closing) {
      setTimeout(() => { if (client.status === 'end' && !client.closing) client.connect().catch(() => {}) }, retry(++revivals)).unref()
    }
  })
  // a listener must exist: an unhandled 'error' event would crash the process
  client.on('error', (err: Error) => {
    // the offline-queue error of a command sent while down says nothing of why, and would hide the error that does;
    // a connection's ready check unanswered (a Redis that accepts connections but is paused or swapping) is a timeout
    if (!OFFLINE.test(err.message)) state.lastError = connectionError(client, err.message === 'Command timed out' ? timedOut(`no answer within ${perConnection.commandTimeout} ms`) : err)
    if (client.status !== 'ready') report(false)
  })
  return client
}
