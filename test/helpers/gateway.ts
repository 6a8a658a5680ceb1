import { Writable } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import type { Test } from 'tap'
import { buildApp, type RuntimeRef } from '../../src/app.js'
import { parseConfig } from '../../src/config.js'
import { createLogger } from '../../src/log.js'
import { createMetrics, type Metrics } from '../../src/metrics.js'
import { createRuntime } from '../../src/runtime.js'
import { ConfigError, type ConfigIssue } from '../../src/errors.js'

interface Teardown { teardown: (fn: () => unknown) => void }

export interface TestGateway {
  app: FastifyInstance
  ref: RuntimeRef
  metrics: Metrics
  /** every log line written so far, parsed */
  logs: Array<Record<string, any>>
  /** the same lines as written */
  lines: string[]
  /** POSTs an frps-shaped call; answers the status and the parsed body */
  call: (op: string, content: unknown, opts?: { reqid?: string, query?: string, wireOp?: string }) => Promise<{ status: number, body: any, raw: string }>
  /** the value of one series in /metrics, or undefined when it is absent */
  metric: (name: string, labels?: Record<string, string>) => Promise<number | undefined>
}

/** A gateway built from a config object, answering through fastify.inject; closed in teardown. */
/** repeatIntervalMs: 0 (the default here) logs every repeated warning in full; tests of the repeat limit set one. */
export async function startGateway (t: Teardown, rawConfig: unknown, opts: { level?: string, repeatIntervalMs?: number } = {}): Promise<TestGateway> {
  const config = parseConfig(rawConfig)
  const logs: Array<Record<string, any>> = []
  const lines: string[] = []
  const sink = new Writable({
    write (chunk, _enc, done) {
      for (const line of String(chunk).split('\n')) {
        if (line === '') continue
        lines.push(line)
        logs.push(JSON.parse(line))
      }
      done()
    }
  })
  const logger = createLogger({ level: opts.level ?? 'debug', redact: config.log.redact, repeatIntervalMs: opts.repeatIntervalMs ?? 0 }, sink)
  const metrics = createMetrics()
  const ref: RuntimeRef = { current: await createRuntime(config, { metrics, log: logger }) }
  const app = buildApp(ref, { metrics, logger, path: config.listen.path, bodyLimitBytes: config.listen.bodyLimitBytes, adminRoutes: true })
  t.teardown(async () => {
    await app.close()
    await ref.current.close()
  })
  const path = config.listen.path
  return {
    app,
    ref,
    metrics,
    logs,
    lines,
    async call (op, content, o = {}) {
      const res = await app.inject({
        method: 'POST',
        url: `${path}?${o.query ?? `version=0.1.0&op=${o.wireOp ?? op}`}`,
        headers: { 'content-type': 'application/json', 'x-frp-reqid': o.reqid ?? 'test0000000000ab', 'user-agent': 'Go-http-client/1.1' },
        payload: JSON.stringify({ version: '0.1.0', op: o.wireOp ?? op, content })
      })
      return { status: res.statusCode, body: res.json(), raw: res.body }
    },
    async metric (name, labels = {}) {
      const metric = metrics.register.getSingleMetric(name)
      if (metric === undefined) return undefined
      const { values } = await metric.get()
      const hit = values.find(v => Object.entries(labels).every(([k, val]) => String((v.labels as Record<string, unknown>)[k]) === val) &&
        Object.keys(v.labels).length >= Object.keys(labels).length && !('le' in v.labels))
      return hit?.value
    }
  }
}

/** The issues of a config the gateway refuses to start with (asserting that it is refused with a ConfigError). */
export async function configIssues (t: Test, rawConfig: unknown): Promise<readonly ConfigIssue[]> {
  const err = await startGateway(t, rawConfig).then(() => undefined, (e: unknown) => e)
  t.ok(err instanceof ConfigError, 'a ConfigError')
  return (err as ConfigError).issues
}

const PROTO_KEYS = Object.getOwnPropertyNames(Object.prototype).sort()

/** Object.prototype has exactly its own keys and a fresh object inherits none of the given names. */
export function assertNoPollution (t: Test, names: readonly string[] = ['polluted']): void {
  t.same(Object.getOwnPropertyNames(Object.prototype).sort(), PROTO_KEYS, 'Object.prototype keeps its keys')
  t.equal(Object.prototype.constructor, Object)
  const probe = {} as Record<string, unknown>
  t.same(names.map(name => probe[name]), names.map(() => undefined), 'a fresh object inherits nothing new')
}
