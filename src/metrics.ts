import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'

export const OUTCOMES = ['allow', 'modify', 'reject', 'error'] as const
export type Outcome = (typeof OUTCOMES)[number]
export const DECISIONS = ['allow', 'modify', 'reject', 'error', 'shadow_reject', 'shadow_modify'] as const
export type Decision = (typeof DECISIONS)[number]
export const FORWARD_RESULTS = ['ok', 'timeout', 'connect_error', 'http_status', 'invalid_response', 'circuit_open'] as const
export type ForwardResult = (typeof FORWARD_RESULTS)[number]
export const RATELIMIT_RESULTS = ['allowed', 'limited', 'store_error'] as const
export type RateLimitResult = (typeof RATELIMIT_RESULTS)[number]

const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

/** Every metric the gateway exports, defined once per process and kept across config reloads. */
export function createMetrics (register = new Registry()) {
  collectDefaultMetrics({ register })
  return {
    register,
    requests: new Counter({
      name: 'frp_gateway_requests_total',
      help: 'Calls from frps by op and outcome (op="invalid" for calls without a known op)',
      labelNames: ['op', 'outcome'] as const,
      registers: [register]
    }),
    requestDuration: new Histogram({
      name: 'frp_gateway_request_duration_seconds',
      help: 'Time from receiving a call to answering it',
      labelNames: ['op'] as const,
      buckets: DURATION_BUCKETS,
      registers: [register]
    }),
    stepDecisions: new Counter({
      name: 'frp_gateway_step_decisions_total',
      help: 'Decisions of each chain step',
      labelNames: ['op', 'step', 'decision'] as const,
      registers: [register]
    }),
    stepDuration: new Histogram({
      name: 'frp_gateway_step_duration_seconds',
      help: 'Time each chain step took',
      labelNames: ['op', 'step'] as const,
      buckets: DURATION_BUCKETS,
      registers: [register]
    }),
    forwardRequests: new Counter({
      name: 'frp_gateway_forward_requests_total',
      help: 'Calls of forward steps to downstream plugins by result',
      labelNames: ['step', 'result'] as const,
      registers: [register]
    }),
    rateLimitDecisions: new Counter({
      name: 'frp_gateway_ratelimit_decisions_total',
      help: 'Rate-limit decisions by result',
      labelNames: ['step', 'result'] as const,
      registers: [register]
    }),
    redisUp: new Gauge({
      name: 'frp_gateway_redis_up',
      help: '1 when the configured Redis answers, 0 when it does not',
      registers: [register]
    }),
    configReloads: new Counter({
      name: 'frp_gateway_config_reloads_total',
      help: 'Config reloads by result',
      labelNames: ['result'] as const,
      registers: [register]
    })
  }
}

export type Metrics = ReturnType<typeof createMetrics>
