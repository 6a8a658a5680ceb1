import type { Test } from 'tap'
import t from 'tap'
import { startGateway } from '../helpers/gateway.js'
import { startRedis, startSentinel, waitFor, type ServerAuth } from '../helpers/redis.js'

// Sentinel sets whose master and Sentinels require credentials, as production ones do: ACL users on
// both here, so a password sent to the wrong side (or as the default user's) is refused.
const alice: ServerAuth = { user: 'alice', password: 'master-s3cret' }
const sam: ServerAuth = { user: 'sam', password: 'sentinel-s3cret' }
const limit = { name: 'rl', plugin: 'rate-limit', ops: ['Login'], options: { key: '{{user}}', limit: 2, window: '1h' } }

async function sentinelSet (t: Test): Promise<{ master: Awaited<ReturnType<typeof startRedis>>, redis: Record<string, unknown> }> {
  const master = await startRedis(t, { auth: alice })
  const sentinel = await startSentinel(t, master, 'gw', { masterAuth: alice, auth: sam })
  const redis = { sentinels: [{ host: '127.0.0.1', port: sentinel.port }], name: 'gw', username: alice.user, password: alice.password, sentinelUsername: sam.user, sentinelPassword: sam.password }
  return { master, redis }
}

t.test('a rate-limit step on a Sentinel set that requires passwords takes its tokens in the master', async t => {
  const { master, redis } = await sentinelSet(t)
  const gw = await startGateway(t, { redis, chain: [limit] })
  const verdicts = []
  for (let i = 0; i < 3; i++) verdicts.push((await gw.call('Login', { user: 'alice' })).body.reject)
  t.same(verdicts, [false, false, true], 'the third call is limited')
  t.equal(await gw.metric('frp_gateway_ratelimit_decisions_total', { step: 'rl', result: 'store_error' }), undefined)
  const keys = (await master.cli('KEYS', 'frpgw:rl:*')).trim().split('\n')
  t.match(keys, [/alice/], 'the bucket is in the master')
  t.match(await master.cli('PTTL', keys[0]), /^[1-9]\d*\n$/, 'with its TTL')
  t.same((await gw.app.inject({ method: 'GET', url: '/readyz' })).json(), { status: 'ready' })
})

t.test('a wrong password: /readyz and the log name the Sentinel set and which side refused, never the password', async t => {
  const { redis } = await sentinelSet(t)
  const set = `redis sentinels ${(redis.sentinels as Array<{ port: number }>).map(s => `127.0.0.1:${s.port}`).join(', ')} (gw)`
  const cases = [
    { what: 'the master\'s', redis: { ...redis, password: 'wrong-master-pw' }, cause: /^the master 127\.0\.0\.1:\d+: WRONGPASS / },
    { what: 'the Sentinels\'', redis: { ...redis, sentinelPassword: 'wrong-sentinel-pw' }, cause: /^no Sentinel gave the master's address: WRONGPASS / }
  ]
  for (const { what, redis, cause } of cases) {
    const gw = await startGateway(t, { redis, chain: [limit] })
    t.same((await gw.call('Login', { user: 'alice' })).body, { reject: false, unchange: true }, `${what}: fail open`)
    const { status, reason } = (await gw.app.inject({ method: 'GET', url: '/readyz' })).json()
    t.equal(status, 'not ready')
    t.ok(reason.startsWith(`${set} is not reachable: `), `${what}: /readyz names the set: ${reason}`)
    t.match(reason.slice(`${set} is not reachable: `.length), cause, `${what}: and the cause`)
    const logged = gw.logs.find(l => l.msg === 'step failed')
    t.equal(logged?.err.message, reason, `${what}: the log says the same`)
    const secrets = [alice.password, sam.password, 'wrong-master-pw', 'wrong-sentinel-pw']
    t.same([reason, ...gw.lines].filter(text => secrets.some(s => text.includes(s))), [], `${what}: no password in /readyz or the log`)
  }
})

t.test('a failover with passwords: the gateway logs in to the promoted replica with the same credentials', async t => {
  const master = await startRedis(t, { auth: alice })
  const replica = await startRedis(t, { auth: alice })
  for (const args of [['CONFIG', 'SET', 'masteruser', alice.user as string], ['CONFIG', 'SET', 'masterauth', alice.password], ['REPLICAOF', '127.0.0.1', String(master.port)]]) await replica.cli(...args)
  await waitFor('the replica in sync', async () => (await replica.cli('INFO', 'replication')).includes('master_link_status:up'))
  const sentinel = await startSentinel(t, master, 'gw', { masterAuth: alice, auth: sam, downAfterMs: 500 })
  await waitFor('the sentinel to know the replica', async () => (await sentinel.cli('SENTINEL', 'REPLICAS', 'gw')).includes(String(replica.port)))
  const redis = { sentinels: [{ host: '127.0.0.1', port: sentinel.port }], name: 'gw', username: alice.user, password: alice.password, sentinelUsername: sam.user, sentinelPassword: sam.password }
  const gw = await startGateway(t, { redis, chain: [{ ...limit, options: { ...limit.options, limit: 1000, onStoreError: 'reject' } }] })
  t.equal((await gw.call('Login', { user: 'alice' })).body.reject, false)

  master.pause(true)
  t.teardown(() => { master.pause(false) })
  await waitFor('the sentinel to promote the replica', async () => (await sentinel.cli('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', 'gw')).includes(String(replica.port)), 30_000)
  let answer: unknown
  for (let i = 0; i < 400 && (answer = (await gw.call('Login', { user: 'bob' })).body.reject) !== false; i++) await new Promise(resolve => setTimeout(resolve, 50))
  t.equal(answer, false, 'a call allowed by the new master (onStoreError reject: not for want of Redis)')
  t.match(await replica.cli('KEYS', 'frpgw:rl:*'), /bob/, 'its bucket is in the promoted replica')
  t.same((await gw.app.inject({ method: 'GET', url: '/readyz' })).json(), { status: 'ready' })
})
