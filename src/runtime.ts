import type { Cluster, Redis } from 'ioredis'
import type { Logger } from 'pino'
import { plugins, type PluginName } from '../plugins/index.js'
import { runChain, type CallContext, type ChainResult, type ChainStep, type PluginDef, type Step } from './chain.js'
import type { Config, StepConfig } from './config.js'
import { collectIssues, compileAt, ConfigError, type ConfigIssue } from './errors.js'
import { compileWhen } from './match.js'
import { DECISIONS, type Metrics } from './metrics.js'
import { checkCall, effectiveOp, OPS, type Content, type Op } from './protocol.js'
import { MemoryStore } from './stores/memory-store.js'
import { createRedisClient } from './stores/redis-client.js'
import { RedisStore } from './stores/redis-store.js'
import type { RateLimitStore } from './stores/store.js'

export interface RuntimeDeps {
  metrics: Metrics
  log: Logger
  /** process-wide, so buckets survive a reload; a runtime without one makes and closes its own */
  memoryStore?: MemoryStore
  /** false for `check`: compile only, do not wait for Redis */
  open?: boolean
}

const READY_TIMEOUT_MS = 1000
const STORE_OPEN_TIMEOUT_MS = 2000

/** A compiled config: the chain of every op and the resources its steps hold. Swapped whole on reload. */
export class Runtime {
  readonly config: Config
  readonly chains: Readonly<Record<Op, readonly ChainStep[]>>
  private readonly steps: readonly Step[]
  private readonly stores: Stores

  constructor (config: Config, chains: Record<Op, ChainStep[]>, steps: Step[], stores: Stores) {
    this.config = config
    this.chains = chains
    this.steps = steps
    this.stores = stores
  }

  /**
   * One call from frps, as the RPC route and `trace` both run it: the op whose steps run (a
   * mislabelled NewWorkConn counts as NewWorkConn), content of the wrong type answered as an error,
   * then the chain. The result is synchronous while the steps are.
   */
  call (wireOp: Op, content: Content, started: number, reqid: string, log: Logger, trace?: CallContext['trace']):
  { op: Op, result: ChainResult | Promise<ChainResult> } {
    const op = effectiveOp(wireOp, content)
    const invalid = checkCall(op, content)
    if (invalid !== null) return { op, result: { outcome: 'error', reason: invalid } }
    const ctx: CallContext = { op, wireOp, reqid, deadline: started + this.config.deadlineMs, log, trace }
    return { op, result: runChain(this.chains[op], content, ctx) }
  }

  /** null when every store the chain needs answers, else the reason. */
  async ready (): Promise<string | null> {
    const redis = this.stores.redis
    if (redis === undefined) return null
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([redis.ping(), new Promise((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS)
      })])
      return null
    } catch (err) {
      return `redis: ${(err as Error).message}`
    } finally {
      clearTimeout(timer)
    }
  }

  async close (): Promise<void> {
    await Promise.allSettled(this.steps.map(async step => await step.close?.()))
    await this.stores.close()
  }
}

/** The rate-limit stores of one runtime: Redis is connected only when a step asks for it. */
class Stores {
  redis: RedisStore | undefined
  private client: Redis | Cluster | undefined
  private closed = false
  private readonly memory: MemoryStore
  private readonly ownsMemory: boolean

  constructor (private readonly config: Config, private readonly deps: RuntimeDeps) {
    this.ownsMemory = deps.memoryStore === undefined
    this.memory = deps.memoryStore ?? new MemoryStore()
  }

  get (kind: 'auto' | 'memory' | 'redis'): RateLimitStore {
    if (kind === 'memory' || (kind === 'auto' && this.config.redis === undefined)) return this.memory
    const cfg = this.config.redis
    if (cfg === undefined) throw new Error('store "redis" needs the top-level "redis" block')
    if (this.redis === undefined) {
      const { redisUp } = this.deps.metrics
      redisUp.set(0)
      // a closed runtime's client going away says nothing about the Redis the live one uses
      this.client = createRedisClient(cfg, { onUp: up => { if (!this.closed) redisUp.set(up ? 1 : 0) } })
      this.redis = new RedisStore(this.client, { keyPrefix: cfg.keyPrefix })
    }
    return this.redis
  }

  /** Waits (bounded) for Redis, so a new runtime serves its first calls with the store in reach. */
  async open (timeoutMs: number): Promise<void> {
    const client = this.client
    if (client === undefined || client.status === 'ready') return
    let timer: NodeJS.Timeout | undefined
    const ready = new Promise<void>(resolve => {
      client.once('ready', resolve)
      timer = setTimeout(resolve, timeoutMs)
    })
    await ready
    clearTimeout(timer)
    if ((client.status as string) !== 'ready') this.deps.log.warn({ timeoutMs }, 'redis not reachable yet: rate-limit steps follow onStoreError until it is')
  }

  async close (): Promise<void> {
    this.closed = true
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
  const built: Step[] = []
  const stores = new Stores(config, deps)
  // a chain with holes: the steps that did not parse (parseConfig), whose problems are known already
  config.chain.forEach((sc: StepConfig, i) => {
    if (!sc.enabled) return
    const def = plugins[sc.plugin as PluginName] as PluginDef
    const { value, issues: found } = collectIssues(`chain[${i}]`, () => ({
      when: compileAt('when', () => compileWhen(sc.when)),
      run: compileAt('options', () => def.create(sc.options, {
        name: sc.name, ops: (sc.ops ?? def.ops) as Op[], log: deps.log.child({ step: sc.name }), metrics: deps.metrics, store: kind => stores.get(kind)
      }))
    }))
    if (value?.run !== undefined) built.push(value.run)
    if (found.length > 0 || value === undefined) {
      issues.push(...found)
      return
    }
    const { when, run } = value
    for (const op of (sc.ops ?? def.ops) as Op[]) {
      chains[op].push({ name: sc.name, shadow: sc.mode === 'shadow', when, run, record: recorder(deps.metrics, op, sc.name) })
    }
  })
  if (issues.length > 0) {
    await Promise.allSettled(built.map(async step => await step.close?.()))
    await stores.close()
    throw new ConfigError(source, issues)
  }
  if (deps.open !== false) await stores.open(STORE_OPEN_TIMEOUT_MS)
  return new Runtime(config, chains, built, stores)
}

/** What `check` prints: per op, the steps that will run, in order. */
export function describeChains (runtime: Runtime): string {
  const width = Math.max(...OPS.map(op => op.length)) + 2
  return OPS.map(op => {
    const steps = runtime.chains[op].map(s => {
      const sc = runtime.config.chain.find(c => c.name === s.name)
      const notes = [sc?.plugin, sc?.when !== undefined ? `when ${Object.keys(sc.when).join(', ')}` : '', s.shadow ? 'shadow' : '']
      return `${s.name} (${notes.filter(Boolean).join('; ')})`
    })
    return `${`${op}:`.padEnd(width)}${steps.length > 0 ? steps.join(' -> ') : '(no steps: allowed unchanged)'}`
  }).join('\n')
}
