import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { closedPort, startDownstream, until, type Handler } from '../helpers/downstream.js'
import { startGateway, type TestGateway } from '../helpers/gateway.js'
import { timerLateness } from '../helpers/lateness.js'

const TIMEOUT_MS = 400
// what answering adds to a bound on top of the bound itself; how late the timers ran is added to it
const MARGIN_MS = 300
const ALLOW = { reject: false, unchange: true }
const rejected = (reason: string) => ({ reject: true, reject_reason: reason, unchange: true })
const FAILED = rejected('frp-plugin-gateway: step fw failed')
const content = { user: { user: 'alice', metas: { team: 'blue' } }, proxy_name: 'alice.ssh', proxy_type: 'tcp', remote_port: 6000 }

/**
 * One call (NewProxy by default): the answer, how long it took, and how late this process's timers ran meanwhile (ms,
 * the worst): a deadline's timer fires that late too, on a machine too loaded to run the process when it is due.
 */
async function timedCall (gw: TestGateway, op = 'NewProxy', body: unknown = content): Promise<{ body: unknown, ms: number, late: number }> {
  const lateness = timerLateness()
  const started = performance.now()
  const r = await gw.call(op, body)
  const ms = performance.now() - started
  return { body: r.body, ms, late: lateness() }
}

const forwardCount = async (gw: TestGateway, result: string, step = 'fw') =>
  await gw.metric('frp_gateway_forward_requests_total', { step, result })

const hang: Handler = () => undefined

interface Case {
  name: string
  /** the downstream's behaviour; absent: nothing listens */
  handler?: Handler
  merge?: 'patch'
  answer: unknown
  result: string
  /** what the warn line's err carries */
  err?: Record<string, unknown>
  /** the answer cannot come before the timeout */
  slow?: true
}

const cases: Case[] = [
  { name: 'down: connection refused', answer: FAILED, result: 'connect_error', err: { code: 'ECONNREFUSED', message: /^request failed: connect ECONNREFUSED 127\.0\.0\.1:\d+$/ } },
  { name: 'hanging', handler: hang, answer: FAILED, result: 'timeout', err: { code: 'ETIMEDOUT', message: 'no answer within 400 ms' }, slow: true },
  {
    name: 'answering headers, then a body that never ends',
    handler: (_, res) => { res.writeHead(200).write('{"reject"') },
    answer: FAILED,
    result: 'timeout',
    err: { code: 'ETIMEDOUT' },
    slow: true
  },
  { name: 'answering 500', handler: (_, res) => { res.writeHead(500).end('boom') }, answer: FAILED, result: 'http_status', err: { status: 500, message: 'downstream answered HTTP 500' } },
  { name: 'answering non-JSON', handler: () => '<html>bad gateway</html>', answer: FAILED, result: 'invalid_response', err: { message: /^answer is not JSON: unexpected character at position 0$/ } },
  { name: 'answering JSON that is not an object', handler: () => '[true]', answer: FAILED, result: 'invalid_response', err: { message: 'answer is not a JSON object' } },
  {
    name: 'answering more than 1 MiB',
    handler: () => JSON.stringify({ reject: false, padding: 'x'.repeat(1024 * 1024) }),
    answer: FAILED,
    result: 'invalid_response',
    err: { message: 'answer is larger than 1048576 bytes' }
  },
  { name: 'resetting the connection once the request arrived', handler: (_, res) => { res.socket?.destroy() }, answer: FAILED, result: 'connect_error', err: { code: 'UND_ERR_SOCKET' } },
  { name: 'answering "unchange": "false" without content', handler: () => ({ reject: 'false', unchange: 'false' }), answer: ALLOW, result: 'ok' },
  {
    name: 'answering partial content under replace (it drops proxy_name)',
    handler: () => ({ unchange: 'false', content: { remote_port: 7000 } }),
    answer: FAILED,
    result: 'invalid_response',
    err: { message: 'the answer changes proxy_name, which frpc and frps must agree on (frpc finds its proxy by the name frps answers ' +
      'with (NewProxyResp, StartWorkConn): a renamed proxy never starts)' }
  },
  {
    name: 'answering a changed use_encryption',
    handler: req => ({ unchange: false, content: { ...JSON.parse(req.body).content, use_encryption: true } }),
    answer: FAILED,
    result: 'invalid_response',
    err: { message: 'the answer changes use_encryption, which frpc and frps must agree on (frps would encrypt (or not) the stream ' +
      'to frpc where frpc does the opposite: every connection breaks)' }
  },
  {
    name: 'answering a patch nested far too deep to merge',
    handler: () => `{"unchange":false,"content":{"x":${'{"a":'.repeat(20_000)}1${'}'.repeat(20_000)}}}`,
    merge: 'patch',
    answer: FAILED,
    result: 'invalid_response',
    err: { message: /^answer could not be used: / }
  },
  {
    name: 'answering partial content under patch',
    handler: () => ({ unchange: 'false', content: { remote_port: 7000 } }),
    merge: 'patch',
    answer: { reject: false, unchange: false, content: { ...content, remote_port: 7000 } },
    result: 'ok'
  }
]

for (const c of cases) {
  t.test(`downstream ${c.name}: the exact answer, within timeoutMs`, async t => {
    const url = c.handler !== undefined ? (await startDownstream(t, c.handler)).url : `http://127.0.0.1:${await closedPort()}/handler`
    const gw = await startGateway(t, { chain: [{ name: 'fw', plugin: 'forward', options: { url, timeoutMs: TIMEOUT_MS, merge: c.merge } }] })
    const r = await timedCall(gw)
    t.same(r.body, c.answer)
    t.ok(r.ms < TIMEOUT_MS + MARGIN_MS + r.late, `answered in ${Math.round(r.ms)} ms (timers up to ${Math.round(r.late)} ms late)`)
    if (c.slow === true) t.ok(r.ms >= TIMEOUT_MS - 2, 'not before the timeout')
    t.equal(await forwardCount(gw, c.result), 1, `counted as ${c.result}`)
    const warned = gw.logs.filter(l => l.msg === 'step failed')
    if (c.err === undefined) return t.same(warned, [], 'nothing failed')
    t.match(warned, [{ level: 40, step: 'fw', err: { type: 'ForwardError', result: c.result, attempts: 1, elapsedMs: Number, ...c.err } }], 'the cause is logged')
    t.ok(warned[0].err.elapsedMs <= r.ms + 1, `logged elapsed ${warned[0].err.elapsedMs as number} ms`)
  })
}

t.test('timeoutMs is waited out in full, whenever a call starts', async t => {
  // undici's header and body timers tick every 499 ms and count from the tick before they were set: given
  // a bound of two ticks, one set between ticks fires early by the time since the last tick
  const timeoutMs = 998
  const down = await startDownstream(t, (req, res) => {
    if ((JSON.parse(req.body) as { content: typeof content }).content.proxy_name === 'body') res.writeHead(200).write('{"reject"')
  })
  const gw = await startGateway(t, { deadlineMs: 5000, chain: [{ name: 'fw', plugin: 'forward', options: { url: down.url, timeoutMs } }] })
  const calls = await Promise.all(['headers', 'body'].flatMap(proxyName => [0, 130, 260, 390].map(async at => {
    await sleep(at)
    return { proxyName, at, ...await timedCall(gw, 'NewProxy', { ...content, proxy_name: proxyName }) }
  })))
  for (const c of calls) {
    t.same(c.body, FAILED, `no ${c.proxyName} (call started at +${c.at} ms)`)
    t.ok(c.ms >= timeoutMs - 2 && c.ms < timeoutMs + MARGIN_MS + c.late, `answered in ${Math.round(c.ms)} ms (timers up to ${Math.round(c.late)} ms late)`)
  }
  t.equal(await forwardCount(gw, 'timeout'), calls.length)
})

t.test('onError allow: a failed call goes on unchanged, and the steps after it still run', async t => {
  const gw = await startGateway(t, {
    chain: [
      { name: 'fw', plugin: 'forward', options: { url: `http://127.0.0.1:${await closedPort()}/`, onError: 'allow' } },
      { name: 'tag', plugin: 'metas', ops: ['NewProxy'], options: { set: { checked: 'no' } } }
    ]
  })
  t.same((await gw.call('NewProxy', content)).body, { reject: false, unchange: false, content: { ...content, metas: { checked: 'no' } } })
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewProxy', step: 'fw', decision: 'error' }), 1)
  t.match(gw.logs.filter(l => l.msg === 'step failed'), [{ step: 'fw', err: { result: 'connect_error', code: 'ECONNREFUSED' } }])
})

t.test('retries: a refused connection is tried again; the metric counts every attempt', async t => {
  const gw = await startGateway(t, { chain: [{ name: 'fw', plugin: 'forward', options: { url: `http://127.0.0.1:${await closedPort()}/`, retries: 2 } }] })
  t.same((await gw.call('Ping', {})).body, FAILED)
  t.equal(await forwardCount(gw, 'connect_error'), 3)
  t.match(gw.logs.filter(l => l.msg === 'step failed'), [{ err: { code: 'ECONNREFUSED', attempts: 3 } }])
})

t.test('retries: never once a request reached the downstream', async t => {
  const down = await startDownstream(t, (_, res) => { res.socket?.destroy() })
  const gw = await startGateway(t, { chain: [{ name: 'fw', plugin: 'forward', options: { url: down.url, retries: 3, timeoutMs: TIMEOUT_MS } }] })
  t.same((await gw.call('Ping', {})).body, FAILED, 'reset after the request was written')
  t.equal(down.requests.length, 1)
  t.equal(await forwardCount(gw, 'connect_error'), 1)

  down.handler = hang
  const r = await timedCall(gw, 'Ping', {})
  t.same(r.body, FAILED, 'no answer in time')
  t.ok(r.ms < TIMEOUT_MS + MARGIN_MS + r.late, `answered in ${Math.round(r.ms)} ms (timers up to ${Math.round(r.late)} ms late)`)
  t.equal(down.requests.length, 2)
  t.equal(await forwardCount(gw, 'timeout'), 1)
})

t.test('a downstream that hangs forever cannot make a call exceed deadlineMs', async t => {
  const down = await startDownstream(t, hang)
  const gw = await startGateway(t, {
    deadlineMs: 600,
    chain: [
      { name: 'slow', plugin: 'forward', options: { url: down.url, timeoutMs: 300, onError: 'allow' } },
      { name: 'stuck', plugin: 'forward', options: { url: down.url, timeoutMs: 10_000, onError: 'allow' } }
    ]
  })
  const r = await timedCall(gw)
  t.same(r.body, rejected('frp-plugin-gateway: deadline exceeded in step stuck'), 'past the deadline the answer is a reject, whatever onError says')
  t.ok(r.ms >= 598 && r.ms < 600 + MARGIN_MS + r.late, `answered in ${Math.round(r.ms)} ms (timers up to ${Math.round(r.late)} ms late)`)
  t.equal(down.requests.length, 2, 'both downstreams were called')
  t.ok(await until(() => down.requests.every(r => r.connectionClosed)), 'the abandoned request was cancelled: its connection is closed')
  t.equal(await forwardCount(gw, 'timeout', 'slow'), 1)
  t.equal(await forwardCount(gw, 'timeout', 'stuck'), 1)

  const close = await timedCall(gw, 'CloseProxy', { proxy_name: 'alice.ssh' })
  t.same(close.body, ALLOW, 'CloseProxy is always allowed')
  t.ok(close.ms < 600 + MARGIN_MS + close.late, `answered in ${Math.round(close.ms)} ms (timers up to ${Math.round(close.late)} ms late)`)
})

t.test('circuit breaker: opens, fails fast without calling, closes after a successful trial', async t => {
  const down = await startDownstream(t, (_, res) => { res.writeHead(500).end() })
  const gw = await startGateway(t, {
    chain: [{ name: 'fw', plugin: 'forward', options: { url: down.url, timeoutMs: 1000, circuitBreaker: { failureThreshold: 2, resetAfterMs: 300 } } }]
  })
  t.same((await gw.call('Ping', {})).body, FAILED)
  t.same((await gw.call('Ping', {})).body, FAILED)
  t.equal(down.requests.length, 2)
  t.match(gw.logs.filter(l => /circuit/.test(l.msg)), [{ level: 40, step: 'fw', msg: 'circuit breaker opened', failures: 2 }])

  for (let i = 0; i < 3; i++) {
    const r = await timedCall(gw, 'Ping', {})
    t.same(r.body, FAILED, 'open: fails')
    t.ok(r.ms < 250, `fast (${Math.round(r.ms)} ms)`)
  }
  t.equal(down.requests.length, 2, 'the downstream was not called while open')
  t.equal(await forwardCount(gw, 'circuit_open'), 3)
  t.match(gw.logs.filter(l => l.msg === 'step failed').at(-1), { err: { result: 'circuit_open', attempts: 0 } })

  await sleep(300)
  down.handler = () => ({})
  t.same((await gw.call('Ping', {})).body, ALLOW, 'the trial call goes through')
  t.same((await gw.call('Ping', {})).body, ALLOW, 'closed again')
  t.equal(down.requests.length, 4)
  t.equal(await forwardCount(gw, 'ok'), 2)
  t.equal(await forwardCount(gw, 'http_status'), 2)
  t.equal(gw.logs.filter(l => /circuit/.test(l.msg)).at(-1)?.msg, 'circuit breaker closed')
})

t.test('circuit breaker: a timeout counts, a failed trial opens it again, one trial at a time', async t => {
  const down = await startDownstream(t, hang)
  const gw = await startGateway(t, {
    chain: [{ name: 'fw', plugin: 'forward', options: { url: down.url, timeoutMs: 500, circuitBreaker: { failureThreshold: 1, resetAfterMs: 200 } } }]
  })
  t.same((await gw.call('Ping', {})).body, FAILED, 'a timeout opens it')
  await sleep(200)
  down.handler = (_, res) => { res.writeHead(502).end() }
  t.same((await gw.call('Ping', {})).body, FAILED, 'the trial fails')
  t.equal(down.requests.length, 2)
  t.same((await gw.call('Ping', {})).body, FAILED)
  t.equal(down.requests.length, 2, 'open again: not called')

  await sleep(200)
  let answer = (): void => {}
  const answered = new Promise<void>(resolve => { answer = resolve })
  down.handler = async () => { await answered; return {} }
  const trial = gw.call('Ping', {})
  t.ok(await until(() => down.requests.length === 3), 'the trial reached the downstream')
  const during = await timedCall(gw, 'Ping', {})
  t.same(during.body, FAILED, 'a call while the trial is in flight fails')
  t.ok(during.ms < 250, `fast (${Math.round(during.ms)} ms)`)
  answer()
  t.same((await trial).body, ALLOW)
  t.equal(down.requests.length, 3)
  t.equal(await forwardCount(gw, 'timeout'), 1)
  t.equal(await forwardCount(gw, 'http_status'), 1)
  t.equal(await forwardCount(gw, 'circuit_open'), 2)
  t.equal(await forwardCount(gw, 'ok'), 1)
})

t.test('circuit breaker with onError allow: open means allowed unchanged, fast', async t => {
  const down = await startDownstream(t, (_, res) => { res.writeHead(503).end() })
  const gw = await startGateway(t, {
    chain: [{ name: 'fw', plugin: 'forward', options: { url: down.url, onError: 'allow', circuitBreaker: { failureThreshold: 1, resetAfterMs: 60_000 } } }]
  })
  t.same((await gw.call('Ping', {})).body, ALLOW)
  t.same((await gw.call('Ping', {})).body, ALLOW)
  t.equal(down.requests.length, 1)
  t.equal(await forwardCount(gw, 'circuit_open'), 1)
})

// a non-200 whose body never ends: frps closes such a body; reading it would hold a pooled connection as long as it trickles
const trickling503: Handler = async (_req, res) => {
  res.writeHead(503)
  for (let i = 0; i < 80 && !res.destroyed; i++) {
    res.write('.')
    await sleep(100)
  }
  res.end()
}

t.test('answers whose error body trickles hold no connection: with all 64 once taken so, the next call still keeps timeoutMs', async t => {
  const down = await startDownstream(t, trickling503)
  const gw = await startGateway(t, { chain: [{ name: 'fw', plugin: 'forward', options: { url: down.url, timeoutMs: TIMEOUT_MS } }] }, { level: 'silent' })
  const first = await Promise.all(Array.from({ length: 64 }, async () => await gw.call('NewProxy', content)))
  t.same(first.map(r => r.body), Array.from({ length: 64 }, () => FAILED))
  await sleep(300)
  down.handler = () => ALLOW
  const { body, ms, late } = await timedCall(gw)
  t.same(body, ALLOW, 'the downstream answers well again, and is heard')
  t.ok(ms < TIMEOUT_MS + MARGIN_MS + late, `answered in ${Math.round(ms)} ms (timers up to ${Math.round(late)} ms late)`)
})

t.test('a call waiting for one of the pool\'s connections keeps timeoutMs all the same, and a reload\'s close does not wait for them', async t => {
  // 64 calls the downstream holds, then one more that can only wait for a connection
  const down = await startDownstream(t, () => undefined)
  const gw = await startGateway(t, { drainMs: 0, chain: [{ name: 'fw', plugin: 'forward', options: { url: down.url, timeoutMs: 2000 } }] }, { level: 'silent' })
  const held = Array.from({ length: 64 }, async () => await gw.call('NewProxy', content))
  await sleep(300)
  const started = performance.now()
  const queued = await timedCall(gw)
  t.same(queued.body, FAILED)
  t.ok(queued.ms < 2000 + MARGIN_MS + queued.late, `the 65th call failed at its timeout: ${Math.round(queued.ms)} ms (timers up to ${Math.round(queued.late)} ms late)`)
  await Promise.all(held)
  const closing = performance.now()
  await gw.ref.current.close()
  t.ok(performance.now() - closing < 1000, `closed in ${Math.round(performance.now() - closing)} ms, past every call's deadline (started ${Math.round(closing - started)} ms after)`)
})
