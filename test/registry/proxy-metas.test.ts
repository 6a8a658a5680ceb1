import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import pino from 'pino'
import t, { type Test } from 'tap'
import { describeChains } from '../../src/runtime.js'
import { formatTrace, traceCall } from '../../src/trace.js'
import { loadSamples } from '../helpers/fixtures.js'
import { configFile, runCli } from '../helpers/cli.js'
import { configIssues, startGateway, type TestGateway } from '../helpers/gateway.js'
import { startRedis, startRedisCluster } from '../helpers/redis.js'

// frps sends no proxy metas with NewUserConn and CloseProxy: a visitor rule per proxy reads the registry's record
const samples = loadSamples('frps-0.64.0-requests.jsonl')
const sample = (op: string, name: string): Record<string, any> =>
  structuredClone(samples.find(s => s.body.op === op && s.body.content.proxy_name === name)?.body.content) as Record<string, any>
const RUN_ID = '9a961f8f3302e589'
/** NewProxy of a recorded proxy, with these proxy metas (none: no metas at all) and run_id. */
function newProxy (name: string, metas?: Record<string, string>, runId = RUN_ID): Record<string, any> {
  const content = sample('NewProxy', name)
  delete content.metas
  if (metas !== undefined) content.metas = metas
  content.user.run_id = runId
  return content
}
/** NewUserConn of a visitor of the proxy: frps sends the proxy's client (its owner's run_id), not the visitor's. */
const visit = (name: string, runId = RUN_ID): Record<string, any> => ({ ...sample('NewUserConn', name), user: { ...sample('NewUserConn', name).user, run_id: runId } })
const closeOf = (name: string, runId = RUN_ID): Record<string, any> => ({ ...sample('CloseProxy', 'alice.private'), proxy_name: name, user: { user: 'alice', metas: { team: 'blue', token: 'abc' }, run_id: runId } })
const silent = pino({ level: 'silent' })

// the visitor rules, as an operator would write them (README, `when.proxyMetas`)
const CLOSED = {
  name: 'closed',
  plugin: 'reject',
  ops: ['NewUserConn'],
  when: { proxyMetas: { visitors: 'none' } },
  options: { reason: '{{proxy_name}} takes no visitors (owner {{proxy_metas.owner}})' }
}
const LISTED = {
  name: 'listed',
  plugin: 'reject',
  ops: ['NewUserConn'],
  when: { not: { proxyMetas: { visitors: ['all', 'friends'] } } },
  options: { reason: '{{proxy_name}}: visitors="{{proxy_metas.visitors}}" admits no one' }
}
const CLOSING = { name: 'closing', plugin: 'reject', ops: ['CloseProxy'], when: { proxyMetas: { visitors: 'none' } } }
const OWN = { name: 'own', plugin: 'reject', ops: ['NewProxy'], when: { proxyMetas: { visitors: 'bogus' } }, options: { reason: 'visitors={{proxy_metas.visitors}} is not a rule' } }
const CHAIN = [OWN, CLOSED, LISTED, CLOSING]

/** Waits until the registry holds (user alice, name) with that run_id (or holds none: undefined). */
async function recorded (gw: TestGateway, name: string, runId: string | undefined): Promise<void> {
  const until = performance.now() + 3000
  for (;;) {
    const res = await gw.app.inject({ method: 'GET', url: '/proxies/alice' })
    const record = res.json().proxies.find((p: { name: string }) => p.name === name)
    if (record?.run_id === runId || performance.now() > until) return
    await sleep(5)
  }
}

const answer = async (gw: TestGateway, op: string, content: unknown): Promise<string> => {
  const { body } = await gw.call(op, content)
  return body.reject === true ? `reject: ${body.reject_reason as string}` : body.unchange === true ? 'allow' : 'modify'
}

async function visitorRules (t: Test, config: Record<string, unknown>): Promise<void> {
  const gw = await startGateway(t, { ...config, chain: CHAIN })
  t.same([...gw.ref.current.readsProxy].sort(), ['CloseProxy', 'NewUserConn'], 'the ops that read the registry before their chain')

  t.equal(await answer(gw, 'NewProxy', newProxy('alice.ssh', { visitors: 'bogus' })), 'reject: visitors=bogus is not a rule', 'NewProxy reads its own metas')
  t.equal(await answer(gw, 'NewProxy', newProxy('alice.ssh', { visitors: 'none', owner: 'ops' })), 'allow')
  t.equal(await answer(gw, 'NewProxy', newProxy('alice.secure', { visitors: 'all' })), 'allow')
  await recorded(gw, 'alice.ssh', RUN_ID)
  await recorded(gw, 'alice.secure', RUN_ID)

  t.equal(await answer(gw, 'NewUserConn', visit('alice.ssh')), 'reject: alice.ssh takes no visitors (owner ops)', 'the rule and the template read the registry')
  t.equal(await answer(gw, 'NewUserConn', visit('alice.secure')), 'allow', 'another proxy of the same user, its own metas')
  t.equal(await answer(gw, 'NewUserConn', visit('alice.mux')), 'reject: alice.mux: visitors="" admits no one', 'a proxy unknown to the registry has no metas')

  // a reconnect (new run_id) replaces the record and its metas, not merges them
  t.equal(await answer(gw, 'NewProxy', newProxy('alice.ssh', { visitors: 'friends' }, 'second-session')), 'allow')
  await recorded(gw, 'alice.ssh', 'second-session')
  t.equal(await answer(gw, 'NewUserConn', visit('alice.ssh', 'second-session')), 'allow', 'the new metas hold')
  t.equal(await answer(gw, 'NewProxy', newProxy('alice.ssh', undefined, 'third-session')), 'allow')
  await recorded(gw, 'alice.ssh', 'third-session')
  t.equal(await answer(gw, 'NewUserConn', visit('alice.ssh', 'third-session')), 'reject: alice.ssh: visitors="" admits no one', 'no metas now: the old ones are gone')

  // a second frpc with the same user and proxy name: the gateway allows and records its NewProxy, frps refuses it ("proxy
  // already exists") and says nothing; visitors still reach the first frpc's proxy, and frps names that client
  t.equal(await answer(gw, 'NewProxy', newProxy('alice.private', { visitors: 'none', owner: 'ops' }, 'first-frpc')), 'allow')
  t.equal(await answer(gw, 'NewProxy', newProxy('alice.private', { visitors: 'all' }, 'second-frpc')), 'allow')
  await recorded(gw, 'alice.private', 'second-frpc')
  t.equal(await answer(gw, 'NewUserConn', visit('alice.private', 'first-frpc')), 'reject: alice.private: visitors="" admits no one',
    'the refused proxy\'s metas do not admit visitors of the open one: a record of another client counts as none')
  t.equal(await answer(gw, 'NewUserConn', visit('alice.private', 'second-frpc')), 'allow', 'its own client\'s record is read as before')

  // CloseProxy reads the record of the proxy it closes, before the commit removes it
  t.equal(await answer(gw, 'NewProxy', newProxy('alice.mux', { visitors: 'none' })), 'allow')
  await recorded(gw, 'alice.mux', RUN_ID)
  t.equal(await answer(gw, 'CloseProxy', closeOf('alice.mux')), 'allow', 'frps ignores the CloseProxy answer')
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'CloseProxy', step: 'closing', decision: 'reject' }), 1, 'the step held on the record')
  await recorded(gw, 'alice.mux', undefined)
  t.equal(await answer(gw, 'NewUserConn', visit('alice.mux')), 'reject: alice.mux: visitors="" admits no one', 'closed: the record is gone')
  await answer(gw, 'CloseProxy', closeOf('alice.mux'))
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'CloseProxy', step: 'closing', decision: 'reject' }), 1, 'no record: the condition does not hold')
  t.equal(await gw.metric('frp_gateway_requests_total', { op: 'NewUserConn', outcome: 'error' }), undefined, 'no call failed')
}

t.test('visitor rules per proxy: memory registry', async t => {
  await visitorRules(t, { registry: {} })
})

t.test('visitor rules per proxy: Redis standalone', async t => {
  const redis = await startRedis(t)
  await visitorRules(t, { redis: { url: redis.url, keyPrefix: `frpgw:${randomUUID()}:` }, registry: {} })
})

t.test('visitor rules per proxy: Redis Cluster', async t => {
  const cluster = await startRedisCluster(t)
  await visitorRules(t, { redis: { cluster: cluster.urls, keyPrefix: `frpgw:${randomUUID()}:` }, registry: {} })
})

t.test('Redis stopped: allow skips the steps that read the registry, reject answers an error naming it; other ops never read it', async t => {
  const redis = await startRedis(t)
  const base = { redis: { url: redis.url, keyPrefix: `frpgw:${randomUUID()}:` } }
  const chain = [...CHAIN, { name: 'login', plugin: 'reject', ops: ['Login'], when: { users: ['mallory'] } }]
  const allow = await startGateway(t, { ...base, registry: {}, chain })
  const reject = await startGateway(t, { ...base, registry: { onStoreError: 'reject' }, chain })
  await allow.call('NewProxy', newProxy('alice.ssh', { visitors: 'none', owner: 'ops' }))
  await recorded(reject, 'alice.ssh', RUN_ID)
  t.equal(await answer(reject, 'NewUserConn', visit('alice.ssh')), 'reject: alice.ssh takes no visitors (owner ops)', 'both read one Redis')

  await redis.stop()
  t.equal(await answer(allow, 'NewUserConn', visit('alice.ssh')), 'allow', 'allow: a when that reads the registry does not hold, even under not')
  t.equal(await allow.metric('frp_gateway_step_decisions_total', { op: 'NewUserConn', step: 'listed', decision: 'reject' }), undefined, 'listed (not proxyMetas) did not run')
  t.ok(allow.logs.some(l => l.msg === 'registry read failed' && l.step === 'registry'), 'logged')

  t.equal(await answer(reject, 'NewUserConn', visit('alice.ssh')), 'reject: frp-plugin-gateway: the registry cannot be read')
  t.equal(await reject.metric('frp_gateway_requests_total', { op: 'NewUserConn', outcome: 'error' }), 1, 'counted as an error')
  t.ok(reject.logs.some(l => l.msg === 'call' && l.outcome === 'error' && l.step === 'registry'), 'the call line names the registry')
  t.equal(await answer(reject, 'CloseProxy', closeOf('alice.ssh')), 'allow', 'CloseProxy: frps ignores its answer')
  t.equal(await reject.metric('frp_gateway_requests_total', { op: 'CloseProxy', outcome: 'allow' }), 1)

  const login = samples.find(s => s.body.op === 'Login')?.body.content
  t.equal(await answer(reject, 'Login', login), 'allow', 'a chain that reads no proxy metas does not touch the registry')
  t.equal(await answer(reject, 'NewProxy', newProxy('alice.web', { visitors: 'all' })), 'allow', 'NewProxy reads its own metas: the store is not asked')
  t.equal(await answer(reject, 'NewProxy', newProxy('alice.web', { visitors: 'bogus' })), 'reject: visitors=bogus is not a rule')
})

t.test('the registry read counts in the call\'s deadline: past it, an error answer', async t => {
  const redis = await startRedis(t)
  const gw = await startGateway(t, { redis: { url: redis.url, keyPrefix: `frpgw:${randomUUID()}:` }, registry: {}, deadlineMs: 100, chain: [CLOSED, CLOSING] })
  redis.pause(true)
  t.teardown(() => redis.pause(false))
  // Redis's own command timeout is 300 ms, which would be a store failure (allowed under onStoreError allow)
  t.equal(await answer(gw, 'NewUserConn', visit('alice.ssh')), 'reject: frp-plugin-gateway: deadline exceeded reading the registry')
  t.equal(await gw.metric('frp_gateway_requests_total', { op: 'NewUserConn', outcome: 'error' }), 1)
  t.equal(await answer(gw, 'CloseProxy', closeOf('alice.ssh')), 'allow')
  t.ok(gw.logs.some(l => l.msg === 'deadline exceeded' && l.step === 'registry'))
})

t.test('a template alone reading proxy_metas on NewUserConn reads the registry; a chain without them reads nothing and stays synchronous', async t => {
  const gw = await startGateway(t, {
    registry: {},
    chain: [
      { name: 'owner', plugin: 'reject', ops: ['NewUserConn'], when: { proxyNames: ['alice.ssh'] }, options: { reason: 'ask {{proxy_metas.owner}}' } },
      { name: 'tag', plugin: 'metas', ops: ['NewProxy'], options: { set: { tier: '{{proxy_metas.tier}}-x' } } }
    ]
  })
  t.same([...gw.ref.current.readsProxy], ['NewUserConn'], 'NewProxy reads its own metas: no registry read there')
  const { body } = await gw.call('NewProxy', newProxy('alice.ssh', { owner: 'ops', tier: 'gold' }))
  t.same(body.content.metas, { owner: 'ops', tier: 'gold-x' })
  await recorded(gw, 'alice.ssh', RUN_ID)
  t.equal(await answer(gw, 'NewUserConn', visit('alice.ssh')), 'reject: ask ops')

  const without = await startGateway(t, { chain: [{ name: 'owner', plugin: 'reject', ops: ['NewUserConn'], options: { reason: 'ask [{{proxy_metas.owner}}]' } }] })
  t.equal(without.ref.current.readsProxy.size, 0, 'without the registry block no read')
  t.equal(await answer(without, 'NewUserConn', visit('alice.ssh')), 'reject: ask []', 'and the template renders empty')

  const plain = await startGateway(t, { registry: {}, chain: [{ name: 'v', plugin: 'reject', ops: ['NewUserConn', 'CloseProxy'], when: { remoteCidrs: ['10.0.0.0/8'] } }] })
  t.equal(plain.ref.current.readsProxy.size, 0)
  const { result } = plain.ref.current.call('NewUserConn', visit('alice.ssh'), performance.now(), 'r', silent)
  t.same(result, { outcome: 'allow' }, 'answered synchronously: no registry read, no await')
})

t.test('check: proxyMetas needs the registry block and ops that carry a proxy; check shows the read', async t => {
  t.same(await configIssues(t, { chain: [CLOSED] }), [{
    path: 'chain[0].when.proxyMetas',
    message: 'frps sends no proxy metas with NewUserConn and CloseProxy, the registry keeps them: this needs the top-level "registry" block: {"store": "auto"}'
  }])
  t.same(await configIssues(t, { chain: [{ ...LISTED, ops: undefined }] }), [{
    path: 'chain[0].when.not.proxyMetas',
    message: 'the step runs on Login, Ping, NewWorkConn, which carry no proxy: set its "ops" to some of NewProxy, NewUserConn, CloseProxy; ' +
      'frps sends no proxy metas with NewUserConn and CloseProxy, the registry keeps them: this needs the top-level "registry" block: {"store": "auto"}'
  }])
  t.same(await configIssues(t, { registry: {}, chain: [{ ...CLOSED, ops: ['Login', 'NewUserConn'] }] }), [{
    path: 'chain[0].when.proxyMetas', message: 'the step runs on Login, which carries no proxy: set its "ops" to some of NewProxy, NewUserConn, CloseProxy'
  }])
  t.same(await configIssues(t, { registry: {}, chain: [{ ...CLOSED, when: { proxyMetas: { visitors: [], owner: 1, ok: ['a'] } } }] }), [
    { path: 'chain[0].when.proxyMetas.visitors', message: 'expected a string or a non-empty list of strings' },
    { path: 'chain[0].when.proxyMetas.owner', message: 'expected a string or a non-empty list of strings' }
  ])

  const res = await runCli(['check', '--config', configFile({ chain: [CLOSED] })])
  t.equal(res.code, 1)
  t.match(res.stderr, /chain\[0\]\.when\.proxyMetas: frps sends no proxy metas with NewUserConn and CloseProxy/)

  const gw = await startGateway(t, { registry: {}, chain: CHAIN })
  const lines = describeChains(gw.ref.current).split('\n')
  t.equal(lines.find(l => l.startsWith('NewUserConn:')), "NewUserConn: (registry: the proxy's metas) -> closed (reject; when proxyMetas) -> listed (reject; when not)")
  t.equal(lines.find(l => l.startsWith('NewProxy:')), 'NewProxy:    own (reject; when proxyMetas) -> (after the answer: registry)')
  t.equal(lines.find(l => l.startsWith('Login:')), 'Login:       (no steps: allowed unchanged) -> (after the answer: registry)', 'an op frps must send though no step runs on it')
  t.equal(lines.find(l => l.startsWith('Ping:')), 'Ping:        (no steps: allowed unchanged)')
})

t.test('trace shows the record read, or that there is none, or why it could not be read', async t => {
  const redis = await startRedis(t)
  const gw = await startGateway(t, { redis: { url: redis.url, keyPrefix: `frpgw:${randomUUID()}:` }, registry: {}, chain: CHAIN })
  const plugins = new Map(CHAIN.map(s => [s.name, s.plugin]))
  await gw.call('NewProxy', newProxy('alice.ssh', { visitors: 'none', owner: 'ops', token: 'hush' }))
  await recorded(gw, 'alice.ssh', RUN_ID)
  const found = formatTrace(await traceCall(gw.ref.current, 'NewUserConn', visit('alice.ssh'), silent), plugins)
  t.match(found, /^trace NewUserConn\n {2}registry: alice\.ssh of alice: tcp, remote port 27606, run_id 9a961f8f3302e589, metas \{"visitors":"none","owner":"ops","token":"\[redacted\]"\}, registered \d{4}-\d\d-\d\dT[\d:.]+Z \(read in [\d.]+ ms\)\n {2}1\. closed \(reject\): reject in [\d.]+ ms: alice\.ssh takes no visitors \(owner ops\)\n/)

  const none = formatTrace(await traceCall(gw.ref.current, 'NewUserConn', visit('alice.secure'), silent), plugins)
  t.match(none, /\n {2}registry: alice\.secure of alice: no record \(read in [\d.]+ ms\): its proxy metas are empty\n {2}1\. closed \(reject\): skipped, when\.proxyMetas does not hold\n {2}2\. listed \(reject\): reject in/)

  await redis.stop()
  const failed = formatTrace(await traceCall(gw.ref.current, 'NewUserConn', visit('alice.ssh'), silent), plugins)
  t.match(failed, /\n {2}registry: alice\.ssh of alice not read in [\d.]+ ms: cause: .+\n {2}1\. closed \(reject\): skipped, when\.proxyMetas does not hold\n {2}2\. listed \(reject\): skipped, when\.proxyMetas does not hold\noutcome: allow\n/)
})

t.test("README's visitor rule does what the README says", async t => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
  const block = /A visitor rule per proxy[\s\S]*?```json\n([\s\S]*?)```/.exec(readme)?.[1]
  if (block === undefined) throw new Error('README has no visitor rule example')
  const gw = await startGateway(t, { registry: {}, chain: [JSON.parse(block)] })
  await gw.call('NewProxy', newProxy('alice.ssh', { visitors: 'none' }))
  await gw.call('NewProxy', newProxy('alice.secure', { visitors: 'friends' }))
  await recorded(gw, 'alice.ssh', RUN_ID)
  await recorded(gw, 'alice.secure', RUN_ID)
  t.equal(await answer(gw, 'NewUserConn', visit('alice.ssh')), 'reject: alice.ssh takes no visitors (visitors="none")')
  t.equal(await answer(gw, 'NewUserConn', visit('alice.secure')), 'allow')
  t.equal(await answer(gw, 'NewUserConn', visit('alice.mux')), 'reject: alice.mux takes no visitors (visitors="")')
})
