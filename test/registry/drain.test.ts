import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { configFile, serveCli } from '../helpers/cli.js'
import { loadSamples } from '../helpers/fixtures.js'
import { redisCli, startRedis } from '../helpers/redis.js'

const ssh = loadSamples('frps-0.64.0-requests.jsonl').find(s => s.body.op === 'NewProxy' && s.body.content.proxy_name === 'alice.ssh')!.body

t.test('SIGTERM waits for the commits in progress (at most drainMs): a record Redis could not take yet is written before exit', async t => {
  const redis = await startRedis(t)
  const file = configFile({ listen: { port: 0 }, redis: { url: redis.url, keyPrefix: 'frpgw:' }, registry: {}, drainMs: 5000, log: { level: 'info' } })
  const gw = await serveCli(['--config', file], t)
  redis.pause(true)
  const res = await fetch(`${gw.url}/handler?version=0.1.0&op=NewProxy`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ssh) })
  t.same(await res.json(), { reject: false, unchange: true }, 'answered while Redis hangs')
  gw.child.kill('SIGTERM')
  await sleep(500)
  t.equal(gw.child.exitCode, null, 'still draining')
  redis.pause(false)
  t.equal(await gw.exited, 0)
  t.match(await redisCli(redis.port, 'HGET', 'frpgw:reg:{alice}:proxies', 'alice.ssh'), /"run_id":"9a961f8f3302e589"/, 'the record made it')
  t.notOk(gw.lines.some(l => l.msg?.startsWith('stopped with work')), 'nothing was left undone')
})

t.test('past drainMs the process stops anyway and says what it left; one drainMs covers the commits and the notify queues', async t => {
  const redis = await startRedis(t)
  // a receiver that never answers: the notify queue would wait for it all of its own drainMs
  const hanging = createServer(() => {})
  await new Promise<void>(resolve => hanging.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { hanging.closeAllConnections(); hanging.close() })
  const url = `http://127.0.0.1:${(hanging.address() as AddressInfo).port}/`
  // a drainMs long enough that one of it, with a loaded machine's slowness, stays well short of two
  const drainMs = 2500
  const file = configFile({
    listen: { port: 0 }, redis: { url: redis.url, keyPrefix: 'frpgw:' }, registry: {}, drainMs, log: { level: 'info' },
    chain: [{ name: 'tell', plugin: 'notify', ops: ['NewProxy'], options: { sink: { webhook: { url, retries: 0 } } } }]
  })
  const gw = await serveCli(['--config', file], t)
  redis.pause(true)
  t.teardown(() => redis.pause(false))
  await fetch(`${gw.url}/handler?version=0.1.0&op=NewProxy`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ssh) })
  const stopping = performance.now()
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
  const ms = performance.now() - stopping
  t.ok(ms >= drainMs - 10 && ms < 2 * drainMs, `stopped after ${Math.round(ms)} ms: drainMs, not drainMs for the record and again for the event`)
  t.match(gw.lines.find(l => l.msg?.startsWith('stopped with work')), { left: 1, drainMs })
})
