import { Writable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { pino } from 'pino'
import t from 'tap'
import { runChain, type CallContext, type ChainResult, type ChainStep, type Step } from '../src/chain.js'
import { compileWhen, type When } from '../src/match.js'
import type { Decision } from '../src/metrics.js'
import type { Content, Op } from '../src/protocol.js'
import { closedPort, startDownstream, until } from './helpers/downstream.js'
import { loadSamples } from './helpers/fixtures.js'
import { startGateway, type TestGateway } from './helpers/gateway.js'

/** The non-zero step decisions of one op, as {step: {decision: count}}: a step that never ran is absent. */
async function decisions (gw: TestGateway, op: string): Promise<Record<string, Record<string, number>>> {
  const out: Record<string, Record<string, number>> = {}
  for (const { labels, value } of (await gw.metrics.stepDecisions.get()).values) {
    if (labels.op === op && value > 0) (out[labels.step as string] ??= {})[labels.decision as string] = value
  }
  return out
}

const ALLOW = { reject: false, unchange: true }
const LOGIN = { user: 'alice', metas: { team: 'blue' }, client_address: '203.0.113.7:51234' }
const sample = (file: string, i: number) => loadSamples(file)[i].body

t.test('steps run in array order, each on the content the previous one left', async t => {
  const gw = await startGateway(t, {
    chain: [
      { name: 'first', plugin: 'rewrite', options: { set: { 'metas.a': 'x' } } },
      { name: 'second', plugin: 'metas', options: { set: { b: '{{metas.a}}+', a: '{{metas.a}}{{metas.a}}' } } },
      { name: 'third', plugin: 'rewrite', options: { replace: [{ path: 'metas.b', pattern: '\\+$', replacement: '!' }] } }
    ]
  })
  const r = await gw.call('Login', LOGIN)
  t.equal(r.raw, '{"reject":false,"unchange":false,"content":{"user":"alice","metas":{"team":"blue","a":"xx","b":"x!"},' +
    '"client_address":"203.0.113.7:51234"}}')
  t.same(await decisions(gw, 'Login'), { first: { modify: 1 }, second: { modify: 1 }, third: { modify: 1 } })
  t.equal(await gw.metric('frp_gateway_requests_total', { op: 'Login', outcome: 'modify' }), 1)
})

t.test('when sees the content as the previous steps left it', async t => {
  const gw = await startGateway(t, {
    chain: [
      { name: 'tag', plugin: 'metas', ops: ['Login'], when: { users: ['bob'] }, options: { set: { suspended: 'yes' } } },
      { name: 'gate', plugin: 'reject', when: { metas: { suspended: 'yes' } }, options: { reason: '{{user}} is suspended' } }
    ]
  })
  t.same((await gw.call('Login', { user: 'bob' })).body, { reject: true, reject_reason: 'bob is suspended', unchange: true })
  t.same((await gw.call('Login', { user: 'alice' })).body, ALLOW)
  t.same(await decisions(gw, 'Login'), { tag: { modify: 1 }, gate: { reject: 1 } })
})

t.test('ops filter: a step runs only for its ops', async t => {
  const gw = await startGateway(t, {
    chain: [
      { name: 'proxy-only', plugin: 'reject', ops: ['NewProxy'] },
      { name: 'tag', plugin: 'metas', ops: ['Login', 'Ping'], options: { set: { seen: '{{op}}' } } }
    ]
  })
  t.same((await gw.call('Login', { user: 'a' })).body, { reject: false, unchange: false, content: { user: 'a', metas: { seen: 'Login' } } })
  t.same((await gw.call('NewProxy', { proxy_name: 'p' })).body, { reject: true, reject_reason: 'rejected by proxy-only', unchange: true })
  t.same((await gw.call('NewUserConn', { proxy_name: 'p' })).body, ALLOW)
  t.same(await decisions(gw, 'Login'), { tag: { modify: 1 } })
  t.same(await decisions(gw, 'NewProxy'), { 'proxy-only': { reject: 1 } })
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'Login', step: 'proxy-only' }), undefined, 'not in the Login chain at all')
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewUserConn', step: 'tag' }), undefined)
})

t.test('enabled: false leaves the step out', async t => {
  const gw = await startGateway(t, {
    chain: [
      { name: 'off', plugin: 'reject', enabled: false },
      { name: 'on', plugin: 'metas', ops: ['Login'], options: { set: { k: 'v' } } }
    ]
  })
  t.same((await gw.call('Login', { user: 'a' })).body, { reject: false, unchange: false, content: { user: 'a', metas: { k: 'v' } } })
  t.same((await gw.call('Ping', {})).body, ALLOW)
  t.same(await decisions(gw, 'Login'), { on: { modify: 1 } })
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { step: 'off' }), undefined)
})

t.test('when: a step whose condition fails is skipped', async t => {
  const gw = await startGateway(t, {
    chain: [
      { name: 'no-bob', plugin: 'reject', when: { users: ['bob'] }, options: { reason: '{{user}} is suspended' } },
      { name: 'tag', plugin: 'metas', ops: ['Login'], when: { not: { metas: { team: 'red' } } }, options: { set: { ok: '1' } } }
    ]
  })
  t.same((await gw.call('Login', { user: 'bob' })).body, { reject: true, reject_reason: 'bob is suspended', unchange: true })
  t.same((await gw.call('Login', { user: 'alice', metas: { team: 'red' } })).body, ALLOW)
  t.same((await gw.call('Login', { user: 'alice' })).body, { reject: false, unchange: false, content: { user: 'alice', metas: { ok: '1' } } })
  t.same(await decisions(gw, 'Login'), { 'no-bob': { reject: 1 }, tag: { modify: 1 } }, 'skipped steps record nothing')
})

t.test('a reject ends the chain', async t => {
  const gw = await startGateway(t, {
    chain: [
      { name: 'before', plugin: 'metas', options: { set: { k: 'v' } } },
      { name: 'stop', plugin: 'reject', options: { reason: 'stopped {{user}}' } },
      { name: 'after', plugin: 'metas', options: { set: { never: 'x' } } },
      { name: 'after-reject', plugin: 'reject', options: { reason: 'not me' } }
    ]
  })
  const r = await gw.call('Login', { user: 'alice' })
  t.equal(r.raw, '{"reject":true,"reject_reason":"stopped alice","unchange":true}')
  t.same(await decisions(gw, 'Login'), { before: { modify: 1 }, stop: { reject: 1 } })
  for (const step of ['after', 'after-reject']) {
    t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'Login', step }), undefined, `${step} never decided`)
  }
  t.equal(await gw.metric('frp_gateway_requests_total', { op: 'Login', outcome: 'reject' }), 1)
  t.same(gw.logs.filter(l => l.msg === 'call').map(l => [l.outcome, l.step, l.reason]), [['reject', 'stop', 'stopped alice']])
})

t.test('modify answers the whole content, in the order frps sent it', async t => {
  const gw = await startGateway(t, {
    chain: [{ name: 'grp', plugin: 'rewrite', ops: ['NewProxy'], when: { proxyTypes: ['tcp'] }, options: { set: { group: 'ssh' } } }]
  })
  const { op, content } = sample('frps-0.41.0-requests.jsonl', 2)
  const r = await gw.call(op, content)
  t.equal(r.raw, JSON.stringify({ reject: false, unchange: false, content: { ...content, group: 'ssh' } }))
  t.equal(r.body.content.group, 'ssh')
  t.equal(content.group, '', 'the sample was empty')
})

t.test('content that ends equal to what frps sent answers unchanged', async t => {
  const gw = await startGateway(t, {
    chain: [
      { name: 'same', plugin: 'rewrite', ops: ['NewProxy'], options: { set: { 'user.metas.team': 'blue', remote_port: 6000 } } },
      { name: 'same-meta', plugin: 'metas', options: { scope: 'user', set: { team: 'blue' } } },
      { name: 'same-default', plugin: 'metas', options: { scope: 'user', default: { team: 'red' } } },
      { name: 'change', plugin: 'rewrite', ops: ['NewProxy'], options: { set: { remote_port: 7000 } } },
      { name: 'back', plugin: 'rewrite', ops: ['NewProxy'], options: { set: { remote_port: 6000 } } }
    ]
  })
  const { op, content } = sample('frps-current-shapes.jsonl', 2)
  t.same([op, content.proxy_type, content.remote_port, content.user.metas.team], ['NewProxy', 'tcp', 6000, 'blue'])
  const r = await gw.call(op, content)
  t.equal(r.raw, '{"reject":false,"unchange":true}')
  t.same(await decisions(gw, 'NewProxy'), { same: { allow: 1 }, 'same-meta': { allow: 1 }, 'same-default': { allow: 1 }, change: { modify: 1 }, back: { modify: 1 } })
  t.equal(await gw.metric('frp_gateway_requests_total', { op: 'NewProxy', outcome: 'allow' }), 1)
  t.equal(await gw.metric('frp_gateway_requests_total', { op: 'NewProxy', outcome: 'modify' }), undefined)
})

t.test('mode shadow counts and logs its decisions but neither rejects nor modifies', async t => {
  const gw = await startGateway(t, {
    chain: [
      { name: 'would-tag', plugin: 'metas', mode: 'shadow', options: { set: { shadow: 'yes' } } },
      { name: 'sees-original', plugin: 'reject', when: { metas: { shadow: 'yes' } }, options: { reason: 'saw the shadow change' } },
      { name: 'would-reject', plugin: 'reject', mode: 'shadow' },
      { name: 'real', plugin: 'metas', ops: ['Ping'], options: { scope: 'user', set: { real: '1' } } }
    ]
  })
  t.equal((await gw.call('Login', { user: 'a' })).raw, '{"reject":false,"unchange":true}')
  t.same((await gw.call('Ping', { user: { user: 'a' } })).body,
    { reject: false, unchange: false, content: { user: { user: 'a', metas: { real: '1' } } } }, 'only the enforced step modifies')
  t.same(await decisions(gw, 'Login'), { 'would-tag': { shadow_modify: 1 }, 'would-reject': { shadow_reject: 1 } })
  t.same(await decisions(gw, 'Ping'), { 'would-tag': { shadow_modify: 1 }, 'would-reject': { shadow_reject: 1 }, real: { modify: 1 } })
  t.equal(await gw.metric('frp_gateway_requests_total', { op: 'Login', outcome: 'allow' }), 1)
  t.same(gw.logs.filter(l => l.msg === 'shadow decision').map(l => [l.level, l.step, l.decision, l.reason]), [
    [20, 'would-tag', 'shadow_modify', undefined], [30, 'would-reject', 'shadow_reject', 'rejected by would-reject'],
    [20, 'would-tag', 'shadow_modify', undefined], [30, 'would-reject', 'shadow_reject', 'rejected by would-reject']
  ], 'the reject it would have made at info, a change at debug')
})

t.test('CloseProxy runs every applicable step after a reject and answers allow unchanged', async t => {
  const gw = await startGateway(t, {
    chain: [
      { name: 'r1', plugin: 'reject' },
      { name: 'm2', plugin: 'metas', options: { set: { x: '1' } } },
      { name: 'skipped', plugin: 'reject', when: { users: ['nobody'] } },
      { name: 'r3', plugin: 'reject', ops: ['CloseProxy'] },
      // a downstream that is not there: the step fails
      { name: 'bad', plugin: 'forward', ops: ['CloseProxy'], options: { url: `http://127.0.0.1:${await closedPort()}/handler` } }
    ]
  })
  const { op, content } = sample('frps-0.41.0-requests.jsonl', 9)
  t.equal(op, 'CloseProxy')
  t.equal((await gw.call(op, content)).raw, '{"reject":false,"unchange":true}')
  t.same(await decisions(gw, 'CloseProxy'), { r1: { reject: 1 }, m2: { modify: 1 }, r3: { reject: 1 }, bad: { error: 1 } })
  t.equal(await gw.metric('frp_gateway_requests_total', { op: 'CloseProxy', outcome: 'allow' }), 1)
})

t.test('the NewWorkConn frps 0.41 sent as Ping runs NewWorkConn steps and counts as NewWorkConn', async t => {
  const gw = await startGateway(t, {
    chain: [
      { name: 'ping-gate', plugin: 'reject', ops: ['Ping'], options: { reason: 'ping' } },
      { name: 'work', plugin: 'metas', ops: ['NewWorkConn'], options: { set: { via: '{{op}}' } } }
    ]
  })
  const { op, content } = sample('frps-0.41.0-requests.jsonl', 1)
  t.same([op, content.run_id], ['Ping', '0b6df67052a02208'])
  const r = await gw.call(op, content)
  t.same(r.body, { reject: false, unchange: false, content: { ...content, user: { ...content.user, metas: { ...content.user.metas, via: 'NewWorkConn' } } } })
  t.same(await decisions(gw, 'NewWorkConn'), { work: { modify: 1 } })
  t.same(await decisions(gw, 'Ping'), {})
  t.equal(await gw.metric('frp_gateway_requests_total', { op: 'NewWorkConn', outcome: 'modify' }), 1)
  t.equal(await gw.metric('frp_gateway_requests_total', { op: 'Ping' }), undefined)

  const plain = sample('frps-0.41.0-requests.jsonl', 7)
  t.same([plain.op, 'run_id' in plain.content], ['Ping', false])
  t.same((await gw.call(plain.op, plain.content)).body, { reject: true, reject_reason: 'ping', unchange: true })
  t.equal(await gw.metric('frp_gateway_requests_total', { op: 'Ping', outcome: 'reject' }), 1)
})

// runChain with hand-built steps: failures and deadlines no built-in plugin produces
interface Harness { steps: ChainStep[], recorded: Array<[string, Decision]>, ran: string[], ctx: CallContext, warnings: Array<Record<string, any>> }

function harness (op: Op, defs: Array<[string, Step, { shadow?: boolean, when?: When }?]>, deadlineMs = 1000): Harness {
  const recorded: Array<[string, Decision]> = []
  const ran: string[] = []
  const warnings: Array<Record<string, any>> = []
  const sink = new Writable({ write (chunk, _enc, done) { warnings.push(JSON.parse(String(chunk))); done() } })
  const steps = defs.map(([name, run, o = {}]): ChainStep => ({
    name,
    shadow: o.shadow ?? false,
    when: compileWhen(o.when),
    run: (content, ctx) => { ran.push(name); return run(content, ctx) },
    record: decision => { recorded.push([name, decision]) }
  }))
  const ctx: CallContext = { op, wireOp: op, reqid: 'r1', deadline: performance.now() + deadlineMs, log: pino({ level: 'warn' }, sink) }
  return { steps, recorded, ran, ctx, warnings }
}

const setK = (value: string): Step => content => ({ content: { ...content, k: value } })
// unref'd: a step abandoned at the deadline must not hold the test process open
const later = <T>(ms: number, value: T): Promise<T> => sleep(ms, value, { ref: false })

t.test('runChain stays synchronous while its steps are', async t => {
  const h = harness('Login', [['a', setK('1')], ['b', () => undefined], ['c', () => ({})]])
  const result = runChain(h.steps, { user: 'u' }, h.ctx)
  t.notOk(result instanceof Promise)
  t.same(result, { outcome: 'modify', content: { user: 'u', k: '1' } })
  t.same(h.recorded, [['a', 'modify'], ['b', 'allow'], ['c', 'allow']])
})

t.test('runChain mixes async and sync steps in order', async t => {
  const h = harness('Login', [
    ['a', c => later(5, { content: { ...c, a: 1 } })],
    ['b', c => ({ content: { ...c, b: (c.a as number) + 1 } })],
    ['skip', () => ({ reject: 'no' }), { when: { users: ['other'] } }],
    ['c', c => later(1, { content: { ...c, c: (c.b as number) + 1 } })],
    ['d', () => undefined]
  ])
  const result = runChain(h.steps, { user: 'u' }, h.ctx)
  t.ok(result instanceof Promise)
  t.same(await result, { outcome: 'modify', content: { user: 'u', a: 1, b: 2, c: 3 } })
  t.same(h.ran, ['a', 'b', 'c', 'd'])
  t.same(h.recorded, [['a', 'modify'], ['b', 'modify'], ['c', 'modify'], ['d', 'allow']])
})

t.test('a changed value changed back is no change', async t => {
  const h = harness('Login', [['a', setK('2')], ['b', setK('1')]])
  t.same(runChain(h.steps, { k: '1' }, h.ctx), { outcome: 'allow' })
  t.same(h.recorded, [['a', 'modify'], ['b', 'modify']])
})

t.test('a step that throws is an error reject naming the step; later steps never run', async t => {
  for (const [kind, boom] of [
    ['throws', () => { throw new Error('bug in step') }],
    ['rejects', () => Promise.reject(new Error('bug in step'))],
    ['rejects later', () => later(5, null).then(() => { throw new Error('bug in step') })]
  ] as Array<[string, Step]>) {
    const h = harness('NewProxy', [['first', setK('1')], ['boom', boom], ['after', () => ({ reject: 'never' })]])
    const result: ChainResult = await runChain(h.steps, {}, h.ctx)
    t.same(result, { outcome: 'error', reason: 'frp-plugin-gateway: step boom failed', step: 'boom' }, kind)
    t.same(h.ran, ['first', 'boom'], kind)
    t.same(h.recorded, [['first', 'modify'], ['boom', 'error']], kind)
    t.same(h.warnings.map(w => [w.msg, w.step, w.err?.message]), [['step failed', 'boom', 'bug in step']], kind)
  }
})

t.test('on CloseProxy a throwing step neither stops the chain nor changes the answer', async t => {
  const h = harness('CloseProxy', [['boom', () => { throw new Error('x') }], ['no', () => ({ reject: 'no' })], ['after', setK('1')]])
  t.same(runChain(h.steps, {}, h.ctx), { outcome: 'allow', failed: ['boom'] }, 'the call goes on: the step is named as failed')
  t.same(h.recorded, [['boom', 'error'], ['no', 'reject'], ['after', 'modify']])
})

t.test('a shadow step that throws counts an error but does not reject', async t => {
  const h = harness('Login', [['boom', () => { throw new Error('x') }, { shadow: true }], ['after', setK('1')]])
  t.same(runChain(h.steps, {}, h.ctx), { outcome: 'modify', content: { k: '1' } })
  t.same(h.recorded, [['boom', 'error'], ['after', 'modify']])
})

t.test('a step that never waits and ends past the deadline is abandoned as an async one would be: the deadline answers, no later step runs', async t => {
  const busy = (ms: number): Step => c => { const until = performance.now() + ms; while (performance.now() < until); return { content: { ...c, k: 'late' } } }
  for (const first of ['sync', 'async']) {
    const h = harness('Login', [['quick', c => first === 'sync' ? { content: { ...c, k: '1' } } : later(1, { content: { ...c, k: '1' } })], ['hog', busy(80)], ['after', setK('2')]], 50)
    const result = await runChain(h.steps, {}, h.ctx)
    t.same(result, { outcome: 'error', reason: 'frp-plugin-gateway: deadline exceeded in step hog', step: 'hog' }, `after a ${first} step`)
    t.same(h.ran, ['quick', 'hog'])
    t.same(h.recorded, [['quick', 'modify'], ['hog', 'error']])
    t.same(h.warnings.map(w => [w.msg, w.step]), [['deadline exceeded', 'hog']])
  }
  const close = harness('CloseProxy', [['hog', busy(80)], ['after', setK('2')]], 50)
  t.same(runChain(close.steps, {}, close.ctx), { outcome: 'allow' }, 'CloseProxy: allowed, as at the deadline')
  t.same(close.ran, ['hog'])
})

t.test('an async step slower than the deadline is a reject saying so, on time', async t => {
  const deadlineMs = 50
  const h = harness('Login', [['quick', c => later(1, { content: { ...c, k: '1' } })], ['slow', () => later(2000, {})], ['after', setK('2')]], deadlineMs)
  const started = performance.now()
  h.ctx.deadline = started + deadlineMs
  const result = await runChain(h.steps, {}, h.ctx)
  const took = performance.now() - started
  t.same(result, { outcome: 'error', reason: 'frp-plugin-gateway: deadline exceeded in step slow', step: 'slow' })
  t.ok(took >= deadlineMs - 1 && took < deadlineMs + 250, `answered after ${took.toFixed(1)} ms (deadline ${deadlineMs} ms)`)
  t.same(h.ran, ['quick', 'slow'])
  t.same(h.recorded, [['quick', 'modify'], ['slow', 'error']])
  t.same(h.warnings.map(w => [w.msg, w.step]), [['deadline exceeded', 'slow']])
})

t.test('a step that never settles is abandoned at the deadline and its late failure stays quiet', async t => {
  let fail: (err: Error) => void = () => {}
  const h = harness('NewUserConn', [['hang', () => new Promise((_resolve, reject) => { fail = reject })]], 20)
  const unhandled: unknown[] = []
  const onUnhandled = (err: unknown) => { unhandled.push(err) }
  process.on('unhandledRejection', onUnhandled)
  t.teardown(() => { process.off('unhandledRejection', onUnhandled) })
  t.same(await runChain(h.steps, {}, h.ctx), { outcome: 'error', reason: 'frp-plugin-gateway: deadline exceeded in step hang', step: 'hang' })
  fail(new Error('too late'))
  await sleep(10)
  t.same(unhandled, [])
  t.same(h.recorded, [['hang', 'error']])
})

t.test('the deadline on CloseProxy still answers allow', async t => {
  const h = harness('CloseProxy', [['slow', () => later(1000, { reject: 'x' })]], 20)
  t.same(await runChain(h.steps, {}, h.ctx), { outcome: 'allow' })
  t.same(h.recorded, [['slow', 'error']])
})

t.test('a shadow step that goes asynchronous takes no part in the answer nor its time: one slower than deadlineMs fails no call', async t => {
  // a downstream that answers the first call after 600 ms, past the call's deadline of 300 ms, and the others at once
  let calls = 0
  const downstream = await startDownstream(t, (_req, res) => {
    const answer = (): void => { res.end('{"reject":true,"reject_reason":"would refuse","unchange":true}') }
    if (calls++ === 0) setTimeout(answer, 600)
    else answer()
  })
  const gw = await startGateway(t, {
    deadlineMs: 300,
    chain: [
      { name: 'try-auth', plugin: 'forward', mode: 'shadow', options: { url: downstream.url, timeoutMs: 1000 } },
      { name: 'tag', plugin: 'metas', ops: ['Login'], options: { set: { region: 'eu' } } }
    ]
  })
  const started = performance.now()
  const slow = await gw.call('Login', { user: 'a' })
  const ms = performance.now() - started
  t.same(slow.body, { reject: false, unchange: false, content: { user: 'a', metas: { region: 'eu' } } }, 'the steps after it decide, as if it were not there')
  t.ok(ms < 300, `answered before the deadline, not held by the shadow step (${ms.toFixed(0)} ms)`)
  t.same((await gw.call('Login', { user: 'b' })).body, { reject: false, unchange: false, content: { user: 'b', metas: { region: 'eu' } } })
  // its decisions are counted when they come: the slow one past its answer, as an error when forward's
  // own budget (the call's deadline) ran out
  t.ok(await until(() => gw.logs.filter(l => l.msg === 'shadow decision').length === 2, 3000), 'both shadow decisions logged')
  t.same(await decisions(gw, 'Login'), { 'try-auth': { shadow_reject: 1, error: 1 }, tag: { modify: 2 } })
  t.equal(await gw.metric('frp_gateway_requests_total', { op: 'Login', outcome: 'modify' }), 2)
})

t.test('runChain: a throw once a step went asynchronous (a log destination failing) fails the call, as on the synchronous path, never the process', async t => {
  const throwing = { write (): void { throw new Error('disk full') } }
  for (const [what, deadlineMs, steps] of [
    ['a step that fails, logged', 1000, [['a', () => later(1, undefined)], ['b', () => Promise.reject(new Error('down'))]]],
    ['the deadline, logged', 20, [['slow', () => later(500, undefined)]]]
  ] as Array<[string, number, Array<[string, Step]>]>) {
    const h = harness('Login', steps, deadlineMs)
    h.ctx.log = pino({ level: 'warn' }, throwing)
    const result = runChain(h.steps, { user: 'u' }, h.ctx)
    t.ok(result instanceof Promise, what)
    await t.rejects(result as Promise<ChainResult>, /disk full/, `${what}: the call's promise rejects with the throw`)
  }
})
