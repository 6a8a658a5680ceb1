import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { loadSamples } from '../helpers/fixtures.js'
import { startGateway, configIssues, type TestGateway } from '../helpers/gateway.js'
import { timerLateness } from '../helpers/lateness.js'
import { redisCli, startRedis } from '../helpers/redis.js'

const samples = loadSamples('frps-0.64.0-requests.jsonl')
const sample = (op: string, name: string): Record<string, any> =>
  structuredClone(samples.find(s => s.body.op === op && s.body.content.proxy_name === name)?.body.content) as Record<string, any>
const ssh = (): Record<string, any> => sample('NewProxy', 'alice.ssh')
const close = (name: string, runId: string): Record<string, any> => ({ user: { user: 'alice', metas: { team: 'blue' }, run_id: runId }, proxy_name: name })

/** GET /proxies (or one user's) as the admin view answers it. */
async function view (gw: TestGateway, user?: string): Promise<{ status: number, body: any }> {
  const res = await gw.app.inject({ method: 'GET', url: user === undefined ? '/proxies' : `/proxies/${user}` })
  return { status: res.statusCode, body: res.json() }
}

/**
 * Polls the admin view until `done` holds. A commit runs right after its answer and takes a few ms
 * (30 ms across two gateways on one Redis here); the bound is wide for a loaded CI machine.
 */
async function soon (gw: TestGateway, done: (names: string[]) => boolean): Promise<string[]> {
  const until = performance.now() + 1000
  for (;;) {
    const names = (await view(gw)).body.proxies.map((p: { name: string }) => p.name)
    if (done(names) || performance.now() > until) return names
    await sleep(5)
  }
}

const REJECT_HTTP = { name: 'no-http', plugin: 'reject', ops: ['NewProxy'], when: { proxyTypes: ['http'] }, options: { reason: 'no http here' } }

t.test('every NewProxy answered allow or modify is recorded, whatever the steps; a rejected one is not', async t => {
  const gw = await startGateway(t, { registry: {}, chain: [REJECT_HTTP, { name: 'tag', plugin: 'metas', ops: ['NewProxy'], when: { proxyTypes: ['udp'] }, options: { set: { tagged: 'yes' } } }] })
  const udp = sample('NewProxy', 'alice.dns')
  t.equal((await gw.call('NewProxy', ssh())).body.unchange, true)
  t.equal((await gw.call('NewProxy', udp)).body.unchange, false, 'modified')
  t.equal((await gw.call('NewProxy', sample('NewProxy', 'alice.web'))).body.reject, true)
  t.same(await soon(gw, names => names.length >= 2), ['alice.dns', 'alice.ssh'])
  const { body } = await view(gw)
  const recorded = body.proxies.find((p: { name: string }) => p.name === 'alice.ssh')
  t.match(recorded, { user: 'alice', name: 'alice.ssh', type: 'tcp', run_id: '9a961f8f3302e589', remote_port: 27606, metas: { id: '123' } })
  t.match(recorded.registered_at, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/)
  t.same(body.proxies.find((p: { name: string }) => p.name === 'alice.dns').metas, { ...udp.metas, tagged: 'yes' }, 'the content frps acts on: the modified one')
  t.same((await view(gw, 'alice')).body.proxies.length, 2)
  t.same(await view(gw, 'bob'), { status: 200, body: { proxies: [] } })
  t.equal(await gw.metric('frp_gateway_registry_proxies'), 2)
})

t.test('CloseProxy removes a record only for its run_id; a reconnect replaces the record', async t => {
  const gw = await startGateway(t, { registry: {} })
  await gw.call('NewProxy', ssh())
  await soon(gw, names => names.length === 1)
  const again = ssh()
  again.user.run_id = 'second-session'
  await gw.call('NewProxy', again)
  t.equal((await gw.call('CloseProxy', close('alice.ssh', '9a961f8f3302e589'))).status, 200, 'a late CloseProxy of the old session')
  await sleep(50)
  const kept = (await view(gw)).body.proxies
  t.same(kept.map((p: { name: string, run_id: string }) => [p.name, p.run_id]), [['alice.ssh', 'second-session']], 'one record, of the new session')
  await gw.call('CloseProxy', close('alice.ssh', 'second-session'))
  t.same(await soon(gw, names => names.length === 0), [])
  t.equal(await gw.metric('frp_gateway_registry_proxies'), 0)
})

t.test('without the registry block the admin view says so, and nothing is recorded', async t => {
  const gw = await startGateway(t, {})
  t.same(await view(gw), { status: 404, body: { error: { code: 'FRPGW_ERR_NO_REGISTRY', message: 'no registry: the config has no top-level "registry" block' } } })
  t.equal(await gw.metric('frp_gateway_requests_total', { op: 'invalid' }), undefined, 'not a malformed call from frps')
  t.equal(gw.ref.current.commits.NewProxy.length, 0, 'no commit work for calls')
  t.equal(await gw.metric('frp_gateway_registry_proxies'), 0)
})

t.test('a registry in Redis needs the redis block', async t => {
  t.same(await configIssues(t, { registry: { store: 'redis' } }), [{ path: 'registry.store', message: 'a registry in Redis needs the top-level "redis" block' }])
  t.same((await configIssues(t, { registry: { reconcileEvery: '2d', frpsApi: { url: 'ftp://x' } } })).map(i => i.path).sort(), ['registry.frpsApi.url', 'registry.reconcileEvery'])
})

t.test('two gateways on one Redis: what one records, the other lists at once; a store away is asked again, then counted, never waited for', async t => {
  const redis = await startRedis(t)
  const config = { redis: { url: redis.url, keyPrefix: `frpgw:live-${Date.now()}:` }, registry: {} }
  const one = await startGateway(t, config)
  const two = await startGateway(t, config)
  await one.call('NewProxy', ssh())
  t.same(await soon(two, names => names.length === 1), ['alice.ssh'])
  await two.call('CloseProxy', close('alice.ssh', '9a961f8f3302e589'))
  t.same(await soon(one, names => names.length === 0), [])

  redis.pause(true)
  const started = performance.now()
  const answer = await one.call('NewProxy', ssh())
  t.equal(answer.body.unchange, true, 'the answer does not wait for the store')
  t.ok(performance.now() - started < 500, 'and comes at once')
  await sleep(600)
  redis.pause(false)
  t.same(await soon(two, names => names.length === 1), ['alice.ssh'], 'a Redis back within a few seconds gets the record: it is asked again')

  redis.pause(true)
  const other = ssh()
  other.proxy_name = 'alice.lost'
  await one.call('NewProxy', other)
  const until = performance.now() + 10_000
  while (performance.now() < until && (await one.metric('frp_gateway_commit_failures_total', { step: 'registry' })) === undefined) await sleep(200)
  t.equal(await one.metric('frp_gateway_commit_failures_total', { step: 'registry' }), 1, 'a longer outage loses the change, counted')
  const failed = one.logs.find(l => l.msg === 'commit failed' && l.step === 'registry')
  // the last attempt timed out on the connection, or found it dropped for answering nothing
  const timedOut = new RegExp(`^redis ${redis.url} (did not answer within 300 ms|is not reachable: no answer (within 300|for 600) ms.*)$`)
  t.match(failed?.err, { message: timedOut, code: 'ETIMEDOUT' }, 'and logged, naming the Redis and why')
  redis.pause(false)
})

t.test('the admin view while Redis is away: 503 saying so, not an internal error, and no call from frps counted', async t => {
  const redis = await startRedis(t)
  const gw = await startGateway(t, { redis: { url: redis.url }, registry: {} })
  await gw.call('NewProxy', ssh())
  t.same(await soon(gw, names => names.length === 1), ['alice.ssh'])
  t.equal(await gw.metric('frp_gateway_registry_proxies'), 1)
  await redis.stop()
  for (const user of [undefined, 'alice']) {
    const { status, body } = await view(gw, user)
    t.equal(status, 503)
    t.equal(body.error.code, 'FRPGW_ERR_REGISTRY_UNAVAILABLE')
    t.match(body.error.message, `the registry cannot be read: redis ${redis.url} is not reachable: `, 'naming the Redis and why')
  }
  t.equal(await gw.metric('frp_gateway_requests_total', { op: 'invalid' }), undefined)
  t.equal(await gw.metric('frp_gateway_registry_proxies'), 1, 'the gauge keeps its last value')
})

t.test('what one gateway records, another on the same Redis lists within 100 ms of the answer', async t => {
  const redis = await startRedis(t)
  const config = { redis: { url: redis.url, keyPrefix: 'frpgw:' }, registry: {} }
  const [one, two] = [await startGateway(t, config), await startGateway(t, config)]
  const took: number[] = []
  const late: Array<{ ms: number, timersLate: number }> = []
  for (let i = 0; i < 20; i++) {
    const proxy = ssh()
    proxy.proxy_name = `alice.p${i}`
    // how late this process's timers ran meanwhile: the commit is as late, on a machine too loaded to run the process when due
    const lateness = timerLateness()
    t.equal((await one.call('NewProxy', proxy)).body.unchange, true)
    const answered = performance.now()
    let listed = false
    while (!(listed = (await view(two, 'alice')).body.proxies.some((p: { name: string }) => p.name === proxy.proxy_name)) && performance.now() - answered < 10_000) {}
    const ms = performance.now() - answered
    const timersLate = lateness()
    took.push(ms)
    if (!listed || ms >= 100 + timersLate) late.push({ ms, timersLate })
  }
  t.same(late, [], `listed by the other gateway after ${Math.round(Math.min(...took))} to ${Math.round(Math.max(...took))} ms`)
})

t.test('with frpsApi, records frps does not list online go at the next reconciliation, and it is counted', async t => {
  const { createServer } = await import('node:http')
  let online = ['alice.ssh']
  const frps = createServer((req, res) => {
    const type = req.url?.split('/').pop()
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ proxies: type === 'tcp' ? online.map(name => ({ name, status: 'online' })) : [] }))
  }).listen(0, '127.0.0.1')
  await new Promise(resolve => frps.once('listening', resolve))
  t.teardown(() => { frps.closeAllConnections(); frps.close() })
  const url = `http://127.0.0.1:${(frps.address() as { port: number }).port}`
  const gw = await startGateway(t, { registry: { frpsApi: { url }, reconcileEvery: '1s' } })
  await gw.call('NewProxy', ssh())
  const other = ssh()
  other.proxy_name = 'alice.refused'
  other.remote_port = 27607
  await gw.call('NewProxy', other)
  t.same(await soon(gw, names => names.length === 2), ['alice.refused', 'alice.ssh'])
  // frps lists alice.ssh only: alice.refused goes at the first reconciliation that finds it older than one interval
  const until = performance.now() + 4000
  let names: string[] = []
  while (performance.now() < until) {
    names = (await view(gw)).body.proxies.map((p: { name: string }) => p.name)
    if (names.length === 1) break
    await sleep(100)
  }
  t.same(names, ['alice.ssh'])
  t.equal(await gw.metric('frp_gateway_registry_reconcile_removed_total'), 1)
  t.ok((await gw.metric('frp_gateway_registry_reconcile_total', { result: 'ok' }) ?? 0) >= 1, 'counted as ok')
  online = []
  frps.closeAllConnections()
  frps.close()
  await sleep(1300)
  t.ok((await gw.metric('frp_gateway_registry_reconcile_total', { result: 'error' }) ?? 0) >= 1, 'frps away: counted as an error')
  t.same((await view(gw)).body.proxies.map((p: { name: string }) => p.name), ['alice.ssh'], 'and nothing removed on a failed read')
})

t.test('trace shows what the registry would record, and records nothing', async t => {
  const { traceCall, formatTrace } = await import('../../src/trace.js')
  const gw = await startGateway(t, { registry: {}, chain: [REJECT_HTTP] })
  const log = (await import('pino')).default({ level: 'silent' })
  const traced = await traceCall(gw.ref.current, 'NewProxy', ssh(), log)
  t.same(traced.commits, ['registry: would record alice.ssh of alice (tcp, remote port 27606, run_id 9a961f8f3302e589)'])
  t.match(formatTrace(traced, new Map([['no-http', 'reject']])), /\ncommit: registry: would record alice\.ssh of alice \(tcp, remote port 27606, run_id 9a961f8f3302e589\) \(not done by trace\)\n$/)
  const rejected = await traceCall(gw.ref.current, 'NewProxy', sample('NewProxy', 'alice.web'), log)
  t.same(rejected.commits, ['registry: records nothing (the answer is reject)'])
  await sleep(50)
  t.same((await view(gw)).body.proxies, [], 'trace recorded nothing')
})

t.test('a reconnect: the old session\'s late CloseProxy, with the run_id frpc kept, leaves the new session\'s record', async t => {
  const gw = await startGateway(t, { registry: {} })
  const login = structuredClone(samples.find(s => s.body.op === 'Login')?.body.content) as Record<string, any>
  login.user = 'alice'
  login.run_id = '9a961f8f3302e589' // a reconnect: frpc sends the run_id it had
  await gw.call('NewProxy', ssh())
  await soon(gw, names => names.length === 1)
  // frps's order as it usually comes: the old session's close, the reconnect Login, the new NewProxy...
  await gw.call('CloseProxy', close('alice.ssh', '9a961f8f3302e589'))
  t.same(await soon(gw, names => names.length === 0), [])
  await gw.call('Login', login)
  await sleep(50)
  await gw.call('NewProxy', ssh())
  await soon(gw, names => names.length === 1)
  // ...and as it can come: a close of the old session after the new session's NewProxy
  await gw.call('CloseProxy', close('alice.ssh', '9a961f8f3302e589'))
  await sleep(100)
  t.same((await view(gw)).body.proxies.map((p: { name: string }) => p.name), ['alice.ssh'], 'the live proxy still counts')
  const { traceCall } = await import('../../src/trace.js')
  const log = (await import('pino')).default({ level: 'silent' })
  t.match((await traceCall(gw.ref.current, 'Login', login, log)).commits, [/^registry: would note a reconnect of run_id 9a961f8f3302e589: for 5 s/])
})

t.test('GET /proxies/USER for a user name of any length a request line allows (fastify cut params at 100)', async t => {
  const gw = await startGateway(t, { registry: {}, chain: [] })
  const user = 'u'.repeat(5000)
  const opened = ssh()
  opened.user.user = user
  opened.proxy_name = `${user}.ssh`
  t.equal((await gw.call('NewProxy', opened)).status, 200)
  await gw.ref.current.drain()
  const res = await view(gw, user)
  t.equal(res.status, 200)
  t.same(res.body.proxies.map((p: { name: string }) => p.name), [`${user}.ssh`])
})

t.test('a remote_port frps could not open (over 65535) is recorded without a port, and the port table holds none of it', async t => {
  const gw = await startGateway(t, { registry: {}, chain: [] })
  for (const [i, port] of [70_000, 1e15].entries()) {
    const opened = ssh()
    opened.proxy_name = `alice.odd${i}`
    opened.remote_port = port
    t.equal((await gw.call('NewProxy', opened)).status, 200)
  }
  await gw.ref.current.drain()
  const { body } = await view(gw, 'alice')
  t.same(body.proxies.map((p: { name: string, remote_port?: number }) => [p.name, p.remote_port]), [['alice.odd0', undefined], ['alice.odd1', undefined]])
  t.equal(await gw.ref.current.registry?.store.portOwner(70_000), undefined)
})

t.test('a stop cuts a read of frps\'s API that hangs: the runtime closes at once, no failed reconciliation counted', async t => {
  const { createServer } = await import('node:http')
  let asked = 0
  const frps = createServer(() => { asked++ }).listen(0, '127.0.0.1')
  await new Promise(resolve => frps.once('listening', resolve))
  t.teardown(() => { frps.closeAllConnections(); frps.close() })
  const url = `http://127.0.0.1:${(frps.address() as { port: number }).port}`
  const gw = await startGateway(t, { registry: { frpsApi: { url }, reconcileEvery: '1s' } })
  for (const until = performance.now() + 5000; asked === 0 && performance.now() < until;) await sleep(20)
  t.equal(asked, 1, 'a reconciliation is reading')
  const started = performance.now()
  await gw.ref.current.close()
  const took = performance.now() - started
  t.ok(took < 1000, `closed in ${Math.round(took)} ms (the read's own bound is 5 s)`)
  t.equal(await gw.metric('frp_gateway_registry_reconcile_total', { result: 'error' }) ?? 0, 0, 'a read cut by the stop is no failure')
})

t.test('a record in Redis that no gateway wrote hides no other: /proxies lists the rest, the record is named once in a warning', async t => {
  const redis = await startRedis(t)
  const gw = await startGateway(t, { redis: { url: redis.url, keyPrefix: 'gw:' }, registry: { store: 'redis' }, chain: [] })
  t.equal((await gw.call('NewProxy', ssh())).status, 200)
  await gw.ref.current.drain()
  await redisCli(redis.port, 'HSET', 'gw:reg:{bob}:proxies', 'bob.x', 'null')
  await redisCli(redis.port, 'SADD', 'gw:reg:users', 'bob')
  const res = await view(gw)
  t.equal(res.status, 200)
  t.same(res.body.proxies.map((p: { name: string }) => p.name), ['alice.ssh'])
  t.same(gw.logs.filter(l => l.msg === 'registry record unreadable: skipped').map(l => l.where), ['gw:reg:{bob}:proxies field "bob.x"'])
})

t.test('the commits of one proxy keep their order: a record still retried through a Redis outage is not written after its CloseProxy', async t => {
  const redis = await startRedis(t)
  const gw = await startGateway(t, { redis: { url: redis.url, keyPrefix: `frpgw:order-${Date.now()}:` }, registry: {} })
  await redis.stop()
  const opened = performance.now()
  const at = async (ms: number): Promise<void> => { await sleep(Math.max(0, ms - (performance.now() - opened))) }
  // the record is tried at 0, 0.1, 0.3, 0.7, 1.5 and 3.1 s; the close comes after its fifth try, and Redis
  // back before the close's fourth (0.75 s later): without an order, the removal found nothing, then the record came
  await gw.call('NewProxy', ssh())
  await at(1550)
  await gw.call('CloseProxy', close('alice.ssh', '9a961f8f3302e589'))
  await redis.start()
  await at(4500)
  t.same((await view(gw)).body.proxies, [], 'the proxy opened and closed is not listed')
  t.equal(await gw.metric('frp_gateway_registry_proxies'), 0)
  await sleep(1000)
  t.same((await view(gw)).body.proxies, [], 'nor later')
})
