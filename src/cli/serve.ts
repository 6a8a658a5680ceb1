import { existsSync, realpathSync, statSync, watch as watchFs, type FSWatcher } from 'node:fs'
import { basename, dirname, resolve } from 'node:path'
import type { Logger } from 'pino'
import { buildAdminApp, buildApp, LISTEN_BACKLOG, type RuntimeRef } from '../app.js'
import { loadConfig, readTls, type Config } from '../config.js'
import { ConfigError } from '../errors.js'
import { createLogger } from '../log.js'
import { createMetrics } from '../metrics.js'
import { OPS, type Op } from '../protocol.js'
import { MemoryRegistry } from '../registry/memory.js'
import { createCommitter, createRuntime, type Runtime } from '../runtime.js'
import { MemoryStore } from '../stores/memory-store.js'
import { StartError } from './usage.js'

/** The step names of every op, in the order they run. */
const chainNames = (runtime: Runtime): Record<Op, string[]> =>
  Object.fromEntries(OPS.map(op => [op, runtime.chains[op].map(s => s.name)])) as Record<Op, string[]>

/** what a reload does not change: the listeners and the logger are made once, at start */
const RESTART_ONLY = ['listen', 'admin', 'log'] as const

/** A listener that cannot start, in one line: which address, and which listener of the config. */
function listenFailed (err: unknown, listener: 'RPC' | 'admin', { host, port }: { host: string, port: number }): StartError {
  const { code, message } = err as { code?: string, message: string }
  const address = `${host.includes(':') ? `[${host}]` : host}:${port}`
  const why = code === 'EADDRINUSE'
    ? 'is already in use'
    : code === 'EACCES' ? 'is not open to this user (permission denied)' : code === 'EADDRNOTAVAIL' ? 'is not an address of this machine' : `cannot be listened on: ${message}`
  return new StartError(`cannot start: ${address} (the ${listener} listener: ${listener === 'RPC' ? 'listen' : 'admin'}.host and .port) ${why}`)
}

/** What a path leads to now: the file at the end of its links, and its inode, size and time. */
function fingerprint (path: string): string {
  try {
    const real = realpathSync(path)
    const { ino, size, mtimeMs } = statSync(real)
    return `${real} ${ino} ${size} ${mtimeMs}`
  } catch {
    return 'missing'
  }
}

const WATCH_POLL_MS = 500
/** past deadlineMs + drainMs, a stop that cannot finish (a close that hangs) exits 1 this much later */
export const STOP_GRACE_MS = 5000

/**
 * --watch: the config file, and the users file the live config names (which can change with a
 * reload). Folders, not files: editors that save by rename would leave a file watcher on the old inode.
 */
function watchFiles (file: string, ref: RuntimeRef, reload: (why: string) => void, logger: Logger): () => void {
  let timer: NodeJS.Timeout | undefined
  const usersFile = (): string | undefined => {
    const users = ref.current.config.users
    return users !== undefined && 'file' in users ? resolve(dirname(file), users.file) : undefined
  }
  // a folder being removed first deletes its files, each an event: no reload of a file on its way out (it would
  // fail, and be counted so): the folder's return reloads
  const folderGone = (): boolean => [resolve(file), usersFile()].some(path => path !== undefined && !existsSync(dirname(path)))
  const later = (why: string): void => {
    clearTimeout(timer)
    timer = setTimeout(() => { if (!folderGone()) reload(why) }, 100)
  }
  const watchers = new Map<string, FSWatcher>()
  // a file swapped through a link elsewhere in its folder (a Kubernetes ConfigMap moves its ..data link)
  // raises events under other names: what the path leads to is compared, not only the name
  const seen = new Map<string, string>()
  const changed = (path: string): boolean => {
    const now = fingerprint(path)
    const before = seen.get(path)
    seen.set(path, now)
    return before !== undefined && before !== now
  }
  const watchFolder = (folder: string): void => {
    if (watchers.has(folder)) return
    try {
      // each path's fingerprint is taken on every event, its own included: else the next event in the folder reloaded again
      const hit = (path: string | undefined, name: string | null): boolean => path !== undefined && folder === dirname(path) && (changed(path) || name === basename(path))
      watchers.set(folder, watchFs(folder, (_event, name) => {
        if (!existsSync(folder)) return gone(folder)
        const config = hit(resolve(file), name)
        const users = hit(usersFile(), name)
        if (config) later('file changed')
        else if (users) later('users file changed')
      }).unref())
      for (const path of [resolve(file), usersFile()]) if (path !== undefined && dirname(path) === folder) seen.set(path, fingerprint(path))
    } catch {} // a folder that does not exist has nothing to watch; a reload that fixes the path watches it then
  }
  // a folder removed (a deploy that replaces it whole) takes its watch with it: watched again once it is back
  const gone = (folder: string): void => {
    watchers.get(folder)?.close()
    watchers.delete(folder)
    logger.warn({ folder }, 'watched folder removed: --watch resumes when it is back (SIGHUP reloads meanwhile)')
    const back = setInterval(() => {
      if (!existsSync(folder)) return
      clearInterval(back)
      watchFolder(folder)
      later('watched folder back')
    }, WATCH_POLL_MS).unref()
  }
  watchFolder(dirname(resolve(file)))
  const follow = (): void => {
    const users = usersFile()
    if (users !== undefined) watchFolder(dirname(users))
  }
  follow()
  return follow
}

/** The SIGHUP listener main sets before loading the server, and whether a SIGHUP came since. */
export interface EarlyHup { heard: boolean, listener: () => void }

/** `early`: a SIGHUP's default action ends the process; one sent while starting (logrotate; up to 2 s waiting for Redis) reloads once started. */
export async function serve (file: string, watch: boolean, early: EarlyHup): Promise<void> {
  const config = await loadConfig(file)
  const tls = config.listen.tls !== undefined ? readTls(file, config.listen.tls) : undefined
  const logger = createLogger(config.log)
  const metrics = createMetrics()
  // process-wide, so what one config kept survives a reload, and a stop waits for every config's commits
  const shared = { metrics, log: logger, memoryStore: new MemoryStore(), memoryRegistry: new MemoryRegistry(), committer: createCommitter(metrics), baseDir: dirname(file) }
  const ref: RuntimeRef = { current: await createRuntime(config, shared, file) }
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
  /** chains a reload replaced, until they are closed */
  const retiring = new Set<Runtime>()
  /** set when the start failed: a reload asked for meanwhile opens nothing that would keep the process up */
  let failed = false
  const reload = (why: string): void => {
    reloading = reloading.then(async () => {
      if (failed) return
      let next: Config
      try {
        next = await loadConfig(file)
        const runtime = await createRuntime(next, shared, file)
        const old = ref.current
        ref.current = runtime
        onSwap()
        metrics.configReloads.inc({ result: 'success' })
        logger.info({ why, file, chains: chainNames(runtime) }, 'config reloaded')
        const kept = RESTART_ONLY.filter(key => JSON.stringify(next[key]) !== JSON.stringify(config[key]))
        if (kept.length > 0) logger.warn({ keys: kept }, `the changes of ${kept.join(', ')} take effect at a restart: the gateway goes on as it started`)
        // calls in flight keep the old runtime and are bounded by its deadline: close it after that (or at a stop, with the live one)
        retiring.add(old)
        setTimeout(() => { void old.close().finally(() => retiring.delete(old)) }, old.config.deadlineMs + 100).unref()
      } catch (err) {
        metrics.configReloads.inc({ result: 'failure' })
        const issues = err instanceof ConfigError ? err.issues : [{ path: '(file)', message: (err as Error).message }]
        logger.error({ why, file, issues }, 'config reload failed: the previous chain keeps serving')
        // logrotate sends SIGHUP whatever the config's state: the files it moved are opened again all the same
        if (why === 'SIGHUP') await ref.current.reopen()
      }
    })
  }
  process.on('SIGHUP', () => reload('SIGHUP'))
  process.off('SIGHUP', early.listener)
  if (early.heard) reload('SIGHUP')
  if (watch) onSwap = watchFiles(file, ref, reload, logger)
  // listening comes last: a reload asked for from the moment the port is up must be heard
  let failing: 'RPC' | 'admin' = 'RPC'
  try {
    await app.listen({ host: config.listen.host, port: config.listen.port, backlog: LISTEN_BACKLOG })
    failing = 'admin'
    if (admin !== undefined && config.admin !== undefined) await admin.listen({ host: config.admin.host, port: config.admin.port })
  } catch (err) {
    failed = true
    // a reload already under way (a SIGHUP while starting) may still swap in a runtime: the last one is closed
    await reloading
    await Promise.allSettled([app.close(), admin?.close(), ...[ref.current, ...retiring].map(async runtime => { await runtime.close() })])
    throw listenFailed(err, failing, failing === 'RPC' ? config.listen : config.admin ?? config.listen)
  }

  let stopping = false
  const stop = async (signal: string): Promise<void> => {
    if (stopping) return
    stopping = true
    logger.info({ signal }, 'stopping: finishing calls in flight')
    ref.stopping = true
    const { drainMs } = ref.current.config
    // calls in flight, then the commits and the steps' own queues (notify), drainMs for both; a chain a reload replaced keeps its own
    const bound = Math.max(...[ref.current, ...retiring].map(({ config }) => config.deadlineMs + config.drainMs))
    const force = setTimeout(() => process.exit(1), bound + STOP_GRACE_MS).unref()
    await Promise.allSettled([app.close(), admin?.close()])
    // close waits for the commits in progress (of every config: the committer is shared), at most drainMs; a chain a
    // reload replaced is closed too, or its notify queues would go unsent and uncounted
    await Promise.allSettled([ref.current, ...retiring].map(async runtime => { await runtime.close() }))
    const left = shared.committer.pending
    clearTimeout(force)
    if (left > 0) logger.warn({ left, drainMs }, 'stopped with work after answers left undone (registry records, events): drainMs passed')
    logger.info('stopped')
    logger.flush?.()
    // nothing is left to wait for; a socket to a Redis that stopped answering would hold the process until Redis closes it
    process.exit(0)
  }
  process.on('SIGTERM', () => { void stop('SIGTERM') })
  process.on('SIGINT', () => { void stop('SIGINT') })
}
