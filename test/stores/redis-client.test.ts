import { once } from 'node:events'
import { connect, createServer, type AddressInfo, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Cluster, Redis } from 'ioredis'
import t from 'tap'
import { createRedisClient, redisError, type RedisConfig } from '../../src/stores/redis-client.js'
import { until } from '../helpers/downstream.js'
import { freePort, redisCli, startRedis, startSentinel, waitFor } from '../helpers/redis.js'


/** How long a PING takes to fail; throws if it is answered. */
async function pingFailureMs(client: Redis | Cluster): Promise<number> {
  const started = Date.now()
  await client.ping().then(() => { throw new Error('ping answered') }, () => {})
  return Date.now() - started
}

function track(cfg: RedisConfig): { client: Redis | Cluster; ups: boolean[] } {
  const ups: boolean[] = []
  const client = createRedisClient(cfg, { onUp: up => ups.push(up) })
  t.teardown(() => client.disconnect())
  return { client, ups }
}

t.test('onUp follows the server going away and coming back, on the same client', async t => {
  const server = await startRedis(t)
  const { client, ups } = track({ url: server.url })
  t.ok(await until(() => ups.at(-1) === true, 10_000), 'reported up')
  t.equal(await client.ping(), 'PONG')

  await server.stop()
  t.ok(await until(() => ups.at(-1) === false, 10_000), 'reported down')
  const ms = await pingFailureMs(client)
  t.ok(ms < 1000, `a command against the stopped server fails in ${ms} ms`)

  await server.start()
  t.ok(await until(() => ups.at(-1) === true, 10_000), 'reported up again')
  t.equal(await client.ping(), 'PONG')
  t.same(ups, [true, false, true], 'one report per transition')
})

t.test('a command whose connection closes before its answer says so, with a code', async t => {
  const server = await startRedis(t)
  const { client } = track({ url: server.url })
  await once(client, 'ready')
  const pending = client.get('k')
  ;(client as Redis).stream.destroy()
  const err = await pending.then(() => undefined, (e: unknown) => redisError(client, e))
  t.match(err, { message: /^redis redis:\/\/127\.0\.0\.1:\d+: the connection closed before the answer$/, code: 'ECONNRESET' })
})

t.test('an unreachable Redis is reported down once and commands fail fast', async t => {
  const port = await freePort()
  for (const cfg of [
    { url: `redis://127.0.0.1:${port}` },
    { cluster: [`127.0.0.1:${port}`] },
    { sentinels: [{ host: '127.0.0.1', port }], name: 'nowhere' },
  ] satisfies RedisConfig[]) {
    const kind = Object.keys(cfg)[0]
    const { client, ups } = track(cfg)
    await sleep(700) // several failed connection attempts, each emitting 'error'
    t.same(ups, [false], `${kind}: reported down, never up`)
    const ms = await pingFailureMs(client)
    t.ok(ms < 1000, `${kind}: ping fails in ${ms} ms`)
  }
})

t.test('sentinel config finds the master', async t => {
  const master = await startRedis(t)
  const sentinel = await startSentinel(t, master, 'gw')
  const { client, ups } = track({ sentinels: [{ host: '127.0.0.1', port: sentinel.port }], name: 'gw' })
  t.ok(await until(() => ups.at(-1) === true, 10_000), 'reported up')
  await client.set('via-sentinel', '1')
  const direct = createRedisClient({ url: master.url }) as Redis
  t.teardown(() => direct.disconnect())
  await once(direct, 'ready')
  t.equal(await direct.get('via-sentinel'), '1', 'the write reached the monitored master')
})

t.test('a Sentinel client that ioredis ends unasked connects again; one the gateway closes stays closed', async t => {
  const master = await startRedis(t)
  const sentinel = await startSentinel(t, master, 'gw')
  const { client, ups } = track({ sentinels: [{ host: '127.0.0.1', port: sentinel.port }], name: 'gw' })
  // what ioredis's failover detector does on +switch-master, here while the client resolves the master: ioredis then
  // ends the client ("Connection is closed.") and schedules no reconnect
  const ended = new Promise(resolve => client.once('end', resolve))
  ;(client as unknown as { connector: { disconnect: () => void } }).connector.disconnect()
  await ended
  t.ok(await until(() => ups.at(-1) === true, 10_000), 'up again')
  t.equal(await client.ping(), 'PONG')
  client.disconnect()
  await sleep(500)
  t.equal(client.status, 'end', 'the gateway\'s own disconnect is final')
})

t.test('a Sentinel that hangs is passed over for the next one', async t => {
  const master = await startRedis(t)
  const hung = await startSentinel(t, master, 'gw')
  const next = await startSentinel(t, master, 'gw')
  hung.pause(true)
  t.teardown(() => { hung.pause(false) })
  const { client, ups } = track({ sentinels: [{ host: '127.0.0.1', port: hung.port }, { host: '127.0.0.1', port: next.port }], name: 'gw' })
  t.ok(await until(() => ups.at(-1) === true, 5000), 'the master found through the second Sentinel')
  t.equal(await client.ping(), 'PONG')
})

t.test('a Sentinel failover away from a master that hangs: the client follows the new master', async t => {
  const master = await startRedis(t)
  const replica = await startRedis(t)
  await redisCli(replica.port, 'REPLICAOF', '127.0.0.1', String(master.port))
  await waitFor('the replica in sync', async () => (await redisCli(replica.port, 'INFO', 'replication')).includes('master_link_status:up'))
  const sentinel = await startSentinel(t, master, 'gw', { downAfterMs: 500 })
  // the sentinel learns of the replica from the master's INFO
  await waitFor('the sentinel to know the replica', async () => (await redisCli(sentinel.port, 'SENTINEL', 'REPLICAS', 'gw')).includes(String(replica.port)))
  const { client } = track({ sentinels: [{ host: '127.0.0.1', port: sentinel.port }], name: 'gw' })
  await once(client, 'ready')
  await client.set('k', 'before')

  // its connections stay open and nothing is answered: no 'close' tells the client
  master.pause(true)
  t.teardown(() => { master.pause(false) })
  await waitFor('the sentinel to promote the replica', async () =>
    (await redisCli(sentinel.port, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', 'gw')).includes(String(replica.port)), 30_000)
  let written = false
  const writing = setInterval(() => { client.set('k', 'after').then(() => { written = true }, () => {}) }, 50)
  t.teardown(() => clearInterval(writing))
  t.ok(await until(() => written, 10_000), 'writes reach the new master while the old one still hangs')
  t.equal(await redisCli(replica.port, 'GET', 'k'), 'after\n')
})

t.test('a Sentinel failover after the master died: the client follows the new master', async t => {
  const master = await startRedis(t)
  const replica = await startRedis(t)
  await redisCli(replica.port, 'REPLICAOF', '127.0.0.1', String(master.port))
  await waitFor('the replica in sync', async () => (await redisCli(replica.port, 'INFO', 'replication')).includes('master_link_status:up'))
  const sentinels = [await startSentinel(t, master, 'gw', { downAfterMs: 500 }), await startSentinel(t, master, 'gw', { downAfterMs: 500 })]
  await waitFor('the sentinels to know the replica', async () =>
    (await Promise.all(sentinels.map(async s => await redisCli(s.port, 'SENTINEL', 'REPLICAS', 'gw')))).every(r => r.includes(String(replica.port))))
  const { client, ups } = track({ sentinels: sentinels.map(s => ({ host: '127.0.0.1', port: s.port })), name: 'gw' })
  await once(client, 'ready')
  await master.stop()
  await waitFor('a sentinel to promote the replica', async () =>
    (await redisCli(sentinels[0].port, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', 'gw')).includes(String(replica.port)), 30_000)
  t.ok(await until(() => ups.at(-1) === true, 10_000), 'up again')
  t.equal(await client.set('k', 'after'), 'OK')
  t.equal(await redisCli(replica.port, 'GET', 'k'), 'after\n', 'on the promoted replica')
})

t.test('a connection ended while its peer hangs (ready, not writable, no close ever) is dropped and made again', async t => {
  const server = await startRedis(t)
  // a hop that never passes the client's FIN on and never closes: the peer of a hung master, as a Sentinel failover's disconnect meets it
  const held: Socket[] = []
  const hop = createServer({ allowHalfOpen: true }, socket => {
    const upstream = connect(server.port, '127.0.0.1')
    held.push(socket, upstream)
    socket.pipe(upstream, { end: false })
    upstream.pipe(socket)
    socket.on('error', () => {})
    upstream.on('error', () => {})
  })
  hop.listen(0, '127.0.0.1')
  await once(hop, 'listening')
  t.teardown(() => { for (const s of held) s.destroy(); hop.close() })
  const { client } = track({ url: `redis://127.0.0.1:${(hop.address() as AddressInfo).port}` })
  await once(client, 'ready')
  t.equal(await client.set('k', '1'), 'OK')

  const redis = client as Redis
  redis.stream.end()
  t.equal(redis.status, 'ready', 'ioredis still says ready')
  await t.rejects(redis.get('k'), /Stream isn't writeable/, 'and refuses every command')
  let answered = false
  const asking = setInterval(() => { redis.get('k').then(() => { answered = true }, () => {}) }, 50)
  t.teardown(() => clearInterval(asking))
  t.ok(await until(() => answered, 5000), 'a new connection answers')
})
