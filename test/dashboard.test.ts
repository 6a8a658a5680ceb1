import { readFileSync } from 'node:fs'
import t from 'tap'
import { configFile, ROOT, serveCli } from './helpers/cli.js'

const dashboard = JSON.parse(readFileSync(`${ROOT}config/grafana-dashboard.json`, 'utf8'))
const exprs: string[] = dashboard.panels.flatMap((p: { targets: Array<{ expr: string }> }) => p.targets.map(target => target.expr))

t.test('the dashboard is importable Grafana JSON', async t => {
  t.equal(typeof dashboard.title, 'string')
  t.equal(typeof dashboard.uid, 'string')
  t.ok(Number.isInteger(dashboard.schemaVersion) && dashboard.schemaVersion >= 30, 'a current schemaVersion')
  t.same(dashboard.__inputs.map((i: { name: string, pluginId: string }) => [i.name, i.pluginId]), [['DS_PROMETHEUS', 'prometheus']])
  const ids = new Set<number>()
  for (const panel of dashboard.panels) {
    t.ok(['timeseries', 'stat'].includes(panel.type), `${panel.title}: a known panel type`)
    t.equal(panel.datasource.uid, '${DS_PROMETHEUS}', `${panel.title}: uses the imported datasource`)
    t.ok(panel.gridPos.w > 0 && panel.gridPos.h > 0, `${panel.title}: has a size`)
    t.notOk(ids.has(panel.id), `${panel.title}: a unique id`)
    ids.add(panel.id)
    t.ok(panel.targets.length > 0, `${panel.title}: has a query`)
  }
  const titles = dashboard.panels.map((p: { title: string }) => p.title)
  for (const wanted of ['Calls per op and outcome', 'Latency per op (p50, p99)', 'Step decisions', 'Forward errors', 'Rate-limit decisions', 'Redis up', 'Users decisions', 'Proxies in the registry', 'Work after answers: failures', 'Registry reconciliation']) {
    t.ok(titles.includes(wanted), `has "${wanted}"`)
  }
})

t.test('every query names a metric a live gateway exports', async t => {
  const gw = await serveCli(['--config', configFile({ listen: { port: 0 }, chain: [] })], t)
  const text = await (await fetch(`${gw.url}/metrics`)).text()
  const exported = new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map(m => m[1]))
  const named = new Set(exprs.flatMap(e => [...e.matchAll(/\b((?:frp_gateway|process|nodejs)_[a-z0-9_]+)/g)].map(m => m[1].replace(/_(bucket|sum|count)$/, ''))))
  t.ok(named.size >= 8, `queries name ${named.size} metrics`)
  for (const name of named) t.ok(exported.has(name), `${name} is exported`)
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
})
