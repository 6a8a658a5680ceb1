import { readFileSync } from 'node:fs'
import t from 'tap'
import { buildAdminApp, buildApp } from '../src/app.js'
import { parseConfig } from '../src/config.js'
import { createLogger } from '../src/log.js'
import { createMetrics } from '../src/metrics.js'
import { createRuntime } from '../src/runtime.js'
import { traceCall } from '../src/trace.js'
import { closedPort, startDownstream } from './helpers/downstream.js'
import { startGateway } from './helpers/gateway.js'
import { redisCli, startRedis } from './helpers/redis.js'

const post = (payload: string, headers: Record<string, string> = { 'content-type': 'application/json' }, url = '/handler?version=0.1.0&op=Login') =>
  ({ method: 'POST' as const, url, headers, payload })

t.test('malformed calls answer 400/413/415 with their FRPGW_ERR code and count as op="invalid"', async t => {
  const gw = await startGateway(t, { listen: { bodyLimitBytes: 2048 }, chain: [] })
  const cases: Array<[string, ReturnType<typeof post>, number, string]> = [
    ['not JSON', post('{"op":'), 400, 'FRPGW_ERR_INVALID_JSON'],
    ['empty body', post(''), 400, 'FRPGW_ERR_INVALID_JSON'],
    ['empty body, no Content-Type', post('', {}), 400, 'FRPGW_ERR_INVALID_JSON'],
    ['an array', post('[1]'), 400, 'FRPGW_ERR_BAD_ENVELOPE'],
    ['no op', post('{"content":{}}'), 400, 'FRPGW_ERR_BAD_ENVELOPE'],
    ['no content', post('{"op":"Login"}'), 400, 'FRPGW_ERR_BAD_ENVELOPE'],
    ['content not an object', post('{"op":"Login","content":"x"}'), 400, 'FRPGW_ERR_BAD_ENVELOPE'],
    ['unknown op', post('{"op":"Logout","content":{}}', undefined, '/handler?op=Logout'), 400, 'FRPGW_ERR_UNKNOWN_OP'],
    ['op differs from the query', post('{"op":"Ping","content":{}}'), 400, 'FRPGW_ERR_OP_MISMATCH'],
    ['too large', post(JSON.stringify({ op: 'Login', content: { hostname: 'x'.repeat(4096) } })), 413, 'FRPGW_ERR_BODY_TOO_LARGE'],
    ['text/plain', post('{"op":"Login","content":{}}', { 'content-type': 'text/plain' }), 415, 'FRPGW_ERR_UNSUPPORTED_MEDIA_TYPE']
  ]
  for (const [name, req, status, code] of cases) {
    const res = await gw.app.inject(req)
    t.equal(res.statusCode, status, name)
    t.equal(res.json().error.code, code, name)
    t.type(res.json().error.message, 'string', name)
  }
  t.equal(await gw.metric('frp_gateway_requests_total', { op: 'invalid', outcome: 'error' }), cases.length)
  const unknown = await gw.app.inject(post('{"op":"Logout","content":{}}', undefined, '/handler?op=Logout'))
  t.match(unknown.json().error.message, /"Logout"/, 'the message names the op it got')
})

t.test('content with a field of the wrong type: 200 reject naming the field', async t => {
  const gw = await startGateway(t, { chain: [] })
  const res = await gw.call('NewProxy', { user: { user: 'alice', metas: { team: 7 } }, proxy_name: 'a', remote_port: 6000 })
  t.equal(res.status, 200)
  t.same(res.body, { reject: true, reject_reason: 'invalid NewProxy content: content.user.metas.team: Invalid input: expected string, received number', unchange: true })
  const port = await gw.call('NewProxy', { proxy_name: 'a', remote_port: '6000' })
  t.match(port.body.reject_reason, /^invalid NewProxy content: content\.remote_port: /)
  t.equal(await gw.metric('frp_gateway_requests_total', { op: 'NewProxy', outcome: 'error' }), 2)
  // frps ignores a CloseProxy answer: allow, as for every CloseProxy, the bad field counted and logged as an error
  const close = await gw.call('CloseProxy', { user: { user: 'alice' }, proxy_name: 5 })
  t.equal(close.raw, '{"reject":false,"unchange":true}')
  t.equal(await gw.metric('frp_gateway_requests_total', { op: 'CloseProxy', outcome: 'error' }), 1)
  const traced = await traceCall(gw.ref.current, 'CloseProxy', { user: { user: 'alice' }, proxy_name: 5 }, createLogger({ level: 'silent', redact: [] }))
  t.same([traced.result.outcome, traced.answer], ['error', close.raw], 'trace shows the same answer')
})

t.test('absent, present and null fields are all accepted; unknown fields pass through untouched', async t => {
  const gw = await startGateway(t, { chain: [{ name: 'm', plugin: 'metas', ops: ['Login'], options: { set: { a: 'b' } } }] })
  const content = { user: null, metas: null, pool_count: 0, client_spec: null, future_field: { nested: [1, 'x'] } }
  const res = await gw.call('Login', content)
  t.equal(res.raw, '{"reject":false,"unchange":false,"content":{"user":null,"metas":{"a":"b"},"pool_count":0,"client_spec":null,"future_field":{"nested":[1,"x"]}}}')
})

t.test('metas keys __proto__ and constructor neither pollute a prototype nor crash', async t => {
  const gw = await startGateway(t, {
    chain: [{ name: 'm', plugin: 'metas', ops: ['Login', 'NewProxy'], options: { set: { region: 'eu', constructor: 'c2' }, remove: ['prototype'] } }]
  })
  const raw = '{"version":"0.1.0","op":"Login","content":{"user":"u","metas":{"__proto__":"p","constructor":"c","prototype":"x"}}}'
  const res = await gw.app.inject(post(raw))
  t.equal(res.statusCode, 200)
  t.equal(res.body, '{"reject":false,"unchange":false,"content":{"user":"u","metas":{"__proto__":"p","constructor":"c2","region":"eu"}}}')
  const nested = '{"op":"Login","content":{"metas":{"__proto__":{"polluted":"yes"}},"__proto__":{"polluted":"yes"},"constructor":{"prototype":{"polluted":"yes"}}}}'
  const bad = await gw.app.inject(post(nested))
  t.equal(bad.statusCode, 200)
  t.match(bad.json().reject_reason, /content\.metas\.__proto__/)
  const proxy = '{"op":"NewProxy","content":{"proxy_name":"p","metas":{"__proto__":"x"},"user":{"metas":{"constructor":"y"}}}}'
  const proxyRes = await gw.app.inject(post(proxy, undefined, '/handler?op=NewProxy'))
  t.equal(proxyRes.body, '{"reject":false,"unchange":false,"content":{"proxy_name":"p","metas":{"__proto__":"x","region":"eu","constructor":"c2"},"user":{"metas":{"constructor":"y"}}}}')
  const probe: Record<string, unknown> = {}
  t.equal(probe.polluted, undefined, 'Object.prototype is untouched')
  t.equal(Object.getPrototypeOf(probe), Object.prototype)
  t.equal(typeof probe.constructor, 'function')
})

t.test('after a known sequence of calls /metrics shows exactly the expected counters', async t => {
  const gw = await startGateway(t, {
    chain: [
      { name: 'deny-eve', plugin: 'reject', ops: ['Login'], when: { users: ['eve'] } },
      { name: 'tag', plugin: 'metas', ops: ['Login'], when: { users: ['alice'] }, options: { set: { t: '1' } } },
      { name: 'watch', plugin: 'reject', ops: ['Ping'], mode: 'shadow' }
    ]
  })
  for (const user of ['alice', 'alice', 'bob', 'eve']) await gw.call('Login', { user })
  await gw.call('Ping', { user: { user: 'bob' } })
  await gw.call('Ping', { user: { user: 'bob' } }, { query: 'op=Nope' })
  const text = (await gw.app.inject({ method: 'GET', url: '/metrics' })).body
  const series = (name: string) => text.split('\n').filter(l => l.startsWith(`${name}{`)).sort()
  t.same(series('frp_gateway_requests_total'), [
    'frp_gateway_requests_total{op="Login",outcome="allow"} 1',
    'frp_gateway_requests_total{op="Login",outcome="modify"} 2',
    'frp_gateway_requests_total{op="Login",outcome="reject"} 1',
    'frp_gateway_requests_total{op="Ping",outcome="allow"} 1',
    'frp_gateway_requests_total{op="invalid",outcome="error"} 1'
  ])
  t.same(series('frp_gateway_step_decisions_total'), [
    'frp_gateway_step_decisions_total{op="Login",step="deny-eve",decision="reject"} 1',
    'frp_gateway_step_decisions_total{op="Login",step="tag",decision="modify"} 2',
    'frp_gateway_step_decisions_total{op="Ping",step="watch",decision="shadow_reject"} 1'
  ])
  t.same(series('frp_gateway_request_duration_seconds_count'), [
    'frp_gateway_request_duration_seconds_count{op="Login"} 4',
    'frp_gateway_request_duration_seconds_count{op="Ping"} 1'
  ])
  t.same(series('frp_gateway_step_duration_seconds_count'), [
    'frp_gateway_step_duration_seconds_count{op="Login",step="deny-eve"} 1',
    'frp_gateway_step_duration_seconds_count{op="Login",step="tag"} 2',
    'frp_gateway_step_duration_seconds_count{op="Ping",step="watch"} 1'
  ])
  t.match(text, /^process_cpu_user_seconds_total /m, 'default process metrics')
  t.match(text, /^nodejs_eventloop_lag_seconds /m, 'default Node.js metrics')
  const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
  t.same(series('frp_gateway_build_info'), [`frp_gateway_build_info{version="${version}",node="${process.version}"} 1`], 'which version runs, and on which Node.js')
})

t.test('/healthz, /readyz and unknown routes', async t => {
  const gw = await startGateway(t, { chain: [] })
  t.same((await gw.app.inject({ method: 'GET', url: '/healthz' })).json(), { status: 'ok' })
  const ready = await gw.app.inject({ method: 'GET', url: '/readyz' })
  t.equal(ready.statusCode, 200)
  t.same(ready.json(), { status: 'ready' })
  const missing = await gw.app.inject({ method: 'GET', url: '/nope' })
  t.equal(missing.statusCode, 404)
  t.equal(missing.json().error.code, 'FRPGW_ERR_NOT_FOUND')
  t.equal(missing.json().error.message, 'no route GET "/nope"', 'a GET is not an frps call: no hint')
})

t.test('an unknown route on either listener is a 404 before its body is read', async t => {
  const gw = await startGateway(t, { chain: [] })
  const logger = createLogger({ level: 'silent', redact: [] })
  const admin = buildAdminApp(gw.ref, { metrics: gw.metrics, logger, path: '/handler', bodyLimitBytes: 1024, adminRoutes: true })
  t.teardown(async () => await admin.close())
  for (const [name, app] of [['rpc', gw.app], ['admin', admin]] as const) {
    for (const [payload, type] of [['hello', 'application/json'], ['{"__proto__":{"a":1}}', 'application/json'], ['x'.repeat(2 * 1024 * 1024), 'text/plain']]) {
      const res = await app.inject(post(payload, { 'content-type': type }, '/nope'))
      t.equal(res.statusCode, 404, `${name}: ${type}, ${payload.length} characters`)
      t.equal(res.json().error.code, 'FRPGW_ERR_NOT_FOUND')
    }
  }
  const hints = await Promise.all([gw.app, admin].map(async app => (await app.inject(post('{}', { 'content-type': 'application/json' }, '/handle'))).json().error.message))
  t.same(hints, [
    'no route POST "/handle": the plugin RPC is at "/handler" (listen.path); check the path in frps\'s httpPlugins',
    'no route POST "/handle": this is the admin listener; the plugin RPC is on the listen port, at "/handler"'
  ], 'a POST elsewhere, most likely an frps with a wrong path or port, is told where the RPC is')
})

t.test('logs: one line per call with reqid, allowed calls at debug, secrets redacted', async t => {
  const gw = await startGateway(t, { chain: [{ name: 'no-eve', plugin: 'reject', ops: ['Login'], when: { users: ['eve'] } }] })
  await gw.call('Login', { user: 'alice', privilege_key: 'pk-secret', metas: { api_token: 'tok-secret', team: 'blue' } }, { reqid: '00000000000000a1' })
  await gw.call('NewProxy', { user: { user: 'alice', metas: { password: 'pw-secret' } }, proxy_name: 'p', sk: 'sk-secret', http_pwd: 'hp-secret', group_key: 'gk-secret' }, { reqid: '00000000000000a2' })
  await gw.call('Login', { user: 'eve' }, { reqid: '00000000000000a3' })
  const calls = gw.logs.filter(l => l.msg === 'call')
  t.same(calls.map(l => [l.reqid, l.op, l.outcome, l.level]), [
    ['00000000000000a1', 'Login', 'allow', 20],
    ['00000000000000a2', 'NewProxy', 'allow', 20],
    ['00000000000000a3', 'Login', 'reject', 30]
  ])
  t.equal(calls[2].step, 'no-eve')
  t.equal(calls[2].reason, 'rejected by no-eve')
  const text = JSON.stringify(gw.logs)
  for (const secret of ['pk-secret', 'tok-secret', 'pw-secret', 'sk-secret', 'hp-secret', 'gk-secret']) {
    t.notOk(text.includes(secret), `${secret} is not logged`)
  }
  t.equal(calls[0].content.metas.team, 'blue', 'other metas stay readable')
  t.equal(calls[0].content.privilege_key, '[redacted]')
})

t.test('a call that fails after its chain decided (here: its log line) is answered 500 and counted once, as op="invalid"', async t => {
  const downstream = await startDownstream(t, () => ({ reject: false, unchange: true }))
  const config = parseConfig({
    chain: [
      { name: 'tag', plugin: 'metas', ops: ['Login'], options: { set: { a: 'b' } } },
      { name: 'ask', plugin: 'forward', ops: ['NewProxy'], options: { url: downstream.url } }
    ]
  })
  const metrics = createMetrics()
  const lines: string[] = []
  const logger = createLogger({ level: 'debug', redact: [] }, {
    write (line: string) {
      if (line.includes('"msg":"call"')) throw new Error('log sink failed')
      lines.push(line)
    }
  })
  const ref = { current: await createRuntime(config, { metrics, log: logger }) }
  const app = buildApp(ref, { metrics, logger, path: '/handler', bodyLimitBytes: 4096, adminRoutes: true })
  t.teardown(async () => { await app.close(); await ref.current.close() })
  for (const op of ['Login', 'NewProxy']) {
    const res = await app.inject(post(`{"op":"${op}","content":{"user":"alice"}}`, undefined, `/handler?op=${op}`))
    t.equal(res.statusCode, 500, `${op} (the chain ${op === 'Login' ? 'synchronous' : 'asynchronous'})`)
    t.equal(res.json().error.code, 'FRPGW_ERR_INTERNAL')
  }
  const series = (await metrics.register.getSingleMetric('frp_gateway_requests_total')?.get())?.values.map(v => [v.labels.op, v.labels.outcome, v.value])
  t.same(series, [['invalid', 'error', 2]], 'each call counted once')
  t.same(lines.map(l => JSON.parse(l).msg), ['request failed', 'request failed'])
})

t.test('the debug line of an allowed call names the steps that failed and let it on (an allow policy), not a shadow step that failed', async t => {
  const dead = `http://127.0.0.1:${await closedPort()}/handler`
  const config = parseConfig({
    chain: [
      { name: 'audit', plugin: 'forward', options: { url: dead, onError: 'allow' } },
      { name: 'watch', plugin: 'forward', mode: 'shadow', options: { url: dead } },
      { name: 'tag', plugin: 'metas', ops: ['Login'], options: { set: { a: 'b' } } },
      { name: 'no-udp', plugin: 'reject', ops: ['NewProxy'], when: { proxyTypes: ['udp'] }, options: { reason: 'no udp' } }
    ]
  })
  const metrics = createMetrics()
  const lines: Array<Record<string, unknown>> = []
  const logger = createLogger({ level: 'debug', redact: [] }, { write (line: string) { lines.push(JSON.parse(line)) } })
  const ref = { current: await createRuntime(config, { metrics, log: logger }) }
  const app = buildApp(ref, { metrics, logger, path: '/handler', bodyLimitBytes: 4096, adminRoutes: true })
  t.teardown(async () => { await app.close(); await ref.current.close() })
  const calls = [['Login', { user: 'alice' }], ['NewProxy', { user: { user: 'alice' }, proxy_name: 'p', proxy_type: 'tcp' }], ['NewProxy', { user: { user: 'alice' }, proxy_name: 'u', proxy_type: 'udp' }]] as const
  for (const [op, content] of calls) {
    const res = await app.inject(post(JSON.stringify({ op, content }), undefined, `/handler?op=${op}`))
    t.equal(res.statusCode, 200, op)
  }
  const seen = lines.filter(l => l.msg === 'call').map(l => [l.op, l.outcome, l.failed ?? null, l.step ?? null])
  t.same(seen, [['Login', 'modify', ['audit'], null], ['NewProxy', 'allow', ['audit'], null], ['NewProxy', 'reject', null, 'no-udp']])
})

t.test('/readyz: a Redis that answers PING but refuses writes (a replica) is not ready for steps that write; a users table, which only reads, is', async t => {
  const redis = await startRedis(t)
  const writer = await startGateway(t, { redis: { url: redis.url }, chain: [{ name: 'rl', plugin: 'rate-limit', options: { limit: 10, window: '1s', store: 'redis' } }] })
  const reader = await startGateway(t, { redis: { url: redis.url }, users: { redis: {} }, chain: [{ name: 'users', plugin: 'users', ops: ['Login'] }] })
  const readyz = async (gw: typeof writer): Promise<unknown> => (await gw.app.inject({ method: 'GET', url: '/readyz' })).json()
  t.same(await readyz(writer), { status: 'ready' })
  t.equal(await redisCli(redis.port, 'GET', 'frpgw:readyz'), '1\n', 'the probe wrote under keyPrefix')

  // a replica of a master that is not there: read-only, PING answered
  await redisCli(redis.port, 'REPLICAOF', '127.0.0.1', String(await closedPort()))
  t.teardown(async () => { await redisCli(redis.port, 'REPLICAOF', 'NO', 'ONE') })
  t.same(await readyz(writer), { status: 'not ready', reason: `redis ${redis.url}: READONLY You can't write against a read only replica.` })
  t.equal(await writer.metric('frp_gateway_redis_up'), 0)
  t.same(await readyz(reader), { status: 'ready' }, 'the users table reads a replica well')
  await redisCli(redis.port, 'REPLICAOF', 'NO', 'ONE')
  t.same(await readyz(writer), { status: 'ready' })
})

t.test('a lone surrogate in a call is read as U+FFFD, as frps (Go) reads it: one user in every store; a pair stays its character', async t => {
  const redis = await startRedis(t)
  const downstream = await startDownstream(t, () => ({ reject: false, unchange: true }))
  for (const store of ['memory', 'redis']) {
    const gw = await startGateway(t, {
      redis: { url: redis.url, keyPrefix: `${store}:` },
      registry: { store },
      chain: [
        { name: 'tag', plugin: 'metas', ops: ['Login'], options: { set: { seen: '{{user}}' } } },
        { name: 'ask', plugin: 'forward', ops: ['NewProxy'], options: { url: downstream.url } }
      ]
    })
    // the body as text: JSON.stringify would write the lone surrogate as the same escape, the pair as the character
    const login = await gw.app.inject(post('{"op":"Login","content":{"user":"a\\ud800","metas":{"k\\udfff":"\\ud83d\\ude00","__proto__":"x"}}}'))
    t.same(login.json().content, { user: 'a\ufffd', metas: { 'k\ufffd': '\u{1F600}', ['__proto__']: 'x', seen: 'a\ufffd' } }, `${store}: Login, keys and values`)
    t.ok(Object.hasOwn(login.json().content.metas, '__proto__'), '__proto__ stays a plain key')
    const opened = await gw.app.inject(post('{"op":"NewProxy","content":{"user":{"user":"a\\uD800","run_id":"r"},"proxy_name":"a\\uD800.ssh","proxy_type":"tcp","remote_port":7000}}', undefined, '/handler?version=0.1.0&op=NewProxy'))
    t.equal(opened.statusCode, 200)
    await gw.ref.current.drain()
    t.equal(JSON.parse(downstream.requests.at(-1)?.body ?? '{}').content.proxy_name, 'a\ufffd.ssh', `${store}: the downstream is sent U+FFFD`)
    // frps would send the name it read: U+FFFD; the record it closes is the one registered
    t.equal((await gw.call('CloseProxy', { user: { user: 'a\ufffd', run_id: 'r' }, proxy_name: 'a\ufffd.ssh' })).status, 200)
    await gw.ref.current.drain()
    t.same((await gw.app.inject({ method: 'GET', url: '/proxies' })).json(), { proxies: [] }, `${store}: closed by its U+FFFD name`)
  }
})
