#!/usr/bin/env node
import { readFileSync, watch as watchFs } from 'node:fs'
import { basename, dirname } from 'node:path'
import { parseArgs } from 'node:util'
import { buildAdminApp, buildApp, LISTEN_BACKLOG, type RuntimeRef } from './app.js'
import { configJsonSchema, loadConfig, type Config } from './config.js'
import { ConfigError } from './errors.js'
import { createLogger } from './log.js'
import { createMetrics } from './metrics.js'
import { createRuntime, describeChains } from './runtime.js'
import { MemoryStore } from './stores/memory-store.js'
import { formatTrace, traceCall } from './trace.js'
import { isObject, isOp, OPS } from './protocol.js'

const USAGE = `usage: frp-plugin-gateway [run] [--config FILE] [--watch]
       frp-plugin-gateway check [--config FILE]
       frp-plugin-gateway schema
       frp-plugin-gateway trace [--config FILE] --op OP [--content FILE]

--config defaults to $FRP_GATEWAY_CONFIG, then config/gateway.json.`

class UsageError extends Error {}

function args (argv: string[]) {
  try {
    return parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c' },
        watch: { type: 'boolean' },
        op: { type: 'string' },
        content: { type: 'string' },
        help: { type: 'boolean', short: 'h' }
      }
    })
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
}

const configPath = (given: string | undefined): string => given ?? process.env.FRP_GATEWAY_CONFIG ?? 'config/gateway.json'

async function check (file: string): Promise<number> {
  const config = await loadConfig(file)
  const runtime = await createRuntime(config, { metrics: createMetrics(), log: createLogger({ level: 'silent', redact: [] }), open: false }, file)
  try {
    process.stdout.write(`${file}: OK\n${describeChains(runtime)}\n`)
  } finally {
    await runtime.close()
  }
  return 0
}

async function readStdin (): Promise<string> {
  let text = ''
  for await (const chunk of process.stdin) text += String(chunk)
  return text
}

async function trace (file: string, opName: string | undefined, contentFile: string | undefined): Promise<number> {
  if (opName === undefined) throw new UsageError('trace needs --op')
  if (!isOp(opName)) throw new UsageError(`--op ${opName}: expected one of ${OPS.join(', ')}`)
  const config = await loadConfig(file)
  const log = createLogger({ level: 'silent', redact: [] })
  const text = contentFile !== undefined ? readFileSync(contentFile, 'utf8') : await readStdin()
  let content: unknown
  try {
    content = JSON.parse(text)
  } catch (err) {
    process.stderr.write(`content ${contentFile ?? '(stdin)'} is not valid JSON: ${(err as Error).message}\n`)
    return 1
  }
  // a whole frps body is accepted too: {"version", "op", "content"}
  if (isObject(content) && typeof content.op === 'string' && typeof content.content === 'object') content = content.content
  if (!isObject(content)) {
    process.stderr.write(`content ${contentFile ?? '(stdin)'} must be a JSON object\n`)
    return 1
  }
  const runtime = await createRuntime(config, { metrics: createMetrics(), log }, file)
  try {
    const result = await traceCall(runtime, opName, content, log)
    process.stdout.write(formatTrace(result, new Map(config.chain.map(s => [s.name, s.plugin]))))
  } finally {
    await runtime.close()
  }
  return 0
}

async function serve (file: string, watch: boolean): Promise<void> {
  const config = await loadConfig(file)
  const logger = createLogger(config.log)
  const metrics = createMetrics()
  const memoryStore = new MemoryStore()
  const ref: RuntimeRef = { current: await createRuntime(config, { metrics, log: logger, memoryStore }, file) }
  const tls = config.listen.tls
  const common = { metrics, logger, path: config.listen.path, bodyLimitBytes: config.listen.bodyLimitBytes }
  const app = buildApp(ref, {
    ...common,
    adminRoutes: config.admin === undefined,
    ...(tls !== undefined ? { https: { cert: readFileSync(tls.cert), key: readFileSync(tls.key) } } : {})
  })
  const admin = config.admin !== undefined ? buildAdminApp(ref, { ...common, adminRoutes: true }) : undefined

  let reloading = Promise.resolve()
  const reload = (why: string): void => {
    reloading = reloading.then(async () => {
      let next: Config
      try {
        next = await loadConfig(file)
        const runtime = await createRuntime(next, { metrics, log: logger, memoryStore }, file)
        const old = ref.current
        ref.current = runtime
        metrics.configReloads.inc({ result: 'success' })
        logger.info({ why, file }, 'config reloaded')
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
  if (watch) {
    // the folder, not the file: editors that save by rename would leave a file watcher on the old inode
    let timer: NodeJS.Timeout | undefined
    watchFs(dirname(file), (_event, name) => {
      if (name !== basename(file)) return
      clearTimeout(timer)
      timer = setTimeout(() => reload('file changed'), 100)
    }).unref()
  }
  // listening comes last: a reload asked for from the moment the port is up must be heard
  await app.listen({ host: config.listen.host, port: config.listen.port, backlog: LISTEN_BACKLOG })
  if (admin !== undefined && config.admin !== undefined) await admin.listen({ host: config.admin.host, port: config.admin.port })

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

export async function main (argv: string[]): Promise<number> {
  const { values, positionals } = args(argv)
  if (values.help === true) {
    process.stdout.write(`${USAGE}\n`)
    return 0
  }
  const [command = 'run', ...rest] = positionals
  if (rest.length > 0) throw new UsageError(`unexpected argument: ${rest[0]}`)
  const file = configPath(values.config)
  switch (command) {
    case 'run':
      await serve(file, values.watch === true)
      return 0
    case 'check':
      return await check(file)
    case 'trace':
      return await trace(file, values.op, values.content)
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
  } else if (err instanceof ConfigError) {
    process.stderr.write(`${err.message}\n`)
    process.exitCode = 1
  } else {
    process.stderr.write(`failed to start: ${(err as Error).stack ?? String(err)}\n`)
    process.exitCode = 1
  }
})
