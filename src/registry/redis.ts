import type { Cluster, Redis } from 'ioredis'
import { redisError } from '../stores/redis-client.js'
import { byUserThenName, settling } from './memory.js'
import type { PortOwner, PortRequest, ProxyRecord, QuotaLimit, QuotaLimits, QuotaRequest, QuotaResult, RecordKey, RegistryStore, Settle } from './store.js'

/** A record some other writer left (by hand, another program): not what the gateway wrote, so not read as a record. */
export class UnreadableRecord extends Error {
  constructor (readonly where: string, why: string) {
    super(`${where}: ${why}, not a record the gateway wrote`)
    this.name = 'UnreadableRecord'
  }
}

const isTime = (v: unknown): boolean => Number.isSafeInteger(v) && Math.abs(v as number) <= 8.64e15
const isText = (v: unknown): boolean => typeof v === 'string'

/** A record's JSON as the gateway wrote it, checked field by field (a view or a reconciliation reads every one). */
function readRecord (json: string, where: string): ProxyRecord {
  let value: unknown
  try {
    value = JSON.parse(json)
  } catch {
    throw new UnreadableRecord(where, 'not JSON')
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new UnreadableRecord(where, 'not a JSON object')
  const r = value as Record<string, unknown>
  const bad = ['user', 'name', 'type', 'run_id'].find(k => !isText(r[k])) ??
    ['registered_at'].find(k => !isTime(r[k])) ??
    ['confirmed_at', 'first_at'].find(k => r[k] !== undefined && !isTime(r[k])) ??
    (r.remote_port !== undefined && !Number.isSafeInteger(r.remote_port) ? 'remote_port' : undefined) ??
    (r.subdomain !== undefined && !isText(r.subdomain) ? 'subdomain' : undefined) ??
    (r.custom_domains !== undefined && !(Array.isArray(r.custom_domains) && r.custom_domains.every(isText)) ? 'custom_domains' : undefined) ??
    (r.metas !== undefined && !(r.metas !== null && typeof r.metas === 'object' && !Array.isArray(r.metas) && Object.values(r.metas).every(isText)) ? 'metas' : undefined)
  if (bad !== undefined) throw new UnreadableRecord(where, `its ${bad} is ${JSON.stringify(r[bad]) ?? 'absent'}`)
  return value as ProxyRecord
}

// Every script takes its time from Redis, so every gateway sharing it agrees on holds and reservations.
const NOW = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`

// The record JSON of (proxies kp, name), with first_at when it replaces one unconfirmed of the same run_id and port
// ('' for none): appended as written, as CONFIRM does.
const CARRY = `
local function carried(kp, name, runId, port, json)
  local v = redis.call('HGET', kp, name)
  -- a value no gateway wrote is replaced, as before records carried first_at
  local ok, o = pcall(cjson.decode, v or '')
  if not ok or type(o) ~= 'table' or o.confirmed_at ~= nil or o.run_id ~= runId or o.remote_port ~= tonumber(port) or string.sub(json, -1) ~= '}' then return json end
  return string.sub(json, 1, -2) .. ',"first_at":' .. string.format('%.0f', o.first_at or o.registered_at) .. '}'
end`

// KEYS proxies, reservations; ARGV name, record JSON, run_id, port ('' for none)
const REGISTER_LUA = `${CARRY}
redis.call('HSET', KEYS[1], ARGV[1], carried(KEYS[1], ARGV[1], ARGV[3], ARGV[4], ARGV[2]))
redis.call('HDEL', KEYS[2], ARGV[1])
`

// KEYS proxies, logins, and on one node the users set; ARGV name, run_id, now, settle ms ('' for none),
// registered_at of the record to remove (not one registered since), user. 1 when removed.
const UNREGISTER_LUA = `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local r = cjson.decode(v)
if r.run_id ~= ARGV[2] or r.registered_at ~= tonumber(ARGV[5]) then return 0 end
if ARGV[4] ~= '' then
  local at = tonumber(redis.call('HGET', KEYS[2], ARGV[2]))
  if at and r.registered_at >= at and tonumber(ARGV[3]) - at < tonumber(ARGV[4]) then return 0 end
end
redis.call('HDEL', KEYS[1], ARGV[1])
if KEYS[3] and redis.call('HLEN', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[6]) end
return 1
`

// KEYS the proxies of some users (one on Cluster); ARGV confirmed_at, then a JSON array per key of [name, run_id,
// registered_at]. The field is appended to the JSON as written: decoding and encoding it again in cjson would not keep it byte for byte.
const CONFIRM_LUA = `
for i, key in ipairs(KEYS) do
  for _, l in ipairs(cjson.decode(ARGV[i + 1])) do
    local v = redis.call('HGET', key, l[1])
    local ok, r = pcall(cjson.decode, v or '')
    if ok and type(r) == 'table' then
      if r.run_id == l[2] and r.registered_at == l[3] and r.confirmed_at == nil and string.sub(v, -1) == '}' then
        redis.call('HSET', key, l[1], string.sub(v, 1, -2) .. ',"confirmed_at":' .. ARGV[1] .. '}')
      end
    end
  end
end
`

// KEYS logins; ARGV run_id, at, ttl ms
const LOGIN_LUA = `
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
`

// A user's proxies and reservations: a proxy name, run_id, port (1/0), ttlMs, maxProxies, maxProxiesPerClient,
// maxPorts ('' for none). {1} allowed, or {0, limit (1, 2, 3), count, max}.
const RESERVE = `
local function reserve(kp, kr, name, runId, port, ttlMs, maxProxies, maxClient, maxPorts)
  local proxies, client, ports = 0, 0, 0
  local reserved = false
  local r = redis.call('HGETALL', kr)
  for i = 1, #r, 2 do
    local d = cjson.decode(r[i + 1])
    if d.exp <= now then
      redis.call('HDEL', kr, r[i])
    else
      -- the same proxy (another quota step of this call, or its call in progress): not counted twice, the others still are
      if r[i] == name then
        reserved = true
      else
        proxies = proxies + 1
        if d.run_id == runId then client = client + 1 end
        if d.port then ports = ports + 1 end
      end
    end
  end
  if redis.call('HEXISTS', kp, name) == 1 then return {1} end
  local v = redis.call('HVALS', kp)
  for i = 1, #v do
    local d = cjson.decode(v[i])
    proxies = proxies + 1
    if d.run_id == runId then client = client + 1 end
    if d.type == 'tcp' or d.type == 'udp' then ports = ports + 1 end
  end
  local limits = {{proxies, maxProxies}, {client, maxClient}, {ports, maxPorts}}
  for i = 1, 3 do
    if limits[i][2] ~= '' and (i < 3 or port == '1') and limits[i][1] >= tonumber(limits[i][2]) then
      return {0, i, limits[i][1], tonumber(limits[i][2])}
    end
  end
  if reserved then return {1} end
  local ttl = tonumber(ttlMs)
  redis.call('HSET', kr, name, cjson.encode({run_id = runId, port = port == '1', exp = now + ttl}))
  if redis.call('PTTL', kr) < ttl then redis.call('PEXPIRE', kr, ttl) end
  return {1}
end`

// Cluster: KEYS proxies, reservations; ARGV the 7 arguments of reserve
const RESERVE_LUA = `${NOW}${RESERVE}
return reserve(KEYS[1], KEYS[2], unpack(ARGV))
`

// KEYS reservations; ARGV name, run_id
const RELEASE_LUA = `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and cjson.decode(v).run_id == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
`

// The port table: KEYS[1] port -> {user, name, holdMs, heldUntil, run_id, at}, KEYS[2] owner -> port,
// the owner "user\\nname", or for a user with a newline in it (who could make another's) both in hex.
const PORTS = `
local function hex(s) return (string.gsub(s, '.', function(c) return string.format('%02x', string.byte(c)) end)) end
local function okey(user, name)
  if string.find(user, '\\n', 1, true) then return hex(user) .. ':' .. hex(name) end
  return user .. '\\n' .. name
end
local function owner(d) return okey(d.user, d.name) end
local function free(port, d)
  redis.call('HDEL', KEYS[1], port)
  if redis.call('HGET', KEYS[2], owner(d)) == port then redis.call('HDEL', KEYS[2], owner(d)) end
end`

// The port (user, name) has in use, its record (run_id, registered_at; nil: whichever) gone: held for
// holdMs, or freed. A port a newer record of the proxy claimed meanwhile stays in use (entries of
// older gateways have no `at`). With refusedMs (frps never opened it), held that long for no one.
const RELEASE = `
local function release(user, name, port, runId, at, refusedMs)
  local e = redis.call('HGET', KEYS[1], port)
  if not e then return 0 end
  local d = cjson.decode(e)
  if d.user ~= user or d.name ~= name or d.heldUntil ~= nil then return 0 end
  if runId ~= nil and ((d.run_id ~= nil and d.run_id ~= runId) or (d.at ~= nil and d.at ~= at)) then return 0 end
  if refusedMs ~= nil then
    free(port, d)
    redis.call('HSET', KEYS[1], port, cjson.encode({user = user, name = name, holdMs = 0, heldUntil = now + refusedMs, refused = true}))
  elseif d.holdMs > 0 then
    d.heldUntil = now + d.holdMs
    redis.call('HSET', KEYS[1], port, cjson.encode(d))
  else
    free(port, d)
  end
  return 1
end`

// (user, name) uses port ('' for none) for run_id and the record registered at `at`, whoever held it.
// The port the proxy had before, if another, is released as at a close (it may still be open at frps:
// a second frpc with the proxy's name is refused there); one only held is freed.
const CLAIM = `
local function claim(user, name, port, runId, at)
  local key = okey(user, name)
  local prev = redis.call('HGET', KEYS[2], key)
  -- no port, or one another proxy has open (frps refuses this one, and reconciliation removes its record)
  local function none()
    if prev and prev ~= port then release(user, name, prev, nil, nil) end
  end
  if port == '' then return none() end
  local holdMs = 0
  local e = redis.call('HGET', KEYS[1], port)
  if e then
    local d = cjson.decode(e)
    if owner(d) ~= key and d.heldUntil == nil then return none() end
    if owner(d) == key then holdMs = d.holdMs else free(port, d) end
  end
  if prev and prev ~= port then
    local p = redis.call('HGET', KEYS[1], prev)
    local pd = p and cjson.decode(p)
    if pd and owner(pd) == key then
      if pd.heldUntil == nil then release(user, name, prev, nil, nil) else redis.call('HDEL', KEYS[1], prev) end
    end
  end
  redis.call('HSET', KEYS[1], port, cjson.encode({user = user, name = name, holdMs = holdMs, run_id = runId, at = tonumber(at)}))
  redis.call('HSET', KEYS[2], key, port)
end`

// ARGV user, name, port ('' for none), run_id, registered_at
const CLAIM_LUA = `${NOW}${PORTS}${RELEASE}${CLAIM}
claim(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
`

// ARGV user, name, port, run_id, registered_at, refusedMs ('' for none)
const RELEASE_PORT_LUA = `${NOW}${PORTS}${RELEASE}
return release(ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]))
`

// The port of user and name, holding it firstMs (then holdMs after its proxy closes); r: low and high
// of each range, flat. The port, or -1.
const ASSIGN = `
local function assign(user, name, holdMs, firstMs, r)
  local key = okey(user, name)
  local function live(d) return d.heldUntil == nil or d.heldUntil > now end
  local function inside(p)
    for i = 1, #r, 2 do
      if p >= r[i] and p <= r[i + 1] then return true end
    end
    return false
  end
  local held = redis.call('HGET', KEYS[2], key)
  local mine
  if held then
    local e = redis.call('HGET', KEYS[1], held)
    if e then mine = cjson.decode(e) end
    if mine and owner(mine) ~= key then mine = nil end
    if mine and live(mine) and inside(tonumber(held)) then
      mine.holdMs = holdMs
      if mine.heldUntil ~= nil then mine.heldUntil = math.max(mine.heldUntil, now + firstMs) end
      redis.call('HSET', KEYS[1], held, cjson.encode(mine))
      return tonumber(held)
    end
  end
  for i = 1, #r, 2 do
    for p = r[i], r[i + 1] do
      local port = tostring(p)
      local e = redis.call('HGET', KEYS[1], port)
      local d = e and cjson.decode(e)
      -- a port held for this very proxy (its record moved to another port meanwhile, or frps listed it open: user "") is its own to take back
      if not d or not live(d) or (d.heldUntil ~= nil and not d.refused and (owner(d) == key or (d.user == '' and d.name == name))) then
        -- a hold for this proxy is never shortened by a call frps may not be told of
        local untilMs = now + firstMs
        if d and live(d) then untilMs = math.max(d.heldUntil, untilMs) end
        if d then free(port, d) end
        if mine then free(held, mine) end
        redis.call('HSET', KEYS[1], port, cjson.encode({user = user, name = name, holdMs = holdMs, heldUntil = untilMs}))
        redis.call('HSET', KEYS[2], key, port)
        return p
      end
    end
  end
  return -1
end`

// Cluster: KEYS ports, owners; ARGV user, name, holdMs, firstMs, then low and high of each range
const ASSIGN_LUA = `${NOW}${PORTS}${ASSIGN}
local r = {}
for i = 5, #ARGV do r[#r + 1] = tonumber(ARGV[i]) end
return assign(ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), r)
`

// One node: the changes of one turn of the event loop, in the order they came, each as its own
// script would make it. KEYS ports, owners, users, then the keys of each change; ARGV[1] the changes,
// a JSON array (one argument: ioredis handles each argument apart, and a batch had about sixty),
// each an array of strings:
// ['r', the 7 arguments of reserve] (a reservation: KEYS its proxies and reservations),
// ['a', user, name, holdMs, firstMs, then low and high of each range] (a port), or
// ['g', user, name, port ('' for none), run_id, registered_at, record JSON] (a record: KEYS its
// proxies and reservations). The answer of each change, in order (0 for a record); a change that
// fails (a value that is not what a gateway wrote) answers its error and leaves the others be.
const ONE_NODE_LUA = `${NOW}${PORTS}${RELEASE}${CLAIM}${RESERVE}${ASSIGN}${CARRY}
local function register(kp, kr, user, name, port, runId, at, json)
  claim(user, name, port, runId, at)
  redis.call('SADD', KEYS[3], user)
  redis.call('HSET', kp, name, carried(kp, name, runId, port, json))
  redis.call('HDEL', kr, name)
  return 0
end
local function answer(ok, r)
  if ok then return r end
  return {err = tostring(r)}
end
local out, k = {}, 4
for _, c in ipairs(cjson.decode(ARGV[1])) do
  local kind = c[1]
  if kind == 'r' then
    out[#out + 1] = answer(pcall(reserve, KEYS[k], KEYS[k + 1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]))
    k = k + 2
  elseif kind == 'a' then
    local r = {}
    for j = 6, #c do r[#r + 1] = tonumber(c[j]) end
    out[#out + 1] = answer(pcall(assign, c[2], c[3], tonumber(c[4]), tonumber(c[5]), r))
  else
    out[#out + 1] = answer(pcall(register, KEYS[k], KEYS[k + 1], c[2], c[3], c[4], c[5], c[6], c[7]))
    k = k + 2
  end
end
return out
`

// The ports frps lists open, each held for the name frps lists (holdOpen). KEYS ports, owners; ARGV holdMs, since, then
// port and proxy name of each
const HOLD_OPEN_LUA = `${NOW}${PORTS}
local untilMs, since = now + tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  local port, name = ARGV[i], ARGV[i + 1]
  local e = redis.call('HGET', KEYS[1], port)
  local d = e and cjson.decode(e)
  if d and d.name == name and not d.refused then
    if d.heldUntil ~= nil and d.heldUntil < untilMs then
      d.heldUntil = untilMs
      redis.call('HSET', KEYS[1], port, cjson.encode(d))
    end
  elseif not (d and d.heldUntil == nil and (d.at or 0) >= since) then
    if d then free(port, d) end
    redis.call('HSET', KEYS[1], port, cjson.encode({user = '', name = name, holdMs = 0, heldUntil = untilMs}))
  end
end
`

// ARGV port: the entry while in use or held, else nothing
const OWNER_LUA = `${NOW}
local e = redis.call('HGET', KEYS[1], ARGV[1])
if not e then return false end
local d = cjson.decode(e)
if d.heldUntil ~= nil and d.heldUntil <= now then return false end
return e
`

interface Commands {
  frpgwRegRegister (proxies: string, reservations: string, name: string, json: string, runId: string, port: string): Promise<unknown>
  frpgwRegOneNode (keys: number, ...keysThenArgs: string[]): Promise<Array<number | number[]>>
  frpgwRegUnregister (keys: number, ...keysThenArgs: string[]): Promise<number>
  frpgwRegLogin (logins: string, runId: string, at: string, ttlMs: string): Promise<unknown>
  frpgwRegReserve (proxies: string, reservations: string, ...args: string[]): Promise<number[]>
  frpgwRegRelease (reservations: string, name: string, runId: string): Promise<unknown>
  frpgwPortClaim (ports: string, owners: string, user: string, name: string, port: string, runId: string, registeredAt: string): Promise<unknown>
  frpgwPortRelease (ports: string, owners: string, user: string, name: string, port: string, runId: string, registeredAt: string, refusedMs: string): Promise<number>
  frpgwRegConfirm (keys: number, ...keysThenArgs: string[]): Promise<unknown>
  frpgwPortAssign (ports: string, owners: string, ...args: string[]): Promise<number>
  frpgwPortOwner (ports: string, port: string): Promise<string | null>
  frpgwPortHoldOpen (ports: string, owners: string, ...args: string[]): Promise<unknown>
}

// JSON.stringify writes a lone surrogate (from a caller, never from frps) as an escape, \ud800, that
// Redis's cjson refuses to read: every script reading that user's records would fail, its quota with
// them. Written as U+FFFD, as ioredis writes one in a key; an escaped backslash before it is kept.
const LONE_SURROGATE = /(?<=(?:^|[^\\])(?:\\\\)*)\\ud[89a-f][0-9a-f]{2}/g
const wellFormed = (json: string): string => json.includes('\\ud') ? json.replace(LONE_SURROGATE, '\\ufffd') : json
const recordJson = (record: ProxyRecord): string => wellFormed(JSON.stringify(record))

// at most 143 records, 125 reservations or 143 port requests of one range a script
const BATCH_ARGS = 1000
const LIMITS: readonly QuotaLimit[] = ['maxProxies', 'maxProxiesPerClient', 'maxPorts']
// `{}` (no user, or one starting with `}`) is no hash tag: Cluster would hash each key whole, and a
// script on two of them fails (CROSSSLOT). Those users get keys of their own no other user's can be.
const userTag = (user: string): string => user === ''
  ? 'reg-nouser:{nouser}'
  : user.startsWith('}') ? `reg-hex:{${Buffer.from(user).toString('hex')}}` : `reg:{${user}}`

/**
 * The changes asked in one turn of the event loop, sent as one script: a round trip costs the
 * gateway more CPU than the script costs Redis, and under load the calls of several HTTP requests
 * share one. Each change gets its item of the script's answer (an error item is thrown to its
 * caller alone); a batch that fails (Redis away) fails each of its changes. Only for keys on one node.
 */
class Batches<T> {
  #open: { keys: string[], changes: Array<readonly string[]>, args: number, sent: Promise<T[]> } | undefined

  constructor (readonly send: (keys: string[], changes: Array<readonly string[]>) => Promise<T[]>, readonly firstKeys: () => string[]) {}

  async add (keys: readonly string[], args: readonly string[]): Promise<T> {
    let batch = this.#open
    if (batch === undefined || batch.args >= BATCH_ARGS) {
      const next = { keys: this.firstKeys(), changes: [] as Array<readonly string[]>, args: 0, sent: undefined as unknown as Promise<T[]> }
      next.sent = new Promise(resolve => setImmediate(resolve)).then(async () => {
        if (this.#open === next) this.#open = undefined
        return await this.send(next.keys, next.changes)
      })
      batch = this.#open = next
    }
    const i = batch.changes.length
    batch.keys.push(...keys)
    batch.changes.push(args)
    batch.args += args.length
    const answer = (await batch.sent)[i]
    if (answer instanceof Error) throw answer
    return answer
  }
}

/**
 * The registry in Redis, for every gateway sharing it (standalone, Sentinel, Cluster).
 *
 * Layout under keyPrefix: `reg:{USER}:proxies` (hash: proxy name -> record JSON) and
 * `reg:{USER}:reservations` (hash: proxy name -> {run_id, port, exp}), one Cluster slot per user
 * (`reg-nouser:{nouser}:...` for clients without a user, `reg-hex:{HEX}:...` for a user starting with `}`);
 * `ports:{ports}` (hash: port -> {user, name, holdMs, heldUntil, run_id}) and `ports:{ports}:owners`
 * (hash: "user\nname" -> port), one slot for the port table; `reg:users` (set of users with
 * records) for listing. Every change is a Lua script on one slot; on Cluster a record touching a
 * user and the port table is three scripts, the port first, each idempotent. On one node, the
 * reservations, ports and records asked in one turn of the event loop go out as one script.
 */
export class RedisRegistry implements RegistryStore {
  readonly kind = 'redis' as const
  readonly #client: Redis | Cluster
  readonly #prefix: string
  readonly #c: Commands
  /** one node (standalone, Sentinel): every change of one turn of the event loop in one script */
  readonly #changes: Batches<number | number[]> | undefined

  /** The client belongs to whoever created it (src/stores/redis-client.ts). */
  readonly #unreadable: (err: UnreadableRecord) => void

  constructor (client: Redis | Cluster, opts: { keyPrefix: string, unreadable?: (err: UnreadableRecord) => void }) {
    this.#unreadable = opts.unreadable ?? (() => {})
    this.#client = client
    this.#prefix = opts.keyPrefix
    this.#c = client as unknown as Commands
    const define = (name: string, keys: number, lua: string): void => client.defineCommand(name, { numberOfKeys: keys, lua })
    define('frpgwRegRegister', 2, REGISTER_LUA)
    client.defineCommand('frpgwRegOneNode', { lua: ONE_NODE_LUA })
    client.defineCommand('frpgwRegUnregister', { lua: UNREGISTER_LUA })
    define('frpgwRegLogin', 1, LOGIN_LUA)
    define('frpgwRegReserve', 2, RESERVE_LUA)
    define('frpgwRegRelease', 1, RELEASE_LUA)
    define('frpgwPortClaim', 2, CLAIM_LUA)
    define('frpgwPortRelease', 2, RELEASE_PORT_LUA)
    define('frpgwPortAssign', 2, ASSIGN_LUA)
    define('frpgwPortOwner', 1, OWNER_LUA)
    client.defineCommand('frpgwRegConfirm', { lua: CONFIRM_LUA })
    define('frpgwPortHoldOpen', 2, HOLD_OPEN_LUA)
    if (!client.isCluster) {
      this.#changes = new Batches(async (keys, changes) => await this.#c.frpgwRegOneNode(keys.length, ...keys, wellFormed(JSON.stringify(changes))),
        () => [this.portsKey, this.ownersKey, this.usersKey])
    }
  }

  proxiesKey (user: string): string { return `${this.#prefix}${userTag(user)}:proxies` }
  reservationsKey (user: string): string { return `${this.#prefix}${userTag(user)}:reservations` }
  loginsKey (user: string): string { return `${this.#prefix}${userTag(user)}:logins` }
  get usersKey (): string { return `${this.#prefix}reg:users` }
  get portsKey (): string { return `${this.#prefix}ports:{ports}` }
  get ownersKey (): string { return `${this.#prefix}ports:{ports}:owners` }

  async register (record: ProxyRecord): Promise<void> {
    try {
      const port = record.remote_port !== undefined && record.remote_port > 0 ? String(record.remote_port) : ''
      const { user, name, run_id: runId } = record
      const [proxies, reservations, json, at] = [this.proxiesKey(user), this.reservationsKey(user), recordJson(record), String(record.registered_at)]
      if (this.#changes !== undefined) {
        await this.#changes.add([proxies, reservations], ['g', user, name, port, runId, at, json])
        return
      }
      await this.#c.frpgwPortClaim(this.portsKey, this.ownersKey, user, name, port, runId, at)
      await this.#c.frpgwRegRegister(proxies, reservations, name, json, runId, port)
      // after the record: a removal racing this one (#forget) then sees the record, or is undone here
      await this.#client.sadd(this.usersKey, user)
    } catch (err) {
      throw redisError(this.#client, err)
    }
  }

  async noteLogin (user: string, runId: string, at: number): Promise<void> {
    try {
      // kept a minute: far longer than any settle period, and a client logging in again renews it
      await this.#c.frpgwRegLogin(this.loginsKey(user), runId, String(at), '60000')
    } catch (err) {
      throw redisError(this.#client, err)
    }
  }

  async unregister (user: string, name: string, runId: string, settle?: Settle, registeredAt?: number, refusedMs?: number): Promise<boolean> {
    try {
      const record = await this.get(user, name)
      if (record === undefined || record.run_id !== runId || (registeredAt !== undefined && record.registered_at !== registeredAt)) return false
      if (settle !== undefined) {
        const at = await this.#client.hget(this.loginsKey(user), runId)
        if (settling(record, at === null ? undefined : Number(at), settle)) return false
      }
      if (record.remote_port !== undefined && record.remote_port > 0) {
        const refused = refusedMs !== undefined && record.confirmed_at === undefined ? String(refusedMs) : ''
        await this.#c.frpgwPortRelease(this.portsKey, this.ownersKey, user, name, String(record.remote_port), runId, String(record.registered_at), refused)
      }
      // the record read: one registered since (a reconnect) stays, and its port was not released above
      const keys = [this.proxiesKey(user), this.loginsKey(user), ...this.#changes !== undefined ? [this.usersKey] : []]
      const removed = await this.#c.frpgwRegUnregister(keys.length, ...keys, name, runId,
        String(settle?.now ?? 0), settle === undefined ? '' : String(settle.ms), String(record.registered_at), user) === 1
      if (removed && this.#changes === undefined) await this.#forget(user)
      return removed
    } catch (err) {
      throw redisError(this.#client, err)
    }
  }

  /**
   * A user without records leaves the users set (on one node a removal does it in its script), so
   * list() and count() do not read every user who ever had a proxy. On Cluster the set is in another
   * slot than the records: taken out, then put back if a record came meanwhile (a record is added
   * to the set after it is written).
   */
  async #forget (user: string): Promise<void> {
    const proxies = this.proxiesKey(user)
    if (await this.#client.hlen(proxies) > 0) return
    await this.#client.srem(this.usersKey, user)
    if (await this.#client.hlen(proxies) > 0) await this.#client.sadd(this.usersKey, user)
  }

  async confirm (listed: readonly RecordKey[], at: number): Promise<void> {
    const byUser = new Map<string, Array<[string, string, number]>>()
    for (const r of listed) {
      const own = byUser.get(r.user) ?? []
      own.push([r.name, r.run_id, r.registered_at])
      byUser.set(r.user, own)
    }
    // Cluster: one script per user's slot; one node: every user in one script, a few hundred at a time
    const chunk = this.#changes === undefined ? 1 : 500
    const users = [...byUser]
    try {
      for (let i = 0; i < users.length; i += chunk) {
        const some = users.slice(i, i + chunk)
        await this.#c.frpgwRegConfirm(some.length, ...some.map(([user]) => this.proxiesKey(user)), String(at), ...some.map(([, l]) => wellFormed(JSON.stringify(l))))
      }
    } catch (err) {
      throw redisError(this.#client, err)
    }
  }

  async get (user: string, name: string): Promise<ProxyRecord | undefined> {
    try {
      const key = this.proxiesKey(user)
      const json = await this.#client.hget(key, name)
      return json === null ? undefined : readRecord(json, `${key} field ${JSON.stringify(name)}`)
    } catch (err) {
      if (err instanceof UnreadableRecord) throw err
      throw redisError(this.#client, err)
    }
  }

  async list (user?: string): Promise<ProxyRecord[]> {
    try {
      const users = user === undefined ? await this.#client.smembers(this.usersKey) : [user]
      const all = await Promise.all(users.map(async u => await this.#client.hgetall(this.proxiesKey(u))))
      // users a gateway before this one left in the set when their last record went
      if (user === undefined) await Promise.all(users.filter((_, i) => Object.keys(all[i]).length === 0).map(async u => { await this.#forget(u) }))
      const records: ProxyRecord[] = []
      all.forEach((fields, i) => {
        for (const [name, json] of Object.entries(fields)) {
          // one record written by another hand must not hide the others (a view, a reconciliation): it is skipped, and said
          try {
            records.push(readRecord(json, `${this.proxiesKey(users[i])} field ${JSON.stringify(name)}`))
          } catch (err) {
            this.#unreadable(err as UnreadableRecord)
          }
        }
      })
      return records.sort(byUserThenName)
    } catch (err) {
      throw redisError(this.#client, err)
    }
  }

  async count (): Promise<number> {
    try {
      const users = await this.#client.smembers(this.usersKey)
      const counts = await Promise.all(users.map(async u => await this.#client.hlen(this.proxiesKey(u))))
      return counts.reduce((a, b) => a + b, 0)
    } catch (err) {
      throw redisError(this.#client, err)
    }
  }

  async reserve (request: QuotaRequest, limits: QuotaLimits): Promise<QuotaResult> {
    try {
      const max = (n: number | undefined): string => n === undefined ? '' : String(n)
      const keys = [this.proxiesKey(request.user), this.reservationsKey(request.user)]
      const args = [request.name, request.run_id, request.port ? '1' : '0', String(Math.max(1, Math.ceil(request.ttlMs))),
        max(limits.maxProxies), max(limits.maxProxiesPerClient), max(limits.maxPorts)]
      const [allowed, which, count, most] = this.#changes === undefined
        ? await this.#c.frpgwRegReserve(keys[0], keys[1], ...args)
        : await this.#changes.add(keys, ['r', ...args]) as number[]
      return allowed === 1 ? { allowed: true } : { allowed: false, limit: LIMITS[which - 1], count, max: most }
    } catch (err) {
      throw redisError(this.#client, err)
    }
  }

  async release (user: string, name: string, runId: string): Promise<void> {
    try {
      await this.#c.frpgwRegRelease(this.reservationsKey(user), name, runId)
    } catch (err) {
      throw redisError(this.#client, err)
    }
  }

  async assignPort ({ user, name, ranges, holdMs, pendingMs = holdMs }: PortRequest): Promise<number | undefined> {
    try {
      const held = [String(holdMs), String(Math.ceil(pendingMs))]
      const bounds = ranges.flatMap(([lo, hi]) => [String(lo), String(hi)])
      const port = this.#changes === undefined
        ? await this.#c.frpgwPortAssign(this.portsKey, this.ownersKey, user, name, ...held, ...bounds)
        : await this.#changes.add([], ['a', user, name, ...held, ...bounds]) as number
      return port === -1 ? undefined : port
    } catch (err) {
      throw redisError(this.#client, err)
    }
  }

  async holdOpen (listed: ReadonlyMap<number, string>, holdMs: number, since: number): Promise<void> {
    if (listed.size === 0) return
    try {
      await this.#c.frpgwPortHoldOpen(this.portsKey, this.ownersKey, String(holdMs), String(since), ...[...listed].flatMap(([port, name]) => [String(port), name]))
    } catch (err) {
      throw redisError(this.#client, err)
    }
  }

  async portOwner (port: number): Promise<PortOwner | undefined> {
    try {
      const json = await this.#c.frpgwPortOwner(this.portsKey, String(port))
      if (json === null) return undefined
      const { user, name, heldUntil, refused } = JSON.parse(json) as PortOwner
      if (heldUntil === undefined) return { user, name }
      return refused === true ? { user, name, heldUntil, refused } : { user, name, heldUntil }
    } catch (err) {
      throw redisError(this.#client, err)
    }
  }

  async ping (): Promise<void> {
    try {
      await this.#client.ping()
    } catch (err) {
      throw redisError(this.#client, err)
    }
  }

  /** The client stays open for its owner. */
  async close (): Promise<void> {}
}
