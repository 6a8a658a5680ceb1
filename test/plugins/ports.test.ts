import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { parseUserRecord } from '../../src/users/record.js'
import { RedisUserSource } from '../../src/users/redis-source.js'
import { configFile, runCli } from '../helpers/cli.js'
import { startDownstream } from '../helpers/downstream.js'
import { loadSamples } from '../helpers/fixtures.js'
import { configIssues, startGateway, type TestGateway } from '../helpers/gateway.js'
import { startRedis, startRedisCluster } from '../helpers/redis.js'

const samples = loadSamples('frps-0.64.0-requests.jsonl')
const sample = (name: string): Record<string, any> =>
  structuredClone(samples.find(s => s.body.op === 'NewProxy' && s.body.content.proxy_name === name)?.body.content) as Record<string, any>

/** alice.any: a tcp proxy whose remote port frps would pick (sent with no remote_port at all). */
const any = (): Record<string, any> => sample('alice.any')
/** A tcp proxy of `user` named `user.short`, with the remote port frpc asked for (absent: none). */
function proxyOf (user: string, short: string, port?: number, runId = '9a961f8f3302e589'): Record<string, any> {
  const p = any()
  p.user = { ...p.user, user, run_id: runId }
  p.proxy_name = `${user}.${short}`
  if (port !== undefined) p.remote_port = port
  return p
}
const closeOf = (proxy: Record<string, any>): Record<string, any> => ({ user: proxy.user, proxy_name: proxy.proxy_name })

const portsStep = (options: Record<string, unknown>): Record<string, unknown> => ({ name: 'ports', plugin: 'ports', options })
const noPort = (user: string, ports: string) => ({ reject: true, reject_reason: `no free remote port for ${user} in ${ports}`, unchange: true })
const ALLOW = { reject: false, unchange: true }
const assigned = (proxy: Record<string, any>, port: number) => ({ reject: false, unchange: false, content: { ...proxy, remote_port: port } })

/** Polls the registry (bounded, wide for a loaded machine) until the record of (user, name) satisfies `done`. */
async function recorded (gw: TestGateway, user: string, name: string, done: (r: { run_id: string, remote_port?: number } | undefined) => boolean): Promise<void> {
  const store = gw.ref.current.registry?.store
  const until = performance.now() + 3000
  while (!done(await store?.get(user, name)) && performance.now() < until) await sleep(10)
}
const owner = async (gw: TestGateway, port: number) => await gw.ref.current.registry?.store.portOwner(port)

/** A fresh config base per gateway (a key prefix of its own on a shared Redis). */
type Backend = (t: Test) => Promise<() => Record<string, unknown>>

const backends: Array<[string, Backend]> = [
  ['memory', async () => () => ({})],
  ['Redis standalone', async t => {
    const redis = await startRedis(t)
    return () => ({ redis: { url: redis.url, keyPrefix: `frpgw:${randomUUID()}:` } })
  }],
  ['Redis Cluster', async t => {
    const cluster = await startRedisCluster(t)
    return () => ({ redis: { cluster: cluster.urls, keyPrefix: `frpgw:${randomUUID()}:` } })
  }]
]

for (const [backend, start] of backends) {
  t.test(`ports on ${backend}`, async t => {
    const base = await start(t)
    const gateway = async (chain: unknown[], extra: Record<string, unknown> = {}): Promise<TestGateway> =>
      await startGateway(t, { ...base(), registry: {}, chain, ...extra })

    t.test('assign: a port of the range for remote_port 0 or none; an explicit port and other types pass unchanged', async t => {
      const gw = await gateway([portsStep({ range: [41000, '41001-41009'] })])
      const ssh = sample('alice.ssh')
      t.same((await gw.call('NewProxy', any())).body, assigned(any(), 41000), 'no remote_port: the first free port')
      t.same((await gw.call('NewProxy', { ...ssh, remote_port: 0 })).body, assigned(ssh, 41001), 'remote_port 0 likewise')
      const dns = { ...sample('alice.dns'), remote_port: 0 }
      t.same((await gw.call('NewProxy', dns)).body, assigned(dns, 41002), 'udp too')
      t.same((await gw.call('NewProxy', sample('alice.ssh'))).body, ALLOW, 'remote port 27606 asked for: left alone')
      t.same((await gw.call('NewProxy', sample('alice.web'))).body, ALLOW, 'http holds no port')
      t.same((await gw.call('NewProxy', sample('alice.mux'))).body, ALLOW, 'nor does tcpmux')
      await recorded(gw, 'alice', 'alice.any', r => r?.remote_port === 41000)
      t.equal((await gw.ref.current.registry?.store.get('alice', 'alice.any'))?.remote_port, 41000, 'recorded with the port frps was told')
      t.same(await owner(gw, 41000), { user: 'alice', name: 'alice.any' }, 'in use, no end')
      t.same((await gw.call('NewProxy', any())).body, assigned(any(), 41000), 'the same proxy again: the same port')
      t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewProxy', step: 'ports', decision: 'modify' }), 4)
      t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewProxy', step: 'ports', decision: 'allow' }), 3)
    })

    t.test('sticky: the same port across a reconnect and after CloseProxy, held for no one else, then freed after releaseAfter', async t => {
      const gw = await gateway([portsStep({ mode: 'sticky', range: ['41100'], releaseAfter: '1s' })])
      const first = sample('alice.ssh')
      t.same((await gw.call('NewProxy', first)).body, assigned(first, 41100), 'sticky overrides the port frpc asked for')
      await recorded(gw, 'alice', 'alice.ssh', r => r?.remote_port === 41100)
      const second = { ...first, user: { ...first.user, run_id: 'second-session' } }
      t.same((await gw.call('NewProxy', second)).body, assigned(second, 41100), 'a reconnect (new run_id): the same port')
      await recorded(gw, 'alice', 'alice.ssh', r => r?.run_id === 'second-session')
      await gw.call('CloseProxy', closeOf(second))
      await recorded(gw, 'alice', 'alice.ssh', r => r === undefined)
      const held = await owner(gw, 41100)
      t.equal(held?.name, 'alice.ssh', 'held after CloseProxy')
      t.ok(held?.heldUntil !== undefined && held.heldUntil > Date.now(), 'until releaseAfter from the close')
      t.same((await gw.call('NewProxy', proxyOf('bob', 'ssh'))).body, noPort('bob', '41100'), 'a held port goes to no one else')
      const third = { ...first, user: { ...first.user, run_id: 'third-session' } }
      t.same((await gw.call('NewProxy', third)).body, assigned(third, 41100), 'and back to its proxy after the close')
      await recorded(gw, 'alice', 'alice.ssh', r => r?.run_id === 'third-session')
      await gw.call('CloseProxy', closeOf(third))
      await recorded(gw, 'alice', 'alice.ssh', r => r === undefined)
      await sleep(1600)
      t.equal(await owner(gw, 41100), undefined, 'free once releaseAfter passed')
      const bob = proxyOf('bob', 'ssh')
      t.same((await gw.call('NewProxy', bob)).body, assigned(bob, 41100), 'and handed to whoever asks')
      t.same((await gw.call('NewProxy', sample('alice.ssh'))).body, noPort('alice', '41100'), 'alice lost it')
    })

    t.test('a later step rejects: the port is held only while the call may still commit; a hold the proxy had before stays as long', async t => {
      const deny = { name: 'deny', plugin: 'reject', ops: ['NewProxy'], when: { fields: { 'metas.deny': 'yes' } }, options: { reason: 'not now' } }
      const gw = await gateway([portsStep({ range: ['41200-41201'] }), deny], { deadlineMs: 500 })
      const refused = { ...any(), metas: { deny: 'yes' } }
      const asked = Date.now()
      t.same((await gw.call('NewProxy', refused)).body, { reject: true, reject_reason: 'not now', unchange: true })
      const held = await owner(gw, 41200)
      t.equal(held?.name, 'alice.any')
      // frps was told no: no record will claim it, so the hold ends with the call's commit window (deadline + 5 s), not releaseAfter
      t.ok(held?.heldUntil !== undefined && held.heldUntil <= asked + 500 + 5000 + 1000, `held until ${String(held?.heldUntil)}, within the call's window of ${asked}`)
      const other = proxyOf('alice', 'other')
      t.same((await gw.call('NewProxy', other)).body, assigned(other, 41201), 'another proxy gets another port meanwhile')
      t.same((await gw.call('NewProxy', any())).body, assigned(any(), 41200), 'the retry gets the held one')
      t.same((await gw.call('NewProxy', proxyOf('bob', 'x'))).body, noPort('bob', '41200-41201'))
      // opened, then closed: held for releaseAfter (7d); a refused call of the same proxy does not shorten that
      await recorded(gw, 'alice', 'alice.any', r => r?.remote_port === 41200)
      await gw.call('CloseProxy', closeOf(any()))
      await recorded(gw, 'alice', 'alice.any', r => r === undefined)
      t.same((await gw.call('NewProxy', refused)).body, { reject: true, reject_reason: 'not now', unchange: true })
      const kept = await owner(gw, 41200)
      t.ok(kept?.heldUntil !== undefined && kept.heldUntil > Date.now() + 6.9 * 86_400_000, 'still held for releaseAfter from the close')
    })

    t.test('a shadow ports step holds its port only for the call: the answer did not carry it', async t => {
      const gw = await gateway([{ ...portsStep({ range: ['41250'] }), mode: 'shadow' }], { deadlineMs: 500 })
      const asked = Date.now()
      t.same((await gw.call('NewProxy', any())).body, ALLOW, 'shadow: unchanged')
      await recorded(gw, 'alice', 'alice.any', r => r !== undefined)
      const held = await owner(gw, 41250)
      t.ok(held?.heldUntil !== undefined && held.heldUntil <= asked + 500 + 5000 + 1000, 'held within the call\'s window, not in use, not for releaseAfter')
    })

    t.test('a port handed out stays held while its call is in flight, however short releaseAfter', async t => {
      // the call of alice's proxy takes 1.5 s in a later step, past releaseAfter, within deadlineMs
      const slow = await startDownstream(t, async req => {
        if (JSON.parse(req.body).content.user?.user === 'alice') await sleep(1500)
        return { reject: false, unchange: true }
      })
      const gw = await gateway([portsStep({ range: ['41600-41601'], releaseAfter: '1s' }),
        { name: 'slow', plugin: 'forward', options: { url: slow.url, timeoutMs: 3000 } }], { deadlineMs: 4000 })
      const alice = gw.call('NewProxy', any())
      await sleep(1200)
      const bob = proxyOf('bob', 'p')
      t.same((await gw.call('NewProxy', bob)).body, assigned(bob, 41601), 'another proxy gets another port')
      t.same((await alice).body, assigned(any(), 41600))
    })

    t.test('range from the users table; a users step after the ports step checks the assigned port', async t => {
      const users = { alice: { token: 'abc', ports: ['41300-41301'] }, free: { token: 'abc' }, carol: { token: 'abc', ports: [] } }
      const extra = { users: { file: configFile({ users }, 'users.json') } }
      const gw = await gateway([portsStep({ reason: '{{user}} has no free port left ({{ports}}), step {{step}}' }), { name: 'users', plugin: 'users' }], extra)
      t.same((await gw.call('NewProxy', any())).body, assigned(any(), 41300), 'inside alice\'s ports: the users step allows it')
      const ssh = { ...sample('alice.ssh'), remote_port: 0 }
      t.same((await gw.call('NewProxy', ssh)).body, assigned(ssh, 41301))
      t.same((await gw.call('NewProxy', proxyOf('alice', 'third'))).body,
        { reject: true, reject_reason: 'alice has no free port left (41300-41301), step ports', unchange: true }, 'the reason template')
      t.same((await gw.call('NewProxy', proxyOf('free', 'ssh'))).body, ALLOW, 'a user without ports: unchanged, frps picks')
      t.same((await gw.call('NewProxy', proxyOf('carol', 'ssh', 0))).body,
        { reject: true, reject_reason: "carol may have no tcp or udp proxy (ports is empty)", unchange: true }, 'ports []: the users step refuses')
      t.same((await gw.call('NewProxy', proxyOf('dave', 'ssh'))).body, { reject: true, reject_reason: 'unknown user dave', unchange: true }, 'unknown: the users step decides')

      const outside = await gateway([portsStep({ range: [41350] }), { name: 'users', plugin: 'users' }], extra)
      t.same((await outside.call('NewProxy', any())).body, { reject: true, reject_reason: "remote port 41350 is outside alice's ports 41300-41301", unchange: true },
        'the users step sees the port the ports step assigned')
    })
  })
}

for (const [backend, start] of backends.slice(1)) {
  t.test(`two gateways on one ${backend}: concurrent NewProxy calls never get one port twice`, async t => {
    const base = (await start(t))()
    const config = { ...base, registry: {}, chain: [portsStep({ range: ['41400-41414'] })] }
    const gateways = [await startGateway(t, config), await startGateway(t, config)]
    const answers = await Promise.all(Array.from({ length: 40 }, async (_, i) =>
      (await gateways[i % 2].call('NewProxy', proxyOf(`u${i}`, 'p'))).body))
    const ports = answers.filter(a => a.unchange === false).map(a => a.content.remote_port as number)
    t.equal(ports.length, 15, 'every port of the range handed out')
    t.equal(new Set(ports).size, 15, 'each once')
    t.ok(ports.every(p => p >= 41400 && p <= 41414))
    const rest = answers.filter(a => a.unchange !== false)
    t.equal(rest.length, 25)
    t.same(rest.filter(a => !(a.reject === true && /^no free remote port for u\d+ in 41400-41414$/.test(a.reject_reason))), [], 'the rest: the reason')
  })
}

for (const onStoreError of ['allow', 'reject'] as const) {
  t.test(`Redis stopped, registry onStoreError ${onStoreError}: answered at once by the policy`, async t => {
    const redis = await startRedis(t)
    const gw = await startGateway(t, {
      redis: { url: redis.url }, registry: { onStoreError }, deadlineMs: 2000, drainMs: 0, chain: [portsStep({ range: ['41500-41509'] })]
    })
    t.same((await gw.call('NewProxy', any())).body, assigned(any(), 41500))
    await redis.stop()
    const started = performance.now()
    const { body } = await gw.call('NewProxy', proxyOf('alice', 'two'))
    t.ok(performance.now() - started < 2000, 'within the deadline')
    t.same(body, onStoreError === 'allow' ? ALLOW : { reject: true, reject_reason: 'frp-plugin-gateway: step ports failed: registry unavailable', unchange: true })
    t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewProxy', step: 'ports', decision: 'error' }), 1)
    t.ok(gw.logs.some(l => l.msg === 'step failed' && l.step === 'ports'), 'logged')
  })
}

/** A stand-in for frps's dashboard API that lists no proxy online; its URL. */
async function frpsListingNone (t: Test): Promise<string> {
  const frps = createServer((_req, res) => {
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ proxies: [] }))
  }).listen(0, '127.0.0.1')
  await once(frps, 'listening')
  t.teardown(() => { frps.closeAllConnections(); frps.close() })
  return `http://127.0.0.1:${(frps.address() as AddressInfo).port}`
}

t.test('with frpsApi, a proxy frps refused loses its record at reconciliation, and its next try gets another port: the refused one is held for no one', async t => {
  // frps lists no proxy online: it refused the one the gateway allowed (its port taken, say), and sent no CloseProxy
  const url = await frpsListingNone(t)
  const gw = await startGateway(t, { registry: { frpsApi: { url }, reconcileEvery: '1s' }, chain: [portsStep({ range: ['41800-41801'], releaseAfter: '3s' })] })
  t.same((await gw.call('NewProxy', any())).body, assigned(any(), 41800))
  await recorded(gw, 'alice', 'alice.any', r => r !== undefined)
  t.same(await owner(gw, 41800), { user: 'alice', name: 'alice.any' }, 'in use while recorded')
  // removed at the first reconciliation that finds the record older than one interval (1 to 3 s)
  const until = performance.now() + 6000
  while (await gw.ref.current.registry?.store.get('alice', 'alice.any') !== undefined && performance.now() < until) await sleep(50)
  t.equal(await gw.ref.current.registry?.store.get('alice', 'alice.any'), undefined, 'the record went at reconciliation')
  const refused = await owner(gw, 41800)
  t.equal(refused?.refused, true, 'its port, never listed open, is held for no one')
  t.ok(refused?.heldUntil !== undefined && refused.heldUntil > Date.now() + 3_000_000, 'for an hour, not releaseAfter')
  t.same((await gw.call('NewProxy', any())).body, assigned(any(), 41801), 'frpc\'s next try gets the next port')
  await recorded(gw, 'alice', 'alice.any', r => r?.remote_port === 41801)
  t.same((await gw.call('NewProxy', proxyOf('bob', 'p'))).body, noPort('bob', '41800-41801'), 'and no one else gets the refused one')
})

t.test('assign mode: a port frpc asked for that frps refused to this very proxy is refused by the step, so no record counts it', async t => {
  const url = await frpsListingNone(t)
  const gw = await startGateway(t, { registry: { frpsApi: { url }, reconcileEvery: '1s' }, chain: [portsStep({ range: ['41810-41811'] })] })
  const own = proxyOf('alice', 'own', 41900)
  t.same((await gw.call('NewProxy', own)).body, ALLOW, 'a port of its own choice passes')
  await recorded(gw, 'alice', 'alice.own', r => r !== undefined)
  const until = performance.now() + 6000
  while ((await owner(gw, 41900))?.refused !== true && performance.now() < until) await sleep(50)
  const held = await owner(gw, 41900)
  t.equal(held?.refused, true, 'reconciliation found it never open')
  t.same((await gw.call('NewProxy', own)).body, {
    reject: true, unchange: true,
    reject_reason: `frps refused remote port 41900 to alice.own (another program listens there, or allowPorts): ask for another port, or this one after ${new Date(held?.heldUntil as number).toISOString()}`
  }, 'its next try is refused here, not recorded for frps to refuse again')
  await gw.ref.current.drain()
  t.equal(await gw.ref.current.registry?.store.get('alice', 'alice.own'), undefined, 'no record counts it')
  t.same((await gw.call('NewProxy', proxyOf('bob', 'other', 41900))).body, ALLOW, 'another proxy asking for that port is frps\'s to judge')
  t.same((await gw.call('NewProxy', proxyOf('alice', 'own', 41901))).body, ALLOW, 'and another port for the proxy passes')
})

t.test('ranges from a users table in Redis: a record that does not validate, then Redis stopped, follow registry onStoreError', async t => {
  const redis = await startRedis(t)
  const client = new Redis(redis.port, '127.0.0.1')
  t.teardown(() => client.disconnect())
  client.on('error', () => {}) // Redis stopped on purpose
  const control = new RedisUserSource(client, { keyPrefix: 'frpgw:', parse: parseUserRecord })
  await control.set('alice', { token: 'abc', ports: ['41700-41709'] })
  await client.hset('frpgw:user:{bob}', 'ports', '["x"]')
  const gw = await startGateway(t, {
    redis: { url: redis.url }, users: { redis: { cacheMs: 0 } }, registry: { store: 'memory', onStoreError: 'reject' }, deadlineMs: 2000, drainMs: 0, chain: [portsStep({})]
  })
  t.same((await gw.call('NewProxy', any())).body, assigned(any(), 41700), 'alice\'s ports, read from Redis')
  t.same((await gw.call('NewProxy', proxyOf('bob', 'ssh'))).body,
    { reject: true, reject_reason: 'frp-plugin-gateway: step ports failed: the record of bob is not valid', unchange: true })
  await redis.stop()
  t.same((await gw.call('NewProxy', proxyOf('alice', 'two'))).body,
    { reject: true, reject_reason: 'frp-plugin-gateway: step ports failed: user table unavailable', unchange: true })
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewProxy', step: 'ports', decision: 'error' }), 2)
})

t.test('check refuses the step without the registry block, without a range or users block, and every bad option', async t => {
  t.same(await configIssues(t, { chain: [portsStep({ range: [6000] })] }),
    [{ path: 'chain[0].options', message: 'plugin ports needs the top-level "registry" block: {"store": "auto"}' }])
  t.same(await configIssues(t, { registry: {}, chain: [portsStep({})] }),
    [{ path: 'chain[0].options.range', message: 'without range, the step assigns from each user\'s ports in the users table: set range, or add the top-level "users" block' }])
  const bad = await configIssues(t, { registry: {}, chain: [portsStep({ range: [6000, '7000-6000', 'x', 0, '0-10', 70000, '6100-6199'], releaseAfter: '366d', mode: 'always', reason: '{{nope}}' })] })
  t.same(bad.map(i => i.path).sort(), [
    'chain[0].options.mode', 'chain[0].options.range[1]', 'chain[0].options.range[2]', 'chain[0].options.range[3]', 'chain[0].options.range[4]',
    'chain[0].options.range[5]', 'chain[0].options.releaseAfter'
  ], 'every bad range entry at its index')
  t.match(bad.find(i => i.path === 'chain[0].options.range[3]')?.message, '"0" includes port 0, which asks frps to pick a port: ranges start at 1')
  t.match(bad.find(i => i.path === 'chain[0].options.range[1]')?.message, '"7000-6000" is not a port or a "low-high" range within 0-65535')
  t.match(bad.find(i => i.path === 'chain[0].options.releaseAfter')?.message, 'expected a hold from 1s to 8760h')
  t.match((await configIssues(t, { registry: {}, chain: [portsStep({ range: [6000], reason: '{{nope}}' })] }))[0],
    { path: 'chain[0].options.reason', message: /unknown template name \{\{nope\}\}: expected one of .*ports/ })
  t.match((await configIssues(t, { registry: {}, chain: [portsStep({ range: [6000], releaseAfter: '0s' })] }))[0], { path: 'chain[0].options.releaseAfter' })
  const year = await startGateway(t, { registry: {}, chain: [portsStep({ range: [6000], releaseAfter: '365d' })] })
  const before = Date.now()
  await year.call('NewProxy', any())
  await recorded(year, 'alice', 'alice.any', r => r?.remote_port === 6000)
  await year.call('CloseProxy', closeOf(any()))
  await recorded(year, 'alice', 'alice.any', r => r === undefined)
  const held = await owner(year, 6000)
  t.ok(held?.heldUntil !== undefined && held.heldUntil >= before + 365 * 86_400_000, '365d goes: held that long after the close')

  const res = await runCli(['check', '--config', configFile({ chain: [portsStep({ range: [6000] })] })])
  t.equal(res.code, 1)
  t.match(res.stderr, 'chain[0].options: plugin ports needs the top-level "registry" block')
})
