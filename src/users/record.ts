import { hash, timingSafeEqual } from 'node:crypto'
import { z } from 'zod'
import { intIn } from '../bounds.js'
import { ConfigError, type ConfigIssue } from '../errors.js'
import { issuesOf } from '../issues.js'
import { anyGlob, cidrList, portRanges, remotePortRange } from '../match.js'
import { proxyTypeSchema, stringRecord } from '../protocol.js'

/**
 * frpc checks no user name (any string goes, and frps prefixes proxy names with it), so this is our
 * own safe set: it becomes a log field, a Redis key part and the `user.` proxy name prefix.
 */
export const USER_NAME = /^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$/
export const userNameSchema = z.string().regex(USER_NAME, 'expected a user name of 1-64 characters: A-Z, a-z, 0-9, _ . @ - (not first)')

/** Bounds of one record, so a table of 10,000 users stays a few MB. */
const MAX_LIST = 1000
export const MAX_MAX_PROXIES = 100_000

// Every entry is checked on its own with match.ts's compiler, so each bad one is reported at its index.
const eachCompiles = <T>(compile: (one: T[]) => unknown) => (list: T[], ctx: z.RefinementCtx): void => {
  list.forEach((entry, i) => {
    try {
      compile([entry])
    } catch (err) {
      ctx.addIssue({ code: 'custom', path: [i], message: (err as Error).message })
    }
  })
}

// Parsed loosely so that every bad entry gets match.ts's own message; the JSON Schema says what goes.
const portItem = z.union([z.number(), z.string()])
const PORT_ITEM_JSON = { anyOf: [{ type: 'integer', minimum: 1, maximum: 65535 }, { type: 'string', pattern: '^0*[1-9]\\d*(-\\d+)?$' }] }

const globs = z.array(z.string().min(1, 'an empty glob matches nothing').max(253)).max(MAX_LIST)
// frp's BandwidthQuantity: a number (a fraction too) and KB or MB; zero would mean no limit at all
const BANDWIDTH = /^(?=[\d.]*[1-9])\d+(\.\d+)?(KB|MB)$/
const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/
/** Date.parse rolls a day the month does not have over (April 31 is May 1): the written day must exist */
const realDate = (s: string): boolean => {
  const [y, m, d] = s.slice(0, 10).split('-').map(Number)
  const day = new Date(Date.UTC(y, m - 1, d))
  return Number.isFinite(Date.parse(s)) && day.getUTCMonth() === m - 1 && day.getUTCDate() === d
}
const EMPTY_SHA256 = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'

export const userRecordSchema = z.strictObject({
  token: z.string().min(1).max(1024).optional().describe('the secret in plaintext, as frpc sends it in metadatas.token'),
  tokenSha256: z.string().regex(/^[0-9a-fA-F]{64}$/, 'expected the SHA-256 of the token as 64 hex characters')
    .refine(h => h.toLowerCase() !== EMPTY_SHA256, 'this is the SHA-256 of an empty secret (an unset variable?): a token is 1 to 1024 characters').optional()
    .describe('hex of the SHA-256 of the secret, so the file need not hold it'),
  enabled: z.boolean().default(true),
  expires: z.string().regex(DATE_TIME, 'expected an ISO date-time with a zone, e.g. 2027-01-31T00:00:00Z')
    .refine(realDate, 'not a real date-time').optional().describe('ISO date-time with a zone; from then on the user is refused'),
  clientCidrs: z.array(z.string()).max(MAX_LIST).superRefine(eachCompiles(cidrList)).optional()
    .describe("CIDRs or addresses that Login's client_address must be inside"),
  proxyTypes: z.array(proxyTypeSchema).optional().describe('proxy types the user may register'),
  proxyNames: globs.optional().describe('globs (* and ?) on the proxy name without the "user." prefix'),
  ports: z.array(portItem).max(MAX_LIST).superRefine(eachCompiles(([p]) => remotePortRange(p))).optional()
    .describe('tcp/udp remote ports and "low-high" ranges; absent: any port; []: no tcp/udp proxy'),
  domains: globs.optional().describe('globs every custom_domains entry must match'),
  subdomains: globs.optional().describe('globs the subdomain must match'),
  bandwidthLimit: z.string().regex(BANDWIDTH, 'expected a number and KB or MB, as frp writes it, e.g. "10MB"').optional()
    .describe('set as bandwidth_limit with bandwidth_limit_mode "server" on NewProxy'),
  maxProxies: intIn(0, MAX_MAX_PROXIES).optional().describe('at most this many proxies at once'),
  metas: stringRecord().optional().describe('Login metas set for the user (override what frpc sent)'),
  comment: z.string().max(1024).optional()
}).refine(r => r.token === undefined || r.tokenSha256 === undefined, {
  message: 'give token or tokenSha256, not both',
  path: ['tokenSha256'],
  // reported with the record's other problems, not only once they are fixed
  when: ({ value }) => value !== null && typeof value === 'object' && (value as { token?: unknown }).token !== undefined &&
    (value as { tokenSha256?: unknown }).tokenSha256 !== undefined
})

export const usersFileSchema = z.strictObject({
  $schema: z.string().optional(),
  users: z.record(userNameSchema, userRecordSchema).describe('user name -> record')
})

export type UserRecord = z.output<typeof userRecordSchema>
export type UsersFile = z.output<typeof usersFileSchema>


/** Validates a parsed users file; a ConfigError carries every problem (`known` first) with its JSON path (`users.alice.ports[1]`). */
export function parseUsersFile (raw: unknown, source = 'users file', known: readonly ConfigIssue[] = []): UsersFile {
  const issues: ConfigIssue[] = [...known]
  const users = (raw as { users?: unknown } | null)?.users
  // z.record drops a `__proto__` key without a word
  if (users !== null && typeof users === 'object' && Object.hasOwn(users, '__proto__')) {
    issues.push({ path: 'users.__proto__', message: 'not a user name' })
  }
  const parsed = usersFileSchema.safeParse(raw)
  if (!parsed.success) issues.push(...issuesOf(parsed.error))
  if (issues.length > 0 || !parsed.success) throw new ConfigError(source, issues)
  return parsed.data
}

/** The JSON Schema of the users file (config/users.schema.json is this, generated). */
export function usersJsonSchema (): unknown {
  return z.toJSONSchema(usersFileSchema, {
    io: 'input',
    unrepresentable: 'any',
    override: ({ zodSchema, jsonSchema }) => {
      if (zodSchema !== portItem) return
      delete jsonSchema.type
      Object.assign(jsonSchema, PORT_ITEM_JSON)
    }
  })
}

// the one-shot hash (Node >= 20.12) takes about half the time of createHash().update().digest() on a short secret
const sha256 = (text: string): Buffer => hash('sha256', text, 'buffer')
const always = (): boolean => true
const anyOf = (list: readonly string[] | undefined): (value: string) => boolean => {
  if (list === undefined) return always
  return anyGlob(list)
}

// frps routes a host name in any case (a proxy of WEB.Example.COM serves web.example.com): so do the globs
const anyHostOf = (list: readonly string[] | undefined): (value: string) => boolean => {
  if (list === undefined) return always
  const allowed = anyOf(list.map(glob => glob.toLowerCase()))
  return value => allowed(value.toLowerCase())
}

/**
 * A record with its matchers built once, for the per-call checks. A check on a field the record
 * does not have holds; an empty list allows nothing.
 */
export interface CompiledUser {
  readonly name: string
  readonly record: UserRecord
  readonly enabled: boolean
  /** the record holds token or tokenSha256 */
  readonly hasToken: boolean
  /** constant-time compare of SHA-256 digests; false when the record holds no token or secret is no string */
  tokenMatches (secret: unknown): boolean
  /** true from `expires` on (`now` in ms since the epoch) */
  expired (now: number): boolean
  cidrAllowed (ip: string): boolean
  typeAllowed (proxyType: string): boolean
  /** the proxy name without the `user.` prefix */
  nameAllowed (proxyName: string): boolean
  portAllowed (port: number): boolean
  domainAllowed (domain: string): boolean
  subdomainAllowed (subdomain: string): boolean
  /** the ports as a reason shows them, e.g. "6000-6099, 7000"; undefined when any port goes */
  readonly portsText?: string
}

/** Compiles a record that parsed (userRecordSchema): no check here throws. */
export function compileUser (name: string, record: UserRecord): CompiledUser {
  const digest = record.token !== undefined ? sha256(record.token) : record.tokenSha256 !== undefined ? Buffer.from(record.tokenSha256, 'hex') : undefined
  const expiresAt = record.expires === undefined ? Infinity : Date.parse(record.expires)
  const types = record.proxyTypes === undefined ? undefined : new Set<string>(record.proxyTypes)
  return {
    name,
    record,
    enabled: record.enabled,
    hasToken: digest !== undefined,
    tokenMatches: secret => digest !== undefined && typeof secret === 'string' && secret !== '' && timingSafeEqual(sha256(secret), digest),
    expired: now => now >= expiresAt,
    cidrAllowed: record.clientCidrs === undefined ? always : cidrList(record.clientCidrs),
    typeAllowed: types === undefined ? always : type => types.has(type),
    nameAllowed: anyOf(record.proxyNames),
    portAllowed: record.ports === undefined ? always : portRanges(record.ports),
    domainAllowed: anyHostOf(record.domains),
    subdomainAllowed: anyHostOf(record.subdomains),
    portsText: record.ports?.join(', ')
  }
}

/** Every user of a parsed file, compiled. A Map, so a name such as "constructor" finds no prototype member. */
export function compileUsers (file: UsersFile): ReadonlyMap<string, CompiledUser> {
  return new Map(Object.entries(file.users).map(([name, record]) => [name, compileUser(name, record)]))
}

/**
 * One record as another store holds it (a Redis hash), validated and compiled; throws an Error
 * listing every problem by field (`ports[1]: ...; enabled: ...`).
 */
export function parseUserRecord (name: string, raw: unknown): CompiledUser {
  const parsed = userRecordSchema.safeParse(raw)
  if (!parsed.success) throw new Error(issuesOf(parsed.error).map(i => `${i.path}: ${i.message}`).join('; '))
  return compileUser(name, parsed.data)
}
