import { createServer } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Test } from 'tap'
import { traceCall } from '../../src/trace.js'
import { createLogger } from '../../src/log.js'
import { loadSamples } from '../helpers/fixtures.js'
import { startGateway, type TestGateway } from '../helpers/gateway.js'

const samples = loadSamples('frps-0.64.0-requests.jsonl')
const RUN_ID = '9a961f8f3302e589'
const SAMPLE = { tcp: 'alice.ssh', udp: 'alice.dns', http: 'alice.web' } as const

/** A NewProxy as frps 0.64.0 sent it for alice's tcp, udp or http proxy, renamed and of another run_id when asked. */
export function newProxy (type: keyof typeof SAMPLE, name?: string, runId = RUN_ID): Record<string, any> {
  const content = structuredClone(samples.find(s => s.body.op === 'NewProxy' && s.body.content.proxy_name === SAMPLE[type])?.body.content) as Record<string, any>
  if (name !== undefined) content.proxy_name = name
  content.user.run_id = runId
  return content
}

/** A NewProxy of a frpc that sets no user (frps 0.64.0: `user.user` empty, no `user.` prefix on the name). */
export function withoutUser (name: string): Record<string, any> {
  const content = structuredClone(samples.find(s => s.body.op === 'NewProxy' && s.body.content.proxy_name === 't3tcp')?.body.content) as Record<string, any>
  content.proxy_name = name
  return content
}

/** A CloseProxy as frps sends it (no proxy_type). */
export const closeProxy = (name: string, runId = RUN_ID): Record<string, any> => ({ user: { user: 'alice', metas: { team: 'blue' }, run_id: runId }, proxy_name: name })

export const quotaStep = (options: Record<string, unknown>): Record<string, unknown> => ({ name: 'quota', plugin: 'quota', options })

/** The answer to a NewProxy: 'allow' (unchanged) or the reject reason. */
export async function answer (gw: TestGateway, content: Record<string, any>): Promise<string> {
  const { status, body } = await gw.call('NewProxy', content)
  if (status !== 200) throw new Error(`HTTP ${status}`)
  return body.reject === true ? body.reject_reason : body.unchange === true ? 'allow' : 'modify'
}

/** The names the registry holds for alice, once the commits of the calls answered so far are done. */
export async function recorded (gw: TestGateway): Promise<string[]> {
  await gw.ref.current.drain()
  return (await gw.ref.current.registry?.store.list('alice') ?? []).map(r => `${r.name}@${r.run_id}`)
}

/** A plain HTTP server answering GET /api/proxy/TYPE as frps's dashboard does, listing `online.tcp` etc. */
export async function fakeFrpsApi (t: Test, online: Record<string, string[]>): Promise<string> {
  const frps = createServer((req, res) => {
    const type = req.url?.split('/').pop() ?? ''
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ proxies: online[type]?.map(name => ({ name, status: 'online' })) ?? null }))
  }).listen(0, '127.0.0.1')
  await new Promise(resolve => frps.once('listening', resolve))
  t.teardown(() => { frps.closeAllConnections(); frps.close() })
  return `http://127.0.0.1:${(frps.address() as { port: number }).port}`
}

/**
 * The behaviour of a quota step through a gateway, the same on every registry store. `base` gives
 * the config blocks of one store, fresh for every gateway (its own key prefix on a shared Redis).
 */
export function runQuotaSuite (t: Test, label: string, setup: (t: Test) => Promise<() => Record<string, unknown>>): void {
  t.test(`quota on ${label}`, async t => {
    const base = await setup(t)
    const gateway = async (t: Test, config: Record<string, unknown>): Promise<TestGateway> =>
      await startGateway(t, { ...base(), registry: {}, ...config })

    t.test('maxProxies: a user\'s proxies of every type, the reason with the count and the limit', async t => {
      const gw = await gateway(t, { chain: [quotaStep({ maxProxies: 2 })] })
      t.equal(await answer(gw, newProxy('tcp')), 'allow')
      t.equal(await answer(gw, newProxy('udp')), 'allow')
      t.equal(await answer(gw, newProxy('http')), 'alice has 2 proxies, the limit is 2 (maxProxies)')
      t.same(await recorded(gw), [`alice.dns@${RUN_ID}`, `alice.ssh@${RUN_ID}`], 'the refused one is not recorded')
      await gw.call('CloseProxy', closeProxy('alice.dns'))
      await gw.ref.current.drain()
      t.equal(await answer(gw, newProxy('http')), 'allow', 'a closed proxy no longer counts')
      t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewProxy', step: 'quota', decision: 'reject' }), 1)
    })

    t.test('maxProxiesPerClient: one run_id\'s proxies; another frpc of the same user counts apart', async t => {
      const gw = await gateway(t, { chain: [quotaStep({ maxProxiesPerClient: 1 })] })
      t.equal(await answer(gw, newProxy('tcp')), 'allow')
      t.equal(await answer(gw, newProxy('udp')), 'alice has 1 proxy on this client, the limit is 1 (maxProxiesPerClient)')
      t.equal(await answer(gw, newProxy('udp', 'alice.dns', 'second-frpc')), 'allow')
      t.equal(await answer(gw, newProxy('http', 'alice.web', 'second-frpc')), 'alice has 1 proxy on this client, the limit is 1 (maxProxiesPerClient)')
    })

    t.test('two quota steps: each counts with its own limits (a shadow one in front leaves the enforcing one whole)', async t => {
      const gw = await gateway(t, {
        chain: [
          { name: 'trial', plugin: 'quota', mode: 'shadow', options: { maxProxies: 1 } },
          { name: 'quota', plugin: 'quota', options: { maxProxies: 5 } },
          { name: 'per-client', plugin: 'quota', options: { maxProxiesPerClient: 2 } }
        ]
      })
      t.equal(await answer(gw, newProxy('tcp')), 'allow')
      t.equal(await answer(gw, newProxy('udp')), 'allow')
      t.equal(await answer(gw, newProxy('http')), 'alice has 2 proxies on this client, the limit is 2 (maxProxiesPerClient)')
      await gw.ref.current.drain()
      t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewProxy', step: 'trial', decision: 'shadow_reject' }), 2)
      t.same(await recorded(gw), [`alice.dns@${RUN_ID}`, `alice.ssh@${RUN_ID}`])
      t.equal(await answer(gw, newProxy('http', 'alice.web', 'second-frpc')), 'allow', 'the reservation of the refused one was released')
    })

    t.test('maxPorts: tcp and udp proxies only; http goes by', async t => {
      const gw = await gateway(t, { chain: [quotaStep({ maxPorts: 1, reason: '{{which}} {{count}}/{{limit}} {{counted}} for {{user}} ({{proxy_name}})' })] })
      t.equal(await answer(gw, newProxy('tcp')), 'allow')
      t.equal(await answer(gw, newProxy('http')), 'allow')
      t.equal(await answer(gw, newProxy('udp')), 'maxPorts 1/1 tcp/udp proxy for alice (alice.dns)')
      t.equal(await answer(gw, newProxy('tcp', 'alice.any')), 'maxPorts 1/1 tcp/udp proxy for alice (alice.any)')
    })

    t.test('the clients without a user count together, apart from every user', async t => {
      const gw = await gateway(t, { chain: [quotaStep({ maxProxies: 1 })] })
      t.equal(await answer(gw, withoutUser('t3tcp')), 'allow')
      t.equal(await answer(gw, withoutUser('other')), ' has 1 proxy, the limit is 1 (maxProxies)')
      t.equal(await answer(gw, newProxy('tcp')), 'allow')
      await gw.ref.current.drain()
      t.same((await gw.ref.current.registry?.store.list(''))?.map(r => r.name), ['t3tcp'])
      t.same(gw.logs.filter(l => l.level >= 40), [], 'no store failure')
    })

    t.test('a NewProxy for a name already registered (a reconnect) is not a second proxy', async t => {
      const gw = await gateway(t, { chain: [quotaStep({ maxProxies: 1 })] })
      t.equal(await answer(gw, newProxy('tcp')), 'allow')
      t.same(await recorded(gw), [`alice.ssh@${RUN_ID}`])
      t.equal(await answer(gw, newProxy('tcp')), 'allow', 'the same proxy again, the same session')
      t.equal(await answer(gw, newProxy('tcp', 'alice.ssh', 'after-restart')), 'allow', 'the same proxy from a restarted frpc')
      t.same(await recorded(gw), ['alice.ssh@after-restart'], 'one record, replaced')
      t.equal(await answer(gw, newProxy('udp')), 'alice has 1 proxy, the limit is 1 (maxProxies)')
    })

    t.test('a later step rejecting releases the reservation at commit: the next NewProxy fits at once', async t => {
      const gw = await gateway(t, {
        deadlineMs: 10_000,
        chain: [quotaStep({ maxProxies: 1 }), { name: 'no-http', plugin: 'reject', ops: ['NewProxy'], when: { proxyTypes: ['http'] }, options: { reason: 'no http here' } }]
      })
      t.equal(await answer(gw, newProxy('http')), 'no http here')
      await gw.ref.current.drain()
      // without the release the reservation would stand until the deadline, 10 s from the call
      t.equal(await answer(gw, newProxy('tcp')), 'allow')
      t.equal(await answer(gw, newProxy('udp')), 'alice has 1 proxy, the limit is 1 (maxProxies)')
      t.same(await recorded(gw), [`alice.ssh@${RUN_ID}`])
    })

    t.test('a later step failing (outcome error) releases the reservation too', async t => {
      const broken = createServer((_req, res) => { res.statusCode = 500; res.end('down') }).listen(0, '127.0.0.1')
      await new Promise(resolve => broken.once('listening', resolve))
      t.teardown(() => { broken.closeAllConnections(); broken.close() })
      const url = `http://127.0.0.1:${(broken.address() as { port: number }).port}/handler`
      const gw = await gateway(t, {
        deadlineMs: 10_000,
        chain: [quotaStep({ maxProxies: 1 }), { name: 'auth', plugin: 'forward', ops: ['NewProxy'], when: { proxyTypes: ['http'] }, options: { url, retries: 0 } }]
      })
      t.match(await answer(gw, newProxy('http')), /^frp-plugin-gateway: step auth failed/)
      await gw.ref.current.drain()
      t.equal(await answer(gw, newProxy('tcp')), 'allow', 'at once, not 10 s later')
    })

    t.test('a reservation nothing commits ends 5 s (RESERVATION_GRACE_MS) after the call\'s deadline', async t => {
      // the grace the README promises, not read back from the code under test
      const GRACE_MS = 5000
      // trace runs the steps but no commit: what a gateway that stopped between answer and commit leaves
      const gw = await gateway(t, { deadlineMs: 1000, chain: [quotaStep({ maxProxies: 1 })] })
      const log = createLogger({ level: 'silent', redact: [], repeatIntervalMs: 0 })
      const started = performance.now()
      const traced = await traceCall(gw.ref.current, 'NewProxy', newProxy('tcp'), log)
      t.equal(traced.result.outcome, 'allow')
      t.equal(await answer(gw, newProxy('udp')), 'alice has 1 proxy, the limit is 1 (maxProxies)', 'the reservation counts')
      const until = started + 1000 + GRACE_MS + 5000
      let last = ''
      while (performance.now() < until && (last = await answer(gw, newProxy('udp'))) !== 'allow') await sleep(50)
      t.equal(last, 'allow', 'and ends')
      // an allowed call's record may be written that late (a busy machine, Redis retried): it counts till then.
      // Redis's clock and ours may differ by a few ms
      const ms = Math.round(performance.now() - started)
      t.ok(ms > 1000 + GRACE_MS - 100, `not before the deadline and the grace (${ms} ms)`)
      t.same(await recorded(gw), [`alice.dns@${RUN_ID}`], 'the traced proxy was never recorded')
    })

    t.test('approved, then refused by frps (no CloseProxy ever): counted until reconciliation removes it', async t => {
      const online: Record<string, string[]> = { tcp: [] }
      const url = await fakeFrpsApi(t, online)
      const gw = await gateway(t, { registry: { frpsApi: { url }, reconcileEvery: '1s' }, chain: [quotaStep({ maxProxies: 2 })] })
      t.equal(await answer(gw, newProxy('tcp')), 'allow')
      t.equal(await answer(gw, newProxy('tcp', 'alice.any')), 'allow')
      online.tcp.push('alice.any') // frps opened alice.any; alice.ssh's port was taken, frps refused it and says nothing
      t.equal(await answer(gw, newProxy('udp')), 'alice has 2 proxies, the limit is 2 (maxProxies)', 'the refused proxy still counts (drift)')
      const until = performance.now() + 8000
      while (performance.now() < until && (await recorded(gw)).length > 1) await sleep(100)
      t.same(await recorded(gw), [`alice.any@${RUN_ID}`], 'reconciliation removed what frps does not list')
      t.equal(await answer(gw, newProxy('udp')), 'allow', 'and the count is true again')
      t.equal(await answer(gw, newProxy('http')), 'alice has 2 proxies, the limit is 2 (maxProxies)')
    })

    t.test('without frpsApi the same refused proxy keeps counting: the drift the README names', async t => {
      const gw = await gateway(t, { chain: [quotaStep({ maxProxies: 1 })] })
      t.equal(await answer(gw, newProxy('tcp')), 'allow')
      await sleep(1200)
      t.same(await recorded(gw), [`alice.ssh@${RUN_ID}`])
      t.equal(await answer(gw, newProxy('udp')), 'alice has 1 proxy, the limit is 1 (maxProxies)')
    })

    t.test('a late CloseProxy of an old session after the new session\'s NewProxy leaves the new one counted', async t => {
      const gw = await gateway(t, { chain: [quotaStep({ maxProxies: 1 })] })
      t.equal(await answer(gw, newProxy('tcp', 'alice.ssh', 'old-session')), 'allow')
      t.equal(await answer(gw, newProxy('tcp', 'alice.ssh', 'new-session')), 'allow')
      await gw.ref.current.drain()
      await gw.call('CloseProxy', closeProxy('alice.ssh', 'old-session'))
      t.same(await recorded(gw), ['alice.ssh@new-session'])
      t.equal(await answer(gw, newProxy('udp', 'alice.dns', 'new-session')), 'alice has 1 proxy, the limit is 1 (maxProxies)', 'still counted')
      await gw.call('CloseProxy', closeProxy('alice.ssh', 'new-session'))
      t.same(await recorded(gw), [])
      t.equal(await answer(gw, newProxy('udp', 'alice.dns', 'new-session')), 'allow')
    })

    t.test('a reconnect as frps orders it: the old session\'s CloseProxy (same run_id) first, then the new NewProxy: one proxy', async t => {
      const gw = await gateway(t, { chain: [quotaStep({ maxProxies: 1 })] })
      t.equal(await answer(gw, newProxy('tcp')), 'allow')
      await gw.ref.current.drain()
      await gw.call('CloseProxy', closeProxy('alice.ssh'))
      await gw.ref.current.drain()
      t.same(await recorded(gw), [])
      t.equal(await answer(gw, newProxy('tcp')), 'allow')
      t.same(await recorded(gw), [`alice.ssh@${RUN_ID}`])
      t.equal(await answer(gw, newProxy('udp')), 'alice has 1 proxy, the limit is 1 (maxProxies)')
    })

    t.test('a current frpc sends no Ping: a record counts for as long as the proxy is open, with nothing refreshing it', async t => {
      const gw = await gateway(t, { deadlineMs: 500, chain: [quotaStep({ maxProxies: 1 })] })
      t.equal(await answer(gw, newProxy('tcp')), 'allow')
      await sleep(1500) // three deadlines: no reservation left, only the record, and no call at all meanwhile
      t.equal(await answer(gw, newProxy('udp')), 'alice has 1 proxy, the limit is 1 (maxProxies)')
      await gw.call('CloseProxy', closeProxy('alice.ssh'))
      await gw.ref.current.drain()
      t.equal(await answer(gw, newProxy('udp')), 'allow')
    })
  })
}
