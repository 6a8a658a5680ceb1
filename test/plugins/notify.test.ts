import { once } from 'node:events'
import { mkdtempSync, readFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { loadSamples } from '../helpers/fixtures.js'
import { configIssues, startGateway } from '../helpers/gateway.js'
import { redisCli, startRedis } from '../helpers/redis.js'

const samples = loadSamples('frps-0.64.0-requests.jsonl')
const content = (op: string, name?: string): Record<string, any> =>
  structuredClone(samples.find(s => s.body.op === op && (name === undefined || s.body.content.proxy_name === name))?.body.content) as Record<string, any>

async function receiver (t: Test, answer: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => res.writeHead(204).end()) {
  const bodies: any[] = []
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', d => { body += String(d) })
    req.on('end', () => { bodies.push(JSON.parse(body)); answer(req, res) })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, bodies }
}

async function until (done: () => boolean, ms = 3000): Promise<void> {
  const end = performance.now() + ms
  while (!done() && performance.now() < end) await sleep(10)
}

const REJECT_WEB = { name: 'no-web', plugin: 'reject', ops: ['NewProxy'], when: { proxyNames: ['alice.web'] }, options: { reason: 'no web for {{user}}' } }

t.test('a notify step placed first still hears of a later reject, with the deciding step and the reason; the default event', async t => {
  const rx = await receiver(t)
  const gw = await startGateway(t, { chain: [
    { name: 'alert', plugin: 'notify', ops: ['NewProxy'], options: { sink: { webhook: { url: rx.url } } } },
    REJECT_WEB
  ] })
  t.equal((await gw.call('NewProxy', content('NewProxy', 'alice.web'))).body.reject, true)
  await gw.call('NewProxy', content('NewProxy', 'alice.ssh'))
  await until(() => rx.bodies.length === 2)
  const [rejected, allowed] = rx.bodies.sort((a, b) => a.outcome === 'reject' ? -1 : b.outcome === 'reject' ? 1 : 0)
  t.match(rejected, { op: 'NewProxy', user: 'alice', outcome: 'reject', decided_by: 'no-web', reason: 'no web for alice', proxy_name: 'alice.web', proxy_type: 'http', reqid: 'test0000000000ab' })
  t.match(rejected.time, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/)
  t.match(allowed, { outcome: 'allow', decided_by: '', reason: '', proxy_name: 'alice.ssh' })
  await until(() => false, 200)
  t.equal(await gw.metric('frp_gateway_notify_events_total', { step: 'alert', result: 'sent' }), 2)
})

t.test('Slack and Discord shapes, outcomes, and when matched on the final content', async t => {
  const rx = await receiver(t)
  const gw = await startGateway(t, { chain: [
    { name: 'slack', plugin: 'notify', ops: ['Login', 'NewProxy'], when: { users: ['alice'] }, options: { outcomes: ['reject'], sink: { webhook: { url: rx.url } }, template: { text: '{{user}}: {{op}} refused by {{decided_by}}: {{reason}}' } } },
    { name: 'discord', plugin: 'notify', ops: ['Login'], options: { sink: { webhook: { url: rx.url } }, template: { content: 'login {{user}} from {{client_ip}} ({{outcome}})', embeds: [{ title: '{{metas.team}}' }] } } },
    REJECT_WEB
  ] })
  await gw.call('NewProxy', content('NewProxy', 'alice.web'))
  await gw.call('NewProxy', content('NewProxy', 'alice.ssh'))
  await gw.call('Login', content('Login'))
  await until(() => rx.bodies.length === 2)
  await sleep(100)
  t.same(rx.bodies.filter(b => 'text' in b), [{ text: 'alice: NewProxy refused by no-web: no web for alice' }], 'slack: the reject only')
  t.same(rx.bodies.filter(b => 'content' in b), [{ content: `login alice from ${content('Login').client_address?.split(':')[0] ?? ''} (allow)`, embeds: [{ title: 'blue' }] }])
})

t.test('a template key "__proto__" is sent as a plain key and sets no prototype', async t => {
  const rx = await receiver(t)
  const template = JSON.parse('{"__proto__": {"polluted": "{{user}}"}, "text": "{{user}}", "nested": {"__proto__": "{{op}}"}}')
  const gw = await startGateway(t, { chain: [{ name: 'n', plugin: 'notify', ops: ['Login'], options: { sink: { webhook: { url: rx.url } }, template } }] })
  await gw.call('Login', content('Login'))
  await until(() => rx.bodies.length === 1)
  const [event] = rx.bodies
  t.same(Object.keys(event), ['__proto__', 'text', 'nested'])
  t.same([Object.getOwnPropertyDescriptor(event, '__proto__')?.value, event.text, Object.getOwnPropertyDescriptor(event.nested, '__proto__')?.value], [{ polluted: 'alice' }, 'alice', 'Login'])
  t.equal(({} as Record<string, unknown>).polluted, undefined)
})

t.test('throttle: a login storm sends a few events, and the next one says how many were held back', async t => {
  const rx = await receiver(t)
  const gw = await startGateway(t, { chain: [
    { name: 'storm', plugin: 'notify', ops: ['Login'], options: { sink: { webhook: { url: rx.url } }, template: { text: '{{user}} {{held_back}}' }, throttle: { limit: 2, window: '1s', key: '{{user}}' } } }
  ] })
  for (let i = 0; i < 10; i++) await gw.call('Login', content('Login'))
  await until(() => rx.bodies.length === 2)
  await sleep(100)
  t.equal(await gw.metric('frp_gateway_notify_events_total', { step: 'storm', result: 'throttled' }), 8, `bodies ${JSON.stringify(rx.bodies)}`)
  await sleep(1100)
  await gw.call('Login', content('Login'))
  await until(() => rx.bodies.length === 3)
  t.same(rx.bodies.map(b => b.text), ['alice 0', 'alice 0', 'alice 8'])
})

t.test('throttle: the held-back count an event carried goes to the next one when it is given up', async t => {
  let refuse = false
  const rx = await receiver(t, (_req, res) => res.writeHead(refuse ? 500 : 204).end())
  const gw = await startGateway(t, { chain: [
    { name: 'storm', plugin: 'notify', ops: ['Login'], options: { sink: { webhook: { url: rx.url, retries: 0 } }, template: { text: '{{held_back}}' }, throttle: { limit: 1, window: '1s', key: '{{user}}' } } }
  ] })
  for (let i = 0; i < 3; i++) await gw.call('Login', content('Login'))
  await until(() => rx.bodies.length === 1)
  await sleep(1100)
  refuse = true
  await gw.call('Login', content('Login'))
  await until(() => rx.bodies.length === 2)
  await until(() => gw.logs.some(l => l.msg === 'notify event given up'))
  refuse = false
  await sleep(1100)
  await gw.call('Login', content('Login'))
  await until(() => rx.bodies.length === 3)
  t.same(rx.bodies.map(b => b.text), ['0', '2', '2'], 'the 2 held back are told by the event that went out')
  t.equal(await gw.metric('frp_gateway_notify_events_total', { step: 'storm', result: 'failed' }), 1)
})

t.test('throttle: at most limit events in a window, none let through early as the window goes on', async t => {
  const rx = await receiver(t)
  const gw = await startGateway(t, { chain: [
    { name: 'few', plugin: 'notify', ops: ['Login'], options: { sink: { webhook: { url: rx.url } }, template: { n: '{{held_back}}' }, throttle: { limit: 2, window: '2s', key: '{{user}}' } } }
  ] })
  const started = performance.now()
  for (let i = 0; i < 2; i++) await gw.call('Login', content('Login'))
  await sleep(1200)
  await gw.call('Login', content('Login'))
  t.ok(performance.now() - started < 1900, 'the third call came inside the window')
  await sleep(100)
  t.equal(rx.bodies.length, 2)
  t.equal(await gw.metric('frp_gateway_notify_events_total', { step: 'few', result: 'throttled' }), 1, 'a token bucket would have let it through at 1 s')
})

t.test('a dead receiver costs queue space, never an answer: calls are answered at once, drops and failures counted', async t => {
  const gw = await startGateway(t, { chain: [
    { name: 'dead', plugin: 'notify', options: { sink: { webhook: { url: 'http://127.0.0.1:1/hook', retries: 1, timeoutMs: 200 } }, queue: 5, concurrency: 1 } }
  ] })
  const started = performance.now()
  for (let i = 0; i < 20; i++) t.equal((await gw.call('Login', content('Login'), { reqid: `call${String(i).padStart(2, '0')}` })).status, 200)
  t.ok(performance.now() - started < 3000, 'answered without waiting for the sink')
  await sleep(1500)
  const givenUp = gw.logs.filter(l => l.msg === 'notify event given up')
  t.ok(givenUp.length >= 1, 'a given-up event is logged')
  t.same(givenUp[0] === undefined ? undefined : [givenUp[0].step, givenUp[0].reqid], ['dead', 'call00'], 'the first call\'s event, with its reqid')
  t.ok(givenUp.every(l => /^call\d\d$/.test(l.reqid)), 'each line with the reqid of its call')
  t.ok((await gw.metric('frp_gateway_notify_events_total', { step: 'dead', result: 'dropped' }) ?? 0) >= 10, 'the oldest dropped once the queue was full')
  t.ok((await gw.metric('frp_gateway_notify_events_total', { step: 'dead', result: 'failed' }) ?? 0) >= 1)
  t.ok((await gw.metric('frp_gateway_notify_events_total', { step: 'dead', result: 'retried' }) ?? 0) >= 1)
})

t.test('redisStream and file sinks; trace shows the event and sends nothing', async t => {
  const redis = await startRedis(t)
  const dir = mkdtempSync(join(tmpdir(), 'frpgw-notify-'))
  const gw = await startGateway(t, { redis: { url: redis.url }, chain: [
    { name: 'audit', plugin: 'notify', options: { sink: { redisStream: { stream: 'frp-audit', maxLen: 1000 } } } },
    { name: 'log', plugin: 'notify', ops: ['Login'], options: { sink: { file: { path: join(dir, 'events.jsonl') } }, template: { u: '{{user}}' } } }
  ] })
  await gw.call('Login', content('Login'))
  await sleep(300)
  const entries = JSON.parse(await redisCli(redis.port, '--json', 'XRANGE', 'frp-audit', '-', '+')) as Array<[string, string[]]>
  t.equal(entries.length, 1)
  t.equal(entries[0][1][0], 'event')
  t.match(JSON.parse(entries[0][1][1]), { op: 'Login', user: 'alice', outcome: 'allow' })
  t.equal(readFileSync(join(dir, 'events.jsonl'), 'utf8'), '{"u":"alice"}\n')
  const { traceCall, formatTrace } = await import('../../src/trace.js')
  const log = (await import('pino')).default({ level: 'silent' })
  const traced = await traceCall(gw.ref.current, 'Login', content('Login'), log)
  t.match(formatTrace(traced, new Map()), /commit: log: would send to file .*events\.jsonl: \{"u":"alice"\} \(not done by trace\)/)
  await sleep(200)
  t.equal(readFileSync(join(dir, 'events.jsonl'), 'utf8'), '{"u":"alice"}\n', 'trace sent nothing')
})

t.test('config: shadow mode, a sink with two keys or none, a bad value in a sink, a bad template name, credentials in a webhook URL, webhook headers undici refuses, a file that could never open are errors', async t => {
  const sink = { file: { path: '/tmp/x' } }
  const one = async (step: Record<string, unknown>) => await configIssues(t, { chain: [{ name: 'a', plugin: 'notify', ...step }] })
  t.match(await one({ mode: 'shadow', options: { sink } }), [{ path: 'chain[0].mode', message: /shadow mode has no meaning/ }])
  t.match(await one({ options: { sink: { ...sink, webhook: { url: 'http://x' } } } }), [{ path: 'chain[0].options.sink', message: /exactly one of/ }])
  // a bad value inside a sink is named at its path, not answered with the three forms
  t.match(await one({ options: { sink: { webhook: { url: 'http://127.0.0.1/x', retries: 11 } } } }), [{ path: 'chain[0].options.sink.webhook.retries', message: 'expected an integer from 0 to 10' }])
  t.match(await one({ options: { sink: { file: { path: '' } } } }), [{ path: 'chain[0].options.sink.file.path' }])
  t.match(await one({ options: { sink: {} } }), [{ path: 'chain[0].options.sink', message: /exactly one of/ }])
  t.match(await one({ options: { sink, template: { text: '{{nope}}' } } }), [{ path: 'chain[0].options.template.text', message: /unknown template name \{\{nope\}\}/ }])
  t.match(await one({ options: { sink: { redisStream: { stream: 's' } } } }), [{ path: 'chain[0].options.sink', message: /needs the top-level "redis" block/ }])
  // undici would drop them from every POST: the receiver would answer 401 to each event
  t.same(await one({ options: { sink: { webhook: { url: 'http://hook:s3cret@127.0.0.1/x' } } } }),
    [{ path: 'chain[0].options.sink.webhook.url', message: 'credentials in the URL are not sent: put an Authorization header in headers' }])
  // undici refused each of these on every POST (every event failed), or sent a second content-type
  const reserved = 'the gateway sets this header (content-type: application/json) or undici frames the request with it: it cannot be given'
  t.same(await one({ options: { sink: { webhook: { url: 'http://127.0.0.1/x', headers: { 'X Team': 'a', 'X-Team': 'a\r\nb', 'Content-Type': 'text/plain', 'Content-Length': '3', Authorization: 'Bearer t', AUTHORIZATION: 'Bearer u' } } } } }), [
    { path: 'chain[0].options.sink.webhook.headers.X Team', message: 'not a valid header name' },
    { path: 'chain[0].options.sink.webhook.headers.X-Team', message: 'the value holds a control character' },
    { path: 'chain[0].options.sink.webhook.headers.Content-Type', message: reserved },
    { path: 'chain[0].options.sink.webhook.headers.Content-Length', message: reserved },
    { path: 'chain[0].options.sink.webhook.headers.AUTHORIZATION', message: 'the same header as Authorization (header names ignore case): both would be sent' }
  ])
  // the sink creates no folder: each event would fail to open the file
  t.same(await one({ options: { sink: { file: { path: '/nonexistent/dir/events.jsonl' } } } }),
    [{ path: 'chain[0].options.sink.file.path', message: '/nonexistent/dir is not a folder: the file\'s folder must exist' }])
  t.same(await one({ options: { sink: { file: { path: '/tmp' } } } }),
    [{ path: 'chain[0].options.sink.file.path', message: '/tmp is a folder: give a file in it' }])
})

t.test('SIGTERM drains the queues (within drainMs): events still waiting for a slow receiver are sent before exit', async t => {
  const { configFile, serveCli } = await import('../helpers/cli.js')
  const rx = await receiver(t, (_req, res) => { setTimeout(() => res.writeHead(204).end(), 300) })
  const file = configFile({ listen: { port: 0 }, drainMs: 10_000, chain: [
    { name: 'slow', plugin: 'notify', ops: ['Login'], options: { sink: { webhook: { url: rx.url } }, concurrency: 1, template: { n: '{{reqid}}' } } }
  ] })
  const gw = await serveCli(['--config', file], t)
  const login = JSON.stringify({ version: '0.1.0', op: 'Login', content: content('Login') })
  for (let i = 0; i < 5; i++) {
    await fetch(`${gw.url}/handler?version=0.1.0&op=Login`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-frp-reqid': `req${i}` }, body: login })
  }
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
  t.same(rx.bodies.map(b => b.n).sort(), ['req0', 'req1', 'req2', 'req3', 'req4'], 'all five sent, one at a time, after the stop began')
})

t.test('a stop right after a reload drains the queues of the chain the reload replaced too', async t => {
  const { configFile, serveCli } = await import('../helpers/cli.js')
  const { writeFileSync } = await import('node:fs')
  const rx = await receiver(t, (_req, res) => { setTimeout(() => res.writeHead(204).end(), 300) })
  const config = (name: string): Record<string, unknown> => ({ listen: { port: 0 }, drainMs: 10_000, chain: [
    { name, plugin: 'notify', ops: ['Login'], options: { sink: { webhook: { url: rx.url } }, concurrency: 1, template: { n: '{{reqid}}' } } }
  ] })
  const file = configFile(config('before'))
  const gw = await serveCli(['--config', file], t)
  const login = JSON.stringify({ version: '0.1.0', op: 'Login', content: content('Login') })
  for (let i = 0; i < 4; i++) {
    await fetch(`${gw.url}/handler?version=0.1.0&op=Login`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-frp-reqid': `req${i}` }, body: login })
  }
  writeFileSync(file, JSON.stringify(config('after')))
  gw.child.kill('SIGHUP')
  await until(() => gw.lines.some(l => l.msg === 'config reloaded'))
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
  t.same(rx.bodies.map(b => b.n).sort(), ['req0', 'req1', 'req2', 'req3'], 'the replaced chain\'s events all sent before exit')
})

t.test('on NewUserConn and CloseProxy, a notify step\'s when.proxyMetas and {{proxy_metas.KEY}} read the registry\'s record of the proxy', async t => {
  const rx = await receiver(t)
  const gw = await startGateway(t, {
    registry: {},
    chain: [
      { name: 'visits', plugin: 'notify', ops: ['NewUserConn', 'CloseProxy'], options: { sink: { webhook: { url: rx.url } }, template: { text: '{{op}} {{proxy_name}} owner={{proxy_metas.owner}}' } } },
      { name: 'watched', plugin: 'notify', ops: ['NewUserConn'], when: { proxyMetas: { owner: 'ops' } }, options: { sink: { webhook: { url: rx.url } }, template: { watched: '{{proxy_name}}' } } }
    ]
  })
  const opened = content('NewProxy', 'alice.ssh')
  opened.metas = { owner: 'ops' }
  t.equal((await gw.call('NewProxy', opened)).status, 200)
  await gw.ref.current.drain()
  t.equal((await gw.call('NewUserConn', content('NewUserConn', 'alice.ssh'))).status, 200)
  await until(() => rx.bodies.length >= 2)
  t.equal((await gw.call('CloseProxy', { user: opened.user, proxy_name: 'alice.ssh' })).status, 200)
  await until(() => rx.bodies.length >= 3)
  await sleep(100)
  t.same(rx.bodies.filter(b => 'text' in b).map(b => b.text), ['NewUserConn alice.ssh owner=ops', 'CloseProxy alice.ssh owner=ops'])
  t.same(rx.bodies.filter(b => 'watched' in b), [{ watched: 'alice.ssh' }])
})

t.test('logrotate: a SIGHUP whose reload fails (the config mid-edit) still opens the file sink\'s file again', async t => {
  const { configFile, serveCli } = await import('../helpers/cli.js')
  const { existsSync, renameSync, writeFileSync } = await import('node:fs')
  const { dirname } = await import('node:path')
  const file = configFile({ listen: { port: 0 }, chain: [] })
  const events = join(dirname(file), 'events.jsonl')
  const good = { listen: { port: 0 }, chain: [{ name: 'audit', plugin: 'notify', ops: ['Login'], options: { sink: { file: { path: events } }, template: { u: '{{user}}' } } }] }
  writeFileSync(file, JSON.stringify(good))
  const gw = await serveCli(['--config', file], t)
  const login = async (user: string): Promise<void> => {
    await fetch(`${gw.url}/handler?version=0.1.0&op=Login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ version: '0.1.0', op: 'Login', content: { user } }) })
  }
  await login('before')
  await until(() => existsSync(events) && readFileSync(events, 'utf8') !== '')
  renameSync(events, `${events}.1`)
  writeFileSync(file, JSON.stringify({ ...good, deadlineMs: 'oops' }))
  gw.child.kill('SIGHUP')
  await until(() => gw.lines.some(l => l.msg === 'config reload failed: the previous chain keeps serving'))
  await sleep(100)
  await login('after')
  await until(() => existsSync(events))
  await sleep(100)
  t.equal(readFileSync(`${events}.1`, 'utf8'), '{"u":"before"}\n', 'the rotated file got nothing more')
  t.equal(existsSync(events) ? readFileSync(events, 'utf8') : '(no file)', '{"u":"after"}\n', 'a new file at the path')
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
})

t.test('throttle keys are bounded in memory whatever the caller renders into them (long keys kept as a hash)', async t => {
  const { setFlagsFromString } = await import('node:v8')
  const { runInNewContext } = await import('node:vm')
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const rx = await receiver(t)
  const gw = await startGateway(t, { listen: { bodyLimitBytes: 1024 * 1024 }, chain: [{ name: 'n', plugin: 'notify', ops: ['Login'], options: {
    sink: { webhook: { url: rx.url } }, template: { text: 'login' }, throttle: { limit: 1, window: '1h', key: '{{user}}' }
  } }] }, { level: 'error' })
  const pad = 'u'.repeat(200 * 1024)
  gc()
  const before = process.memoryUsage().heapUsed
  for (let i = 0; i < 200; i++) t.equal((await gw.call('Login', { user: `${i}${pad}` })).status, 200)
  await until(() => rx.bodies.length >= 200, 10_000)
  t.equal(rx.bodies.length, 200, 'each key sent its first event')
  gc()
  const grown = process.memoryUsage().heapUsed - before
  t.ok(grown < 15_000_000, `the heap grew by ${grown} bytes for 200 keys of 200 KiB (80 MB of key text)`)
})
