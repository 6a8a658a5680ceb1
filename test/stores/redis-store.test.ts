import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { createRedisClient } from '../../src/stores/redis-client.js'
import { RedisStore } from '../../src/stores/redis-store.js'
import { until } from '../helpers/downstream.js'
import { startRedis, type RedisServer } from '../helpers/redis.js'
import { runStoreContract } from './contract.js'

async function gatewayClient(t: Test, server: RedisServer): Promise<Redis> {
  const client = createRedisClient({ url: server.url }) as Redis
  t.teardown(() => client.disconnect())
  await once(client, 'ready')
  return client
}

function plainClient(t: Test, server: RedisServer): Redis {
  const client = new Redis(server.port, '127.0.0.1')
  t.teardown(() => client.disconnect())
  return client
}

async function timed(p: Promise<unknown>): Promise<{ ms: number; error?: Error }> {
  const started = Date.now()
  try {
    await p
    return { ms: Date.now() - started }
  } catch (error) {
    return { ms: Date.now() - started, error: error as Error }
  }
}

const prefix = (): string => `frpgw:test:${randomUUID()}:`

const server = await startRedis(t)

runStoreContract(t, 'redis', async () => ({ store: new RedisStore(await gatewayClient(t, server), { keyPrefix: prefix() }) }))

t.test('bucket key carries the prefix and a hash tag, and expires', async t => {
  const keyPrefix = prefix()
  const store = new RedisStore(await gatewayClient(t, server), { keyPrefix })
  const inspector = plainClient(t, server)
  const rule = { limit: 2, windowMs: 10_000, burst: 2 }

  await store.take('user:1', rule)
  t.same(await inspector.keys(`${keyPrefix}*`), [`${keyPrefix}rl:{user:1}`])
  const pttl = await inspector.pttl(`${keyPrefix}rl:{user:1}`)
  t.ok(pttl > 4000 && pttl <= 5000, `PTTL ${pttl} is one 5 s interval`)
  const tat = Number(await inspector.get(`${keyPrefix}rl:{user:1}`))
  t.ok(Math.abs(tat - (Date.now() + 5000)) < 2000, `stored tat ${tat} is a ms timestamp one interval ahead`)

  await store.take('user:1', rule)
  const pttl2 = await inspector.pttl(`${keyPrefix}rl:{user:1}`)
  t.ok(pttl2 > 9000 && pttl2 <= 10_000, `PTTL ${pttl2} grows with the bucket's debt`)
})

t.test('a bucket holding a value no script wrote (inf, 1e400, a date past any rule\'s reach, text) starts afresh: the key is not locked out', async t => {
  const keyPrefix = prefix()
  const store = new RedisStore(await gatewayClient(t, server), { keyPrefix })
  const inspector = plainClient(t, server)
  const rule = { limit: 2, windowMs: 10_000, burst: 2 }
  for (const value of ['inf', '-inf', 'nan', '1e400', '99999999999999999999', String(Date.now() + 3 * 365 * 24 * 3_600_000), 'text']) {
    const key = `k-${value}`
    await inspector.set(`${keyPrefix}rl:{${key}}`, value)
    const result = await store.take(key, rule)
    t.same(result, { allowed: true, remaining: 1, retryAfterMs: 0 }, `${value}: a full bucket`)
    const pttl = await inspector.pttl(`${keyPrefix}rl:{${key}}`)
    t.ok(pttl > 4000 && pttl <= 5000, `${value}: written again with its expiry (PTTL ${pttl})`)
  }
})

t.test('a debt a looser rule left (a burst lowered by a reload) is kept, not taken for a stranger\'s value: limited, as in memory', async t => {
  const store = new RedisStore(await gatewayClient(t, server), { keyPrefix: prefix() })
  for (let i = 0; i < 20; i++) t.equal((await store.take('k', { limit: 1, windowMs: 60_000, burst: 20 })).allowed, true)
  const after = await Promise.all([1, 2, 3].map(async () => (await store.take('k', { limit: 1, windowMs: 60_000, burst: 1 })).allowed))
  t.same(after, [false, false, false])
})

t.test('close leaves the client to its owner', async t => {
  const client = await gatewayClient(t, server)
  await new RedisStore(client, { keyPrefix: prefix() }).close()
  t.equal(await client.ping(), 'PONG')
})

t.test('two gateways hammering one bucket share it exactly', async t => {
  const keyPrefix = prefix()
  const stores = await Promise.all([1, 2].map(async () => new RedisStore(await gatewayClient(t, server), { keyPrefix })))
  const rule = { limit: 50, windowMs: 60_000, burst: 50 }
  const results = await Promise.all(Array.from({ length: 200 }, (_, i) => stores[i % 2].take('shared', rule)))
  const allowed = results.filter(r => r.allowed)
  t.equal(allowed.length, 50)
  t.same(allowed.map(r => r.remaining).sort((a, b) => a - b), Array.from({ length: 50 }, (_, i) => i), 'every remaining value handed out once')
  t.ok(results.filter(r => !r.allowed).every(r => r.retryAfterMs > 0 && r.retryAfterMs <= 1200))
})

t.test('a stopped Redis fails takes fast, and the same client recovers after a restart', async t => {
  const own = await startRedis(t)
  const store = new RedisStore(await gatewayClient(t, own), { keyPrefix: prefix() })
  const rule = { limit: 5, windowMs: 60_000, burst: 5 }
  t.equal((await store.take('k', rule)).remaining, 4)
  await store.ping()

  await own.stop()
  for (const attempt of [store.take('k', rule), store.take('k', rule), store.ping()]) {
    const { ms, error } = await timed(attempt)
    t.ok(error, `rejected: ${error?.message}`)
    t.ok(ms < 1000, `within ${ms} ms`)
  }

  await own.start()
  const deadline = Date.now() + 10_000
  let result
  while (!result && Date.now() < deadline) {
    result = await store.take('k', rule).catch(() => undefined)
    if (!result) await sleep(100)
  }
  t.same(result, { allowed: true, remaining: 4, retryAfterMs: 0 }, 'a fresh bucket on the restarted, empty Redis')
  await store.ping()
})

t.test('a hung Redis fails takes within the command timeout', async t => {
  const own = await startRedis(t)
  const store = new RedisStore(await gatewayClient(t, own), { keyPrefix: prefix() })
  const rule = { limit: 5, windowMs: 60_000, burst: 5 }
  await store.take('k', rule)

  await plainClient(t, own).client('PAUSE', 1500, 'ALL')
  const { ms, error } = await timed(store.take('k', rule))
  t.match(error?.message, /^redis redis:\/\/127.0.0.1:\d+ did not answer within 300 ms$/)
  t.ok(ms < 1000, `rejected after ${ms} ms`)

  await sleep(1600)
  t.equal((await store.take('k', rule)).allowed, true, 'works again once Redis answers')
})

t.test('a Redis that hangs for long keeps none of the commands sent to it meanwhile: memory stays bounded', async t => {
  const own = await startRedis(t)
  const client = await gatewayClient(t, own)
  const store = new RedisStore(client, { keyPrefix: prefix() })
  const rule = { limit: 5, windowMs: 60_000, burst: 5 }
  await store.take('k', rule)
  own.pause(true)
  t.teardown(() => { own.pause(false) })
  // 6,000 calls over 3 s (ten command timeouts), each failing within the timeout as before
  let failed = 0
  let most = 0
  for (let round = 0; round < 30; round++) {
    for (let i = 0; i < 200; i++) store.take(`user-${round}-${i}`, rule).then(() => {}, () => { failed++ })
    most = Math.max(most, client.commandQueue.length)
    await sleep(100)
  }
  await until(() => failed === 6000, 5000)
  t.equal(failed, 6000, 'every call failed')
  t.ok(most < 4000, `at most ${most} commands waited for a reply at once`)
  t.ok(client.commandQueue.length < 4000, `${client.commandQueue.length} still wait`)

  own.pause(false)
  let result
  for (const end = Date.now() + 10_000; result === undefined && Date.now() < end;) {
    result = await store.take('k', rule).catch(() => undefined)
    if (result === undefined) await sleep(50)
  }
  t.same(result, { allowed: true, remaining: 3, retryAfterMs: 0 }, 'the bucket, once Redis answers again')
})
