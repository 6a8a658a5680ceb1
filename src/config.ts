import { readFile } from 'node:fs/promises'
import { z } from 'zod'
import { plugins } from '../plugins/index.js'
import { ConfigError, type ConfigIssue } from './errors.js'
import { whenSchema } from './match.js'
import { formatPath } from './protocol.js'

const port = z.number().int().min(0).max(65535)
const tls = z.strictObject({
  cert: z.string().describe('path of the PEM certificate (chain)'),
  key: z.string().describe('path of the PEM private key')
})

const keyPrefix = z.string().default('frpgw:').describe('prefix of every key the gateway writes')
const redisUrl = z.string().regex(/^rediss?:\/\//, 'expected a redis:// or rediss:// URL')
const redis = z.union([
  z.strictObject({ url: redisUrl, keyPrefix }),
  z.strictObject({ cluster: z.array(redisUrl).min(1), keyPrefix }),
  z.strictObject({ sentinels: z.array(z.strictObject({ host: z.string(), port })).min(1), name: z.string(), keyPrefix })
], { error: 'expected {url}, {cluster: [urls]} or {sentinels: [{host, port}], name}' })

const stepBase = {
  name: z.string().regex(/^[a-z0-9_-]+$/, 'expected a name of a-z, 0-9, _ and - (it is a metric label)'),
  when: whenSchema.optional(),
  mode: z.enum(['enforce', 'shadow']).default('enforce').describe('shadow: decisions are logged and counted but neither reject nor modify'),
  enabled: z.boolean().default(true)
}

const pluginNames = Object.keys(plugins)
const steps = Object.entries(plugins).map(([name, def]) => z.strictObject({
  ...stepBase,
  plugin: z.literal(name).describe(def.description),
  ops: z.array(z.enum(def.ops as [string, ...string[]])).min(1).optional().describe('default: every op the plugin supports'),
  options: (def.options as z.ZodType).prefault({})
}))
const step = z.discriminatedUnion('plugin', steps as unknown as [typeof steps[number]], {
  error: iss => iss.code === 'invalid_union' ? `unknown plugin: expected one of ${pluginNames.join(', ')}` : undefined
})

export const configSchema = z.strictObject({
  $schema: z.string().optional(),
  listen: z.strictObject({
    host: z.string().default('127.0.0.1'),
    port: port.default(9000),
    path: z.string().startsWith('/').default('/handler').describe('path of the plugin RPC (frps httpPlugins.path)'),
    bodyLimitBytes: z.number().int().positive().default(1024 * 1024), // 1 MiB
    tls: tls.optional().describe('serve https (frps: addr = "https://...")')
  }).prefault({}),
  admin: z.strictObject({
    host: z.string().default('127.0.0.1'),
    port: port.default(9001)
  }).optional().describe('serve /metrics, /healthz and /readyz on their own listener instead of on listen'),
  redis: redis.optional(),
  deadlineMs: z.number().int().positive().default(3000).describe('no answer to frps takes longer (ms)'),
  log: z.strictObject({
    level: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
    redact: z.array(z.string()).default([]).describe('extra pino redact paths')
  }).prefault({}),
  chain: z.array(step).default([]).describe('the steps, run in this order')
})

export type Config = z.output<typeof configSchema>
export type StepConfig = Config['chain'][number]

const issuePath = (path: readonly PropertyKey[]): string => formatPath(path) || '(top level)'

// Checked on the raw input, so a duplicate is reported even when other parts of the file are wrong.
function duplicateNames (raw: unknown): ConfigIssue[] {
  const chain = (raw as { chain?: unknown } | null)?.chain
  if (!Array.isArray(chain)) return []
  const seen = new Set<unknown>()
  return chain.flatMap((s: { name?: unknown } | null, i) => {
    const name = s?.name
    if (typeof name !== 'string') return []
    if (!seen.has(name)) { seen.add(name); return [] }
    return [{ path: `chain[${i}].name`, message: `duplicate step name "${name}"` }]
  })
}

/** Validates a parsed config; every problem is reported with its JSON path. */
export function parseConfig (raw: unknown, source = 'config'): Config {
  const result = configSchema.safeParse(raw)
  const duplicates = duplicateNames(raw)
  if (result.success && duplicates.length === 0) return result.data
  const issues: ConfigIssue[] = (result.error?.issues ?? []).flatMap(issue => issue.code === 'unrecognized_keys'
    ? issue.keys.map(key => ({ path: issuePath([...issue.path, key]), message: 'unknown key' }))
    : [{ path: issuePath(issue.path), message: issue.message }])
  throw new ConfigError(source, [...issues, ...duplicates])
}

export async function loadConfig (file: string): Promise<Config> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new ConfigError(file, [{ path: '(file)', message: `cannot read: ${(err as Error).message}` }])
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (err) {
    throw new ConfigError(file, [{ path: '(file)', message: `not valid JSON: ${(err as Error).message}` }])
  }
  return parseConfig(raw, file)
}

/** The JSON Schema of the config file (config/gateway.schema.json is this, generated). */
export function configJsonSchema (): unknown {
  return z.toJSONSchema(configSchema, { io: 'input', unrepresentable: 'any' })
}
