import { writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import t from 'tap'
import { createLogger } from '../../src/log.js'
import { formatTrace, traceCall } from '../../src/trace.js'
import { configFile, runCli } from '../helpers/cli.js'
import { configIssues, startGateway } from '../helpers/gateway.js'
import { answer, newProxy, quotaStep, recorded, runQuotaSuite } from './quota-suite.js'

runQuotaSuite(t, 'the memory registry', async () => () => ({}))

t.test('check refuses a quota step without the registry block, and one without any limit, saying why', async t => {
  t.same(await configIssues(t, { chain: [quotaStep({ maxProxies: 3 })] }), [
    { path: 'chain[0].options', message: 'plugin quota needs the top-level "registry" block: {"store": "auto"}' }
  ])
  t.same(await configIssues(t, { registry: {}, chain: [quotaStep({})] }), [
    { path: 'chain[0].options', message: 'expected at least one limit: maxProxies, maxProxiesPerClient, maxPorts, or fromUsers: true' }
  ])
  t.same(await configIssues(t, { registry: {}, chain: [quotaStep({ fromUsers: true })] }), [
    { path: 'chain[0].options.fromUsers', message: 'fromUsers needs the top-level "users" block: {"file": "users.json"} or {"redis": {}}' }
  ])
  const bad = await configIssues(t, { registry: {}, chain: [quotaStep({ maxProxies: -1, maxPorts: 70000, maxProxiesPerClient: 1.5, reason: '{{retry_after}}', perUser: true })] })
  t.same(bad.map(i => `${i.path}: ${i.message}`).sort(), [
    'chain[0].options.maxPorts: expected an integer from 0 to 65535',
    'chain[0].options.maxProxies: expected an integer from 0 to 100000',
    'chain[0].options.maxProxiesPerClient: expected an integer from 0 to 100000',
    'chain[0].options.perUser: unknown key'
  ])
  const reason = await configIssues(t, { registry: {}, chain: [quotaStep({ maxProxies: 1, reason: 'retry in {{retry_after}}' })] })
  t.match(reason, [{ path: 'chain[0].options.reason', message: /^unknown template name \{\{retry_after\}\}: expected one of .*count, limit, which, counted/ }])

  const res = await runCli(['check', '--config', configFile({ chain: [{ name: 'tunnels', plugin: 'quota', options: { maxProxies: 3 } }] })])
  t.equal(res.code, 1)
  t.match(res.stderr, /\n {2}chain\[0\]\.options: plugin quota needs the top-level "registry" block: \{"store": "auto"\}\n/)
  const ok = await runCli(['check', '--config', configFile({ registry: {}, chain: [{ name: 'tunnels', plugin: 'quota', options: { maxProxies: 3 } }] })])
  t.equal(ok.code, 0, ok.stderr)
  t.match(ok.stdout, /NewProxy: +tunnels \(quota\) -> \(after the answer: registry\)\n/)
})

t.test('fromUsers: the user\'s own maxProxies wins over the step\'s; users without one get the step\'s', async t => {
  const file = configFile({ users: { alice: { maxProxies: 1 }, bob: { maxProxies: 3 }, carol: {} } }, 'users.json')
  writeFileSync(join(dirname(file), 'gateway.json'), '{}')
  const gw = await startGateway(t, { users: { file }, registry: {}, chain: [quotaStep({ maxProxies: 2, fromUsers: true })] })
  const as = (user: string, type: 'tcp' | 'udp' | 'http', name: string): Record<string, any> => {
    const c = newProxy(type, `${user}.${name}`)
    c.user.user = user
    return c
  }
  t.equal(await answer(gw, as('alice', 'tcp', 'a')), 'allow')
  t.equal(await answer(gw, as('alice', 'udp', 'b')), 'alice has 1 proxy, the limit is 1 (maxProxies)', 'alice\'s record: 1, below the step\'s 2')
  for (const name of ['a', 'b', 'c']) t.equal(await answer(gw, as('bob', 'http', name)), 'allow')
  t.equal(await answer(gw, as('bob', 'http', 'd')), 'bob has 3 proxies, the limit is 3 (maxProxies)', 'bob\'s record: 3, above the step\'s 2')
  t.equal(await answer(gw, as('carol', 'http', 'a')), 'allow')
  t.equal(await answer(gw, as('carol', 'http', 'b')), 'allow')
  t.equal(await answer(gw, as('carol', 'http', 'c')), 'carol has 2 proxies, the limit is 2 (maxProxies)', 'no maxProxies in the record: the step\'s')
  t.equal(await answer(gw, as('dave', 'http', 'a')), 'allow', 'a user the table does not know: the step\'s')
  t.equal(await answer(gw, as('dave', 'http', 'b')), 'allow')
  t.equal(await answer(gw, as('dave', 'http', 'c')), 'dave has 2 proxies, the limit is 2 (maxProxies)')
})

t.test('with a users block and fromUsers not given, the records\' maxProxies apply; fromUsers: false leaves them out', async t => {
  const file = configFile({ users: { alice: { maxProxies: 1 } } }, 'users.json')
  const byDefault = await startGateway(t, { users: { file }, registry: {}, chain: [quotaStep({ maxProxies: 5 })] })
  t.equal(await answer(byDefault, newProxy('http', 'alice.a')), 'allow')
  t.equal(await answer(byDefault, newProxy('http', 'alice.b')), 'alice has 1 proxy, the limit is 1 (maxProxies)', 'the record\'s 1, not the step\'s 5')
  const left = await startGateway(t, { users: { file }, registry: {}, chain: [quotaStep({ maxProxies: 5, fromUsers: false })] })
  for (const name of ['a', 'b', 'c']) t.equal(await answer(left, newProxy('http', `alice.${name}`)), 'allow', `fromUsers false: the step's 5 (${name})`)
  const none = await startGateway(t, { registry: {}, chain: [quotaStep({ maxProxies: 1 })] })
  t.equal(await answer(none, newProxy('http', 'alice.a')), 'allow', 'no users block: the step\'s limit alone')
  t.equal(await answer(none, newProxy('http', 'alice.b')), 'alice has 1 proxy, the limit is 1 (maxProxies)')
})

t.test('fromUsers alone: a user without maxProxies has no limit', async t => {
  const file = configFile({ users: { alice: {} } }, 'users.json')
  const gw = await startGateway(t, { users: { file }, registry: {}, chain: [quotaStep({ fromUsers: true })] })
  for (const name of ['a', 'b', 'c', 'd']) t.equal(await answer(gw, newProxy('http', `alice.${name}`)), 'allow')
  t.same(await recorded(gw), ['alice.a@9a961f8f3302e589', 'alice.b@9a961f8f3302e589', 'alice.c@9a961f8f3302e589', 'alice.d@9a961f8f3302e589'])
})

t.test('trace shows the release a rejected call would do, and the step\'s decision by its limit', async t => {
  const gw = await startGateway(t, {
    registry: {},
    chain: [quotaStep({ maxProxies: 2 }), { name: 'no-http', plugin: 'reject', ops: ['NewProxy'], when: { proxyTypes: ['http'] }, options: { reason: 'no http here' } }]
  })
  const log = createLogger({ level: 'silent', redact: [], repeatIntervalMs: 0 })
  t.equal(await answer(gw, newProxy('tcp')), 'allow')
  await gw.ref.current.drain()
  // trace runs the steps as a call does: its reservation is real, and ends at the deadline since trace commits nothing
  const rejected = await traceCall(gw.ref.current, 'NewProxy', newProxy('http'), log)
  t.same(rejected.commits, [
    'quota: would release the reservation of alice.web (run_id 9a961f8f3302e589) this call holds',
    'registry: records nothing (the answer is reject)'
  ])
  const refused = await traceCall(gw.ref.current, 'NewProxy', newProxy('udp'), log)
  t.same(refused.commits, ['registry: records nothing (the answer is reject)'], 'the quota step refused: it reserved nothing, there is nothing to release')
  t.match(formatTrace(refused, new Map([['quota', 'quota'], ['no-http', 'reject']])),
    /1\. quota \(quota\): reject in [\d.]+ ms: alice has 2 proxies, the limit is 2 \(maxProxies\) \(rule maxProxies\)\n/)
  const allowed = await traceCall(gw.ref.current, 'NewProxy', newProxy('tcp'), log)
  t.same(allowed.commits, ['registry: would record alice.ssh of alice (tcp, remote port 27606, run_id 9a961f8f3302e589)'], 'a reconnect: allowed, nothing to release')
})

t.test('on the memory registry, quota and ports answer at once: the call stays synchronous, with no promise or deadline timer', async t => {
  const gw = await startGateway(t, {
    registry: { store: 'memory' },
    chain: [quotaStep({ maxProxies: 1 }), { name: 'ports', plugin: 'ports', options: { mode: 'sticky', range: ['42000-42001'] } }]
  })
  const silent = createLogger({ level: 'silent', redact: [], repeatIntervalMs: 0 })
  const first = gw.ref.current.call('NewProxy', newProxy('tcp', 'alice.a'), performance.now(), 'r1', silent).result
  t.notOk(first instanceof Promise)
  t.match(first, { outcome: 'modify', content: { remote_port: 42000 } })
  const second = gw.ref.current.call('NewProxy', newProxy('tcp', 'alice.b'), performance.now(), 'r2', silent).result
  t.notOk(second instanceof Promise)
  t.match(second, { outcome: 'reject', step: 'quota', reason: 'alice has 1 proxy, the limit is 1 (maxProxies)' }, 'the first call\'s reservation counts')
})
