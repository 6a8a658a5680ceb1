import { dirname, resolve } from 'node:path'
import { createSecureContext } from 'node:tls'
import { z } from 'zod'
import { plugins } from '../plugins/index.js'
import { durationIn, intIn, MAX_DEADLINE_MS, MAX_DRAIN_MS, oneFormOf } from './bounds.js'
import { collectIssues, ConfigError, type ConfigIssue } from './errors.js'
import { issuesOf } from './issues.js'
import { duplicateKeyIssues, readFileBytesSync, readJsonText } from './json-file.js'
import { createLogger, redactPathProblem } from './log.js'
import { compileWhen, whenSchema, type When } from './match.js'
import { createMetrics } from './metrics.js'
import { createRuntime } from './runtime.js'

const port = intIn(0, 65535)
// Node listens on every interface for "": an unauthenticated plugin must not be exposed by an empty value
const host = z.string().min(1, 'expected an address or host name: "0.0.0.0" or "::" to listen on every interface').default('127.0.0.1')
const tls = z.strictObject({
  cert: z.string().describe('path of the PEM certificate (chain)'),
  key: z.string().describe('path of the PEM private key')
})

// parsed only when used (each reconciliation, each Redis connection), where a bad one is a stack trace or a crash;
// never quoted: it may hold a password
function parsedUrl (raw: string, ctx: z.RefinementCtx): URL | undefined {
  try {
    return new URL(raw)
  } catch {
    ctx.addIssue({ code: 'custom', message: 'not a valid URL (a host, and a port up to 65535)' })
    return undefined
  }
}

function frpsApiUrl (raw: string, ctx: z.RefinementCtx): void {
  if (!/^https?:\/\//.test(raw)) return
  const url = parsedUrl(raw, ctx)
  if (url !== undefined && (url.username !== '' || url.password !== '')) ctx.addIssue({ code: 'custom', message: 'give the credentials as frpsApi.user and frpsApi.password, not in the URL' })
}

// ioredis takes the path, or ?db=, as the database number, and SELECTs NaN for any other (a crash);
// it connects a URL without a host (redis://, redis:///1) to localhost:6379 without a word
function redisUrlCheck (raw: string, ctx: z.RefinementCtx): void {
  if (!/^rediss?:\/\//.test(raw)) return
  const url = parsedUrl(raw, ctx)
  if (url === undefined) return
  if (url.hostname === '') ctx.addIssue({ code: 'custom', message: 'no host: write it, as in redis://127.0.0.1:6379 (without one, ioredis would connect to localhost:6379)' })
  const inPath = url.pathname.length > 1
  const db = inPath ? url.pathname.slice(1) : url.searchParams.get('db')
  if (db !== null && !/^\d+$/.test(db)) ctx.addIssue({ code: 'custom', message: `the database (${inPath ? 'the path' : '?db='}) must be a number, as in redis://host:6379/0` })
}

const keyPrefix = z.string().default('frpgw:').describe('prefix of every key the gateway writes')
const secret = z.string().min(1, 'expected a non-empty password')
const redisUrl = z.string().regex(/^rediss?:\/\//, 'expected a redis:// or rediss:// URL').superRefine(redisUrlCheck)
const urlForm = z.strictObject({ url: redisUrl, keyPrefix })
const clusterForm = z.strictObject({ cluster: z.array(redisUrl).min(1), keyPrefix })
const sentinelForm = z.strictObject({
  sentinels: z.array(z.strictObject({ host: z.string().min(1, 'expected a host name or address'), port: intIn(1, 65535) })).min(1),
  // ioredis refuses an empty name only when the client is made, in words of its own
  name: z.string().min(1, 'expected the master\'s name, as the Sentinels monitor it').describe('the master\'s name, as the Sentinels monitor it'),
  username: z.string().min(1).optional().describe('ACL user of the master and replicas (needs password)'),
  password: secret.optional().describe('password of the master and replicas: their requirepass, or the ACL user\'s'),
  sentinelUsername: z.string().min(1).optional().describe('ACL user of the Sentinels (needs sentinelPassword)'),
  sentinelPassword: secret.optional().describe('password of the Sentinels (their requirepass), when they need one'),
  tls: z.boolean().optional().describe('true: TLS to the Sentinels and to the master; trust a private CA with NODE_EXTRA_CA_CERTS'),
  keyPrefix
}).superRefine((cfg, ctx) => {
  // Redis's AUTH takes a user with its password: a user alone would be sent with an empty one
  for (const [user, pass] of [['username', 'password'], ['sentinelUsername', 'sentinelPassword']] as const) {
    if (cfg[user] !== undefined && cfg[pass] === undefined) ctx.addIssue({ code: 'custom', path: [user], message: `${user} needs ${pass} (Redis's AUTH takes both)` })
  }
})
const redis = oneFormOf({ url: urlForm, cluster: clusterForm, sentinels: sentinelForm }, 'expected {url}, {cluster: [urls]} or {sentinels: [{host, port}], name}')

const stepBase = {
  name: z.string().regex(/^[a-z0-9_-]+$/, 'expected a name of a-z, 0-9, _ and - (it is a metric label)'),
  when: whenSchema.optional(),
  mode: z.enum(['enforce', 'shadow']).default('enforce').describe('shadow: decisions are logged and counted but neither reject nor modify'),
  enabled: z.boolean().default(true)
}

// an op given twice put the step twice in that op's chain: it ran twice a call (a rate limit took two tokens)
const once = (ops: string[], ctx: z.RefinementCtx): void => {
  ops.forEach((op, i) => {
    const first = ops.indexOf(op)
    if (first < i) ctx.addIssue({ code: 'custom', path: [i], message: `${op} is given again (first at ops[${first}]): the step would run twice on each call` })
  })
}

const pluginNames = Object.keys(plugins)
const steps = Object.entries(plugins).map(([name, def]) => z.strictObject({
  ...stepBase,
  plugin: z.literal(name).describe(def.description),
  ops: z.array(z.enum(def.ops as [string, ...string[]])).min(1).superRefine(once).meta({ uniqueItems: true }).optional()
    .describe('default: every op the plugin supports'),
  options: (def.options as z.ZodType).prefault({})
}))
const step = z.discriminatedUnion('plugin', steps as unknown as [typeof steps[number]], {
  error: iss => iss.code === 'invalid_union'
    ? `${(iss.input as { plugin?: unknown } | undefined)?.plugin === undefined ? 'missing' : 'unknown plugin'}: expected one of ${pluginNames.join(', ')}`
    : undefined
})

export const configSchema = z.strictObject({
  $schema: z.string().optional(),
  listen: z.strictObject({
    host,
    port: port.default(9000),
    // a pattern, not zod's startsWith: that becomes "format": "starts_with", which no JSON Schema validator knows
    // a plain path: fastify would take ":x" and "*" as route patterns, frps sends "?" and "#" as no path has them
    path: z.string().regex(/^\/[A-Za-z0-9._~\/-]*$/, 'expected a path starting with /, of letters, digits, "/", ".", "_", "~" and "-"')
      .default('/handler').describe('path of the plugin RPC (frps httpPlugins.path)'),
    // frp's control messages are at most 10 KiB each, so a call from frps is a few tens of KiB at most
    bodyLimitBytes: intIn(1024, 16 * 1024 * 1024).default(1024 * 1024).describe('larger bodies get 413 (bytes)'), // 1 MiB
    tls: tls.optional().describe('serve https (frps: addr = "https://...")')
  }).prefault({}),
  admin: z.strictObject({
    host,
    port: port.default(9001)
  }).optional().describe('serve /metrics, /healthz and /readyz on their own listener instead of on listen'),
  redis: redis.optional(),
  users: oneFormOf({
    file: z.strictObject({ file: z.string().min(1).describe('the users file; relative to the config file\'s folder') }),
    redis: z.strictObject({
      redis: z.strictObject({
        cacheMs: intIn(0, 3_600_000).default(2000).describe('how long a user read from Redis is reused (ms): a change takes effect within this time')
      }).prefault({}).describe('one hash per user under redis.keyPrefix; needs the top-level redis block')
    })
  }, 'expected {"file": "users.json"} or {"redis": {}}').optional().describe('where the user table lives (the users step reads it)'),
  drainMs: intIn(0, MAX_DRAIN_MS).default(5000).describe('on stop and reload, how long work after answers (registry records, events) may still take (ms)'),
  registry: z.strictObject({
    store: z.enum(['auto', 'memory', 'redis']).default('auto').describe('auto: redis when the redis block is configured, else memory'),
    frpsApi: z.strictObject({
      url: z.string().regex(/^https?:\/\//, 'expected an http:// or https:// URL').superRefine(frpsApiUrl).describe('frps\'s dashboard (webServer), e.g. http://127.0.0.1:7500'),
      user: z.string().optional().describe('webServer.user'),
      password: z.string().optional().describe('webServer.password')
    }).optional().describe('read the proxies frps lists online, to remove records of proxies frps refused or lost'),
    reconcileEvery: durationIn(1000, 86_400_000, 'an interval').default(60_000).describe('how often frpsApi is read: "30s", "1m", "1h" or milliseconds, from 1s to 24h'),
    onStoreError: z.enum(['allow', 'reject']).default('allow').describe('what quota, ports and proxyMetas conditions do while the registry cannot be read')
  }).optional().describe('record every proxy frps opens (NewProxy answered allow or modify, CloseProxy): needed by quota, ports and when.proxyMetas'),
  deadlineMs: intIn(1, MAX_DEADLINE_MS).default(3000).describe('no answer to frps takes longer (ms; frpc waits 10 s for a Login answer)'),
  log: z.strictObject({
    level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
    redact: z.array(z.string().superRefine((path, ctx) => {
      const problem = redactPathProblem(path)
      if (problem !== undefined) ctx.addIssue({ code: 'custom', message: `not a pino redact path: ${problem}` })
    })).default([]).describe('extra pino redact paths')
  }).prefault({}),
  chain: z.array(step).default([]).describe('the steps, run in this order')
})

export type Config = z.output<typeof configSchema>
export type UsersConfig = NonNullable<Config['users']>
export type StepConfig = Config['chain'][number]

// Checked on the raw input, so a duplicate is reported even when other parts of the file are wrong.
function duplicateNames (chain: readonly unknown[]): ConfigIssue[] {
  const seen = new Set<unknown>()
  return chain.flatMap((s, i) => {
    const name = (s as { name?: unknown } | null)?.name
    if (typeof name !== 'string') return []
    if (!seen.has(name)) { seen.add(name); return [] }
    return [{ path: `chain[${i}].name`, message: `duplicate step name "${name}"` }]
  })
}

// The top level without the steps, which are parsed one by one: one bad step hides nothing of the others.
const topLevel = configSchema.extend({ chain: z.array(z.unknown()).default([]) })
// what a step of any plugin may hold: an unknown plugin's step still has its other keys checked
const stepBaseSchema = z.strictObject({ ...stepBase, plugin: z.unknown().optional(), ops: z.unknown().optional(), options: z.unknown().optional() })

/**
 * Every schema problem of the file, and the config as far as it parsed: a chain with holes where
 * steps did not parse, so the steps that did can still be compiled for their own problems.
 */
function parseParts (raw: unknown): { config: Config, issues: ConfigIssue[], broken: ReadonlySet<string> } {
  const top = topLevel.safeParse(raw)
  const rawChain = (raw as { chain?: unknown } | null)?.chain
  const steps = Array.isArray(rawChain) ? rawChain : []
  const issues = top.success ? [] : issuesOf(top.error)
  const chain: StepConfig[] = []
  chain.length = steps.length
  steps.forEach((s, i) => {
    const parsed = step.safeParse(s)
    if (parsed.success) chain[i] = parsed.data
    else issues.push(...issuesOf(parsed.error, ['chain', i]), ...unknownPluginBase(s, parsed.error, i), ...whenOfUnparsed(s, i))
  })
  issues.push(...duplicateNames(steps))
  const { base, broken } = top.success ? { base: top.data, broken: new Set<string>() } : topLevelParts(raw)
  if (!broken.has('listen') && !broken.has('admin')) issues.push(...adminRouteTaken(base), ...adminOnListen(base))
  if (!broken.has('listen')) issues.push(...forwardToSelf(base.listen, chain))
  return { config: { ...base, chain }, issues, broken }
}

/**
 * The top-level keys each parsed on its own, a key that does not parse at its default: one bad key
 * neither hides the checks of the others (admin against listen) nor makes a step miss a block that is there (registry).
 */
function topLevelParts (raw: unknown): { base: z.output<typeof topLevel>, broken: Set<string> } {
  const given = raw !== null && typeof raw === 'object' && !Array.isArray(raw) ? raw as Record<string, unknown> : {}
  const broken = new Set<string>()
  const base: Record<string, unknown> = {}
  for (const [key, schema] of Object.entries(topLevel.shape)) {
    const one = (schema as z.ZodType).safeParse(given[key])
    if (one.success) base[key] = one.data
    else broken.add(key)
  }
  return { base: { ...topLevel.parse({}), ...base }, broken }
}

const ADMIN_ROUTES = ['/metrics', '/healthz', '/readyz', '/proxies']

// Without an admin block the RPC listener serves the admin routes too: the RPC path cannot be one of them.
function adminRouteTaken (config: { listen: { path: string }, admin?: unknown }): ConfigIssue[] {
  const { path } = config.listen
  if (config.admin !== undefined || !(ADMIN_ROUTES.includes(path) || path.startsWith('/proxies/'))) return []
  return [{ path: 'listen.path', message: `"${path}" is an admin route, served on this listener without an "admin" block: choose another path, or add "admin"` }]
}

const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|::1|::ffff:127(\.\d{1,3}){3})$/i
const ANY_ADDRESS = new Set(['0.0.0.0', '::'])

/**
 * A forward step whose url is the gateway's own RPC (the gateway's [[httpPlugins]] entry of frps.toml, copied
 * into the chain) calls itself, which calls itself again: a hundred nested calls a call, until timeoutMs.
 */
function forwardToSelf (listen: { host: string, port: number, path: string, tls?: unknown }, chain: readonly StepConfig[]): ConfigIssue[] {
  if (listen.port === 0) return []
  return chain.flatMap((s, i) => {
    if (s?.plugin !== 'forward' || !s.enabled) return []
    let url
    try {
      url = new URL((s.options as { url: string }).url)
    } catch {
      return [] // the step's own compile says why
    }
    const port = url.port !== '' ? Number(url.port) : url.protocol === 'https:' ? 443 : 80
    const host = url.hostname.replace(/^\[(.*)\]$/, '$1').toLowerCase()
    // another host listening on the same port and path is another gateway: only this host's addresses are this one
    const here = host === listen.host.toLowerCase() || (LOOPBACK.test(host) && (LOOPBACK.test(listen.host) || ANY_ADDRESS.has(listen.host)))
    if (!here || port !== listen.port || url.pathname !== listen.path || url.protocol !== (listen.tls === undefined ? 'http:' : 'https:')) return []
    return [{ path: `chain[${i}].options.url`, message: `${url.origin}${url.pathname} is this gateway's own RPC (listen): the step would call the gateway, which would call it again, on every call` }]
  })
}

// the admin listener would fail to start with "already in use", by the gateway's own RPC listener
function adminOnListen ({ listen, admin }: { listen: { host: string, port: number }, admin?: { host: string, port: number } }): ConfigIssue[] {
  if (admin === undefined || admin.port === 0 || admin.port !== listen.port || admin.host !== listen.host) return []
  return [{ path: 'admin.port', message: `${admin.host}:${admin.port} is the RPC listener's (listen.host and .port): give admin another port, or leave "admin" out to serve /metrics on the RPC listener` }]
}

// A step of an unknown plugin still has its name, when, mode and enabled checked.
function unknownPluginBase (s: unknown, error: z.ZodError, i: number): ConfigIssue[] {
  if (!error.issues.some(issue => issue.code === 'invalid_union' && issue.path.length === 1 && issue.path[0] === 'plugin')) return []
  const base = stepBaseSchema.safeParse(s)
  return base.success ? [] : issuesOf(base.error, ['chain', i])
}

// A step that did not parse is not compiled, but its `when` is, when it parses: its CIDRs, ports and fields are reported too.
function whenOfUnparsed (s: unknown, i: number): ConfigIssue[] {
  return whenParts((s as { when?: unknown } | null)?.when, `chain[${i}].when`)
}

// A `when` that fails the schema still has each condition that parses compiled: a bad one hides none of the others' problems.
function whenParts (raw: unknown, path: string): ConfigIssue[] {
  const compiled = (when: When): ConfigIssue[] => [...collectIssues(path, () => compileWhen(when)).issues]
  const whole = whenSchema.safeParse(raw)
  if (whole.success) return compiled(whole.data)
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return []
  return Object.entries(raw).flatMap(([key, value]) => {
    const part = whenSchema.safeParse({ [key]: value })
    if (part.success) return compiled(part.data)
    return key === 'not' ? whenParts(value, `${path}.not`) : []
  })
}

// far past any config (a `when` of 20 nested `not`s is about 25 levels); the schema's recursion overflowed the stack at about 1,000
const MAX_CONFIG_DEPTH = 100

/** The path of the first object or array nested past `room` levels below `path`, else undefined. */
function tooDeepAt (value: unknown, room: number, path: string): string | undefined {
  if (value === null || typeof value !== 'object') return undefined
  if (room === 0) return path === '' ? '(file)' : path
  for (const [key, item] of Object.entries(value)) {
    const at = tooDeepAt(item, room - 1, Array.isArray(value) ? `${path}[${key}]` : path === '' ? key : `${path}.${key}`)
    if (at !== undefined) return at
  }
  return undefined
}

function checkDepth (raw: unknown, source: string): void {
  const at = tooDeepAt(raw, MAX_CONFIG_DEPTH, '')
  if (at !== undefined) throw new ConfigError(source, [{ path: at, message: `nested deeper than ${MAX_CONFIG_DEPTH} levels of objects and arrays` }])
}

/** Validates a parsed config; every schema problem is reported with its JSON path. */
export function parseConfig (raw: unknown, source = 'config'): Config {
  checkDepth(raw, source)
  const { config, issues } = parseParts(raw)
  if (issues.length > 0) throw new ConfigError(source, issues)
  return config
}

/** The file's config; else a ConfigError with every problem: schema, and compile problems of each step that parsed. */
export async function loadConfig (file: string, opts: { tls?: boolean } = {}): Promise<Config> {
  const { text, value } = await readJsonText(file)
  checkDepth(value, file)
  const { config, issues: found, broken } = parseParts(value)
  // a key given twice (a copied block whose name was left) is the first thing to say: JSON kept the last silently
  const issues = [...duplicateKeyIssues(text), ...found]
  if (issues.length === 0) return config
  // check reads listen.tls as run does: its problems join the others' (a valid file has them read after)
  if (opts.tls === true && !broken.has('listen') && config.listen.tls !== undefined) issues.push(...tryTls(file, config.listen.tls).issues)
  // compile what did parse, for every problem in one report (createRuntime throws them all); a reload comes here for every bad file
  try {
    await createRuntime(config, { ...compileOnly(file), broken }, file, issues)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    issues.splice(0, issues.length, ...err.issues)
  }
  throw new ConfigError(file, issues)
}

/** What createRuntime needs to compile the config of `file` and report its problems, opening nothing (check, a bad reload). */
export const compileOnly = (file: string): Parameters<typeof createRuntime>[1] =>
  ({ metrics: createMetrics(undefined, { defaults: false }), log: createLogger({ level: 'silent', redact: [] }), open: false, baseDir: dirname(file) })

/** The JSON Schema of the config file (config/gateway.schema.json is this, generated). */
export function configJsonSchema (): unknown {
  return z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' })
}

/**
 * listen.tls, read and checked before anything opens (and by check): an unusable file is a config
 * error naming its key. Relative paths are from the config file's folder, as the users file's.
 */
export function readTls (file: string, tls: { cert: string, key: string }): { cert: Buffer, key: Buffer } {
  const { pair, issues } = tryTls(file, tls)
  if (pair === undefined) throw new ConfigError(file, issues)
  return pair
}

/** listen.tls read: the pair, or every problem of it (a cert and a key both missing are two). */
function tryTls (file: string, tls: { cert: string, key: string }): { pair?: { cert: Buffer, key: Buffer }, issues: ConfigIssue[] } {
  const issues: ConfigIssue[] = []
  const read = (key: 'cert' | 'key'): Buffer | undefined => {
    try {
      return readFileBytesSync(resolve(dirname(file), tls[key]))
    } catch (err) {
      issues.push({ path: `listen.tls.${key}`, message: `cannot read ${tls[key]}: ${(err as Error).message}` })
    }
  }
  const [cert, key] = [read('cert'), read('key')]
  if (cert === undefined || key === undefined) return { issues }
  try {
    createSecureContext({ cert, key })
  } catch (err) {
    return { issues: [{ path: 'listen.tls', message: `${tls.cert} and ${tls.key} are not a usable certificate and key: ${(err as Error).message}` }] }
  }
  return { pair: { cert, key }, issues }
}
