import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import type { Cluster, Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { RedisRegistry } from '../../src/registry/redis.js'
import type { ProxyRecord } from '../../src/registry/store.js'
import { createRedisClient } from '../../src/stores/redis-client.js'
import { startRedis, startRedisCluster } from '../helpers/redis.js'
import { runRegistryContract } from './contract.js'

runRegistryContract(t, 'Redis standalone', async () => {
  const redis = await startRedis(t)
  const client = createRedisClient({ url: redis.url })
  t.teardown(() => client.disconnect())
  await once(client, 'ready')
  return new RedisRegistry(client, { keyPrefix: `frpgw:${randomUUID()}:` })
})

runRegistryContract(t, 'Redis Cluster', async () => {
  const cluster = await startRedisCluster(t)
  const client = createRedisClient({ cluster: cluster.urls })
  t.teardown(() => client.disconnect())
  await once(client, 'ready')
  return new RedisRegistry(client, { keyPrefix: `frpgw:${randomUUID()}:` })
})

t.test('two gateways on one Redis count together and never hand one port to two proxies', async t => {
  const redis = await startRedis(t)
  const prefix = `frpgw:${randomUUID()}:`
  const gateways = await Promise.all([1, 2].map(async () => {
    const client = createRedisClient({ url: redis.url })
    t.teardown(() => client.disconnect())
    await once(client, 'ready')
    return new RedisRegistry(client, { keyPrefix: prefix })
  }))
  const quota = await Promise.all(Array.from({ length: 50 }, (_, i) =>
    gateways[i % 2].reserve({ user: 'alice', name: `alice.p${i}`, run_id: 'r', port: true, ttlMs: 5000 }, { maxProxies: 9 })))
  t.equal(quota.filter(r => r.allowed).length, 9)
  const ports = await Promise.all(Array.from({ length: 60 }, (_, i) =>
    gateways[i % 2].assignPort({ user: `u${i}`, name: `u${i}.p`, ranges: [[7000, 7024], [7100, 7124]], holdMs: 60_000 })))
  const given = ports.filter((p): p is number => p !== undefined)
  t.equal(given.length, 50)
  t.equal(new Set(given).size, 50)
  await gateways[0].register({ user: 'bob', name: 'bob.p', type: 'tcp', run_id: 'r', remote_port: 7200, registered_at: 0 })
  t.same(await gateways[1].portOwner(7200), { user: 'bob', name: 'bob.p' }, 'what one registers, the other sees')
  t.equal(await gateways[1].count(), 1)
})

t.test('one node: a change that fails in a shared script fails its own caller, and the others of that turn land', async t => {
  const redis = await startRedis(t)
  const client = createRedisClient({ url: redis.url })
  t.teardown(() => client.disconnect())
  await once(client, 'ready')
  const store = new RedisRegistry(client, { keyPrefix: `frpgw:${randomUUID()}:` })
  // a value no gateway writes: the reservation of mallory's p cannot be read
  await client.hset(store.reservationsKey('mallory'), 'mallory.x', '{not json')
  const [bad, good, port, record] = await Promise.allSettled([
    store.reserve({ user: 'mallory', name: 'mallory.p', run_id: 'r', port: false, ttlMs: 5000 }, { maxProxies: 3 }),
    store.reserve({ user: 'alice', name: 'alice.p', run_id: 'r', port: false, ttlMs: 5000 }, { maxProxies: 3 }),
    store.assignPort({ user: 'alice', name: 'alice.p', ranges: [[7300, 7301]], holdMs: 60_000 }),
    store.register({ user: 'bob', name: 'bob.p', type: 'tcp', run_id: 'r', remote_port: 7400, registered_at: 0 })
  ])
  t.equal(bad.status, 'rejected')
  t.match((bad as PromiseRejectedResult).reason.message, /Expected object key string/, 'the change fails with what Redis said')
  t.same(good, { status: 'fulfilled', value: { allowed: true } })
  t.same(port, { status: 'fulfilled', value: 7300 })
  t.equal(record.status, 'fulfilled')
  t.same(await store.portOwner(7400), { user: 'bob', name: 'bob.p' }, 'the record landed')
})

/** A registry on a Redis of its own: one node, or a Cluster. */
async function storeOn (t: Test, start: 'one' | 'cluster'): Promise<{ client: Redis | Cluster, store: RedisRegistry }> {
  const client = start === 'one'
    ? createRedisClient({ url: (await startRedis(t)).url })
    : createRedisClient({ cluster: (await startRedisCluster(t)).urls })
  t.teardown(() => client.disconnect())
  await once(client, 'ready')
  return { client, store: new RedisRegistry(client, { keyPrefix: `frpgw:${randomUUID()}:` }) }
}

for (const [kind, start] of [['standalone', 'one'], ['Cluster', 'cluster']] as const) {
  t.test(`${kind}: a record value no gateway wrote is replaced by the next record of that name, and skipped by confirm`, async t => {
    const { client, store } = await storeOn(t, start)
    const record: ProxyRecord = { user: 'ann', name: 'ann.p', type: 'tcp', run_id: 'r', remote_port: 7500, registered_at: 1 }
    for (const bad of ['{not json', '"text"', '7']) {
      await client.hset(store.proxiesKey('ann'), 'ann.p', bad)
      await client.hset(store.proxiesKey('ann'), 'ann.q', bad)
      await store.confirm([{ user: 'ann', name: 'ann.q', run_id: 'r', registered_at: 1 }, { user: 'bob', name: 'bob.p', run_id: 'r', registered_at: 1 }], 5)
      t.equal(await client.hget(store.proxiesKey('ann'), 'ann.q'), bad, `${bad}: left as it is`)
      await store.register(record)
      t.same(await store.get('ann', 'ann.p'), record, `${bad}: replaced`)
      await client.hdel(store.proxiesKey('ann'), 'ann.q')
    }
  })

  t.test(`${kind}: a user leaves the users set with its last record, and is back with its next one, whatever the order`, async t => {
    const { client, store } = await storeOn(t, start)
    const record = (user: string, name: string, at = 1): ProxyRecord => ({ user, name, type: 'tcp', run_id: 'r', registered_at: at })
    await store.register(record('ann', 'ann.a'))
    await store.register(record('ann', 'ann.b'))
    await store.unregister('ann', 'ann.a', 'r')
    t.same(await client.smembers(store.usersKey), ['ann'], 'a user with a record left stays')
    await store.unregister('ann', 'ann.b', 'r')
    t.same(await client.smembers(store.usersKey), [], 'without records, no longer listed')
    // a proxy closing and another of the same user opening at once, the opening a few round trips later each time
    const later = async (n: number): Promise<void> => { for (let j = 0; j < n; j++) await client.ping() }
    for (let i = 0; i < 30; i++) {
      await store.register(record('bob', `bob.${i}`, i))
      await Promise.all([store.unregister('bob', `bob.${i}`, 'r'), later(i % 6).then(async () => { await store.register(record('bob', `bob.${i + 1}`, i + 1)) })])
      t.same(await client.smembers(store.usersKey), ['bob'], `round ${i}: bob has a record, and is listed`)
      await store.unregister('bob', `bob.${i + 1}`, 'r')
    }
    t.same(await store.list(), [])
    t.same(await client.smembers(store.usersKey), [])
    // as an earlier gateway left it: a user in the set without records
    await client.sadd(store.usersKey, 'carol')
    await store.register(record('dan', 'dan.a'))
    t.same((await store.list()).map(r => r.name), ['dan.a'])
    t.same(await client.smembers(store.usersKey), ['dan'], 'listing every user drops the ones without records')
  })
}

t.test('a record another hand wrote (not JSON, null, a number, a field of the wrong type, a date past Date\'s range) is skipped by list and said, named by key and field; get refuses it by name', async t => {
  const redis = await startRedis(t)
  const client = createRedisClient({ url: redis.url })
  t.teardown(() => client.disconnect())
  await once(client, 'ready')
  const unreadable: string[] = []
  const store = new RedisRegistry(client, { keyPrefix: 'p:', unreadable: err => unreadable.push(err.message) })
  await store.register({ user: 'alice', name: 'alice.ssh', type: 'tcp', run_id: 'r', remote_port: 7000, registered_at: 1 })
  await store.register({ user: 'bob', name: 'bob.web', type: 'http', run_id: 'r', custom_domains: ['b.example.com'], registered_at: 2 })
  const key = store.proxiesKey('bob')
  const bad: Array<[string, string, string]> = [
    ['bob.a', 'notjson', 'not JSON'], ['bob.b', 'null', 'not a JSON object'], ['bob.c', '5', 'not a JSON object'],
    ['bob.d', '{}', 'its user is absent'], ['bob.e', JSON.stringify({ user: 'bob', name: 'bob.e', type: 'tcp', run_id: 'r', registered_at: 1e300 }), 'its registered_at is 1e+300'],
    ['bob.f', JSON.stringify({ user: 'bob', name: 'bob.f', type: 'tcp', run_id: 'r', registered_at: 1, metas: { a: 1 } }), 'its metas is {"a":1}']
  ]
  for (const [field, value] of bad) await client.hset(key, field, value)
  t.same((await store.list()).map(r => r.name), ['alice.ssh', 'bob.web'], 'the good records, every user')
  t.same((await store.list('bob')).map(r => r.name), ['bob.web'], 'the good records, one user')
  t.same(unreadable.slice(0, bad.length).sort(), bad.map(([field, , why]) => `${key} field "${field}": ${why}, not a record the gateway wrote`).sort())
  await t.rejects(store.get('bob', 'bob.e'), { name: 'UnreadableRecord', message: `${key} field "bob.e": its registered_at is 1e+300, not a record the gateway wrote` })
  t.same(await store.get('bob', 'bob.web'), { user: 'bob', name: 'bob.web', type: 'http', run_id: 'r', custom_domains: ['b.example.com'], registered_at: 2 })
})
