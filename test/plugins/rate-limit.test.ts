import t from 'tap'
import { startGateway } from '../helpers/gateway.js'
import { redisCli, startRedis } from '../helpers/redis.js'
import { ConfigError } from '../../src/errors.js'

const loginLimit = (options: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({
  ...extra,
  chain: [{ name: 'login-rate', plugin: 'rate-limit', ops: ['Login'], options: { key: '{{user}}', limit: 3, window: '1m', ...options } }]
})

const verdicts = (bodies: Array<{ reject: boolean }>) => bodies.map(b => b.reject ? 'reject' : 'allow')

t.test('memory store: limit, burst, retry_after in the reason, keys apart, metrics', async t => {
  const gw = await startGateway(t, loginLimit({ reason: 'slow down {{user}}: retry in {{retry_after}}s' }))
  const answers = []
  for (let i = 0; i < 4; i++) answers.push((await gw.call('Login', { user: 'alice' })).body)
  t.same(verdicts(answers), ['allow', 'allow', 'allow', 'reject'])
  // 3 per minute: one token every 20 s
  t.same(answers[3], { reject: true, reject_reason: 'slow down alice: retry in 20s', unchange: true })
  t.same((await gw.call('Login', { user: 'bob' })).body, { reject: false, unchange: true }, 'another key has its own bucket')
  t.equal(await gw.metric('frp_gateway_ratelimit_decisions_total', { step: 'login-rate', result: 'allowed' }), 4)
  t.equal(await gw.metric('frp_gateway_ratelimit_decisions_total', { step: 'login-rate', result: 'limited' }), 1)
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'Login', step: 'login-rate', decision: 'reject' }), 1)
})

t.test('burst above the limit, refill after the window passes', async t => {
  // one token a second: the calls of each burst have a whole second before the next token comes
  const gw = await startGateway(t, loginLimit({ limit: 2, window: 2000, burst: 4 }))
  const first = []
  for (let i = 0; i < 5; i++) first.push((await gw.call('Login', { user: 'u' })).body)
  t.same(verdicts(first), ['allow', 'allow', 'allow', 'allow', 'reject'])
  // after 2.1 s two tokens are back, not three
  await new Promise(resolve => setTimeout(resolve, 2100))
  const later = []
  for (let i = 0; i < 3; i++) later.push((await gw.call('Login', { user: 'u' })).body)
  t.same(verdicts(later), ['allow', 'allow', 'reject'])
})

t.test('two steps with the same key template keep separate buckets', async t => {
  const gw = await startGateway(t, {
    chain: [
      { name: 'a', plugin: 'rate-limit', ops: ['Login'], options: { key: '{{user}}', limit: 2, window: '1h' } },
      { name: 'b', plugin: 'rate-limit', ops: ['Login'], options: { key: '{{user}}', limit: 1, window: '1h' } }
    ]
  })
  const answers = []
  for (let i = 0; i < 2; i++) answers.push((await gw.call('Login', { user: 'x' })).body)
  t.same(answers.map(a => a.reject_reason ?? 'allow'), ['allow', 'rate limit exceeded by b: retry in 3600s'])
})

t.test('store "redis" without a redis block is a config error on its path', async t => {
  const err = await startGateway(t, loginLimit({ store: 'redis' })).then(() => null, (e: unknown) => e)
  t.ok(err instanceof ConfigError)
  t.same((err as ConfigError).issues.map(i => i.path), ['chain[0].options.store'])
  t.match((err as ConfigError).issues[0].message, /needs the top-level "redis" block/)
})

t.test('a key name empty on every op of the step is a config error: every call would share one bucket', async t => {
  const err = await startGateway(t, { chain: [
    { name: 'a', plugin: 'rate-limit', ops: ['NewProxy'], options: { key: '{{client_ip}}', limit: 1, window: '1m' } },
    { name: 'b', plugin: 'rate-limit', ops: ['Login', 'Ping'], options: { key: '{{user}}|{{content.remote_port}}', limit: 1, window: '1m' } },
    // each has a value on some op of its step: a call of the others renders it empty, as documented
    { name: 'c', plugin: 'rate-limit', ops: ['Login', 'NewProxy'], options: { key: '{{client_ip}}|{{proxy_name}}|{{content.x}}', limit: 1, window: '1m' } },
    { name: 'd', plugin: 'notify', ops: ['NewUserConn'], options: { sink: { file: { path: '/dev/null' } }, throttle: { limit: 1, window: '1m', key: '{{proxy_type}}{{client_ip}}' } } }
  ] }).then(() => null, (e: unknown) => e)
  t.ok(err instanceof ConfigError)
  t.same((err as ConfigError).issues, [
    { path: 'chain[0].options.key', message: '{{client_ip}} is empty on every op of the step (NewProxy): only Login carries it, so it tells no call apart' },
    { path: 'chain[1].options.key', message: '{{content.remote_port}} is empty on every op of the step (Login, Ping): only NewProxy carries it, so it tells no call apart' },
    { path: 'chain[3].options.throttle.key', message: '{{client_ip}} is empty on every op of the step (NewUserConn): only Login carries it, so it tells no call apart' }
  ])
})

t.test('redis store: the same limits, keys under the prefix with a hash tag and a TTL', async t => {
  const redis = await startRedis(t)
  const gw = await startGateway(t, loginLimit({}, { redis: { url: redis.url, keyPrefix: 'test:' } }))
  const answers = []
  const first = performance.now()
  for (let i = 0; i < 4; i++) answers.push((await gw.call('Login', { user: 'alice' })).body)
  t.same(verdicts(answers), ['allow', 'allow', 'allow', 'reject'])
  t.equal(answers[3].reject_reason, 'rate limit exceeded by login-rate: retry in 20s')
  t.same((await redisCli(redis.port, '--raw', 'KEYS', '*')).trim().split('\n'), ['test:rl:{login-rate:alice}'])
  const ttl = Number(await redisCli(redis.port, 'PTTL', 'test:rl:{login-rate:alice}'))
  // the bucket is full again a window after the first call took its token: what passed since then is off the TTL
  const since = Math.ceil(performance.now() - first)
  t.ok(ttl >= 60_000 - since - 2 && ttl <= 60_000, `idle bucket expires after the window (${ttl} ms, ${since} ms after the first call)`)
  t.equal(await gw.metric('frp_gateway_redis_up'), 1)
  t.equal((await gw.app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200)
})

t.test('frp_gateway_redis_up is 0 while Redis holds its connections and answers nothing, 1 when it answers again', async t => {
  const redis = await startRedis(t)
  const gw = await startGateway(t, loginLimit({}, { redis: { url: redis.url } }))
  t.same((await gw.call('Login', { user: 'alice' })).body, { reject: false, unchange: true })
  t.equal(await gw.metric('frp_gateway_redis_up'), 1)
  redis.pause(true)
  t.teardown(() => { redis.pause(false) })
  t.equal(await gw.metric('frp_gateway_redis_up'), 0, 'the connection is still open: only a PING at scrape time sees it')
  redis.pause(false)
  t.equal(await gw.metric('frp_gateway_redis_up'), 1)
})

t.test('a Redis that hangs: /readyz and the log say which one and that it did not answer in time', async t => {
  const redis = await startRedis(t)
  const gw = await startGateway(t, loginLimit({}, { redis: { url: redis.url } }))
  t.same((await gw.call('Login', { user: 'alice' })).body, { reject: false, unchange: true })
  redis.pause(true)
  t.teardown(() => { redis.pause(false) })
  const late = `redis ${redis.url} did not answer within 300 ms`
  t.same((await gw.app.inject({ method: 'GET', url: '/readyz' })).json(), { status: 'not ready', reason: late })
  t.same((await gw.call('Login', { user: 'alice' })).body, { reject: false, unchange: true }, 'fail open')
  const logged = gw.logs.find(l => l.msg === 'step failed')
  t.same([logged?.step, logged?.err.message, logged?.err.code], ['login-rate', late, 'ETIMEDOUT'])
})

t.test('at the bounds of limit, window and burst both stores decide exactly, and Redis never fails', async t => {
  const redis = await startRedis(t)
  for (const store of ['memory', 'redis']) {
    // the fastest refill allowed: one token per 0.1 ms
    const fast = await startGateway(t, loginLimit({ store, limit: 10_000, window: '1s', burst: 100 }, { redis: { url: redis.url } }))
    const answers = []
    for (let i = 0; i < 20; i++) answers.push((await fast.call('Login', { user: 'u' })).body)
    t.same(verdicts(answers), Array(20).fill('allow'), `${store}: a token every 0.1 ms`)
    t.equal(await fast.metric('frp_gateway_ratelimit_decisions_total', { step: 'login-rate', result: 'store_error' }), undefined, `${store}: no store error`)
    // the slowest: a bucket of 3 refilled in 365 days
    const slow = await startGateway(t, loginLimit({ store, key: store, limit: 3, window: '8760h', burst: 3 }, { redis: { url: redis.url } }))
    const slowAnswers = []
    for (let i = 0; i < 4; i++) slowAnswers.push((await slow.call('Login', { user: 'u' })).body)
    t.same(verdicts(slowAnswers), ['allow', 'allow', 'allow', 'reject'], `${store}: exactly the burst`)
    t.equal(slowAnswers[3].reject_reason, 'rate limit exceeded by login-rate: retry in 10512000s', `${store}: a third of 365 days`)
    t.equal(await slow.metric('frp_gateway_ratelimit_decisions_total', { step: 'login-rate', result: 'store_error' }), undefined, `${store}: no store error`)
  }
  const ttl = Number(await redisCli(redis.port, 'PTTL', 'frpgw:rl:{login-rate:redis}'))
  t.ok(ttl > 365 * 86_400_000 - 60_000 && ttl <= 365 * 86_400_000, `a full bucket's key lives 365 days (${ttl} ms)`)
})

t.test('two gateways on one Redis, hammered together, allow exactly the limit', async t => {
  const redis = await startRedis(t)
  const config = loginLimit({ key: 'everyone', limit: 25, window: '1h' }, { redis: { url: redis.url } })
  const [a, b] = await Promise.all([startGateway(t, config), startGateway(t, config)])
  const bodies = []
  // rounds of concurrent calls from both, so both take part before the bucket runs dry
  for (let round = 0; round < 10; round++) {
    const calls = []
    for (let i = 0; i < 10; i++) calls.push((i % 2 === 0 ? a : b).call('Login', { user: `u${round}-${i}` }))
    bodies.push(...(await Promise.all(calls)).map(r => r.body))
  }
  const allowedA = await a.metric('frp_gateway_ratelimit_decisions_total', { step: 'login-rate', result: 'allowed' }) ?? 0
  const allowedB = await b.metric('frp_gateway_ratelimit_decisions_total', { step: 'login-rate', result: 'allowed' }) ?? 0
  t.equal(allowedA + allowedB, 25)
  // a machine loaded past Redis's 300 ms command timeout lets a call through by onStoreError allow, counted as such
  const storeErrors = (await a.metric('frp_gateway_ratelimit_decisions_total', { step: 'login-rate', result: 'store_error' }) ?? 0) +
    (await b.metric('frp_gateway_ratelimit_decisions_total', { step: 'login-rate', result: 'store_error' }) ?? 0)
  t.equal(bodies.filter(body => !body.reject).length, 25 + storeErrors, `the limit, and ${storeErrors} calls Redis did not answer in time`)
  t.ok(allowedA > 0 && allowedB > 0, `both gateways allowed some (${allowedA} + ${allowedB})`)
})

for (const onStoreError of ['allow', 'reject'] as const) {
  t.test(`Redis stopped mid-run with onStoreError ${onStoreError}: answered within deadlineMs; restarted: limits apply again`, async t => {
    const redis = await startRedis(t)
    const deadlineMs = 1000
    const gw = await startGateway(t, loginLimit({ onStoreError, limit: 2, window: '1h' }, { redis: { url: redis.url }, deadlineMs }))
    t.same(verdicts([(await gw.call('Login', { user: 'a' })).body]), ['allow'])
    await redis.stop()
    const during = []
    for (let i = 0; i < 5; i++) {
      const started = performance.now()
      const { body } = await gw.call('Login', { user: 'a' })
      during.push(body)
      t.ok(performance.now() - started < deadlineMs, 'answered within deadlineMs')
    }
    if (onStoreError === 'allow') {
      t.same(during, Array(5).fill({ reject: false, unchange: true }))
    } else {
      t.same(during, Array(5).fill({ reject: true, reject_reason: 'frp-plugin-gateway: step login-rate failed: rate-limit store unavailable', unchange: true }))
    }
    t.equal(await gw.metric('frp_gateway_ratelimit_decisions_total', { step: 'login-rate', result: 'store_error' }), 5)
    t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'Login', step: 'login-rate', decision: 'error' }), 5)
    t.equal(await gw.metric('frp_gateway_redis_up'), 0)
    // which Redis and why, as the first failed reconnection said it
    const refused = `redis ${redis.url} is not reachable: connect ECONNREFUSED 127.0.0.1:${redis.port}`
    const reason = async (): Promise<string> => (await gw.app.inject({ method: 'GET', url: '/readyz' })).json().reason
    for (let i = 0; i < 100 && await reason() !== refused; i++) await new Promise(resolve => setTimeout(resolve, 50))
    const notReady = await gw.app.inject({ method: 'GET', url: '/readyz' })
    t.equal(notReady.statusCode, 503)
    t.same(notReady.json(), { status: 'not ready', reason: refused })
    t.match((await gw.call('Login', { user: 'a' })).body.reject, onStoreError === 'reject')
    const logged = gw.logs.filter(l => l.msg === 'step failed').at(-1)
    t.same([logged?.step, logged?.err.message, logged?.err.code], ['login-rate', refused, 'ECONNREFUSED'], 'the log says it too, under its code')

    await redis.start()
    // the client reconnects by itself; wait (bounded) until it is ready again
    for (let i = 0; i < 100 && await gw.metric('frp_gateway_redis_up') !== 1; i++) await new Promise(resolve => setTimeout(resolve, 50))
    t.equal(await gw.metric('frp_gateway_redis_up'), 1)
    t.equal((await gw.app.inject({ method: 'GET', url: '/readyz' })).statusCode, 200)
    // a fresh Redis kept nothing: two allowed, the third limited
    const after = []
    for (let i = 0; i < 3; i++) after.push((await gw.call('Login', { user: 'a' })).body)
    t.same(verdicts(after), ['allow', 'allow', 'reject'])
  })
}

t.test('a reload keeps memory buckets when the runtime shares the process memory store', async t => {
  const { MemoryStore } = await import('../../src/stores/memory-store.js')
  const { createRuntime } = await import('../../src/runtime.js')
  const { parseConfig } = await import('../../src/config.js')
  const { createMetrics } = await import('../../src/metrics.js')
  const { createLogger } = await import('../../src/log.js')
  const memoryStore = new MemoryStore()
  const deps = { metrics: createMetrics(), log: createLogger({ level: 'silent', redact: [] }), memoryStore }
  const config = parseConfig(loginLimit({ limit: 1, window: '1h' }))
  const one = await createRuntime(config, deps)
  const two = await createRuntime(config, deps)
  const run = async (rt: typeof one) => await rt.chains.Login[0].run({ user: 'k' }, { op: 'Login', wireOp: 'Login', reqid: 'r', deadline: Infinity, log: deps.log })
  t.equal(await run(one), undefined)
  t.match(await run(two), { reject: /rate limit exceeded/ })
  await one.close()
  await two.close()
  t.equal(memoryStore.size, 1, 'closing a runtime leaves the shared store alone')
})

t.test('keys rendered from caller content are bounded: a long one is kept as its hash, so memory stays bounded', async t => {
  const { setFlagsFromString } = await import('node:v8')
  const { runInNewContext } = await import('node:vm')
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const gw = await startGateway(t, { chain: [{ name: 'rl', plugin: 'rate-limit', ops: ['Login'], options: { key: '{{user}}', limit: 1, window: '1h' } }] }, { level: 'silent' })
  gc()
  const before = process.memoryUsage().heapUsed
  for (let i = 0; i < 200; i++) {
    const user = `${i}`.padEnd(200_000, 'x')
    t.equal((await gw.call('Login', { user })).body.reject, false, 'each user has a bucket of its own')
    if (i === 0) t.equal((await gw.call('Login', { user })).body.reject, true, 'and the same user hits it')
  }
  gc()
  const grown = process.memoryUsage().heapUsed - before
  t.ok(grown < 10_000_000, `the heap grew by ${grown} bytes for 200 keys of 200,000 characters`)
})

t.test('Redis: names that differ only in a lone surrogate (a caller\'s) are one user, as frps reads them (U+FFFD): one bucket', async t => {
  const redis = await startRedis(t)
  const gw = await startGateway(t, { redis: { url: redis.url }, chain: [{ name: 'rl', plugin: 'rate-limit', ops: ['Login'], options: { key: '{{user}}', limit: 1, window: '1h' } }] }, { level: 'silent' })
  const rejected: boolean[] = []
  for (const user of ['bob\ud800', 'bob\udfff', 'bob\ufffd', 'bob']) rejected.push((await gw.call('Login', { user })).body.reject)
  t.same(rejected, [false, true, true, false], 'the first of the three takes the bucket, the other two are limited; bob has his own')
})
