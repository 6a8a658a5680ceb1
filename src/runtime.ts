import type { Logger } from 'pino'
import { plugins, type PluginName } from '../plugins/index.js'
import type { ChainStep, PluginDef, Step } from './chain.js'
import type { Config, StepConfig } from './config.js'
import { compileAt, ConfigError, type ConfigIssue, type OptionError } from './errors.js'
import { compileWhen } from './match.js'
import { DECISIONS, type Metrics } from './metrics.js'
import { OPS, type Op } from './protocol.js'

export interface RuntimeDeps { metrics: Metrics, log: Logger }

/** A compiled config: the chain of every op and the resources its steps hold. Swapped whole on reload. */
export class Runtime {
  readonly config: Config
  readonly chains: Readonly<Record<Op, readonly ChainStep[]>>
  private readonly steps: readonly Step[]

  constructor (config: Config, chains: Record<Op, ChainStep[]>, steps: Step[]) {
    this.config = config
    this.chains = chains
    this.steps = steps
  }

  /** null when every store the chain needs answers, else the reason. */
  async ready (): Promise<string | null> {
    return null
  }

  async close (): Promise<void> {
    await Promise.allSettled(this.steps.map(async step => await step.close?.()))
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

/** Compiles every step once; all problems are gathered, each with its JSON path, before anything throws. */
export async function createRuntime (config: Config, deps: RuntimeDeps, source = 'config'): Promise<Runtime> {
  const issues: ConfigIssue[] = []
  const chains = Object.fromEntries(OPS.map(op => [op, [] as ChainStep[]])) as Record<Op, ChainStep[]>
  const built: Step[] = []
  config.chain.forEach((sc: StepConfig, i) => {
    if (!sc.enabled) return
    const def = plugins[sc.plugin as PluginName] as PluginDef
    let run: Step
    let when
    try {
      when = compileAt(`chain[${i}].when`, () => compileWhen(sc.when))
      run = compileAt(`chain[${i}].options`, () => def.create(sc.options, { name: sc.name, log: deps.log.child({ step: sc.name }), metrics: deps.metrics }))
    } catch (err) {
      issues.push({ path: (err as OptionError).path, message: (err as Error).message })
      return
    }
    built.push(run)
    for (const op of (sc.ops ?? def.ops) as Op[]) {
      chains[op].push({ name: sc.name, shadow: sc.mode === 'shadow', when, run, record: recorder(deps.metrics, op, sc.name) })
    }
  })
  if (issues.length > 0) {
    await Promise.allSettled(built.map(async step => await step.close?.()))
    throw new ConfigError(source, issues)
  }
  return new Runtime(config, chains, built)
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
