import { resolve } from 'node:path'
import type { Cluster, Redis } from 'ioredis'
import type { Logger } from 'pino'
import { plugins, type PluginName } from '../plugins/index.js'
import { runChain, type CallContext, type ChainResult, type ChainStep, type PluginDef, type Step } from './chain.js'
import type { Config, StepConfig } from './config.js'
import { Committer, type CommitEvent, type CommitHook } from './commit.js'
import { BrokenBlock, collectIssues, compileAt, ConfigError, type ConfigIssue } from './errors.js'
import { warnRepeated } from './log.js'
import { compileWhen, proxyMetasPath, type Matcher } from './match.js'
import { DECISIONS, type Metrics } from './metrics.js'
import type { CompiledUser } from './users/record.js'
import { checkCall, effectiveOp, OPS, own, ownText, type Content, type Op } from './protocol.js'
import { MemoryStore } from './stores/memory-store.js'
import { checkRedis, createRedisClient, redisError, whyNotReady } from './stores/redis-client.js'
import { RedisStore } from './stores/redis-store.js'
import type { RateLimitStore } from './stores/store.js'
import { FileUserSource } from './users/file-source.js'
import { parseUserRecord } from './users/record.js'
import { RedisUserSource } from './users/redis-source.js'
import type { UserTable } from './users/table.js'
import { proxyMetaReads } from './template.js'
import { DeadlineExceeded, LiveRegistry } from './registry/live.js'
import { MemoryRegistry } from './registry/memory.js'
import { RedisRegistry, type UnreadableRecord } from './registry/redis.js'

export interface RuntimeDeps {
  metrics: Metrics
  log: Logger
  /** process-wide, so buckets survive a reload; a runtime without one makes and closes its own */
  memoryStore?: MemoryStore
  /** false for `check`: compile only, do not wait for Redis; 'first-try' for `trace`: wait for Redis's first connection only, whether it succeeds or fails */
  open?: boolean | 'first-try'
  /** process-wide, so the memory registry survives a reload; a runtime without one makes its own */
  memoryRegistry?: MemoryRegistry
  /** process-wide, so a stop waits for the commits of every runtime; a runtime without one makes its own */
  committer?: Committer
  /** the folder relative paths of the config are read from: the config file's (default: the working directory) */
  baseDir?: string
  /** top-level blocks in the file that did not parse (a bad config's report): a step needing one says nothing of it */
  broken?: ReadonlySet<string>
}

const READY_TIMEOUT_MS = 1000
const STORE_OPEN_TIMEOUT_MS = 2000

/** A compiled config: the chain of every op and the resources its steps hold. Swapped whole on reload. */
export class Runtime {
  readonly config: Config
  readonly chains: Readonly<Record<Op, readonly ChainStep[]>>
  /** per op, what runs once a call's answer is written */
  readonly commits: Readonly<Record<Op, readonly CommitHook[]>>
  /** the ops whose chain reads the registry's record of the call's proxy (NewUserConn, CloseProxy; with the registry block) */
  readonly readsProxy: ReadonlySet<Op>
  private readonly steps: readonly Step[]
  private readonly stores: Stores
  private readonly committer: Committer

  constructor (config: Config, chains: Record<Op, ChainStep[]>, commits: Record<Op, CommitHook[]>, steps: Step[], stores: Stores, committer: Committer, readsProxy: ReadonlySet<Op>) {
    this.config = config
    this.chains = chains
    this.commits = commits
    this.steps = steps
    this.stores = stores
    this.committer = committer
    this.readsProxy = readsProxy
  }

  /** The live proxy registry, when the config has a `registry` block. */
  get registry (): LiveRegistry | undefined {
    return this.stores.registry
  }

  /** The commit phase of one call, after its answer: every hook of the op is told what frps was told. */
  commit (op: Op, sent: Content, result: ChainResult, ctx: CallContext): void {
    const hooks = this.commits[op]
    if (hooks.length === 0) return
    this.committer.run(hooks, commitEvent(op, sent, result, ctx), result.settling)
  }

  /** What the commit hooks of the op would do with this result, doing nothing: one line per hook that would act. */
  describeCommit (op: Op, sent: Content, result: ChainResult, ctx: CallContext): string[] {
    const event = commitEvent(op, sent, result, ctx)
    return this.commits[op].flatMap(hook => {
      const what = hook.describe(event)
      return what === undefined ? [] : [`${hook.name}: ${what}`]
    })
  }

  /**
   * One call from frps, as the RPC route and `trace` both run it: the op whose steps run (a
   * mislabelled NewWorkConn counts as NewWorkConn), content of the wrong type answered as an error,
   * then the chain. The result is synchronous while the steps are.
   */
  call (wireOp: Op, content: Content, started: number, reqid: string, log: Logger, trace?: CallContext['trace']):
  { op: Op, result: ChainResult | Promise<ChainResult>, ctx: CallContext } {
    const op = effectiveOp(wireOp, content)
    const ctx: CallContext = { op, wireOp, reqid, deadline: started + this.config.deadlineMs, log, trace }
    const invalid = checkCall(op, content)
    if (invalid !== null) return { op, result: { outcome: 'error', reason: invalid }, ctx }
    // undefined unless some chain reads a proxy's metas: the other configs pay one comparison
    if (this.readsProxy.has(op)) return { op, result: withProxy(this.stores.registry as LiveRegistry, this.chains[op], content, ctx), ctx }
    return { op, result: runChain(this.chains[op], content, ctx), ctx }
  }

  /** true once a step uses the Redis of the config */
  get redisInUse (): boolean {
    return this.stores.connected !== undefined
  }

  /** null when every store the chain needs answers, else the reason. */
  async ready (): Promise<string | null> {
    const redis = this.stores.connected
    if (redis === undefined) return null
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([checkRedis(redis, this.stores.writesRedis ? `${this.stores.keyPrefix}readyz` : undefined), new Promise((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS)
      })])
      return null
    } catch (err) {
      return redisError(redis, err).message
    } finally {
      clearTimeout(timer)
    }
  }

  /** Waits, at most drainMs, for the commits in progress; true when none was left behind. */
  async drain (): Promise<boolean> {
    return await this.committer.drain(this.config.drainMs)
  }

  #closing: Promise<void> | undefined

  /** The steps open their files again (a SIGHUP whose reload failed: logrotate moved them all the same). */
  async reopen (): Promise<void> {
    await Promise.allSettled(this.steps.map(async step => await step.reopen?.()))
  }

  /** One drainMs for all the work after answers: the commits in progress, then what the steps still hold (notify queues). Once, however often asked. */
  async close (): Promise<void> {
    return await (this.#closing ??= this.#close())
  }

  async #close (): Promise<void> {
    const until = performance.now() + this.config.drainMs
    await this.drain()
    await Promise.allSettled(this.steps.map(async step => await step.close?.(Math.max(0, until - performance.now()))))
    await this.stores.close()
  }
}

/**
 * frps sends no proxy metas with NewUserConn and CloseProxy: the registry's record of the proxy is read
 * once, before the chain, for its matchers and templates. A failed read follows registry.onStoreError
 * (CloseProxy, whose answer frps ignores, runs its chain either way); a read past the deadline is an
 * error answer, as a step past it is.
 */
async function withProxy (registry: LiveRegistry, chain: readonly ChainStep[], content: Content, ctx: CallContext): Promise<ChainResult> {
  const read = { user: ownText(own(content, 'user'), 'user'), name: ownText(content, 'proxy_name') }
  const started = performance.now()
  let error: unknown
  try {
    ctx.proxy = await registry.read(read.user, read.name, ctx.deadline)
  } catch (err) {
    error = err
    ctx.proxy = 'error'
  }
  ctx.trace?.({ step: 'registry', read, record: ctx.proxy, seconds: (performance.now() - started) / 1000, error })
  // the record goes on to the commit, for the steps that act there (notify's when and templates)
  const run = async (): Promise<ChainResult> => ({ ...await runChain(chain, content, ctx), proxy: ctx.proxy })
  if (error === undefined) return await run()
  const late = error instanceof DeadlineExceeded
  const { code, name, message } = error as { code?: unknown, name?: unknown, message?: unknown }
  warnRepeated(ctx.log, `registry\nread\n${String(code ?? name)}`, { step: 'registry', err: error }, { step: 'registry', error: message ?? String(error) },
    late ? 'deadline exceeded' : 'registry read failed')
  if (ctx.op === 'CloseProxy') return late ? { outcome: 'allow' } : await run()
  if (late) return { outcome: 'error', reason: 'frp-plugin-gateway: deadline exceeded reading the registry', step: 'registry' }
  if (registry.options.onStoreError === 'reject') return { outcome: 'error', reason: 'frp-plugin-gateway: the registry cannot be read', step: 'registry' }
  return await run()
}

/** A step's commit hook; with `when`, told only of calls whose final content its `when` matches. */
function commitHook (name: string, hook: NonNullable<Step['commit']>, when: Matcher): CommitHook {
  if (hook.when !== true) return { name, commit: hook.commit, describe: hook.describe }
  return {
    name,
    commit: event => when(event.op, event.content, event) === null ? hook.commit(event) : undefined,
    describe: event => {
      const failed = when(event.op, event.content, event)
      return failed === null ? hook.describe(event) : `nothing: when.${failed} does not hold on the final content`
    }
  }
}

/** The commit phase's runner, counting failures per step in frp_gateway_commit_failures_total. */
export function createCommitter (metrics: Metrics): Committer {
  return new Committer({ failed: step => metrics.commitFailures.labels(step).inc() })
}

function commitEvent (op: Op, sent: Content, result: ChainResult, ctx: CallContext): CommitEvent {
  const failed = result.outcome === 'reject' || result.outcome === 'error'
  const { reqid, log } = ctx
  return {
    call: ctx,
    op,
    outcome: result.outcome,
    content: result.outcome === 'modify' && result.content !== undefined ? result.content : sent,
    decidedBy: failed ? result.step : undefined,
    reason: result.loggedReason ?? result.reason,
    reqid,
    time: Date.now(),
    log,
    proxy: result.proxy
  }
}

const UNREADABLE: UserTable = { kind: 'file', lookup: () => ({ status: 'error', error: new Error('the users file could not be read') }) }

/** The stores of one runtime (rate-limit buckets, the user table): Redis is connected only when a step asks for it. */
class Stores {
  redis: RedisStore | undefined
  /** set by createRuntime from the `registry` block */
  registry: LiveRegistry | undefined
  /** set by createRuntime from the `users` block */
  users: FileUserSource | RedisUserSource<CompiledUser> | undefined
  private client: Redis | Cluster | undefined
  private closed = false
  private readonly memory: MemoryStore
  private readonly ownsMemory: boolean

  constructor (private readonly config: Config, private readonly deps: RuntimeDeps) {
    this.ownsMemory = deps.memoryStore === undefined
    this.memory = deps.memoryStore ?? new MemoryStore()
  }

  private isBroken (block: string): boolean {
    return this.deps.broken?.has(block) === true
  }

  /** What a part asking for an absent block throws: its problem, or nothing new where the block is there but broken. */
  private missing (block: string, problem: string): Error {
    return this.isBroken(block) ? new BrokenBlock(block) : new Error(problem)
  }

  get (kind: 'auto' | 'memory' | 'redis'): RateLimitStore {
    if (kind === 'memory' || (kind === 'auto' && this.config.redis === undefined)) return this.memory
    this.redis ??= new RedisStore(this.redisClient('store "redis"'), { keyPrefix: this.keyPrefix })
    return this.redis
  }

  /** true once a part that writes to Redis asked for it (the user table only reads): readiness then asks for a write */
  writesRedis = false

  /** The one Redis client of the runtime, shared by the rate-limit store, the registry, notify and the user table. */
  redisClient (who: string, { readOnly = false } = {}): Redis | Cluster {
    const cfg = this.config.redis
    if (cfg === undefined) throw this.missing('redis', `${who} needs the top-level "redis" block`)
    if (!readOnly) this.writesRedis = true
    if (this.client === undefined) {
      const { redisUp } = this.deps.metrics
      redisUp.set(0)
      // a closed runtime's client going away says nothing about the Redis the live one uses
      this.client = createRedisClient(cfg, { onUp: up => { if (!this.closed) redisUp.set(up ? 1 : 0) } })
    }
    return this.client
  }

  /** the Redis client, once a step asked for it */
  get connected (): Redis | Cluster | undefined {
    return this.client
  }

  get keyPrefix (): string {
    return this.config.redis?.keyPrefix ?? ''
  }

  /** The user table of the `users` block; throws when there is none (a config error of the step asking). */
  userTable (): UserTable {
    const cfg = this.config.users
    if (cfg === undefined) throw this.missing('users', 'the users step needs the top-level "users" block: {"file": "users.json"} or {"redis": {}}')
    if (this.users === undefined && 'redis' in cfg) {
      this.users = new RedisUserSource(this.redisClient('users.redis', { readOnly: true }), { keyPrefix: this.keyPrefix, parse: parseUserRecord, cacheMs: cfg.redis.cacheMs })
    }
    // the users file did not read: reported under users.file, and this runtime is refused for it
    if (this.users === undefined) return UNREADABLE
    return this.users
  }

  /** Reads the users file, or checks that the Redis table can be had: problems are config issues (the file's own are prefixed with its name). */
  async openUsers (baseDir: string): Promise<ConfigIssue[]> {
    const cfg = this.config.users
    if (cfg === undefined) return []
    if ('file' in cfg) {
      try {
        this.users = await FileUserSource.open(cfg.file, baseDir)
        return []
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err
        return err.issues.map(i => ({ path: i.path === '(file)' ? 'users.file' : `users.file ${cfg.file}: ${i.path}`, message: i.path === '(file)' ? `${cfg.file}: ${i.message}` : i.message }))
      }
    }
    return this.config.redis === undefined && !this.isBroken('redis') ? [{ path: 'users.redis', message: 'a user table in Redis needs the top-level "redis" block' }] : []
  }

  /** Waits (bounded) for Redis, so a new runtime serves its first calls with the store in reach. */
  async open (timeoutMs: number, firstTry: boolean): Promise<void> {
    const client = this.client
    if (client === undefined || client.status === 'ready') return
    let timer: NodeJS.Timeout | undefined
    let done = (): void => {}
    await new Promise<void>(resolve => {
      done = resolve
      client.once('ready', done)
      if (firstTry) client.once('error', done)
      timer = setTimeout(done, timeoutMs)
    })
    client.off('ready', done).off('error', done)
    clearTimeout(timer)
    if ((client.status as string) !== 'ready') this.deps.log.warn({ timeoutMs, error: whyNotReady(client) }, 'redis not reachable yet: the steps that use it follow their failure policy until it is')
  }

  /** The registry of the `registry` block; throws when there is none (a config error of the step asking). */
  liveRegistry (who: string): LiveRegistry {
    if (this.registry === undefined) {
      // a registry block whose store is a broken redis block: that block's problem says it all
      if (this.config.registry !== undefined && this.isBroken('redis')) throw new BrokenBlock('redis')
      throw this.missing('registry', `${who} needs the top-level "registry" block: {"store": "auto"}`)
    }
    return this.registry
  }

  openRegistry (): ConfigIssue[] {
    const cfg = this.config.registry
    if (cfg === undefined) return []
    const kind = cfg.store === 'auto' ? (this.config.redis !== undefined ? 'redis' : 'memory') : cfg.store
    if (kind === 'redis' && this.config.redis === undefined) return this.isBroken('redis') ? [] : [{ path: 'registry.store', message: 'a registry in Redis needs the top-level "redis" block' }]
    const log = this.deps.log.child({ part: 'registry' })
    const unreadable = (err: UnreadableRecord): void => {
      warnRepeated(log, 'registry\nunreadable', { where: err.where, err }, { where: err.where, error: err.message }, 'registry record unreadable: skipped')
    }
    const store = kind === 'redis'
      ? new RedisRegistry(this.redisClient('registry'), { keyPrefix: this.keyPrefix, unreadable })
      : this.deps.memoryRegistry ?? new MemoryRegistry()
    const { registryReconciles, registryReconcileRemoved } = this.deps.metrics
    this.registry = new LiveRegistry(store, cfg, {
      reconciled: result => registryReconciles.labels(result).inc(),
      removed: n => registryReconcileRemoved.labels().inc(n)
    }, log)
    return []
  }

  async close (): Promise<void> {
    this.closed = true
    await this.registry?.close()
    if (this.users instanceof RedisUserSource) await this.users.close()
    this.client?.disconnect()
    if (this.ownsMemory) await this.memory.close()
  }
}

function recorder (metrics: Metrics, op: Op, step: string): ChainStep['record'] {
  const counters = Object.fromEntries(DECISIONS.map(d => [d, metrics.stepDecisions.labels(op, step, d)]))
  const duration = metrics.stepDuration.labels(op, step)
  return (decision, seconds) => {
    counters[decision].inc()
    duration.observe(seconds)
  }
}

/**
 * Compiles every step once; all problems are gathered, each with its JSON path, before anything throws
 * (`known`: the problems parseConfig found, reported with these).
 */
export async function createRuntime (config: Config, deps: RuntimeDeps, source = 'config', known: readonly ConfigIssue[] = []): Promise<Runtime> {
  const issues: ConfigIssue[] = [...known]
  const chains = Object.fromEntries(OPS.map(op => [op, [] as ChainStep[]])) as Record<Op, ChainStep[]>
  const commits = Object.fromEntries(OPS.map(op => [op, [] as CommitHook[]])) as Record<Op, CommitHook[]>
  const built: Step[] = []
  const readsProxy = new Set<Op>()
  const stores = new Stores(config, deps)
  issues.push(...await stores.openUsers(deps.baseDir ?? process.cwd()), ...stores.openRegistry())
  // a chain with holes: the steps that did not parse (parseConfig), whose problems are known already
  config.chain.forEach((sc: StepConfig, i) => {
    if (!sc.enabled) return
    const def = plugins[sc.plugin as PluginName] as PluginDef
    const ops = (sc.ops ?? def.ops) as Op[]
    const metasAt = proxyMetasPath(sc.when)
    const templates = proxyMetaReads()
    const { value, issues: found, broken } = collectIssues(`chain[${i}]`, () => ({
      when: compileAt('when', () => compileWhen(sc.when, ops)),
      metas: metasAt === undefined ? undefined : compileAt(`when.${metasAt}`, () => checkProxyMetas(ops, stores.registry !== undefined || deps.broken?.has('registry') === true)),
      run: compileAt('options', () => def.create(sc.options, {
        name: sc.name, ops, log: deps.log.child({ step: sc.name }), metrics: deps.metrics, store: kind => stores.get(kind), users: () => stores.userTable(),
        registry: () => stores.liveRegistry(`plugin ${sc.plugin}`), redis: () => stores.redisClient(`plugin ${sc.plugin}`),
        resolvePath: path => resolve(deps.baseDir ?? process.cwd(), path)
      })),
      mode: def.observer === true && sc.mode === 'shadow' ? compileAt('mode', () => { throw new Error(`a ${sc.plugin} step takes no part in the decision: shadow mode has no meaning for it`) }) : undefined
    }))
    if (value?.run !== undefined) built.push(value.run)
    if (found.length > 0 || value === undefined || broken) {
      issues.push(...found)
      return
    }
    const { when, run } = value
    const readsMetas = metasAt !== undefined || proxyMetaReads() > templates
    for (const op of ops) {
      if (readsMetas && stores.registry !== undefined && (op === 'NewUserConn' || op === 'CloseProxy')) readsProxy.add(op)
      chains[op].push({ name: sc.name, shadow: sc.mode === 'shadow', when, run, record: recorder(deps.metrics, op, sc.name) })
      if (run.commit !== undefined) commits[op].push(commitHook(sc.name, run.commit, when))
    }
  })
  if (issues.length > 0) {
    await Promise.allSettled(built.map(async step => await step.close?.(0)))
    await stores.close()
    throw new ConfigError(source, issues)
  }
  if (deps.open !== false) {
    await stores.open(STORE_OPEN_TIMEOUT_MS, deps.open === 'first-try')
    stores.registry?.start()
  }
  const registry = stores.registry
  if (registry !== undefined) {
    commits.Login.push(registry.hook)
    commits.NewProxy.push(registry.hook)
    commits.CloseProxy.push(registry.hook)
  }
  return new Runtime(config, chains, commits, built, stores, deps.committer ?? createCommitter(deps.metrics), readsProxy)
}

const PROXY_OPS: readonly Op[] = ['NewProxy', 'NewUserConn', 'CloseProxy']

/** A step whose `when` reads proxy metas runs only on ops that have a proxy, and needs the registry. */
function checkProxyMetas (ops: readonly Op[], registry: boolean): void {
  const others = ops.filter(op => !PROXY_OPS.includes(op))
  const problems = [
    others.length > 0 ? `the step runs on ${others.join(', ')}, which carr${others.length === 1 ? 'ies' : 'y'} no proxy: set its "ops" to some of ${PROXY_OPS.join(', ')}` : '',
    registry ? '' : 'frps sends no proxy metas with NewUserConn and CloseProxy, the registry keeps them: this needs the top-level "registry" block: {"store": "auto"}'
  ].filter(p => p !== '')
  if (problems.length > 0) throw new Error(problems.join('; '))
}

/** What `check` prints: per op, the steps that will run, in order. */
export function describeChains (runtime: Runtime): string {
  const width = Math.max(...OPS.map(op => op.length)) + 2
  const lines = OPS.map(op => {
    const steps = runtime.chains[op].map(s => {
      const sc = runtime.config.chain.find(c => c.name === s.name)
      const notes = [sc?.plugin, sc?.when !== undefined ? `when ${Object.keys(sc.when).join(', ')}` : '', s.shadow ? 'shadow' : '']
      return `${s.name} (${notes.filter(Boolean).join('; ')})`
    })
    // NewUserConn and CloseProxy: the registry's record of the proxy is read before the steps
    if (runtime.readsProxy.has(op)) steps.unshift("(registry: the proxy's metas)")
    if (steps.length === 0) steps.push('(no steps: allowed unchanged)')
    // work after the answer that no step of the chain stands for (the registry's records): frps must still send the op
    const after = runtime.commits[op].filter(hook => !runtime.chains[op].some(s => s.name === hook.name)).map(hook => hook.name)
    if (after.length > 0) steps.push(`(after the answer: ${after.join(', ')})`)
    return `${`${op}:`.padEnd(width)}${steps.join(' -> ')}`
  })
  // what frps must send the gateway: every op with a step or work after the answer (the registry's Login, NewProxy, CloseProxy)
  const ops = OPS.filter(op => runtime.chains[op].length > 0 || runtime.commits[op].length > 0)
  const send = ops.length === 0
    ? '(no op needs the gateway)'
    : `ops = [${ops.map(op => `"${op}"`).join(', ')}]  (INI: ops = ${ops.join(',')})`
  return [...lines, `${'frps.toml:'.padEnd(width)}${send}`].join('\n')
}
