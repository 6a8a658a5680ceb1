import { spawn } from 'node:child_process'
import { isDeepStrictEqual } from 'node:util'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { Agent, request } from 'undici'
import { DOWNSTREAM_FAULTS, faultChain, faultWindows, seededRandom, startFaultyDownstream, type DownstreamFault, type FaultyDownstream } from '../bench/faults.js'
import { effectiveOp, type Op } from '../src/protocol.js'
import { configFile, MAIN, ROOT } from './helpers/cli.js'
import { loadSamples } from './helpers/fixtures.js'
import { freePort, startRedis } from './helpers/redis.js'

// A sustained run of frps calls through faultChain() while the downstream plugins and Redis fail at random moments.
// FAULTS_SEED=N replays a run: the seed fixes the fault schedule and the calls sent.
const SEED = Number(process.env.FAULTS_SEED ?? Math.floor(Math.random() * 2 ** 32))
const RUN_MS = 10_000
const CALLS_PER_SECOND = 50
const DEADLINE_MS = 600
const AUTH_TIMEOUT_MS = 250
const RESET_AFTER_MS = 400
// What a loaded machine may add to deadlineMs. Generous, yet a call held by a paused Redis (no bound
// but the client's command timeout) or by the hanging audit (timeoutMs 5000) past the deadline is caught.
const SLACK_MS = 3000
// the gateway's Redis client gives up on a command after this long (src/stores/redis-client.ts)
const REDIS_COMMAND_TIMEOUT_MS = 300
// How long after a downstream fault ends auth's breaker may still fail calls fast: a request that
// arrived during the fault times out, the breaker opens for resetAfterMs, then the next call is its trial.
const BREAKER_MS = AUTH_TIMEOUT_MS + RESET_AFTER_MS + 500

const RL_CLOSED = 'frp-plugin-gateway: step rl-closed failed: rate-limit store unavailable'
const AUTH_FAILED = 'frp-plugin-gateway: step auth failed'
const deadlineIn = (step: string): string => `frp-plugin-gateway: deadline exceeded in step ${step}`
const AUDIT_DEADLINE = deadlineIn('audit')
const NO_UDP = 'no udp proxies'
const AUTH_OPS: readonly Op[] = ['Login', 'NewProxy', 'NewUserConn']
const LIMITED_OPS: readonly Op[] = ['Login', 'NewProxy']

const samples = ['frps-0.33.0-requests.jsonl', 'frps-0.41.0-requests.jsonl', 'frps-current-shapes.jsonl'].flatMap(loadSamples)

type Outcome = 'allow' | 'modify' | 'reject' | 'error'
interface Expected { outcome: Outcome, body: unknown }
/** What the chain below promises for one call in one state of the world. */
interface World { redis: 'up' | 'down' | 'paused', authFails: boolean, audit: 'ok' | 'deadline' }

const reject = (outcome: Outcome, reason: string): Expected => ({ outcome, body: { reject: true, reject_reason: reason, unchange: true } })

function promised (op: Op, content: Record<string, any>, w: World): Expected {
  if (op === 'CloseProxy') return { outcome: 'allow', body: { reject: false, unchange: true } }
  // paused, a Redis step first waits out the command timeout (which lateOutcomes allows for)
  if (w.redis !== 'up' && LIMITED_OPS.includes(op)) return reject('error', RL_CLOSED)
  if (op === 'NewProxy' && content.proxy_type === 'udp') return reject('reject', NO_UDP)
  if (w.authFails && AUTH_OPS.includes(op)) return reject('error', AUTH_FAILED)
  if (w.audit === 'deadline') return reject('error', AUDIT_DEADLINE)
  if (op === 'Login') return { outcome: 'modify', body: { reject: false, unchange: false, content: { ...content, metas: { ...content.metas, region: 'eu-1' } } } }
  return { outcome: 'allow', body: { reject: false, unchange: true } }
}

/**
 * The answers a call may also get once it has waited long enough for a timeout to decide it, whatever
 * the faults: a paused Redis leaves the steps after it less of the deadline, and on a loaded machine a
 * healthy Redis or downstream can be late too. A timeout's answer before its time is never allowed.
 */
function lateOutcomes (op: Op, ms: number): Expected[] {
  if (op === 'CloseProxy') return []
  const steps = ['rl-open', ...LIMITED_OPS.includes(op) ? ['rl-closed'] : [], ...AUTH_OPS.includes(op) ? ['auth'] : [], 'audit']
  return [
    ...ms >= REDIS_COMMAND_TIMEOUT_MS && LIMITED_OPS.includes(op) ? [reject('error', RL_CLOSED)] : [],
    ...ms >= AUTH_TIMEOUT_MS && AUTH_OPS.includes(op) ? [reject('error', AUTH_FAILED)] : [],
    ...ms >= DEADLINE_MS ? steps.map(step => reject('error', deadlineIn(step))) : []
  ]
}

/** Over [from, to] (ms of performance.now()) a call may have met any of these states. */
interface Span<S> { from: number, to: number, states: readonly S[] }

/** The states a call that was in flight over [sent, answered] may have met: `normal` unless one span covers it all. */
function statesDuring<S> (spans: ReadonlyArray<Span<S>>, normal: S, sent: number, answered: number): Set<S> {
  const met = new Set<S>()
  let covered = false
  for (const s of spans) {
    if (s.to < sent || s.from > answered) continue
    for (const state of s.states) met.add(state)
    if (s.from <= sent && s.to >= answered) covered = true
  }
  if (!covered) met.add(normal)
  return met
}

interface Call { op: Op, sample: (typeof samples)[number], sent: number, answered: number, status?: number, body?: unknown, error?: string }

function parseMetrics (text: string): Array<{ name: string, labels: Record<string, string>, value: number }> {
  const out = []
  for (const line of text.split('\n')) {
    const m = /^(\w+)\{([^}]*)\} (\S+)$/.exec(line)
    if (m === null) continue
    const labels = Object.fromEntries([...m[2].matchAll(/(\w+)="([^"]*)"/g)].map(l => [l[1], l[2]]))
    out.push({ name: m[1], labels, value: Number(m[3]) })
  }
  return out
}

t.test('downstream plugins and Redis failing at random moments: every call answered in time, as its policy promises', async t => {
  t.comment(`seed ${SEED} (FAULTS_SEED=${SEED} replays this run)`)
  const random = seededRandom(SEED)
  const redis = await startRedis(t)
  const auth = await startFaultyDownstream(AUTH_TIMEOUT_MS * 1.5)
  const audit = await startFaultyDownstream(DEADLINE_MS * 1.5)
  t.teardown(async () => { await Promise.all([auth.close(), audit.close()]) })

  const port = await freePort()
  const config = {
    listen: { port },
    log: { level: 'info' },
    redis: { url: redis.url },
    deadlineMs: DEADLINE_MS,
    chain: faultChain({ authUrl: auth.url, auditUrl: audit.url, authTimeoutMs: AUTH_TIMEOUT_MS, resetAfterMs: RESET_AFTER_MS })
  }
  // from dist, as users run it, without tap's NODE_OPTIONS (coverage hooks); nothing here reads its log
  const env = { ...process.env }
  delete env.NODE_OPTIONS
  const child = spawn(process.execPath, [MAIN, '--config', configFile(config)], { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'inherit'] })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const gw = { url: `http://127.0.0.1:${port}`, child }
  const agent = new Agent({ connections: 256, headersTimeout: DEADLINE_MS + SLACK_MS + 5000, bodyTimeout: DEADLINE_MS + SLACK_MS + 5000 })
  t.teardown(async () => { await agent.destroy() })
  // the status of an admin route; 0 when it does not answer
  const status = async (path: string): Promise<number> => await request(`${gw.url}${path}`, { dispatcher: agent })
    .then(async res => { await res.body.dump(); return res.statusCode }, () => 0)
  for (const until = performance.now() + 20_000; await status('/readyz') !== 200 && performance.now() < until;) await sleep(50)
  if (await status('/readyz') !== 200) throw new Error(`the gateway did not become ready (exit code ${String(child.exitCode)})`)

  // the schedule: every downstream fault on each plugin; Redis stopped (connections refused) once and
  // paused (connections held, nothing answered) once
  const downstreamWindows = () => faultWindows(random, DOWNSTREAM_FAULTS, RUN_MS - 500, [300, 700], [200, 900])
  const plan = {
    auth: downstreamWindows(),
    audit: downstreamWindows(),
    // gaps of at most 2 s, so both windows always fit in the span (with gaps up to 3 s, one seed in 16 had room for one)
    redis: faultWindows(random, ['stop', 'pause'] as const, RUN_MS - 2500, [600, 1500], [800, 2000]).slice(0, 2)
  }
  t.comment(`faults: ${JSON.stringify(plan)}`)
  t.same(new Set(plan.auth.map(w => w.kind)), new Set(DOWNSTREAM_FAULTS), 'every downstream fault is in the schedule')
  t.same(new Set(plan.audit.map(w => w.kind)), new Set(DOWNSTREAM_FAULTS))
  t.same(new Set(plan.redis.map(w => w.kind)), new Set(['stop', 'pause']), 'Redis stopped once and paused once')

  const calls: Call[] = []
  const send = async (sample: (typeof samples)[number]): Promise<void> => {
    const call: Call = { op: effectiveOp(sample.body.op as Op, sample.body.content), sample, sent: performance.now(), answered: 0 }
    calls.push(call)
    await request(`${gw.url}/handler?${sample.query}`, {
      method: 'POST',
      dispatcher: agent,
      headers: { ...sample.headers, 'content-type': 'application/json', 'x-frp-reqid': calls.length.toString(16).padStart(16, '0') },
      body: JSON.stringify(sample.body)
    }).then(async res => {
      call.status = res.statusCode
      call.body = await res.body.json()
    }).catch((err: Error) => { call.error = `${(err as { code?: string }).code ?? ''} ${err.message}` }).finally(() => { call.answered = performance.now() })
  }
  // every sample once before the faults: code paths compiled, connections open
  for (const sample of samples) await send(sample)

  const start = performance.now()
  const spans = { auth: [] as Array<Span<boolean>>, audit: [] as Array<Span<'deadline'>>, redis: [] as Array<Span<World['redis']>> }
  // each downstream fault is switched on and off at its moment, and recorded with when it really was
  const timers: NodeJS.Timeout[] = []
  const inject = (down: FaultyDownstream, windows: typeof plan.auth, record: (kind: DownstreamFault, from: number, to: number) => void): void => {
    for (const w of windows) {
      let from = 0
      timers.push(setTimeout(() => { down.fault = w.kind; from = performance.now() }, w.from))
      timers.push(setTimeout(() => { down.fault = undefined; record(w.kind, from, performance.now()) }, w.to))
    }
  }
  t.teardown(() => { for (const timer of timers) clearTimeout(timer) })
  inject(auth, plan.auth, (_, from, to) => {
    spans.auth.push({ from, to, states: [true] })
    spans.auth.push({ from: to, to: to + BREAKER_MS, states: [true, false] })
  })
  inject(audit, plan.audit, (kind, from, to) => {
    // answers later than the deadline; the other faults are an error the audit step lets through
    if (kind === 'hang' || kind === 'slow') spans.audit.push({ from, to, states: ['deadline'] })
  })
  const outages = (async () => {
    for (const w of plan.redis) {
      await sleep(start + w.from - performance.now())
      const stopping = performance.now()
      const state = w.kind === 'stop' ? 'down' : 'paused'
      if (state === 'paused') redis.pause(true)
      else await redis.stop()
      const stopped = performance.now()
      spans.redis.push({ from: stopping, to: stopped, states: [state, 'up'] })
      await sleep(start + w.to - performance.now())
      const restarting = performance.now()
      spans.redis.push({ from: stopped, to: restarting, states: [state] })
      if (state === 'paused') redis.pause(false)
      else await redis.start()
      // back once the gateway has reconnected (its retry waits up to 1 s)
      for (const until = performance.now() + 10_000; await status('/readyz') !== 200 && performance.now() < until;) await sleep(25)
      spans.redis.push({ from: restarting, to: performance.now(), states: [state, 'up'] })
    }
  })()

  const pending: Array<Promise<void>> = []
  for (let i = 0; performance.now() - start < RUN_MS; i++) {
    const wait = start + i * 1000 / CALLS_PER_SECOND - performance.now()
    if (wait > 0) await sleep(wait)
    pending.push(send(samples[Math.floor(random() * samples.length)]))
  }
  await Promise.all(pending)
  await outages
  t.comment(`${calls.length} calls in ${Math.round(performance.now() - start)} ms`)

  // every call answered, in time, as its policy promises in a state it may have met
  const seen = new Map<string, number>()
  const count = (key: string): number => seen.get(key) ?? 0
  const wrong: string[] = []
  let slowest = 0
  let late = 0
  for (const call of calls) {
    const ms = call.answered - call.sent
    slowest = Math.max(slowest, ms)
    const at = `call sent at +${Math.round(call.sent - start)} ms (${call.sample.body.op}), answered in ${Math.round(ms)} ms`
    if (call.error !== undefined || call.status !== 200) {
      wrong.push(`${at}: ${call.error ?? `status ${call.status}`}`)
      continue
    }
    if (ms > DEADLINE_MS + SLACK_MS) wrong.push(`${at}: later than deadlineMs + ${SLACK_MS} ms`)
    const candidates: Expected[] = []
    for (const redis of statesDuring<World['redis']>(spans.redis, 'up', call.sent, call.answered)) {
      for (const authFails of statesDuring(spans.auth, false, call.sent, call.answered)) {
        for (const audit of statesDuring<World['audit']>(spans.audit, 'ok', call.sent, call.answered)) {
          candidates.push(promised(call.op, call.sample.body.content, { redis, authFails, audit }))
        }
      }
    }
    let hit = candidates.find(c => isDeepStrictEqual(c.body, call.body))
    if (hit === undefined && (hit = lateOutcomes(call.op, ms).find(c => isDeepStrictEqual(c.body, call.body))) !== undefined) late++
    if (hit === undefined) {
      // the windows around the call, from the run's start, for a reader of a failure
      const near = Object.entries(spans).flatMap(([name, list]: [string, ReadonlyArray<Span<unknown>>]) => list
        .filter(x => x.to >= call.sent - 200 && x.from <= call.answered + 200)
        .map(x => `${name} ${Math.round(x.from - start)}..${Math.round(x.to - start)} ${JSON.stringify(x.states)}`))
      wrong.push(`${at} (near: ${near.join(', ')}): ${JSON.stringify(call.body)} is none of ${JSON.stringify([...new Set(candidates.map(c => JSON.stringify(c.body)))])}`)
      continue
    }
    seen.set(`${call.op} ${hit.outcome}`, count(`${call.op} ${hit.outcome}`) + 1)
    const reason = (call.body as { reject_reason?: string }).reject_reason
    if (reason !== undefined) seen.set(reason, count(reason) + 1)
  }
  t.comment(`${late} calls answered by a timeout that no fault explains (a loaded machine)`)
  t.same(wrong.slice(0, 10), [], `${wrong.length} wrong: every call answered as promised, within ${DEADLINE_MS} + ${SLACK_MS} ms (slowest ${Math.round(slowest)} ms; seed ${SEED})`)
  t.ok(count(RL_CLOSED) > 0 && count(AUTH_FAILED) > 0 && count(AUDIT_DEADLINE) > 0 && count(NO_UDP) > 0, 'every policy was exercised')

  // the metrics add up to what the client saw
  await sleep(300)
  const metrics = parseMetrics(await (await request(`${gw.url}/metrics`, { dispatcher: agent })).body.text())
  const sum = (name: string, labels: Record<string, string> = {}): number => metrics
    .filter(m => m.name === name && Object.entries(labels).every(([k, v]) => m.labels[k] === v))
    .reduce((n, m) => n + m.value, 0)
  t.equal(sum('frp_gateway_requests_total'), calls.length, 'frp_gateway_requests_total sums to the calls sent')
  const ops = [...new Set(calls.map(c => c.op))]
  for (const op of ops) {
    for (const outcome of ['allow', 'modify', 'reject', 'error']) {
      t.equal(sum('frp_gateway_requests_total', { op, outcome }), count(`${op} ${outcome}`), `requests_total{op=${op},outcome=${outcome}}`)
    }
    const sent = calls.filter(c => c.op === op).length
    t.equal(sum('frp_gateway_step_decisions_total', { op, step: 'rl-open' }), sent, `every ${op} call went through rl-open once`)
  }
  const decisions = (step: string, decision?: string): number =>
    sum('frp_gateway_step_decisions_total', decision !== undefined ? { step, decision } : { step })
  t.equal(decisions('rl-open', 'reject') + decisions('rl-open', 'modify'), 0, 'rl-open only allows')
  for (const step of ['rl-open', 'rl-closed']) {
    t.equal(sum('frp_gateway_ratelimit_decisions_total', { step }), decisions(step), `one store result per ${step} decision`)
    // a store that answers after the deadline counts its result, while the step counts the deadline's error
    const lateAllowed = sum('frp_gateway_ratelimit_decisions_total', { step, result: 'allowed' }) - decisions(step, 'allow')
    t.ok(lateAllowed >= 0 && lateAllowed <= decisions(step, 'error'), `${step} allowed what its store allowed, no more (${lateAllowed} allowed after the step had failed)`)
  }
  t.ok(decisions('rl-open', 'error') > 0, 'rl-open let calls on with Redis away')
  t.equal(sum('frp_gateway_ratelimit_decisions_total', { result: 'limited' }), 0, 'nothing was over its limit')
  t.equal(decisions('tag', 'modify'), calls.filter(c => c.op === 'Login').length, 'tag modified every Login')
  t.equal(decisions('rl-closed', 'error'), count(RL_CLOSED) + count(deadlineIn('rl-closed')), 'rl-closed failed exactly the calls answered with its reason or the deadline')
  t.equal(decisions('no-udp', 'reject'), count(NO_UDP))
  t.equal(decisions('auth', 'error'), count(AUTH_FAILED) + count(deadlineIn('auth')), 'auth failed exactly the calls answered with its reason or the deadline')
  t.equal(decisions('auth'), sum('frp_gateway_forward_requests_total', { step: 'auth' }), 'one forward result per auth decision')
  const breakdown = (step: string): string => JSON.stringify(metrics.filter(m => m.labels.step === step && m.value > 0 &&
    /forward_requests|step_decisions/.test(m.name)).map(m => `${m.name.replace('frp_gateway_', '')} ${m.labels.op ?? ''} ${m.labels.result ?? m.labels.decision} ${m.value}`))
  // a forward answered within its grace past the deadline counts ok, while the call got the deadline
  const authFailures = decisions('auth') - sum('frp_gateway_forward_requests_total', { step: 'auth', result: 'ok' })
  t.ok(decisions('auth', 'error') >= authFailures && decisions('auth', 'error') <= authFailures + count(deadlineIn('auth')),
    `an auth error for every failed forward, and for no other call but the deadline's: ${breakdown('auth')}`)
  t.ok(sum('frp_gateway_forward_requests_total', { step: 'auth', result: 'circuit_open' }) > 0, 'the breaker opened')
  t.equal(decisions('audit'), sum('frp_gateway_forward_requests_total', { step: 'audit' }), 'one forward result per audit decision')
  t.ok(decisions('audit', 'error') >= count(AUDIT_DEADLINE), 'audit failures include every deadline answer')
  // a request the audit downstream failed is counted by its result: met whenever the schedule's windows caught
  // one (a window may catch none: under a Redis outage or an auth fault, calls stop before the audit step).
  // A slow answer may still come within the deadline's grace and count ok, so only a hang must time out.
  const faultsOf = { timeout: ['hang'], http_status: ['status500'], connect_error: ['reset', 'close'], invalid_response: ['nonjson'] } as const
  let caught = 0
  for (const [result, kinds] of Object.entries(faultsOf)) {
    const met = sum('frp_gateway_forward_requests_total', { step: 'audit', result })
    const applied = kinds.reduce((n, kind) => n + audit.applied[kind], 0)
    if (applied > 0) caught++
    t.ok(applied === 0 || met > 0, `audit met ${result} (${met} counted, ${applied} requests failed that way by the downstream)`)
  }
  t.ok(caught >= 3, `the schedule's audit faults caught requests of at least 3 results of 4 (${caught})`)

  // and the gateway is healthy after
  t.equal(gw.child.exitCode, null, 'the gateway is still running')
  t.equal(await status('/readyz'), 200, '/readyz: ready again with Redis back')
  t.equal(await status('/healthz'), 200, '/healthz')
  await sleep(BREAKER_MS)
  for (const sample of ['Login', 'NewUserConn'].map(op => samples.find(s => s.body.op === op) as (typeof samples)[number])) {
    const res = await request(`${gw.url}/handler?${sample.query}`, { method: 'POST', dispatcher: agent, headers: { 'content-type': 'application/json' }, body: JSON.stringify(sample.body) })
    const op = sample.body.op as Op
    t.same(await res.body.json(), promised(op, sample.body.content, { redis: 'up', authFails: false, audit: 'ok' }).body, `a clean ${op} call is answered as normal`)
  }
})
