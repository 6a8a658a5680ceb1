#!/usr/bin/env node
import { existsSync, readFileSync, watch as watchFs, type FSWatcher } from 'node:fs'
import { basename, dirname, isAbsolute, relative, resolve } from 'node:path'
import { createSecureContext } from 'node:tls'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { buildAdminApp, buildApp, LISTEN_BACKLOG, type RuntimeRef } from './app.js'
import { configJsonSchema, loadConfig, type Config } from './config.js'
import { ConfigError } from './errors.js'
import { createLogger } from './log.js'
import { createMetrics, type Outcome } from './metrics.js'
import { createRuntime, describeChains, type Runtime } from './runtime.js'
import { MemoryStore } from './stores/memory-store.js'
import { formatTrace, traceCall } from './trace.js'
import { isObject, isOp, OPS, type Op } from './protocol.js'

const OPTIONS = {
  config: { type: 'string', short: 'c', help: '-c, --config FILE   the config file (default: $FRP_GATEWAY_CONFIG, then config/gateway.json)' },
  watch: { type: 'boolean', help: '    --watch         reload when the config file or the users file changes (SIGHUP reloads too)' },
  op: { type: 'string', help: `    --op OP         ${OPS.join(', ')} (default: the op of a whole frps body)` },
  content: { type: 'string', help: '    --content FILE  the content, or a whole frps body {"version", "op", "content"} (default: stdin)' },
  help: { type: 'boolean', short: 'h', help: '-h, --help          print this help (with a command: its help)' },
  version: { type: 'boolean', help: '    --version       print the version' }
} as const
type Option = keyof typeof OPTIONS

interface Command { usage: string, does: string, options: readonly Option[], exits: string }
const COMMANDS: Record<string, Command> = {
  run: { usage: '[run] [--config FILE] [--watch]', does: 'serve frps calls (the default command)', options: ['config', 'watch'], exits: '0 stopped by SIGTERM or SIGINT, 1 bad config or failed start, 2 bad usage' },
  check: { usage: 'check [--config FILE]', does: 'validate the config and print the steps that run, per op', options: ['config'], exits: '0 valid, 1 bad config, 2 bad usage' },
  trace: { usage: 'trace [--config FILE] [--op OP] [--content FILE]', does: 'run one call through the chain, as frps would, and show each step', options: ['config', 'op', 'content'], exits: '0 allow or modify, 3 reject, 4 error, 1 bad config or content, 2 bad usage' },
  schema: { usage: 'schema', does: 'print the JSON Schema of the config file', options: [], exits: '0 printed, 2 bad usage' },
  help: { usage: 'help [COMMAND] | --help | --version', does: 'print this help, or the help of COMMAND', options: [], exits: '0 printed, 2 bad usage' }
}
const usageLines = (names: string[]): string => names.map((name, i) => `${i === 0 ? 'usage:' : '      '} frp-plugin-gateway ${COMMANDS[name].usage}`).join('\n')
const USAGE = `${usageLines(Object.keys(COMMANDS))}\nsee frp-plugin-gateway --help`

function help (command?: string): string {
  if (command !== undefined) {
    const { does, options, exits } = COMMANDS[command]
    return `${usageLines([command])}\n\n${does}\n${options.length > 0 ? `\noptions:\n${options.map(o => `  ${OPTIONS[o].help}`).join('\n')}\n` : ''}\nexit codes: ${exits}\n`
  }
  return [
    usageLines(Object.keys(COMMANDS)), '', 'commands:',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(8)}${c.does}`), '', 'options:',
    ...Object.values(OPTIONS).map(o => `  ${o.help}`), '',
    'exit codes: 0 ok, 1 bad config or failed start, 2 bad usage; trace: 0 allow or modify, 3 reject, 4 error',
    'frp-plugin-gateway help COMMAND shows the options of one command.', ''
  ].join('\n')
}

/** Bad usage: one line, then the usage; exit 2. */
class UsageError extends Error {}
/** The operator's to fix, not a bug: these lines and exit 1, without a stack. */
class StartError extends Error {}

function args (argv: string[]) {
  try {
    return parseArgs({ args: argv, allowPositionals: true, options: OPTIONS })
  } catch (err) {
    // node's own messages run to several sentences: one line each, naming the option
    const { code, message } = err as { code?: string, message: string }
    const option = /'(?:-\w, )?(-{1,2}[^' ]+)/.exec(message)?.[1] ?? message
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw new UsageError(`unknown option ${option}`)
    if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') throw new UsageError(message.includes('does not take') ? `${option} takes no value` : `${option} needs a value`)
    throw new UsageError(message)
  }
}

const DEFAULT_CONFIG = 'config/gateway.json'
const EXAMPLE_CONFIG = fileURLToPath(new URL('../../config/gateway.example.json', import.meta.url))

/** The config file to read: --config, then $FRP_GATEWAY_CONFIG, then the default; a missing one says how to give one. */
function configPath (given: string | undefined): string {
  const env = process.env.FRP_GATEWAY_CONFIG
  const file = given ?? (env !== undefined && env !== '' ? env : DEFAULT_CONFIG)
  if (existsSync(file)) return file
  const from = given !== undefined ? 'given with --config' : file === env ? 'from $FRP_GATEWAY_CONFIG' : 'the default, as neither --config nor $FRP_GATEWAY_CONFIG is set'
  const example = relative(process.cwd(), EXAMPLE_CONFIG)
  throw new StartError([
    `config file ${file} does not exist (${from})`,
    `Give one with --config FILE or $FRP_GATEWAY_CONFIG; ${example.startsWith('..') || isAbsolute(example) ? EXAMPLE_CONFIG : example} is an example to start from. See frp-plugin-gateway --help.`
  ].join('\n'))
}

async function check (file: string): Promise<number> {
  const config = await loadConfig(file)
  const runtime = await createRuntime(config, { metrics: createMetrics(), log: createLogger({ level: 'silent', redact: [] }), open: false, baseDir: dirname(file) }, file)
  try {
    process.stdout.write(`${file}: OK\n${describeChains(runtime)}\n`)
  } finally {
    await runtime.close()
  }
  return 0
}

async function readStdin (): Promise<string> {
  if (process.stdin.isTTY) process.stderr.write('reading the content from stdin (end it with Ctrl-D), or give --content FILE\n')
  let text = ''
  for await (const chunk of process.stdin) text += String(chunk)
  return text
}

// trace's exit code says the outcome (1 and 2 keep their meaning: bad config or content, bad usage)
const TRACE_EXIT: Record<Outcome, number> = { allow: 0, modify: 0, reject: 3, error: 4 }

async function trace (file: string, opName: string | undefined, contentFile: string | undefined): Promise<number> {
  if (opName !== undefined && !isOp(opName)) throw new UsageError(`--op ${opName}: expected one of ${OPS.join(', ')}`)
  const config = await loadConfig(file)
  const log = createLogger({ level: 'silent', redact: [] })
  const source = contentFile ?? '(stdin)'
  let text
  try {
    text = contentFile !== undefined ? readFileSync(contentFile, 'utf8') : await readStdin()
  } catch (err) {
    throw new StartError(`cannot read --content ${source}: ${(err as Error).message}`)
  }
  let content: unknown
  try {
    content = JSON.parse(text)
  } catch (err) {
    throw new StartError(`content ${source} is not valid JSON: ${(err as Error).message}`)
  }
  let op: Op | undefined = opName
  // a whole frps body is accepted too: {"version", "op", "content"}, and its op is the call's, as on the RPC route
  if (isObject(content) && typeof content.op === 'string' && typeof content.content === 'object') {
    if (!isOp(content.op)) throw new StartError(`content ${source}: op ${JSON.stringify(content.op)} is not one of ${OPS.join(', ')}`)
    if (op !== undefined && op !== content.op) throw new UsageError(`--op ${op} differs from the op of the body in ${source} (${content.op}): the RPC route refuses such a call (FRPGW_ERR_OP_MISMATCH)`)
    op = content.op
    content = content.content
  }
  if (op === undefined) throw new UsageError('trace needs --op OP, unless its content is a whole frps body {"version", "op", "content"}')
  if (!isObject(content)) throw new StartError(`content ${source} must be a JSON object`)
  const runtime = await createRuntime(config, { metrics: createMetrics(), log, baseDir: dirname(file) }, file)
  try {
    const result = await traceCall(runtime, op, content, log)
    process.stdout.write(formatTrace(result, new Map(config.chain.map(s => [s.name, s.plugin]))))
    return TRACE_EXIT[result.result.outcome]
  } finally {
    await runtime.close()
  }
}

/** The step names of every op, in the order they run. */
const chainNames = (runtime: Runtime): Record<Op, string[]> =>
  Object.fromEntries(OPS.map(op => [op, runtime.chains[op].map(s => s.name)])) as Record<Op, string[]>

/** listen.tls, read and checked before anything opens: an unusable file is a config error naming its key. */
function readTls (file: string, tls: { cert: string, key: string }): { cert: Buffer, key: Buffer } {
  const read = (key: 'cert' | 'key'): Buffer => {
    try {
      return readFileSync(tls[key])
    } catch (err) {
      throw new ConfigError(file, [{ path: `listen.tls.${key}`, message: `cannot read ${tls[key]}: ${(err as Error).message}` }])
    }
  }
  const pair = { cert: read('cert'), key: read('key') }
  try {
    createSecureContext(pair)
  } catch (err) {
    throw new ConfigError(file, [{ path: 'listen.tls', message: `${tls.cert} and ${tls.key} are not a usable certificate and key: ${(err as Error).message}` }])
  }
  return pair
}

/** A listener that cannot start, in one line: which address, and which listener of the config. */
function listenFailed (err: unknown, listener: 'RPC' | 'admin', { host, port }: { host: string, port: number }): StartError {
  const { code, message } = err as { code?: string, message: string }
  const address = `${host.includes(':') ? `[${host}]` : host}:${port}`
  const why = code === 'EADDRINUSE'
    ? 'is already in use'
    : code === 'EACCES' ? 'is not open to this user (permission denied)' : code === 'EADDRNOTAVAIL' ? 'is not an address of this machine' : `cannot be listened on: ${message}`
  return new StartError(`cannot start: ${address} (the ${listener} listener: ${listener === 'RPC' ? 'listen' : 'admin'}.host and .port) ${why}`)
}

/**
 * --watch: the config file, and the users file the live config names (which can change with a
 * reload). Folders, not files: editors that save by rename would leave a file watcher on the old inode.
 */
function watchFiles (file: string, ref: RuntimeRef, reload: (why: string) => void): () => void {
  let timer: NodeJS.Timeout | undefined
  const later = (why: string): void => {
    clearTimeout(timer)
    timer = setTimeout(() => reload(why), 100)
  }
  const watchers = new Map<string, FSWatcher>()
  const usersFile = (): string | undefined => {
    const users = ref.current.config.users
    return users !== undefined && 'file' in users ? resolve(dirname(file), users.file) : undefined
  }
  const watchFolder = (folder: string): void => {
    if (watchers.has(folder)) return
    try {
      watchers.set(folder, watchFs(folder, (_event, name) => {
        const users = usersFile()
        if (name === basename(file) && folder === dirname(resolve(file))) later('file changed')
        else if (users !== undefined && name === basename(users) && folder === dirname(users)) later('users file changed')
      }).unref())
    } catch {} // a folder that does not exist has nothing to watch; a reload that fixes the path watches it then
  }
  watchFolder(dirname(resolve(file)))
  const follow = (): void => {
    const users = usersFile()
    if (users !== undefined) watchFolder(dirname(users))
  }
  follow()
  return follow
}

async function serve (file: string, watch: boolean): Promise<void> {
  const config = await loadConfig(file)
  const tls = config.listen.tls !== undefined ? readTls(file, config.listen.tls) : undefined
  const logger = createLogger(config.log)
  const metrics = createMetrics()
  const memoryStore = new MemoryStore()
  const ref: RuntimeRef = { current: await createRuntime(config, { metrics, log: logger, memoryStore, baseDir: dirname(file) }, file) }
  logger.info({ file, chains: chainNames(ref.current) }, 'config loaded')
  const common = { metrics, logger, path: config.listen.path, bodyLimitBytes: config.listen.bodyLimitBytes }
  const app = buildApp(ref, {
    ...common,
    adminRoutes: config.admin === undefined,
    ...(tls !== undefined ? { https: tls } : {})
  })
  const admin = config.admin !== undefined ? buildAdminApp(ref, { ...common, adminRoutes: true }) : undefined

  let onSwap = (): void => {}
  let reloading = Promise.resolve()
  const reload = (why: string): void => {
    reloading = reloading.then(async () => {
      let next: Config
      try {
        next = await loadConfig(file)
        const runtime = await createRuntime(next, { metrics, log: logger, memoryStore, baseDir: dirname(file) }, file)
        const old = ref.current
        ref.current = runtime
        onSwap()
        metrics.configReloads.inc({ result: 'success' })
        logger.info({ why, file, chains: chainNames(runtime) }, 'config reloaded')
        // calls in flight keep the old runtime and are bounded by its deadline: close it after that
        setTimeout(() => { void old.close() }, old.config.deadlineMs + 100).unref()
      } catch (err) {
        metrics.configReloads.inc({ result: 'failure' })
        const issues = err instanceof ConfigError ? err.issues : [{ path: '(file)', message: (err as Error).message }]
        logger.error({ why, file, issues }, 'config reload failed: the previous chain keeps serving')
      }
    })
  }
  process.on('SIGHUP', () => reload('SIGHUP'))
  if (watch) onSwap = watchFiles(file, ref, reload)
  // listening comes last: a reload asked for from the moment the port is up must be heard
  let failing: 'RPC' | 'admin' = 'RPC'
  try {
    await app.listen({ host: config.listen.host, port: config.listen.port, backlog: LISTEN_BACKLOG })
    failing = 'admin'
    if (admin !== undefined && config.admin !== undefined) await admin.listen({ host: config.admin.host, port: config.admin.port })
  } catch (err) {
    await Promise.allSettled([app.close(), admin?.close(), ref.current.close()])
    throw listenFailed(err, failing, failing === 'RPC' ? config.listen : config.admin ?? config.listen)
  }

  let stopping = false
  const stop = async (signal: string): Promise<void> => {
    if (stopping) return
    stopping = true
    logger.info({ signal }, 'stopping: finishing calls in flight')
    ref.stopping = true
    const force = setTimeout(() => process.exit(1), ref.current.config.deadlineMs + 5000).unref()
    await Promise.allSettled([app.close(), admin?.close()])
    await ref.current.close()
    clearTimeout(force)
    logger.info('stopped')
    logger.flush?.()
    process.exitCode = 0
  }
  process.on('SIGTERM', () => { void stop('SIGTERM') })
  process.on('SIGINT', () => { void stop('SIGINT') })
}

function version (): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
  return `frp-plugin-gateway ${pkg.version}\n`
}

export async function main (argv: string[]): Promise<number> {
  const { values, positionals } = args(argv)
  if (values.version === true) {
    process.stdout.write(version())
    return 0
  }
  const [command = 'run', ...rest] = positionals
  if (!Object.hasOwn(COMMANDS, command)) throw new UsageError(`unknown command: ${command}`)
  if (command === 'help' || values.help === true) {
    const about = command === 'help' ? rest.shift() : command === 'run' && positionals.length === 0 ? undefined : command
    if (about !== undefined && !Object.hasOwn(COMMANDS, about)) throw new UsageError(`unknown command: ${about}`)
    if (rest.length > 0) throw new UsageError(`unexpected argument: ${rest[0]}`)
    process.stdout.write(help(about))
    return 0
  }
  if (rest.length > 0) throw new UsageError(`unexpected argument: ${rest[0]}`)
  const stray = (Object.keys(values) as Option[]).find(o => !COMMANDS[command].options.includes(o))
  if (stray !== undefined) throw new UsageError(`--${stray} does not apply to ${command}`)
  switch (command) {
    case 'run':
      await serve(configPath(values.config), values.watch === true)
      return 0
    case 'check':
      return await check(configPath(values.config))
    case 'trace':
      return await trace(configPath(values.config), values.op, values.content)
    case 'schema':
      process.stdout.write(`${JSON.stringify(configJsonSchema(), null, 2)}\n`)
      return 0
    default:
      throw new UsageError(`unknown command: ${command}`)
  }
}

main(process.argv.slice(2)).then(code => {
  if (code !== 0) process.exitCode = code
}, err => {
  if (err instanceof UsageError) {
    process.stderr.write(`${err.message}\n${USAGE}\n`)
    process.exitCode = 2
  } else if (err instanceof ConfigError || err instanceof StartError) {
    process.stderr.write(`${err.message}\n`)
    process.exitCode = 1
  } else {
    process.stderr.write(`failed to start: ${(err as Error).stack ?? String(err)}\n`)
    process.exitCode = 1
  }
})
