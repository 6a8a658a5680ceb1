import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { parseUserRecord } from '../../src/users/record.js'
import { RedisUserSource } from '../../src/users/redis-source.js'
import { startGateway, type TestGateway } from '../helpers/gateway.js'
import { startRedis, startRedisCluster } from '../helpers/redis.js'
import { answer, newProxy, quotaStep, recorded, runQuotaSuite } from './quota-suite.js'

const prefix = (): string => `frpgw:${randomUUID()}:`

runQuotaSuite(t, 'Redis standalone', async t => {
  const redis = await startRedis(t)
  return () => ({ redis: { url: redis.url, keyPrefix: prefix() } })
})

runQuotaSuite(t, 'Redis Cluster', async t => {
  const cluster = await startRedisCluster(t)
  return () => ({ redis: { cluster: cluster.urls, keyPrefix: prefix() } })
})

/** Two gateways on one store, 40 NewProxy calls of alice at once, alternating between them. */
async function burst (t: Test, redis: Record<string, unknown>): Promise<void> {
  const config = { redis, registry: {}, chain: [quotaStep({ maxProxies: 7 })] }
  const gateways = [await startGateway(t, config), await startGateway(t, config)]
  const answers = await Promise.all(Array.from({ length: 40 }, async (_, i) =>
    await answer(gateways[i % 2], newProxy(i % 3 === 0 ? 'udp' : 'tcp', `alice.p${i}`, `frpc-${i % 4}`))))
  t.equal(answers.filter(a => a === 'allow').length, 7, 'exactly the limit admitted')
  t.same([...new Set(answers.filter(a => a !== 'allow'))], ['alice has 7 proxies, the limit is 7 (maxProxies)'], 'every other refused with the count')
  // the records of both gateways' calls are committed after their answers: wait for both
  await Promise.all(gateways.map(async gw => await gw.ref.current.drain()))
  t.equal((await recorded(gateways[0])).length, 7, 'both gateways see the 7 records')
  t.equal((await recorded(gateways[1])).length, 7)
  t.equal(await answer(gateways[1], newProxy('tcp', 'alice.late')), 'alice has 7 proxies, the limit is 7 (maxProxies)', 'and go on counting together')
}

t.test('two gateways on one Redis, a burst from one user: exactly the limit admitted', async t => {
  const redis = await startRedis(t)
  await burst(t, { url: redis.url, keyPrefix: prefix() })
})

t.test('two gateways on one Redis Cluster, a burst from one user: exactly the limit admitted', async t => {
  const cluster = await startRedisCluster(t)
  await burst(t, { cluster: cluster.urls, keyPrefix: prefix() })
})

/** The step's decision counted as an error, and the cause logged once with the step's name. */
function storeErrorSeen (t: Test, gw: TestGateway, url: string): void {
  const logged = gw.logs.find(l => l.msg === 'step failed' && l.step === 'quota' && l.level === 40)
  t.ok(logged, 'logged as a warning naming the step')
  t.match(logged?.err.message, `redis ${url} is not reachable: `, 'and the Redis and why')
}

t.test('Redis stopped: registry.onStoreError allow lets NewProxy through unchanged, and says so', async t => {
  const redis = await startRedis(t)
  const gw = await startGateway(t, { redis: { url: redis.url, keyPrefix: prefix() }, registry: { onStoreError: 'allow' }, chain: [quotaStep({ maxProxies: 1 })] })
  t.equal(await answer(gw, newProxy('tcp')), 'allow')
  t.equal(await answer(gw, newProxy('udp')), 'alice has 1 proxy, the limit is 1 (maxProxies)')
  await redis.stop()
  t.equal(await answer(gw, newProxy('udp')), 'allow', 'over the limit, but the store cannot say')
  t.equal(await answer(gw, newProxy('http')), 'allow')
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewProxy', step: 'quota', decision: 'error' }), 2)
  storeErrorSeen(t, gw, redis.url)
  await redis.start()
  // Redis comes back empty; the records of the calls allowed meanwhile may reach it (the registry asks again for a few s)
  const until = performance.now() + 10_000
  let last = ''
  for (let i = 0; performance.now() < until && (last = await answer(gw, newProxy('udp', `alice.n${i}`))) === 'allow'; i++) await new Promise(resolve => setTimeout(resolve, 100))
  t.match(last, /^alice has [1-9]\d* prox(y|ies), the limit is 1 \(maxProxies\)$/, 'Redis back: the limit holds again')
})

t.test('Redis stopped: registry.onStoreError reject refuses NewProxy naming the step', async t => {
  const redis = await startRedis(t)
  const gw = await startGateway(t, { redis: { url: redis.url, keyPrefix: prefix() }, registry: { onStoreError: 'reject' }, chain: [quotaStep({ maxProxies: 5 })] })
  t.equal(await answer(gw, newProxy('tcp')), 'allow')
  await redis.stop()
  const started = performance.now()
  t.equal(await answer(gw, newProxy('udp')), 'frp-plugin-gateway: step quota failed: registry unavailable')
  t.ok(performance.now() - started < 2500, 'at once, not at the deadline')
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewProxy', step: 'quota', decision: 'error' }), 1)
  storeErrorSeen(t, gw, redis.url)
})

t.test('fromUsers with the users table in Redis: a user\'s maxProxies set there wins; the table away follows onStoreError', async t => {
  const redis = await startRedis(t)
  const keyPrefix = prefix()
  const gw = await startGateway(t, {
    redis: { url: redis.url, keyPrefix }, users: { redis: { cacheMs: 0 } }, registry: { onStoreError: 'reject' }, chain: [quotaStep({ maxProxies: 5, fromUsers: true })]
  })
  const { redisCli } = await import('../helpers/redis.js')
  await redisCli(redis.port, 'HSET', `${keyPrefix}user:{alice}`, 'maxProxies', '1')
  t.equal(await answer(gw, newProxy('tcp')), 'allow')
  t.equal(await answer(gw, newProxy('udp')), 'alice has 1 proxy, the limit is 1 (maxProxies)')
  await redisCli(redis.port, 'HSET', `${keyPrefix}user:{alice}`, 'maxProxies', '"many"')
  t.equal(await answer(gw, newProxy('udp')), 'frp-plugin-gateway: step quota failed: the record of alice is not valid')
  await redisCli(redis.port, 'HDEL', `${keyPrefix}user:{alice}`, 'maxProxies')
  t.equal(await answer(gw, newProxy('udp')), 'allow', 'no maxProxies in the record: the step\'s 5')
  await redis.stop()
  t.equal(await answer(gw, newProxy('http')), 'frp-plugin-gateway: step quota failed: user table unavailable')
})

t.test('a shadow quota waiting on a users table in Redis: a later reject releases its reservation all the same', async t => {
  const redis = await startRedis(t)
  const client = new Redis(redis.port, '127.0.0.1')
  t.teardown(() => client.disconnect())
  await new RedisUserSource(client, { keyPrefix: 'frpgw:', parse: parseUserRecord }).set('alice', { maxProxies: 5 })
  const gw = await startGateway(t, {
    redis: { url: redis.url },
    users: { redis: {} },
    registry: { store: 'memory' },
    deadlineMs: 10_000,
    chain: [
      { name: 'trial', plugin: 'quota', mode: 'shadow', options: { fromUsers: true } },
      { name: 'no-http', plugin: 'reject', ops: ['NewProxy'], when: { proxyTypes: ['http'] }, options: { reason: 'no http here' } },
      quotaStep({ maxProxies: 1 })
    ]
  })
  // the table answers only once the call is answered and committed
  redis.pause(true)
  t.equal(await answer(gw, newProxy('http')), 'no http here')
  await sleep(100)
  redis.pause(false)
  await gw.ref.current.drain()
  await sleep(200)
  // a reservation left behind would count until the deadline, 10 s from the call
  t.equal(await answer(gw, newProxy('tcp')), 'allow')
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewProxy', step: 'trial', decision: 'allow' }), 2)
})

t.test('a reject by another step releases only a reservation this call holds: none when quota did not run or could not reserve', async t => {
  const redis = await startRedis(t)
  const keyPrefix = prefix()
  const refuse = (name: string, proxyNames: string[]) => ({ name, plugin: 'reject', ops: ['NewProxy'], when: { proxyNames }, options: { reason: `refused (${name})` } })
  const gw = await startGateway(t, {
    redis: { url: redis.url, keyPrefix },
    registry: { onStoreError: 'allow' },
    chain: [refuse('before', ['alice.p2']), quotaStep({ maxProxies: 5 }), refuse('after', ['alice.p1', 'alice.p3'])]
  })
  t.equal(await answer(gw, newProxy('tcp', 'alice.p1')), 'refused (after)', 'Redis up: quota reserved, the later step refused')
  await gw.ref.current.drain()
  t.equal((await redis.cli('HLEN', `${keyPrefix}reg:{alice}:reservations`)).trim(), '0', 'and the reservation released at once')
  await redis.stop()
  t.equal(await answer(gw, newProxy('tcp', 'alice.p2')), 'refused (before)', 'a step before quota refused: quota never ran')
  t.equal(await answer(gw, newProxy('tcp', 'alice.p3')), 'refused (after)', 'quota could not reserve (allowed by onStoreError), a later step refused')
  await gw.ref.current.drain()
  t.equal(await gw.metric('frp_gateway_commit_failures_total', { step: 'quota' }), undefined, 'no release tried for either, so none failed')
  t.equal(gw.logs.filter(l => l.msg === 'commit failed' && l.step === 'quota').length, 0)
})
