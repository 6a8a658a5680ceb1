import { dirname, resolve } from 'node:path'
import type { Cluster, Redis } from 'ioredis'
import { loadConfig, type Config } from '../config.js'
import { ConfigError, type ConfigIssue } from '../errors.js'
import { describeJsonError, duplicateKeys } from '../json-error.js'
import { readFileBytesSync } from '../json-file.js'
import { connectionError, connectionFailure, createRedisClient, redisName, type RedisConfig } from '../stores/redis-client.js'
import { FileUserSource } from '../users/file-source.js'
import { fromFpMultiuser, fromFrpsPanel } from '../users/import.js'
import { issuesOf } from '../issues.js'
import { own } from '../protocol.js'
import { parseUserRecord, USER_NAME, userNameSchema, userRecordSchema, type CompiledUser } from '../users/record.js'
import { RedisUserSource, UnreadableRecordError } from '../users/redis-source.js'
import { commandUsage, configPath, StartError, UsageError, type Values } from './usage.js'

const IMPORTS = { 'fp-multiuser': fromFpMultiuser, 'frps-panel': fromFrpsPanel }

// a Redis that is away ends a command with one line: at its first connection error, or after this long without an answer
const CONNECT_WAIT_MS = 3000
const COMMAND_TIMEOUT_MS = 2000

type Table =
  | { kind: 'file', source: FileUserSource, value: unknown }
  | { kind: 'redis', source: RedisUserSource<CompiledUser>, client: Redis | Cluster, where: string }

const print = (lines: readonly string[]): void => { process.stdout.write(lines.map(line => `${line}\n`).join('')) }
const issueLines = (head: string, issues: readonly ConfigIssue[]): string => `${head}:\n${issues.map(i => `  ${i.path}: ${i.message}`).join('\n')}`
const recordIssues = (raw: unknown): ConfigIssue[] => {
  const parsed = userRecordSchema.safeParse(raw)
  return parsed.success ? [] : issuesOf(parsed.error)
}

/** A client that is ready, or a StartError within CONNECT_WAIT_MS: the client retries forever, a command must not. */
async function connect (cfg: RedisConfig): Promise<Redis | Cluster> {
  const client = createRedisClient(cfg, { connectTimeoutMs: CONNECT_WAIT_MS / 2, commandTimeoutMs: COMMAND_TIMEOUT_MS })
  let timer: NodeJS.Timeout | undefined
  const failure = await new Promise<string | undefined>(resolve => {
    client.once('ready', () => resolve(undefined))
    // a Cluster's error is "Failed to refresh slots cache." whatever each node answered
    client.once('error', (err: Error) => resolve('cluster' in cfg ? `no node answered (${err.message.replace(/\.$/, '')})` : connectionFailure(connectionError(client, err))))
    timer = setTimeout(() => resolve(`no answer within ${CONNECT_WAIT_MS} ms`), CONNECT_WAIT_MS)
  })
  clearTimeout(timer)
  if (failure === undefined) return client
  client.disconnect()
  throw new StartError(`redis ${redisName(cfg)} is not reachable: ${failure}`)
}

async function redisTable (redis: NonNullable<Config['redis']>): Promise<Table & { kind: 'redis' }> {
  const client = await connect(redis)
  return { kind: 'redis', client, where: redisName(redis), source: new RedisUserSource(client, { keyPrefix: redis.keyPrefix, parse: parseUserRecord }) }
}

/** The user table the config's `users` block names. */
async function openTable (file: string, config: Config): Promise<Table> {
  const users = config.users
  if (users === undefined) throw new StartError(`${file} has no "users" block: add "users": {"file": "users.json"}, or "users": {"redis": {}} with a "redis" block`)
  if ('file' in users) {
    try {
      return { kind: 'file', ...await FileUserSource.read(users.file, dirname(file)) }
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err
      throw new StartError(issueLines(`invalid users file ${resolve(dirname(file), users.file)} (users.file of ${file})`, err.issues))
    }
  }
  if (config.redis === undefined) throw new StartError(`${file}: users.redis needs the top-level "redis" block`)
  return await redisTable(config.redis)
}

const unknownUser = (table: Table, name: string): StartError =>
  new StartError(`${name}: unknown user (${table.kind === 'file' ? `not in ${table.source.path}` : `no ${table.source.userKey(name)} in Redis`})`)

function listLine (name: string, user: CompiledUser | Error, now: number): string {
  const notes = user instanceof Error
    ? [`not a valid record: ${user.message}`]
    : [...(user.enabled ? [] : ['disabled']), ...(user.expired(now) ? ['expired'] : [])]
  return notes.length > 0 ? `${name} (${notes.join(', ')})` : name
}

async function list (table: Table): Promise<number> {
  const now = Date.now()
  if (table.kind === 'file') {
    print([...table.source.names()].sort().map(name => listLine(name, table.source.get(name) as CompiledUser, now)))
    return 0
  }
  const names = await table.source.list()
  const raws = await Promise.allSettled(names.map(async name => await table.source.read(name)))
  print(names.flatMap((name, i) => {
    // added by hand (SADD): the users step looks up no such name, whatever its record holds
    if (!USER_NAME.test(name)) return [`${JSON.stringify(name)} (not a valid user name: the gateway never looks it up; users delete removes it)`]
    const read = raws[i]
    // a key that holds no hash, or a field nested too deep (set by hand), is that user's problem, not the list's
    if (read.status === 'rejected') {
      if (!(read.reason instanceof UnreadableRecordError)) throw read.reason
      return [listLine(name, read.reason, now)]
    }
    const raw = read.value
    if (raw === undefined) return [] // deleted since it was listed
    try {
      return [listLine(name, parseUserRecord(name, raw), now)]
    } catch (err) {
      return [listLine(name, err as Error, now)]
    }
  }))
  return 0
}

/** The record as its store holds it (the file's text, the hash's fields), unvalidated; exit 1 when it does not validate. */
async function get (table: Table, name: string): Promise<number> {
  let raw: unknown
  if (table.kind === 'file') {
    // the record as written, from the read the table came from
    raw = table.source.get(name) === undefined ? undefined : own(own(table.value, 'users'), name)
    if (raw === undefined) throw unknownUser(table, name)
  } else {
    raw = await table.source.read(name)
    if (raw === undefined) throw unknownUser(table, name)
  }
  print([JSON.stringify(raw, null, 2)])
  const issues = recordIssues(raw)
  if (issues.length === 0) return 0
  process.stderr.write(`${issueLines(`${name}: not a valid record`, issues)}\n`)
  return 1
}

function parseRecord (name: string, text: string): Record<string, unknown> {
  const valid = userNameSchema.safeParse(name)
  if (!valid.success) throw new StartError(`${JSON.stringify(name)}: ${valid.error.issues[0].message}`)
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch {
    throw new StartError(`${name}: the record is not valid JSON: ${describeJsonError(text)}`)
  }
  // as in a users file: JSON.parse would keep the last of a field given twice without a word
  const twice = duplicateKeys(text).map(d => ({ path: d.path, message: 'given again: JSON would keep only the last' }))
  const issues = [...twice, ...recordIssues(raw)]
  if (issues.length > 0) throw new StartError(issueLines(`${name}: not a valid record`, issues))
  const record = raw as Record<string, unknown>
  if (Object.keys(record).length === 0) throw new StartError(`${name}: Redis keeps no empty record: give at least one field, e.g. {"enabled": true}`)
  return record
}

async function change (sub: string, table: Table & { kind: 'redis' }, name: string, record: Record<string, unknown> | undefined): Promise<number> {
  const { source } = table
  if (record !== undefined) {
    print([`${name}: ${await source.set(name, record)}`])
    return 0
  }
  const result = sub === 'delete' ? await source.delete(name) : await source.setEnabled(name, sub === 'enable')
  if (result === 'unknown user') throw unknownUser(table, name)
  print([`${name}: ${result === 'unchanged' ? `unchanged (already ${sub}d)` : result}`])
  return 0
}

async function importUsers (file: string, values: Values): Promise<number> {
  const usage = commandUsage('users')
  const format = values.from
  if (format === undefined) throw new UsageError('users import needs --from fp-multiuser or --from frps-panel', usage)
  if (!Object.hasOwn(IMPORTS, format)) throw new UsageError(`--from ${format}: expected fp-multiuser or frps-panel`, usage)
  if (values.config !== undefined && values['to-redis'] !== true) throw new UsageError('--config applies to users import with --to-redis only', usage)
  let text
  try {
    text = readFileBytesSync(file).toString('utf8')
  } catch (err) {
    throw new StartError(`cannot read ${file}: ${(err as Error).message}`)
  }
  let imported
  try {
    imported = IMPORTS[format as keyof typeof IMPORTS](text, file)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    throw new StartError(issueLines(`${file} is not a valid ${format} tokens file`, err.issues))
  }
  // the plugins imported from let every client in while their table was empty; the users step lets none in
  if (Object.keys(imported.users).length === 0) process.stderr.write(`note: ${file} holds no users: the table lets nobody log in (${format} let every client in while it had none)\n`)
  if (values['to-redis'] !== true) {
    print([JSON.stringify({ $schema: './users.schema.json', users: imported.users }, null, 2)])
    return 0
  }
  const configFile = configPath(values.config)
  const config = await loadConfig(configFile)
  if (config.users !== undefined && 'file' in config.users) {
    throw new StartError(`--to-redis: the user table of ${configFile} is the file ${config.users.file} (users.file), not Redis: run users import without --to-redis and write its output there`, 2)
  }
  if (config.redis === undefined) throw new StartError(`--to-redis: ${configFile} has no "redis" block to write into`)
  const table = await redisTable(config.redis)
  try {
    const counts = { created: 0, replaced: 0 }
    for (const [name, record] of Object.entries(imported.users)) {
      const result = await table.source.set(name, record)
      counts[result]++
      print([`${name}: ${result}`])
    }
    const total = counts.created + counts.replaced
    print([`${total} user${total === 1 ? '' : 's'}: ${counts.created} created, ${counts.replaced} replaced`])
    if (config.users === undefined) process.stderr.write(`note: ${configFile} has no "users" block yet: add "users": {"redis": {}} for the gateway to read this table\n`)
    return 0
  } catch (err) {
    throw new StartError(`redis ${table.where}: ${(err as Error).message}`)
  } finally {
    table.client.disconnect()
  }
}

/** `users NAME ARGS...`, checked by checkSubCommand: the sub-command, its arguments, the options as parsed. */
export async function users (name: string, rest: string[], values: Values): Promise<number> {
  if (name === 'import') return await importUsers(rest[0], values)

  // a bad record is reported before the table is looked for: nothing else can make it good
  const record = name === 'set' ? parseRecord(rest[0], rest[1]) : undefined
  const file = configPath(values.config)
  const table = await openTable(file, await loadConfig(file))
  try {
    if (name === 'list') return await list(table)
    if (name === 'get') return await get(table, rest[0])
    if (table.kind === 'file') {
      throw new StartError(`users ${name}: the user table of ${file} is the file ${table.source.path} (users.file): edit it there, then reload the gateway (SIGHUP; under --watch it reloads by itself)`, 2)
    }
    return await change(name, table, rest[0], record)
  } catch (err) {
    if (err instanceof UnreadableRecordError) throw new StartError(`${rest[0]}: not a valid record: ${err.message} (users set replaces it)`)
    if (table.kind === 'redis' && !(err instanceof StartError)) throw new StartError(`redis ${table.where}: ${(err as Error).message}`)
    throw err
  } finally {
    if (table.kind === 'redis') table.client.disconnect()
  }
}
