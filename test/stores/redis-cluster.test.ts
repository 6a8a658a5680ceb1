import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { Redis, type Cluster } from 'ioredis'
import t from 'tap'
import { clusterNodeOptions, createRedisClient } from '../../src/stores/redis-client.js'
import { RedisStore } from '../../src/stores/redis-store.js'
import { startGateway } from '../helpers/gateway.js'
import { timerLateness } from '../helpers/lateness.js'
import { redisCli, startRedisCluster, waitFor } from '../helpers/redis.js'
import { runStoreContract } from './contract.js'

const cluster = await startRedisCluster(t)
const client = createRedisClient({ cluster: cluster.urls }) as Cluster
t.teardown(() => client.disconnect())
await once(client, 'ready')

runStoreContract(t, 'redis cluster', async () => ({ store: new RedisStore(client, { keyPrefix: `frpgw:test:${randomUUID()}:` }) }))

t.test('buckets spread over the masters and each works where it lands', async t => {
  const store = new RedisStore(client, { keyPrefix: `frpgw:test:${randomUUID()}:` })
  const rule = { limit: 1, windowMs: 60_000, burst: 1 }
  const keys = Array.from({ length: 20 }, (_, i) => `user-${i}`)
  for (const key of keys) {
    t.same([(await store.take(key, rule)).allowed, (await store.take(key, rule)).allowed], [true, false], key)
  }

  const nodes = cluster.nodes.map(n => new Redis(n.port, n.host))
  t.teardown(() => nodes.forEach(n => n.disconnect()))
  const holders = new Set<number>()
  for (const key of keys) {
    // a master that does not own the key's slot answers MOVED
    const found = await Promise.all(nodes.map(n => n.exists(store.redisKey(key)).catch((err: Error) => {
      if (!err.message.startsWith('MOVED')) throw err
      return 0
    })))
    t.equal(found.filter(Boolean).length, 1, `${key} lives on exactly one master`)
    holders.add(cluster.nodes[found.indexOf(1)].port)
  }
  t.ok(holders.size >= 2, `buckets on ${holders.size} masters`)
})

t.test('a cluster with a password, named by one seed: the nodes found from it get the password too', async t => {
  const secured = await startRedisCluster(t, { password: 's3cret' })
  const one = createRedisClient({ cluster: [secured.urls[0]] }) as Cluster
  t.teardown(() => one.disconnect())
  await once(one, 'ready')
  const store = new RedisStore(one, { keyPrefix: `frpgw:test:${randomUUID()}:` })
  const rule = { limit: 1, windowMs: 60_000, burst: 1 }
  const taken = await Promise.all(Array.from({ length: 20 }, async (_, i) => (await store.take(`user-${i}`, rule)).allowed))
  t.same(taken, Array(20).fill(true), 'every key, on every master')
  t.equal(new Set(one.nodes('master').map(n => n.options.port)).size, 3, 'the three masters, found from one seed')
})

t.test('clusterNodeOptions: TLS and credentials from the first URL, for the nodes ioredis finds by itself', async t => {
  t.same(clusterNodeOptions(['rediss://app:p%40ss@10.0.0.1:6379', 'rediss://10.0.0.2:6379']), { tls: {}, username: 'app', password: 'p@ss' })
  t.same(clusterNodeOptions(['redis://:pw@10.0.0.1:6379']), { password: 'pw' })
  t.same(clusterNodeOptions(['redis://10.0.0.1:6379']), {})
  t.same(clusterNodeOptions(['10.0.0.1:6379']), {}, 'host:port, as ioredis takes it')
})

t.test('/readyz and frp_gateway_redis_up: a cluster that fails some buckets is not ready, though every node up answers a PING', async t => {
  const own = await startRedisCluster(t)
  const gw = await startGateway(t, { redis: { cluster: own.urls }, chain: [{ name: 'rl', plugin: 'rate-limit', ops: ['Login'], options: { limit: 10, window: '1m' } }] })
  const readyz = async (): Promise<{ status: string, reason?: string }> => (await gw.app.inject({ method: 'GET', url: '/readyz' })).json()
  t.same(await readyz(), { status: 'ready' })
  const name = `redis cluster ${own.urls.join(', ')}`

  // a slot no master serves: the cluster says fail, and every take answers CLUSTERDOWN
  const { port } = own.nodes[0]
  const mine = (await redisCli(port, 'CLUSTER', 'NODES')).split('\n').find(line => line.includes('myself'))
  const slot = /(\d+)-\d+$/.exec(mine ?? '')?.[1] ?? 'none'
  await redisCli(port, 'CLUSTER', 'DELSLOTS', slot)
  const failing = `${name}: the master 127.0.0.1:${port} says cluster_state:fail`
  await waitFor('the cluster state fail', async () => (await readyz()).reason === failing)
  t.same(await readyz(), { status: 'not ready', reason: failing })
  t.equal(await gw.metric('frp_gateway_redis_up'), 0)
  await redisCli(port, 'CLUSTER', 'ADDSLOTS', slot)
  await waitFor('ready again', async () => (await readyz()).status === 'ready')

  // a master out of memory answers CLUSTER INFO ok and refuses every write to its slots
  const full = own.nodes[1].port
  await redisCli(full, 'CONFIG', 'SET', 'maxmemory', '1')
  const oom = `redis cluster ${own.urls.join(', ')} (the master 127.0.0.1:${full}): OOM command not allowed when used memory > 'maxmemory'.`
  await waitFor('the full master found', async () => (await readyz()).reason === oom)
  t.same(await readyz(), { status: 'not ready', reason: oom })
  await redisCli(full, 'CONFIG', 'SET', 'maxmemory', '0')
  await waitFor('ready again', async () => (await readyz()).status === 'ready')

  // a master down: the buckets of its slots fail
  await own.servers[2].stop()
  const down = `${name}: the master 127.0.0.1:${own.nodes[2].port} is not connected`
  await waitFor('the master found gone', async () => (await readyz()).reason === down)
  t.same(await readyz(), { status: 'not ready', reason: down })
  t.equal(await gw.metric('frp_gateway_redis_up'), 0)
})


t.test('a cluster whose state is fail (a master down, no replica) fails each take at once, not after the command timeout', async t => {
  const own = await startRedisCluster(t)
  const gw = await startGateway(t, { redis: { cluster: own.urls }, chain: [{ name: 'rl', plugin: 'rate-limit', ops: ['Login'], options: { key: '{{user}}', limit: 1000, window: '1m' } }] })
  for (let i = 0; i < 10; i++) t.equal((await gw.call('Login', { user: `u${i}` })).body.reject, false)
  await own.servers[2].stop()
  await waitFor('the cluster state fail', async () => (await redisCli(own.nodes[0].port, 'CLUSTER', 'INFO')).includes('cluster_state:fail'), 60_000)
  // every slot now answers CLUSTERDOWN: ioredis retried it every 100 ms until the 300 ms command timeout
  const lateness = timerLateness()
  const took: number[] = []
  for (let i = 0; i < 10; i++) {
    const started = performance.now()
    t.equal((await gw.call('Login', { user: `u${i}` })).body.reject, false, 'onStoreError allow')
    took.push(Math.round(performance.now() - started))
  }
  const late = lateness()
  t.ok(Math.max(...took) < 150 + late, `each answered in ${took.join(', ')} ms (timers up to ${Math.round(late)} ms late)`)
  t.equal(await gw.metric('frp_gateway_ratelimit_decisions_total', { step: 'rl', result: 'store_error' }), 10)
})
