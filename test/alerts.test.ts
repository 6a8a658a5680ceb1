import { readFileSync } from 'node:fs'
import { parser } from '@prometheus-io/lezer-promql'
import t from 'tap'
import { parse } from 'yaml'
import { createMetrics, DECISIONS, FORWARD_RESULTS, OUTCOMES, RATELIMIT_RESULTS, RECONCILE_RESULTS, RELOAD_RESULTS, USERS_RESULTS } from '../src/metrics.js'
import { OPS } from '../src/protocol.js'
import { QUEUE_RESULTS } from '../src/sinks/queue.js'
import { configFile, ROOT, serveCli } from './helpers/cli.js'

interface Rule { alert: string, expr: string, for?: string, labels: Record<string, string>, annotations: Record<string, string> }
const file = parse(readFileSync(`${ROOT}config/prometheus-alerts.yml`, 'utf8')) as { groups: Array<{ name: string, rules: Rule[] }> }
const rules = file.groups.flatMap(g => g.rules)
const readme = readFileSync(`${ROOT}README.md`, 'utf8')

// what Prometheus adds to every series it scrapes, and its own metric of a target
const TARGET_LABELS = ['job', 'instance']
const PROMETHEUS_METRICS: Record<string, string[]> = { up: [] }

/** the label names of every frp_gateway_ metric, from the code that defines them (`le` for a histogram's buckets) */
const metricLabels: Record<string, string[]> = Object.fromEntries(Object.values(createMetrics(undefined, { defaults: false }))
  .map(m => m as unknown as { name?: unknown, labelNames?: readonly string[], type?: string })
  .filter((m): m is { name: string, labelNames: readonly string[], type?: string } => typeof m.name === 'string' && Array.isArray(m.labelNames))
  .flatMap(({ name, labelNames, type }) => type === 'histogram'
    ? [[`${name}_bucket`, [...labelNames, 'le']], [`${name}_count`, [...labelNames]], [`${name}_sum`, [...labelNames]]]
    : [[name, [...labelNames]]]))

/** the values each label can take, from the same code */
const VALUES: Record<string, Record<string, readonly string[]>> = {
  frp_gateway_requests_total: { op: [...OPS, 'invalid'], outcome: OUTCOMES },
  frp_gateway_step_decisions_total: { op: OPS, decision: DECISIONS },
  frp_gateway_forward_requests_total: { result: FORWARD_RESULTS },
  frp_gateway_ratelimit_decisions_total: { result: RATELIMIT_RESULTS },
  frp_gateway_users_decisions_total: { result: USERS_RESULTS },
  frp_gateway_notify_events_total: { result: QUEUE_RESULTS },
  frp_gateway_registry_reconcile_total: { result: RECONCILE_RESULTS },
  frp_gateway_config_reloads_total: { result: RELOAD_RESULTS }
}

interface Selector { metric: string, matchers: Array<{ label: string, op: string, value: string }> }
interface Parsed { errors: string[], selectors: Selector[], groupings: string[][] }

/** The expression as Prometheus's own parser (the lezer grammar its UI uses) reads it. */
function readExpr (expr: string): Parsed {
  const out: Parsed = { errors: [], selectors: [], groupings: [] }
  const text = (from: number, to: number): string => expr.slice(from, to)
  const cursor = parser.parse(expr).cursor()
  do {
    const node = cursor.node
    if (node.type.isError) out.errors.push(`at ${node.from}: ${JSON.stringify(text(Math.max(0, node.from - 10), node.to + 10))}`)
    if (node.name === 'VectorSelector') {
      const name = node.getChild('Identifier')
      const matchers = node.getChild('LabelMatchers')?.getChildren('UnquotedLabelMatcher') ?? []
      out.selectors.push({
        metric: name === null ? '' : text(name.from, name.to),
        matchers: matchers.map(m => {
          const [label, op, value] = ['LabelName', 'MatchOp', 'StringLiteral'].map(kind => { const n = m.getChild(kind); return n === null ? '' : text(n.from, n.to) })
          return { label, op, value: JSON.parse(value) as string }
        })
      })
    }
    if (node.name === 'GroupingLabels') out.groupings.push(node.getChildren('LabelName').map(n => text(n.from, n.to)))
  } while (cursor.next())
  return out
}

t.test('the rules file is Prometheus rule groups, each rule complete', async t => {
  t.ok(file.groups.length > 0)
  t.ok(rules.length >= 10)
  const names = rules.map(r => r.alert)
  t.same(new Set(names).size, names.length, 'alert names are unique')
  for (const rule of rules) {
    t.same(Object.keys(rule).filter(k => !['alert', 'expr', 'for', 'labels', 'annotations'].includes(k)), [], `${rule.alert}: only rule keys`)
    t.match(rule.alert, /^FrpGateway[A-Z][A-Za-z]+$/)
    t.ok(rule.for === undefined || /^\d+[smh]$/.test(rule.for), `${rule.alert}: for is a duration`)
    t.ok(['critical', 'warning'].includes(rule.labels.severity), `${rule.alert}: a severity`)
    t.equal(typeof rule.annotations.summary, 'string')
    t.equal(typeof rule.annotations.description, 'string')
    t.ok(readme.includes(`\`${rule.alert}\``), `${rule.alert}: the README names it`)
  }
})

t.test('every expression parses, and names only metrics, labels and values the gateway has', async t => {
  const gw = await serveCli(['--config', configFile({ listen: { port: 0 }, chain: [] })], t)
  const exported = new Set([...(await (await fetch(`${gw.url}/metrics`)).text()).matchAll(/^# TYPE (\S+) (\w+)$/gm)].flatMap(([, name, type]) =>
    type === 'histogram' ? [`${name}_bucket`, `${name}_count`, `${name}_sum`] : [name]))
  for (const rule of rules) {
    const { errors, selectors, groupings } = readExpr(rule.expr)
    t.same(errors, [], `${rule.alert}: parses`)
    t.ok(selectors.length > 0, `${rule.alert}: selects something`)
    for (const { metric, matchers } of selectors) {
      const labels = PROMETHEUS_METRICS[metric] ?? metricLabels[metric]
      t.ok(labels !== undefined && (metric in PROMETHEUS_METRICS || exported.has(metric)), `${rule.alert}: ${metric} is a metric a live gateway exports`)
      for (const { label, op, value } of matchers) {
        t.ok([...TARGET_LABELS, ...labels ?? []].includes(label), `${rule.alert}: ${metric} has a label ${label}`)
        const known = VALUES[metric]?.[label]
        if (known === undefined) continue
        const values = op === '=~' || op === '!~' ? value.split('|') : [value]
        for (const v of values) t.ok(known.includes(v), `${rule.alert}: ${label}="${v}" is a value of ${metric}`)
      }
    }
    const selected = new Set(selectors.flatMap(s => [...TARGET_LABELS, ...PROMETHEUS_METRICS[s.metric] ?? metricLabels[s.metric] ?? []]))
    for (const grouping of groupings) for (const label of grouping) t.ok(selected.has(label), `${rule.alert}: grouped by ${label}, a label of what it selects`)
    // what a template can read: the labels every aggregation keeps, or those of the series themselves
    const kept = groupings.length > 0 ? groupings.reduce((a, b) => a.filter(l => b.includes(l) && l !== 'le')) : [...selected]
    for (const text of Object.values(rule.annotations)) {
      for (const [, label] of text.matchAll(/\$labels\.(\w+)/g)) t.ok(kept.includes(label), `${rule.alert}: ${label} is a label of the alert`)
    }
  }
})

t.test('the checks catch a wrong rule: a typo in a metric, a label value, a grouping, a template', async t => {
  const wrong = readExpr('sum by (instance) (rate(frp_gateway_request_total{outcome="rejected"}[5m])) > 0')
  t.same(wrong.errors, [])
  t.equal(metricLabels[wrong.selectors[0].metric], undefined, 'no such metric')
  t.notOk(OUTCOMES.includes(wrong.selectors[0].matchers[0].value as never))
  t.not(readExpr('sum by (op (rate(frp_gateway_requests_total[5m]))').errors.length, 0, 'a syntax error is found')
  t.same(metricLabels.frp_gateway_request_duration_seconds_bucket, ['op', 'le'])
  t.same(metricLabels.frp_gateway_config_reloads_total, ['result'])
})
