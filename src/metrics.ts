import { collectDefaultMetrics, Counter, Gauge, Registry, type Metric } from 'prom-client'
import { packageVersion } from './version.js'

export const OUTCOMES = ['allow', 'modify', 'reject', 'error'] as const
export type Outcome = (typeof OUTCOMES)[number]
export const DECISIONS = ['allow', 'modify', 'reject', 'error', 'shadow_reject', 'shadow_modify'] as const
export type Decision = (typeof DECISIONS)[number]
export const FORWARD_RESULTS = ['ok', 'timeout', 'connect_error', 'http_status', 'invalid_response', 'circuit_open'] as const
export type ForwardResult = (typeof FORWARD_RESULTS)[number]
export const RATELIMIT_RESULTS = ['allowed', 'limited', 'store_error'] as const
export type RateLimitResult = (typeof RATELIMIT_RESULTS)[number]
/** The rule of the users step that decided: ok, or what refused (store_error: the table could not say) */
export const USERS_RESULTS = ['ok', 'unknown_user', 'bad_token', 'disabled', 'expired', 'client_cidr', 'clock_skew',
  'proxy_type', 'proxy_name', 'port', 'domain', 'subdomain', 'store_error'] as const
export type UsersResult = (typeof USERS_RESULTS)[number]
export const RECONCILE_RESULTS = ['ok', 'error'] as const
export const RELOAD_RESULTS = ['success', 'failure'] as const

const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

type Labels = Record<string, string>
interface MetricValue { labels: Labels, value: number, metricName?: string }

/**
 * The per-call metrics. prom-client hashes the label values on every inc() and observe(), even through
 * labels(): with a counter and a histogram per step, that was the larger part of what the chain cost.
 * Here a series is a plain object found once by labels() and kept by the caller; the registry formats
 * it only when /metrics is scraped.
 */
abstract class FastMetric<S> {
  abstract readonly type: 'counter' | 'histogram'
  readonly aggregator = 'sum'
  protected readonly series = new Map<string, { labels: Labels, state: S }>()

  constructor (readonly name: string, readonly help: string, private readonly labelNames: readonly string[], register: Registry) {
    register.registerMetric(this as unknown as Metric)
  }

  protected abstract fresh (): S

  /** The series of these label values, made on first use; callers keep it and inc/observe it directly. */
  labels (...values: string[]): S {
    const key = values.join('\u0000')
    let found = this.series.get(key)
    if (found === undefined) {
      const labels: Labels = {}
      this.labelNames.forEach((name, i) => { labels[name] = values[i] })
      found = { labels, state: this.fresh() }
      this.series.set(key, found)
    }
    return found.state
  }

  reset (): void {
    this.series.clear()
  }
}

class CounterSeries {
  value = 0
  touched = false
  inc (by = 1): void {
    this.value += by
    this.touched = true
  }
}

export class FastCounter extends FastMetric<CounterSeries> {
  readonly type = 'counter'
  protected fresh (): CounterSeries { return new CounterSeries() }
  async get (): Promise<{ name: string, help: string, type: string, aggregator: string, values: MetricValue[] }> {
    const values = [...this.series.values()].filter(s => s.state.touched).map(s => ({ labels: s.labels, value: s.state.value }))
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }
}

class HistogramSeries {
  readonly counts: Float64Array
  sum = 0
  count = 0
  constructor (private readonly buckets: readonly number[]) {
    this.counts = new Float64Array(buckets.length)
  }

  observe (value: number): void {
    const buckets = this.buckets
    let i = 0
    while (i < buckets.length && value > buckets[i]) i++
    if (i < buckets.length) this.counts[i]++
    this.sum += value
    this.count++
  }
}

export class FastHistogram extends FastMetric<HistogramSeries> {
  readonly type = 'histogram'
  constructor (name: string, help: string, labelNames: readonly string[], register: Registry, private readonly buckets: readonly number[]) {
    super(name, help, labelNames, register)
  }

  protected fresh (): HistogramSeries { return new HistogramSeries(this.buckets) }
  async get (): Promise<{ name: string, help: string, type: string, aggregator: string, values: MetricValue[] }> {
    const values: MetricValue[] = []
    for (const { labels, state } of this.series.values()) {
      if (state.count === 0) continue
      let cumulative = 0
      this.buckets.forEach((le, i) => {
        cumulative += state.counts[i]
        values.push({ labels: { ...labels, le: String(le) }, value: cumulative, metricName: `${this.name}_bucket` })
      })
      values.push({ labels: { ...labels, le: '+Inf' }, value: state.count, metricName: `${this.name}_bucket` })
      values.push({ labels, value: state.sum, metricName: `${this.name}_sum` })
      values.push({ labels, value: state.count, metricName: `${this.name}_count` })
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }
}

/** Where the registry gauge reads its count at scrape time: the live runtime's registry, set on every swap. */
export interface RegistrySource { count?: () => Promise<number> }

/** Where frp_gateway_redis_up asks at scrape time: a Redis that holds its connections and answers nothing (stopped, swapping) sends no connection event. */
interface RedisProbe { answers?: () => Promise<boolean> }

/** A gauge read at scrape time from `source`, which the app points at the live runtime; `undefined` keeps the last value. */
function scrapedGauge<S extends object> (register: Registry, name: string, help: string, source: S, read: (source: S) => Promise<number | undefined>): Gauge & { source: S } {
  const gauge = new Gauge({
    name,
    help,
    registers: [register],
    async collect () {
      const value = await read(source)
      if (value !== undefined) this.set(value)
    }
  })
  return Object.assign(gauge, { source })
}

const registryGauge = (register: Registry): Gauge & { source: RegistrySource } => scrapedGauge(register, 'frp_gateway_registry_proxies',
  'Proxies in the registry (every gateway sharing it), read at scrape time', {}, async (source: RegistrySource) => {
    if (source.count === undefined) return 0
    // a registry that cannot be read now keeps its last count; frp_gateway_redis_up says why
    return await source.count().catch(() => undefined)
  })

/** Also set by the client's connection events between scrapes. */
const redisUpGauge = (register: Registry): Gauge & { source: RedisProbe } => scrapedGauge(register, 'frp_gateway_redis_up',
  '1 when the configured Redis answers, 0 when it does not', {},
  async (source: RedisProbe) => source.answers === undefined ? undefined : await source.answers() ? 1 : 0)

function buildInfoGauge (register: Registry): Gauge {
  const gauge = new Gauge({ name: 'frp_gateway_build_info', help: 'Always 1: the gateway\'s version and the Node.js running it', labelNames: ['version', 'node'], registers: [register] })
  gauge.labels(packageVersion(), process.version).set(1)
  return gauge
}

/**
 * Every metric the gateway exports, defined once per process and kept across config reloads. `defaults`: prom-client's
 * process metrics, whose collectors (an event-loop monitor, a GC observer) stay on for the life of the process.
 */
export function createMetrics (register = new Registry(), { defaults = true } = {}) {
  if (defaults) collectDefaultMetrics({ register })
  return {
    register,
    requests: new FastCounter('frp_gateway_requests_total',
      'Calls from frps by op and outcome (op="invalid" for calls without a known op)', ['op', 'outcome'], register),
    requestDuration: new FastHistogram('frp_gateway_request_duration_seconds',
      'Time from receiving a call to answering it', ['op'], register, DURATION_BUCKETS),
    stepDecisions: new FastCounter('frp_gateway_step_decisions_total', 'Decisions of each chain step', ['op', 'step', 'decision'], register),
    stepDuration: new FastHistogram('frp_gateway_step_duration_seconds', 'Time each chain step took', ['op', 'step'], register, DURATION_BUCKETS),
    forwardRequests: new FastCounter('frp_gateway_forward_requests_total',
      'Calls of forward steps to downstream plugins, one per attempt, by result', ['step', 'result'], register),
    rateLimitDecisions: new FastCounter('frp_gateway_ratelimit_decisions_total', 'Rate-limit decisions by result', ['step', 'result'], register),
    usersDecisions: new FastCounter('frp_gateway_users_decisions_total', 'Users step decisions by the rule that decided', ['step', 'result'], register),
    notifyEvents: new FastCounter('frp_gateway_notify_events_total', 'Events of notify steps by result: sent, retried (each further attempt), throttled, dropped, failed', ['step', 'result'], register),
    commitFailures: new FastCounter('frp_gateway_commit_failures_total', 'Work after an answer (registry records, reservations, events) that failed, by step', ['step'], register),
    registryReconciles: new FastCounter('frp_gateway_registry_reconcile_total', 'Reconciliations of the registry against frps\'s dashboard API, by result', ['result'], register),
    registryReconcileRemoved: new FastCounter('frp_gateway_registry_reconcile_removed_total', 'Registry records removed because frps does not list their proxy online', [], register),
    registryProxies: registryGauge(register),
    redisUp: redisUpGauge(register),
    buildInfo: buildInfoGauge(register),
    configReloads: new Counter({
      name: 'frp_gateway_config_reloads_total',
      help: 'Config reloads by result',
      labelNames: ['result'] as const,
      registers: [register]
    })
  }
}

export type Metrics = ReturnType<typeof createMetrics>
