import type { Cluster, Redis } from 'ioredis'
import { evictLru } from '../lru.js'
import { clip, MAX_CONTENT_DEPTH, nestsDeeper } from '../protocol.js'
import { redisError } from '../stores/redis-client.js'

/** Validates one decoded record; throws with a message naming what is wrong. */
export type ParseUser<R> = (name: string, raw: Record<string, unknown>) => R

/**
 * What a lookup found. `invalid`: the record in Redis does not validate; `error`: Redis did not
 * answer. Both leave the decision to the caller's onStoreError policy.
 */
export type UserLookup<R> =
  | { readonly status: 'found'; readonly record: R }
  | { readonly status: 'unknown' }
  | { readonly status: 'invalid'; readonly error: Error }
  | { readonly status: 'error'; readonly error: Error }

export type SetResult = 'created' | 'replaced'
export type DeleteResult = 'deleted' | 'unknown user'
export type SetEnabledResult = 'enabled' | 'disabled' | 'unchanged' | 'unknown user'

export interface RedisUserSourceOptions<R> {
  keyPrefix: string
  parse: ParseUser<R>
  /** how long a lookup (found, unknown or invalid) is reused; default 2000 ms */
  cacheMs?: number
  /** default 10_000 names */
  maxEntries?: number
}

/** seq: the cache's move counter when the entry last went to the end of the Map's order */
interface Entry<R> { result: UserLookup<R>; expiresAt: number; seq: number }

const UNKNOWN = Object.freeze({ status: 'unknown' as const })

// KEYS[1] the user's hash; ARGV[1] 'true' or 'false'. -1: no such user, -2: the key holds no hash,
// 0: unchanged, 1: changed. A missing field counts as enabled, the record's default; the field is
// read as the gateway reads it (JSON: "false" with spaces or a newline around it is false too), and
// one it cannot read (the record was refused) is changed by any write.
const SET_ENABLED_LUA = `
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'none' then return -1 end
if kind ~= 'hash' then return -2 end
local old = redis.call('HGET', KEYS[1], 'enabled')
local was = 'true'
if old then
  local ok, v = pcall(cjson.decode, old)
  if ok and v == false then was = 'false' elseif not (ok and v == true) then was = 'unreadable' end
end
if was == ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'enabled', ARGV[1])
return 1
`

interface SetEnabledCommand {
  frpgwUserSetEnabled(key: string, enabled: 'true' | 'false'): Promise<number>
}

/** Sets an own property, so `__proto__` and `constructor` stay plain keys. */
function put(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true })
}

/** A field's value as redis-cli users write it: JSON, or else the text itself as a string. */
function decodeField(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

const message = (err: unknown): string => (err instanceof Error ? err.message : String(err))

/** A user's key the gateway cannot read as a record (set by hand): that record's problem, not Redis being away. */
export class UnreadableRecordError extends Error {}

/** A user's key that holds something else than a hash. */
export class NotAHashError extends UnreadableRecordError {}

/** A field nested so deep that walking it (validating, printing) would overflow the stack; no field of a record nests more than one level. */
export class TooDeepFieldError extends UnreadableRecordError {
  constructor(key: string, readonly field: string) {
    super(`${key} field ${field} nests objects and arrays deeper than ${MAX_CONTENT_DEPTH} levels`)
  }
}

/**
 * The user table in Redis, for standalone, Sentinel and Cluster alike.
 *
 * Layout: one hash per user, `${keyPrefix}user:{NAME}` (the hash tag keeps each user on one Cluster
 * slot), one hash field per record field holding the field's JSON value:
 *
 *   redis-cli HSET 'frpgw:user:{alice}' enabled false ports '[6000,"6100-6199"]' token '"s3cret"'
 *
 * A value that is not valid JSON is read as the string it is (`HSET ... comment hello` gives
 * "hello"), so quoting a plain string is optional; a value that is valid JSON is read as JSON, so a
 * token that looks like a number (`token 123456`) is the number 123456 and fails validation: write
 * it quoted (`'"123456"'`). An empty hash does not exist in Redis, so a stored record has at least
 * one field.
 *
 * The set `${keyPrefix}users` indexes the names for `list` (one slot, no SCAN over every node).
 * Cluster cannot MULTI across slots, so each write is two steps, each idempotent and ordered so that
 * every existing user is in the index: `set` adds to the index first, `delete` removes the hash
 * first. An interrupted write is completed by running it again; `list` leaves out index entries
 * whose hash is gone. A user created by hand needs `SADD frpgw:users NAME` to be listed.
 *
 * Reads go through an in-process cache of `cacheMs`: a change by another client is seen within
 * that time. A record is never served past cacheMs: when Redis does not answer (the client's
 * command timeout, no offline queue) `get` answers `error` at once, so an authentication step
 * fails closed under its onStoreError policy rather than trusting a record Redis may have since
 * disabled.
 */
export class RedisUserSource<R> {
  readonly kind = 'redis' as const
  readonly #client: Redis | Cluster
  readonly #keyPrefix: string
  readonly #indexKey: string
  readonly #parse: ParseUser<R>
  readonly #cacheMs: number
  readonly #maxEntries: number
  readonly #cache = new Map<string, Entry<R>>()
  readonly #loading = new Map<string, Promise<UserLookup<R>>>()
  #moves = 0

  /** The client belongs to whoever created it (src/stores/redis-client.ts). */
  constructor(client: Redis | Cluster, opts: RedisUserSourceOptions<R>) {
    this.#client = client
    this.#keyPrefix = opts.keyPrefix
    this.#indexKey = `${opts.keyPrefix}users`
    this.#parse = opts.parse
    this.#cacheMs = opts.cacheMs ?? 2000
    this.#maxEntries = Math.max(1, opts.maxEntries ?? 10_000)
    client.defineCommand('frpgwUserSetEnabled', { numberOfKeys: 1, lua: SET_ENABLED_LUA })
  }

  /** The Redis key of user `name`'s hash. */
  userKey(name: string): string {
    return `${this.#keyPrefix}user:{${name}}`
  }

  /** The Redis key of the set of names. */
  get indexKey(): string {
    return this.#indexKey
  }

  /** Number of names cached (found, unknown or invalid). */
  get size(): number {
    return this.#cache.size
  }

  /**
   * The user `name`, answered synchronously from the cache (no round trip, no allocation) when a
   * lookup younger than cacheMs is there; otherwise one load per name, shared by concurrent callers.
   * Never rejects.
   */
  get(name: string): UserLookup<R> | Promise<UserLookup<R>> {
    const entry = this.#cache.get(name)
    if (entry !== undefined) {
      if (entry.expiresAt > performance.now()) {
        if (this.#moves - entry.seq > this.#maxEntries / 2) {
          this.#cache.delete(name)
          this.#cache.set(name, entry)
          entry.seq = this.#moves++
        }
        return entry.result
      }
      this.#cache.delete(name)
    }
    const pending = this.#loading.get(name)
    if (pending !== undefined) return pending
    // reused for cacheMs from the read's sending: Redis may have answered it up to a command timeout later
    const sent = performance.now()
    const load: Promise<UserLookup<R>> = this.#load(name).then(result => {
      // a write by this source while loading replaced or removed the load: what it read may be older than the write
      if (this.#loading.get(name) === load) {
        this.#loading.delete(name)
        if (result.status !== 'error') this.#remember(name, result, sent)
      }
      return result
    })
    this.#loading.set(name, load)
    return load
  }

  /** The UserTable view: the same as get. */
  lookup(name: string): UserLookup<R> | Promise<UserLookup<R>> {
    return this.get(name)
  }

  #remember(name: string, result: UserLookup<R>, sent: number): void {
    this.#cache.set(name, { result, expiresAt: sent + this.#cacheMs, seq: this.#moves++ })
    if (this.#cache.size > this.#maxEntries) evictLru(this.#cache, this.#maxEntries, performance.now())
  }

  async #load(name: string): Promise<UserLookup<R>> {
    try {
      const raw = await this.read(name)
      return raw === undefined ? UNKNOWN : this.#validate(name, raw)
    } catch (err) {
      if (err instanceof NotAHashError) return { status: 'invalid', error: new Error(`user ${name} in Redis (${this.userKey(name)}) is not a hash`, { cause: err }) }
      if (err instanceof TooDeepFieldError) {
        return { status: 'invalid', error: new Error(`user ${name} in Redis (${this.userKey(name)}) is not a valid record: ${err.field}: nests objects and arrays deeper than ${MAX_CONTENT_DEPTH} levels`, { cause: err }) }
      }
      const cause = redisError(this.#client, err)
      return { status: 'error', error: new Error(`users in Redis: reading ${this.userKey(name)} failed: ${cause.message}`, { cause }) }
    }
  }

  #validate(name: string, raw: Record<string, unknown>): UserLookup<R> {
    try {
      return { status: 'found', record: this.#parse(name, raw) }
    } catch (err) {
      return { status: 'invalid', error: new Error(`user ${name} in Redis (${this.userKey(name)}) is not a valid record: ${message(err)}`, { cause: err }) }
    }
  }

  #forget(name: string): void {
    this.#cache.delete(name)
    this.#loading.delete(name)
  }

  /**
   * The decoded fields of `name`'s hash, unvalidated and uncached (`users get`); undefined when absent. Rejects when Redis
   * does not answer, with a NotAHashError when the key holds no hash, a TooDeepFieldError for a field nested too deep.
   */
  async read(name: string): Promise<Record<string, unknown> | undefined> {
    const key = this.userKey(name)
    const fields = await this.#client.hgetall(key).catch((err: unknown) => {
      throw message(err).startsWith('WRONGTYPE') ? new NotAHashError(`${key} is not a hash`, { cause: err }) : err
    })
    const names = Object.keys(fields)
    if (names.length === 0) return undefined
    const raw: Record<string, unknown> = {}
    for (const field of names) {
      const value = decodeField(fields[field])
      if (nestsDeeper(value, MAX_CONTENT_DEPTH)) throw new TooDeepFieldError(key, clip(field))
      put(raw, field, value)
    }
    return raw
  }

  /** Replaces the whole record of `name` after validating it; throws on a bad record or when Redis does not answer. */
  async set(name: string, record: Record<string, unknown>): Promise<SetResult> {
    try {
      this.#parse(name, record)
    } catch (err) {
      throw new Error(`user ${name} is not a valid record: ${message(err)}`, { cause: err })
    }
    const args: string[] = []
    for (const field of Object.keys(record)) {
      const value = record[field]
      if (value !== undefined) args.push(field, JSON.stringify(value))
    }
    if (args.length === 0) throw new Error(`user ${name}: a record stored in Redis needs at least one field (Redis keeps no empty hash); set "enabled": true`)
    const key = this.userKey(name)
    this.#forget(name)
    await this.#client.sadd(this.#indexKey, name)
    const replies = await this.#client.multi().exists(key).del(key).hset(key, ...args).exec()
    this.#forget(name)
    if (replies === null) throw new Error(`users in Redis: writing ${key} was aborted`)
    for (const [err] of replies) if (err) throw err
    return replies[0][1] === 1 ? 'replaced' : 'created'
  }

  async delete(name: string): Promise<DeleteResult> {
    this.#forget(name)
    const removed = await this.#client.del(this.userKey(name))
    await this.#client.srem(this.#indexKey, name)
    this.#forget(name)
    return removed === 1 ? 'deleted' : 'unknown user'
  }

  /** Sets the `enabled` field alone (`users enable|disable`); the rest of the record is left as it is. A NotAHashError when the key holds no hash. */
  async setEnabled(name: string, enabled: boolean): Promise<SetEnabledResult> {
    this.#forget(name)
    const changed = await (this.#client as unknown as SetEnabledCommand).frpgwUserSetEnabled(this.userKey(name), enabled ? 'true' : 'false')
    this.#forget(name)
    if (changed === -1) return 'unknown user'
    if (changed === -2) throw new NotAHashError(`${this.userKey(name)} is not a hash`)
    if (changed === 0) return 'unchanged'
    return enabled ? 'enabled' : 'disabled'
  }

  /** The names in the index whose hash exists, sorted. */
  async list(): Promise<string[]> {
    const names = (await this.#client.smembers(this.#indexKey)).sort()
    const exists = await Promise.all(names.map(name => this.#client.exists(this.userKey(name))))
    return names.filter((_, i) => exists[i] === 1)
  }

  /** Resolves when Redis answers (readiness). */
  async ping(): Promise<void> {
    await this.#client.ping()
  }

  /** Drops the cache; the client stays open for its owner. */
  async close(): Promise<void> {
    this.#cache.clear()
    this.#loading.clear()
  }
}
