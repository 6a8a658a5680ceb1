import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { Cluster, Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { z } from 'zod'
import { createRedisClient } from '../../src/stores/redis-client.js'
import { RedisUserSource, type UserLookup } from '../../src/users/redis-source.js'
import { assertNoPollution } from '../helpers/gateway.js'
import { redisCli, startRedis, startRedisCluster, type RedisServer } from '../helpers/redis.js'

// a stand-in for the record schema of src/users/record.ts: strict, with a default and an array field
const TestRecord = z.strictObject({
  token: z.string().optional(),
  enabled: z.boolean().default(true),
  ports: z.array(z.union([z.number(), z.string()])).optional(),
  comment: z.string().optional(),
})
type TestRecord = z.infer<typeof TestRecord>

function parse(name: string, raw: Record<string, unknown>): TestRecord {
  const result = TestRecord.safeParse(raw)
  if (!result.success) throw new Error(result.error.issues.map(i => `${i.path.join('.') || '(record)'}: ${i.message}`).join('; '))
  return result.data
}

const prefix = (): string => `frpgw:test:${randomUUID()}:`

function record(lookup: UserLookup<TestRecord>): TestRecord | undefined {
  return lookup.status === 'found' ? lookup.record : undefined
}

interface Setup {
  label: string
  /** the gateway's client (src/stores/redis-client.ts) */
  client: Redis | Cluster
  /** another client, as redis-cli or a control plane */
  other: Redis | Cluster
  /** HGETALL commands served so far, over every node */
  hgetalls: () => Promise<number>
}

async function countCalls(ports: number[], command: string): Promise<number> {
  let total = 0
  for (const port of ports) {
    const stats = await redisCli(port, 'INFO', 'commandstats')
    total += Number(new RegExp(`cmdstat_${command}:calls=(\\d+)`).exec(stats)?.[1] ?? 0)
  }
  return total
}

function suite(t: Test, s: Setup): void {
  const source = (cacheMs = 2000, maxEntries?: number): RedisUserSource<TestRecord> =>
    new RedisUserSource(s.client, { keyPrefix: prefix(), parse, cacheMs, maxEntries })

  t.test(`${s.label}: set, get, list, enable, disable, delete answer what they changed`, async t => {
    const users = source()
    t.equal(await users.set('alice', { token: 's3cret', ports: [6000, '6100-6199'] }), 'created')
    t.equal(await users.set('bob', { token: 'b', comment: 'team b' }), 'created')
    t.equal(await users.set('alice', { token: 'other' }), 'replaced')
    t.same(record(await users.get('alice')), { token: 'other', enabled: true }, 'the whole record replaced: ports gone')
    t.same(await s.other.hgetall(users.userKey('alice')), { token: '"other"' }, 'each field holds its JSON value')
    t.equal(users.userKey('alice').endsWith('user:{alice}'), true)
    t.same(await users.list(), ['alice', 'bob'])

    t.equal(await users.setEnabled('bob', false), 'disabled')
    t.equal(await users.setEnabled('bob', false), 'unchanged')
    t.same(record(await users.get('bob')), { token: 'b', comment: 'team b', enabled: false }, 'a write by this source is seen at once')
    t.equal(await users.setEnabled('bob', true), 'enabled')
    t.equal(await users.setEnabled('alice', true), 'unchanged', 'a record without the field is enabled')
    t.same(await s.other.hgetall(users.userKey('alice')), { token: '"other"' }, 'and unchanged means nothing written')
    t.equal(await users.setEnabled('carol', false), 'unknown user')
    t.equal(await s.other.exists(users.userKey('carol')), 0, 'enabling an unknown user creates nothing')

    t.equal(await users.delete('alice'), 'deleted')
    t.equal(await users.delete('alice'), 'unknown user')
    t.same(await users.get('alice'), { status: 'unknown' })
    t.same(await users.list(), ['bob'])
    t.same(await s.other.smembers(users.indexKey), ['bob'])

    await t.rejects(users.set('dave', { ports: 'all' }), /^user dave is not a valid record: ports: /, 'a bad record is refused')
    await t.rejects(users.set('dave', {}), /at least one field/)
    t.equal(await s.other.exists(users.userKey('dave')), 0, 'and nothing is written')
    t.same(await users.list(), ['bob'])
  })

  t.test(`${s.label}: values written by redis-cli read as an operator expects`, async t => {
    const users = source()
    await s.other.hset(users.userKey('carol'), 'enabled', 'false', 'comment', 'hello world', 'ports', '[6000,"6100-6199"]', 'token', '"123456"')
    t.same(await users.read('carol'), { enabled: false, comment: 'hello world', ports: [6000, '6100-6199'], token: '123456' })
    t.same(record(await users.get('carol')), { enabled: false, comment: 'hello world', ports: [6000, '6100-6199'], token: '123456' })
  })

  t.test(`${s.label}: a change by another client is seen within cacheMs, and a hit costs no round trip`, async t => {
    const users = source(400)
    await users.set('alice', { token: 'a' })
    const first = await users.get('alice')
    t.equal(record(first)?.enabled, true)

    const before = await s.hgetalls()
    const hit = users.get('alice')
    t.notOk(hit instanceof Promise, 'a hit answers synchronously')
    t.equal(hit, first, 'with the same object')
    t.equal(await s.hgetalls(), before, 'and no HGETALL')

    await s.other.hset(users.userKey('alice'), 'enabled', 'false')
    const changedAt = Date.now()
    const deadline = changedAt + 5000
    let seen: UserLookup<TestRecord> | undefined
    while (Date.now() < deadline) {
      seen = await users.get('alice')
      if (record(seen)?.enabled === false) break
      await sleep(20)
    }
    const ms = Date.now() - changedAt
    t.equal(record(seen!)?.enabled, false, `seen after ${ms} ms`)
    t.ok(ms <= 400 + 300, `within cacheMs (400) plus a margin: ${ms} ms`)
  })

  t.test(`${s.label}: an unknown user is cached too`, async t => {
    const users = source(400)
    const before = await s.hgetalls()
    t.same(await users.get('nobody'), { status: 'unknown' })
    const again = users.get('nobody')
    t.notOk(again instanceof Promise, 'answered from the cache')
    t.same(again, { status: 'unknown' })
    t.equal(await s.hgetalls() - before, 1, 'one HGETALL for both')

    await s.other.hset(users.userKey('nobody'), 'token', '"n"')
    t.same(users.get('nobody'), { status: 'unknown' }, 'still unknown while cached')
    await sleep(450)
    t.same(record(await users.get('nobody')), { token: 'n', enabled: true }, 'found once cacheMs passed')
  })

  t.test(`${s.label}: concurrent misses share one load`, async t => {
    const users = source()
    await users.set('alice', { token: 'a' })
    await users.set('bob', { token: 'b' })
    const before = await s.hgetalls()
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => users.get(i % 2 ? 'alice' : 'bob')))
    t.equal(await s.hgetalls() - before, 2, 'one HGETALL per name for 100 calls')
    t.equal(new Set(results).size, 2, 'every caller of a name gets the same answer')
    t.same(results.slice(0, 2).map(record), [{ token: 'b', enabled: true }, { token: 'a', enabled: true }])
  })

  t.test(`${s.label}: a record that does not validate is an invalid answer, never a throw`, async t => {
    const users = source()
    await s.other.hset(users.userKey('mallory'), 'ports', 'all', 'colour', '"red"')
    const lookup = await users.get('mallory')
    t.equal(lookup.status, 'invalid')
    const error = lookup.status === 'invalid' ? lookup.error.message : ''
    t.match(error, /user mallory in Redis/)
    t.match(error, /ports/, `names the field: ${error}`)
    t.match(error, /colour/, 'and the unknown one')
    t.equal(users.get('mallory'), lookup, 'cached like any answer')
  })

  t.test(`${s.label}: prototype-named users and fields stay plain keys`, async t => {
    const users = source()
    for (const name of ['__proto__', 'constructor', 'toString']) {
      t.equal(await users.set(name, { token: name }), 'created', name)
      t.same(record(await users.get(name)), { token: name, enabled: true }, name)
    }
    t.same(await users.list(), ['__proto__', 'constructor', 'toString'])
    t.same(await users.get('hasOwnProperty'), { status: 'unknown' })

    await s.other.hset(users.userKey('eve'), '__proto__', '{"polluted":true}', 'constructor', '{"prototype":{"polluted":true}}', 'token', '"e"')
    const raw = await users.read('eve')
    t.same(Object.keys(raw!).sort(), ['__proto__', 'constructor', 'token'], 'own keys')
    t.equal(Object.getPrototypeOf(raw), Object.prototype, 'the prototype untouched')
    const lookup = await users.get('eve')
    t.equal(lookup.status, 'invalid', 'unknown fields are the schema\'s to refuse')
    assertNoPollution(t)
    t.equal(await users.delete('__proto__'), 'deleted')
    t.same(await users.list(), ['constructor', 'toString'])
  })

  t.test(`${s.label}: list leaves out index entries whose hash is gone`, async t => {
    const users = source()
    await users.set('alice', { token: 'a' })
    await s.other.sadd(users.indexKey, 'ghost')
    t.same(await users.list(), ['alice'])
  })

  t.test(`${s.label}: the cache stays bounded`, async t => {
    const users = source(60_000, 10)
    await users.set('keep', { token: 'k' })
    for (let i = 0; i < 50; i++) {
      await users.get(`u${i}`)
      await users.get('keep')
      t.ok(users.size <= 10, `${users.size} entries after ${i + 1} names`)
    }
    t.notOk(users.get('keep') instanceof Promise, 'a name in use stays cached')
  })

  t.test(`${s.label}: a write while a load is in flight is not undone by it`, async t => {
    const users = source()
    await users.set('alice', { token: 'a' })
    const loading = users.get('alice')
    t.equal(await users.setEnabled('alice', false), 'disabled')
    await loading
    t.equal(record(await users.get('alice'))?.enabled, false)
  })
}

async function gatewayClient(t: Test, url: string): Promise<Redis> {
  const client = createRedisClient({ url }) as Redis
  t.teardown(() => client.disconnect())
  await once(client, 'ready')
  return client
}

const async = async (p: Promise<UserLookup<TestRecord>> | UserLookup<TestRecord>): Promise<{ ms: number; lookup: UserLookup<TestRecord> }> => {
  const started = Date.now()
  const lookup = await p
  return { ms: Date.now() - started, lookup }
}

// both started before any test runs, so the cluster's set-up does not compete with them
const server = await startRedis(t)
const cluster = await startRedisCluster(t)
const standalone = await gatewayClient(t, server.url)
const plain = new Redis(server.port, '127.0.0.1')
t.teardown(() => plain.disconnect())
suite(t, { label: 'standalone', client: standalone, other: plain, hgetalls: () => countCalls([server.port], 'hgetall') })

const clusterClient = createRedisClient({ cluster: cluster.urls }) as Cluster
t.teardown(() => clusterClient.disconnect())
await once(clusterClient, 'ready')
const clusterOther = new Cluster(cluster.nodes)
t.teardown(() => clusterOther.disconnect())
suite(t, { label: 'cluster', client: clusterClient, other: clusterOther, hgetalls: () => countCalls(cluster.nodes.map(n => n.port), 'hgetall') })

t.test('cluster: the index lives in its own slot, users spread over the masters', async t => {
  const users = new RedisUserSource(clusterClient, { keyPrefix: prefix(), parse })
  const names = Array.from({ length: 12 }, (_, i) => `user-${i}`)
  for (const name of names) await users.set(name, { token: name })
  t.same(await users.list(), [...names].sort())
  const slots = new Set<number>()
  for (const name of names) slots.add(Number(await clusterOther.cluster('KEYSLOT', users.userKey(name))))
  t.ok(slots.size > 1, `${slots.size} slots`)
  for (const name of names) t.equal(record(await users.get(name))?.token, name)
})

async function waitAnswered(users: RedisUserSource<TestRecord>, name: string): Promise<UserLookup<TestRecord>> {
  const deadline = Date.now() + 10_000
  for (;;) {
    const lookup = await users.get(name)
    if (lookup.status !== 'error' || Date.now() > deadline) return lookup
    await sleep(100)
  }
}

t.test('standalone: Redis stopped mid-run fails fast, serves nothing stale, recovers', async t => {
  const own: RedisServer = await startRedis(t)
  const users = new RedisUserSource(await gatewayClient(t, own.url), { keyPrefix: prefix(), parse, cacheMs: 300 })
  await users.set('alice', { token: 'a' })
  t.equal((await users.get('alice')).status, 'found')

  await own.stop()
  await sleep(350)
  const answers = await Promise.all([users.get('alice'), users.get('alice'), users.get('bob')].map(async))
  for (const { ms, lookup } of answers) {
    t.equal(lookup.status, 'error', 'the cached record is not served past cacheMs')
    t.ok(ms < 1000, `answered in ${ms} ms`)
  }
  const { lookup } = answers[0]
  t.match(lookup.status === 'error' ? lookup.error.message : '', /users in Redis: reading .*user:\{alice\} failed/)
  t.equal((await async(users.get('alice'))).lookup.status, 'error', 'an error is not cached')
  await t.rejects(users.set('alice', { token: 'b' }), 'a write rejects')
  await t.rejects(users.list())

  await own.start()
  const back = await waitAnswered(users, 'bob')
  t.same(back, { status: 'unknown' }, 'answers again once Redis is back (empty: nothing persisted)')
  t.equal(await users.set('alice', { token: 'a2' }), 'created')
  t.equal(record(await users.get('alice'))?.token, 'a2')
})

t.test('standalone: a hung Redis fails within the command timeout', async t => {
  const own = await startRedis(t)
  const users = new RedisUserSource(await gatewayClient(t, own.url), { keyPrefix: prefix(), parse, cacheMs: 100 })
  await users.set('alice', { token: 'a' })
  own.pause(true)
  t.teardown(() => own.pause(false))
  await sleep(150)
  const { ms, lookup } = await async(users.get('alice'))
  t.equal(lookup.status, 'error')
  t.match(lookup.status === 'error' ? lookup.error.message : '', `failed: redis ${own.url} did not answer within 300 ms`)
  t.ok(ms < 1000, `answered in ${ms} ms`)
  own.pause(false)
  t.equal((await waitAnswered(users, 'alice')).status, 'found')
})

t.test('a read Redis answered late is reused for cacheMs from its sending, not from its answer', async t => {
  const own = await startRedis(t)
  const users = new RedisUserSource(await gatewayClient(t, own.url), { keyPrefix: prefix(), parse, cacheMs: 150 })
  const other = new Redis(own.port, '127.0.0.1')
  t.teardown(() => other.disconnect())
  await users.set('alice', { token: 'a', enabled: true })
  own.pause(true)
  const read = async(users.get('alice'))
  await sleep(200)
  own.pause(false)
  const { ms, lookup } = await read
  t.equal(record(lookup)?.enabled, true)
  t.ok(ms > 150, `answered ${ms} ms after its sending, past cacheMs`)
  await other.hset(users.userKey('alice'), 'enabled', 'false')
  t.equal(record(await users.get('alice'))?.enabled, false, 'read again: the first read is older than cacheMs')
})

t.test('a wall clock stepped back (NTP, a resumed VM) never keeps a cached record past cacheMs', async t => {
  const own = await startRedis(t)
  const users = new RedisUserSource(await gatewayClient(t, own.url), { keyPrefix: prefix(), parse, cacheMs: 50 })
  await users.set('alice', { token: 'a', enabled: true })
  t.equal(record(await users.get('alice'))?.enabled, true)
  // changed behind the gateway's back, as another gateway or redis-cli would
  await redisCli(own.port, 'HSET', users.userKey('alice'), 'enabled', 'false')
  const wall = Date.now
  Date.now = () => wall() - 3_600_000
  t.teardown(() => { Date.now = wall })
  await sleep(150)
  t.equal(record(await users.get('alice'))?.enabled, false, 'read again once cacheMs passed, whatever the wall clock says')
})
