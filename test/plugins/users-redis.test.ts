import { setTimeout as sleep } from 'node:timers/promises'
import { Cluster, Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { parseUserRecord, type CompiledUser } from '../../src/users/record.js'
import { RedisUserSource } from '../../src/users/redis-source.js'
import { startGateway } from '../helpers/gateway.js'
import { startRedis, startRedisCluster } from '../helpers/redis.js'

const CACHE_MS = 50
const ALLOW = { reject: false, unchange: true }
const rejected = (reason: string) => ({ reject: true, reject_reason: reason, unchange: true })

const login = (user: string, token: string) => ({ version: '0.64.0', user, timestamp: Math.floor(Date.now() / 1000), metas: { token }, client_address: '127.0.0.1:4000' })
const later = (user: string, token: string) => ({ user: { user, metas: { token }, run_id: 'r1' } })
const LATER: Record<string, Record<string, unknown>> = {
  Ping: {},
  NewWorkConn: { run_id: 'r1' },
  NewUserConn: { proxy_name: 'alice.ssh', proxy_type: 'tcp', remote_addr: '127.0.0.1:5000' }
}

/** A control plane's view of the table: its own client, as `users set` or redis-cli would be. */
function controlPlane (t: Test, client: Redis | Cluster): { control: RedisUserSource<CompiledUser>, client: Redis | Cluster } {
  t.teardown(() => client.disconnect())
  client.on('error', () => {}) // Redis stopped on purpose: the gateway's client is the one under test
  return { control: new RedisUserSource(client, { keyPrefix: 'frpgw:', parse: parseUserRecord }), client }
}

const setups = [
  {
    kind: 'standalone',
    async start (t: Test) {
      const redis = await startRedis(t)
      return { redis: { url: redis.url }, ...controlPlane(t, new Redis(redis.port, '127.0.0.1')) }
    }
  },
  {
    kind: 'Cluster',
    async start (t: Test) {
      const cluster = await startRedisCluster(t)
      return { redis: { cluster: cluster.urls }, ...controlPlane(t, new Cluster(cluster.nodes)) }
    }
  }
]

for (const setup of setups) {
  t.test(`${setup.kind}: a table in Redis, its changes seen within cacheMs, a disabled user cut off at the next call`, async t => {
    const { redis, control } = await setup.start(t)
    t.equal(await control.set('alice', { token: 'a1', ports: ['6000-6099'], metas: { team: 'blue' } }), 'created')
    const gw = await startGateway(t, { redis, users: { redis: { cacheMs: CACHE_MS } }, chain: [{ name: 'users', plugin: 'users' }] })

    const first = await gw.call('Login', login('alice', 'a1'))
    t.same(first.body.content?.metas, { token: 'a1', team: 'blue' }, 'Login allowed, record metas set')
    t.same((await gw.call('Login', login('alice', 'nope'))).body, rejected('token does not match for alice'))
    t.same((await gw.call('Login', login('carol', 'a1'))).body, rejected('unknown user carol'))
    t.same((await gw.call('NewProxy', { ...later('alice', 'a1'), proxy_name: 'alice.ssh', proxy_type: 'tcp', remote_port: 6150 })).body,
      rejected("remote port 6150 is outside alice's ports 6000-6099"))
    for (const op of Object.keys(LATER)) t.same((await gw.call(op, { ...later('alice', 'a1'), ...LATER[op] })).body, ALLOW, `${op} allowed`)

    t.equal(await control.setEnabled('alice', false), 'disabled')
    await sleep(CACHE_MS + 20)
    for (const op of Object.keys(LATER)) {
      t.same((await gw.call(op, { ...later('alice', 'a1'), ...LATER[op] })).body, rejected('user alice is disabled'), `${op} after disabling: cut off`)
    }
    t.same((await gw.call('Login', login('alice', 'a1'))).body, rejected('user alice is disabled'), 'and cannot log in again')

    t.equal(await control.setEnabled('alice', true), 'enabled')
    t.equal(await control.set('alice', { token: 'a2', ports: ['7000'] }), 'replaced')
    await sleep(CACHE_MS + 20)
    t.same((await gw.call('Ping', later('alice', 'a1'))).body, rejected('token does not match for alice'), 'a changed token cuts off clients holding the old one')
    t.same((await gw.call('Login', login('alice', 'a1'))).body, rejected('token does not match for alice'))
    t.same((await gw.call('Login', login('alice', 'a2'))).body, ALLOW, 'the new token logs in; the record has no metas any more')
    t.same((await gw.call('NewProxy', { ...later('alice', 'a2'), proxy_name: 'alice.ssh', proxy_type: 'tcp', remote_port: 6050 })).body,
      rejected("remote port 6050 is outside alice's ports 7000"))

    t.equal(await control.delete('alice'), 'deleted')
    await sleep(CACHE_MS + 20)
    t.same((await gw.call('NewWorkConn', { ...later('alice', 'a2'), run_id: 'r1' })).body, rejected('unknown user alice'), 'a deleted user is unknown')

    const results = { ok: 5, bad_token: 3, unknown_user: 2, port: 2, disabled: 4 }
    for (const [result, n] of Object.entries(results)) t.equal(await gw.metric('frp_gateway_users_decisions_total', { step: 'users', result }), n, `${result}: ${n}`)
  })

  t.test(`${setup.kind}: a record that does not validate follows onStoreError, logged without the secret`, async t => {
    const { redis, control, client } = await setup.start(t)
    await control.set('mallory', { token: 'm-secret' })
    // written past the validation, as redis-cli could
    const key = control.userKey('mallory')
    await client.hset(key, 'ports', '["6000-x"]')
    const gw = await startGateway(t, {
      redis,
      users: { redis: { cacheMs: CACHE_MS } },
      chain: [
        { name: 'closed', plugin: 'users', ops: ['Login'] },
        { name: 'open', plugin: 'users', ops: ['Ping'], options: { onStoreError: 'allow' } }
      ]
    })
    t.same((await gw.call('Login', login('mallory', 'm-secret'))).body, rejected('frp-plugin-gateway: step closed failed: the record of mallory is not valid'))
    t.same((await gw.call('Ping', later('mallory', 'm-secret'))).body, ALLOW, 'onStoreError allow lets it through')
    t.equal(await gw.metric('frp_gateway_users_decisions_total', { step: 'closed', result: 'store_error' }), 1)
    t.equal(await gw.metric('frp_gateway_users_decisions_total', { step: 'open', result: 'store_error' }), 1)
    t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'Ping', step: 'open', decision: 'error' }), 1)
    const failures = gw.logs.filter(l => l.msg === 'step failed')
    t.same(failures.map(l => l.step), ['closed', 'open'])
    t.match(failures[0].err.message, `user mallory in Redis (${key}) is not a valid record: ports[0]: "6000-x" is not a port`)
    t.equal(failures[0].err.result, 'invalid_user_record')
    for (const line of gw.lines) t.notOk(line.includes('m-secret'), 'no log line holds the secret')
  })
}

t.test('Redis stopped: onStoreError reject (the default) and allow; back again: decisions resume', async t => {
  const server = await startRedis(t)
  const { control } = controlPlane(t, new Redis(server.port, '127.0.0.1'))
  await control.set('alice', { token: 'a1' })
  const gw = await startGateway(t, {
    redis: { url: server.url },
    users: { redis: { cacheMs: CACHE_MS } },
    deadlineMs: 1000,
    chain: [
      { name: 'closed', plugin: 'users', ops: ['Login', 'NewWorkConn'] },
      { name: 'open', plugin: 'users', ops: ['Ping'], options: { onStoreError: 'allow' } }
    ]
  })
  t.same((await gw.call('Login', login('alice', 'a1'))).body, ALLOW)
  await server.stop()
  await sleep(CACHE_MS + 20)
  for (let i = 0; i < 3; i++) {
    const started = performance.now()
    t.same((await gw.call('Login', login('alice', 'a1'))).body, rejected('frp-plugin-gateway: step closed failed: user table unavailable'))
    t.ok(performance.now() - started < 1000, 'answered within deadlineMs')
  }
  t.same((await gw.call('NewWorkConn', { ...later('alice', 'a1'), run_id: 'r1' })).body, rejected('frp-plugin-gateway: step closed failed: user table unavailable'))
  t.same((await gw.call('Ping', later('alice', 'a1'))).body, ALLOW, 'onStoreError allow')
  t.equal(await gw.metric('frp_gateway_users_decisions_total', { step: 'closed', result: 'store_error' }), 4)
  t.equal(await gw.metric('frp_gateway_users_decisions_total', { step: 'open', result: 'store_error' }), 1)
  t.equal(await gw.metric('frp_gateway_requests_total', { op: 'Login', outcome: 'error' }), 3)
  const failures = gw.logs.filter(l => l.msg === 'step failed')
  t.ok(failures.length >= 2, 'logged')
  t.match(failures[0].err.message, `users in Redis: reading frpgw:user:{alice} failed: redis ${server.url} is not reachable: `)
  t.equal(failures[0].err.result, 'user_table_unavailable')

  await server.start()
  for (let i = 0; i < 100 && await gw.metric('frp_gateway_redis_up') !== 1; i++) await sleep(50)
  t.same((await gw.call('Login', login('alice', 'a1'))).body, rejected('unknown user alice'), 'a fresh Redis holds nobody: unknown, not a store error')
  await control.set('alice', { token: 'a1' })
  await sleep(CACHE_MS + 20)
  t.same((await gw.call('Login', login('alice', 'a1'))).body, ALLOW)
})
