import fc from 'fast-check'
import t from 'tap'
import { describeJsonError, findJsonError } from '../src/json-error.js'
import { createLogger, escapeUnsafe, isSecretName, quote, redactContent, reqidOf } from '../src/log.js'
import { startDownstream, until } from './helpers/downstream.js'
import { startGateway } from './helpers/gateway.js'
import { freePort, startRedis } from './helpers/redis.js'

const post = (payload: string, headers: Record<string, string> = {}, url = '/handler?version=0.1.0&op=Login') =>
  ({ method: 'POST' as const, url, headers: { 'content-type': 'application/json', ...headers }, payload })

t.test('secret names: credentials in any spelling, not ordinary words', async t => {
  const secret = ['token', 'meta_token', 'api_key', 'apikey', 'apiKey', 'API_KEY', 'X-Api-Key', 'auth', 'Authorization',
    'Proxy-Authorization', 'x-auth-user', 'oauth', 'credential', 'credentials', 'Cookie', 'Set-Cookie', 'session', 'sessionId',
    'private_key', 'privateKey', 'ssh-key', 'access_key', 'signature', 'sig', 'password', 'passwd', 'db_pass', 'pwd',
    'secret', 'client_secret', 'passphrase', 'bearer', 'jwt', 'privilege_key', 'http_pwd', 'sk', 'group_key', 'csrf',
    // an acronym before the word
    'SSHKey', 'userSSHKey', 'AWSKey', 'RSAKeys', 'PGPPass', 'XAuthUser', 'KEYS']
  const plain = ['region', 'team', 'monkey', 'keyboard', 'hotkey', 'author', 'authority', 'user', 'proxy_name', 'proxy_type',
    'remote_port', 'use_encryption', 'custom_domains', 'subdomain', 'http_user', 'host_header_rewrite', 'run_id', 'client_id',
    'Host', 'X-Forwarded-For', 'Content-Type', 'bypass', 'compass', 'passenger', 'skip', 'desk', 'signal', 'design', 'locations',
    'Monkey', 'XMLHttp', 'HTTPAuthority', 'APIVersion', 'DNSKeyboard']
  t.same(secret.filter(n => !isSecretName(n)), [], 'every secret name is one')
  t.same(plain.filter(isSecretName), [], 'no ordinary name is one')
})

t.test('every string map of the content is masked by name at debug: metas, user.metas, annotations, headers', async t => {
  const gw = await startGateway(t, { chain: [] })
  await gw.call('Login', {
    user: 'alice', privilege_key: 'S-pk', client_spec: { type: 'ssh', always_auth_pass: true },
    metas: { api_key: 'S-login-apikey', auth: 'S-login-auth', credential: 'S-login-cred', session: 'S-login-session', region: 'eu', monkey: 'george' }
  })
  await gw.call('NewProxy', {
    user: { user: 'alice', metas: { private_key: 'S-user-pk', cookie: 'S-user-cookie', team: 'blue' } },
    proxy_name: 'web', proxy_type: 'http',
    metas: { signature: 'S-proxy-sig', credentials: 'S-proxy-creds' },
    annotations: { 'example.com/apikey': 'S-annotation', owner: 'ops' },
    headers: { Authorization: 'Basic S-header-authz', 'Proxy-Authorization': 'S-header-proxy', Cookie: 'S-header-cookie', 'X-Api-Key': 'S-header-xapikey', 'X-Env': 'prod' },
    response_headers: { 'Set-Cookie': 'S-response-cookie', 'X-Frame-Options': 'DENY' }
  })
  const text = gw.lines.join('\n')
  t.same(text.match(/S-[a-z-]+/g), null, 'no secret value reaches a log line')
  const [login, proxy] = gw.logs.filter(l => l.msg === 'call').map(l => l.content)
  t.same(login.metas, { api_key: '[redacted]', auth: '[redacted]', credential: '[redacted]', session: '[redacted]', region: 'eu', monkey: 'george' })
  t.same(login.client_spec, { type: 'ssh', always_auth_pass: true }, 'a boolean holds no secret')
  t.same(proxy.user.metas, { private_key: '[redacted]', cookie: '[redacted]', team: 'blue' })
  t.same(proxy.annotations, { 'example.com/apikey': '[redacted]', owner: 'ops' })
  t.same(proxy.headers['X-Env'], 'prod')
  t.same(proxy.response_headers, { 'Set-Cookie': '[redacted]', 'X-Frame-Options': 'DENY' })
})

t.test('content nested past any depth frp uses is cut in a log line, never overflows the stack', async t => {
  let deep: unknown = { token: 'S-deep' }
  for (let i = 0; i < 100_000; i++) deep = { x: deep }
  let logged = redactContent({ user: 'alice', extra: deep }) as Record<string, any>
  let depth = 0
  for (logged = logged.extra; typeof logged === 'object'; logged = logged.x) depth++
  t.equal(logged, '[too deep]')
  t.equal(depth, 31)
})

t.test('a JSON syntax error answers and logs what and where, never bytes of the body', async t => {
  const gw = await startGateway(t, { chain: [] })
  const bodies = [
    '{"op":"Login","content":{"privilege_key":"Sxyz-secret" oops}}',
    '{"op":"Login","content":{"metas":{"token":"Sxyz-secret\u0001"}}}',
    '{"op":"Login","content":{"metas":{"token":"Sxyz-secret',
    "{'op':'Login','Sxyz-secret':1}",
    '{"op":"Login","content":{}} Sxyz-secret'
  ]
  const messages = []
  for (const body of bodies) {
    const res = await gw.app.inject(post(body))
    t.equal(res.statusCode, 400)
    t.equal(res.json().error.code, 'FRPGW_ERR_INVALID_JSON')
    messages.push(res.json().error.message)
  }
  t.same(messages, [
    `expected "," or "}" at position ${bodies[0].indexOf('oops')}`,
    `control character in string at position ${bodies[1].indexOf('\u0001')}`,
    `unterminated string at position ${bodies[2].length}`,
    'expected a property name in double quotes at position 1',
    `unexpected data after the JSON value at position ${bodies[4].indexOf('S')}`
  ].map(m => `body is not valid JSON: ${m}`))
  t.notOk(gw.lines.join('\n').includes('Sxyz'), 'nothing of the body is logged')
  t.equal(gw.logs.filter(l => l.msg === 'bad request' && l.code === 'FRPGW_ERR_INVALID_JSON').length, bodies.length)
})

t.test('findJsonError agrees with JSON.parse on any text and gives a position inside it', async t => {
  const jsonish = fc.oneof(fc.json(), fc.string(), fc.json().map(j => j.slice(0, -1)), fc.tuple(fc.json(), fc.string({ maxLength: 3 }), fc.nat())
    .map(([j, s, at]) => j.slice(0, at % (j.length + 1)) + s + j.slice(at % (j.length + 1))))
  fc.assert(fc.property(jsonish, text => {
    let valid = true
    try { JSON.parse(text) } catch { valid = false }
    const found = findJsonError(text)
    if (valid) return found === null
    return found !== null && found.at >= 0 && found.at <= text.length
  }), { numRuns: 3000 })
  t.equal(describeJsonError('['.repeat(100_000)), 'unexpected end of input at position 100000', 'any depth, no recursion')
  t.equal(describeJsonError('{"a":1,}'), 'expected a property name in double quotes at position 7')
  t.equal(describeJsonError('[1,2'), 'unexpected end of input at position 4')
  t.equal(describeJsonError('-x'), 'invalid number at position 0')
  t.equal(describeJsonError('"\\x"'), 'bad escape in string at position 2')
  t.equal(describeJsonError('"\\u12"'), 'bad unicode escape in string at position 2')
  t.equal(describeJsonError('nul'), 'unexpected character at position 0')
})

t.test('a reason rendered from a secret is masked in the log, frpc still gets it', async t => {
  const gw = await startGateway(t, {
    chain: [
      { name: 'bad-token', plugin: 'reject', ops: ['Login'], when: { users: ['eve'] }, options: { reason: 'bad token {{metas.token}} for {{user}}' } },
      { name: 'dump', plugin: 'reject', ops: ['NewProxy'], when: { users: ['eve'] }, options: { reason: 'metas {{content.user.metas}} key {{proxy_metas.api_key}}' } },
      { name: 'plain', plugin: 'reject', ops: ['Login'], when: { users: ['mallory'] }, options: { reason: 'no {{user}} from {{metas.region}}' } },
      { name: 'limit', plugin: 'rate-limit', ops: ['NewProxy'], options: { key: 'all', limit: 1, window: '1h', reason: 'slow down {{content.user.metas.session}}' } }
    ]
  })
  const login = await gw.call('Login', { user: 'eve', metas: { token: 'Stok-1' } })
  t.equal(login.body.reject_reason, 'bad token Stok-1 for eve', 'frpc sees the reason it caused')
  const proxy = await gw.call('NewProxy', { user: { user: 'eve', metas: { token: 'Stok-2', team: 'red' } }, proxy_name: 'p', metas: { api_key: 'Stok-3' } })
  t.equal(proxy.body.reject_reason, 'metas {"token":"Stok-2","team":"red"} key Stok-3')
  await gw.call('Login', { user: 'mallory', metas: { region: 'eu' } })
  await gw.call('NewProxy', { user: { user: 'bob', metas: { session: 'Stok-4' } }, proxy_name: 'a' })
  const limited = await gw.call('NewProxy', { user: { user: 'bob', metas: { session: 'Stok-5' } }, proxy_name: 'b' })
  t.equal(limited.body.reject_reason, 'slow down Stok-5')
  t.same(gw.logs.filter(l => l.msg === 'call' && l.level === 30).map(l => l.reason), [
    'bad token [redacted] for eve',
    'metas {"token":"[redacted]","team":"red"} key [redacted]',
    'no mallory from eu',
    'slow down [redacted]'
  ])
  t.notOk(gw.lines.join('\n').includes('Stok'), 'no secret in any line')
})

t.test('a reason rendered from caller content: frpc gets its first 1,000 characters, the log line its first 512', async t => {
  const gw = await startGateway(t, { chain: [{ name: 'no', plugin: 'reject', ops: ['Login'], options: { reason: 'no {{user}}' } }] })
  const user = 'u'.repeat(100_000)
  t.ok((await gw.call('Login', { user })).body.reject_reason === `no ${'u'.repeat(997)}...`, 'cut at 1,000 for frpc')
  t.same(gw.logs.filter(l => l.msg === 'call').map(l => l.reason), [`no ${'u'.repeat(509)}...`])
})

t.test('the reqid: frps\'s as sent, anything else bounded and made safe, downstream included', async t => {
  t.equal(reqidOf('0123456789abcdef'), '0123456789abcdef')
  t.equal(reqidOf('a'.repeat(64)), 'a'.repeat(64))
  t.equal(reqidOf('a'.repeat(10240)), `${'a'.repeat(48)}...+10192`)
  t.equal(reqidOf('ab"c\u2028\n{}'), 'ab_c____')
  t.match(reqidOf(undefined), /^req-[0-9a-z]+$/)
  t.not(reqidOf(''), reqidOf(''), 'a missing reqid is generated, one per call')

  const downstream = await startDownstream(t, () => ({ reject: true, reject_reason: 'no' }))
  const gw = await startGateway(t, { chain: [{ name: 'down', plugin: 'forward', ops: ['Login'], options: { url: downstream.url } }] })
  const hostile = `${'x'.repeat(10240)}"\u2028`
  await gw.call('Login', { user: 'alice' }, { reqid: hostile })
  const sent = downstream.requests[0].headers['x-frp-reqid']
  t.equal(sent, `${'x'.repeat(48)}...+${hostile.length - 48}`, 'downstream gets the bounded reqid')
  t.same(gw.logs.map(l => l.reqid), [sent], 'so does the log line')
})

t.test('caller strings in error messages are bounded and escaped', async t => {
  const gw = await startGateway(t, { chain: [] })
  const long = `${'L'.repeat(10240)}`
  const cases = [
    post(JSON.stringify({ op: long, content: {} }), {}, '/handler?op=Login'),
    post(JSON.stringify({ op: 'Login', content: {} }), {}, `/handler?op=${long}`),
    post(JSON.stringify({ op: 'Login', content: {} }), { 'content-type': `text/${long}` }),
    { method: 'GET' as const, url: `/${long}`, headers: {} },
    { method: 'POST' as const, url: '/handler', headers: { 'content-type': `text/x\u0085y` }, payload: '{}' }
  ]
  const messages = []
  for (const req of cases) {
    const res = await gw.app.inject({ ...req, headers: { ...req.headers, 'x-frp-reqid': long } })
    t.ok(res.statusCode >= 400 && res.statusCode < 500)
    t.ok(res.body.length < 400, `answer is bounded (${res.body.length} bytes)`)
    messages.push(res.json().error.message)
  }
  t.same(messages, [
    `unknown op "${'L'.repeat(64)}"... (10240 characters): expected one of Login, NewProxy, CloseProxy, Ping, NewWorkConn, NewUserConn`,
    `op in the query ("${'L'.repeat(64)}"... (10240 characters)) differs from op in the body ("Login")`,
    `content-type must be application/json, got "text/${'L'.repeat(59)}"... (10245 characters)`,
    `no route GET "/${'L'.repeat(63)}"... (10241 characters)`,
    'content-type must be application/json, got "text/x\\u0085y"'
  ])
  t.ok(gw.lines.every(line => line.length < 800), 'log lines are bounded')
  t.equal(quote(['a', 'b']), '["a","b"]', 'a value that is not a string is shown as JSON')
})

t.test('U+2028, U+2029, U+0085 and other line breakers never reach a log line raw', async t => {
  const breakers = '\u2028\u2029\u0085\u007f\u009b\u202e\u2066\ufeff\ud800'
  const raw = /[\u2028\u2029\u0085\u007f-\u009f\u202e\u2066\ufeff]|[\ud800-\udfff]/
  // a call's lone surrogate is read as U+FFFD, as frps reads it (protocol.ts parseCall)
  const read = breakers.replace('\ud800', '\ufffd')
  const gw = await startGateway(t, {
    chain: [{ name: 'no-eve', plugin: 'reject', ops: ['Login'], when: { users: [`eve${read}`] }, options: { reason: 'no {{user}}' } }]
  })
  await gw.call('Login', { user: `alice${breakers}`, metas: { note: `n${breakers}` } })
  await gw.call('Login', { user: `eve${breakers}` })
  await gw.app.inject(post(JSON.stringify({ op: `Log${breakers}`, content: {} }), {}, '/handler'))
  const calls = gw.logs.filter(l => l.msg === 'call')
  t.equal(calls[0].content.user, `alice${read}`, 'the content reads back the same')
  t.equal(calls[0].content.metas.note, `n${read}`)
  t.equal(calls[1].reason, `no eve${read}`, 'so does the reason')
  t.match(gw.logs.find(l => l.msg === 'bad request')?.message, /Log\\u2028\\u2029\\u0085/, 'the message says which op it got, escaped')
  t.same(gw.lines.filter(line => raw.test(line)), [], 'no line holds one raw')
  t.equal(escapeUnsafe('"a\u2028b"'), '"a\\u2028b"')
  t.equal(escapeUnsafe('"\ud83d\ude00"'), '"\ud83d\ude00"', 'a surrogate pair is a character, kept')
  t.equal(escapeUnsafe('"a\ud800"'), '"a\\ud800"', 'a lone surrogate (from a step, a downstream) is escaped')
})

/** The `step failed` lines: one in full, then per interval one that counts the rest. */
function failureLines (gw: { logs: Array<Record<string, any>> }, msg = 'step failed'): { full: number, suppressed: number, summaries: number } {
  const lines = gw.logs.filter(l => l.msg === msg || l.msg === `${msg} (repeats)`)
  return {
    full: lines.filter(l => l.msg === msg).length,
    suppressed: lines.reduce((n, l) => n + (l.suppressed ?? 0), 0),
    summaries: lines.filter(l => l.suppressed !== undefined).length
  }
}

t.test('a Redis outage logs one stack, then one line per interval counting the rest; metrics stay exact', async t => {
  const redis = await startRedis(t)
  const gw = await startGateway(t, {
    redis: { url: redis.url },
    chain: [{ name: 'rl', plugin: 'rate-limit', ops: ['Login'], options: { store: 'redis', key: '{{user}}', limit: 1000, window: '1s' } }]
  }, { level: 'info', repeatIntervalMs: 400 })
  for (let i = 0; i < 5; i++) t.equal((await gw.call('Login', { user: 'alice' })).body.unchange, true)
  await redis.stop()
  const started = Date.now()
  let calls = 0
  while (Date.now() - started < 1500) {
    const batch = await Promise.all(Array.from({ length: 20 }, async () => await gw.call('Login', { user: 'alice' })))
    t.ok(batch.every(r => r.body.unchange === true), 'onStoreError allow')
    calls += batch.length
  }
  const seconds = (Date.now() - started) / 1000
  // the last interval's summary line comes when its timer fires
  await until(() => failureLines(gw).full + failureLines(gw).suppressed >= calls, 30_000)
  const errors = await gw.metric('frp_gateway_ratelimit_decisions_total', { step: 'rl', result: 'store_error' })
  t.equal(errors, calls, 'every failed call counted')
  const { full, suppressed, summaries } = failureLines(gw)
  t.ok(full >= 1 && full <= 3, `a stack per kind of error, not per call (${full} for ${calls} calls)`)
  t.equal(full + suppressed, calls, 'the lines account for every failure')
  t.ok(summaries <= full * (Math.ceil(seconds / 0.4) + 2), `at most one summary per interval (${summaries} in ${seconds} s)`)
  t.ok(gw.logs.filter(l => l.msg === 'step failed').every(l => typeof l.err?.stack === 'string'), 'the first line holds the stack')
})

t.test('a dead downstream: one stack for the first failure, the repeats counted', async t => {
  const port = await freePort()
  const gw = await startGateway(t, {
    chain: [{ name: 'down', plugin: 'forward', ops: ['Login'], options: { url: `http://127.0.0.1:${port}/handler`, onError: 'allow' } }]
  }, { level: 'info', repeatIntervalMs: 300 })
  const started = performance.now()
  for (let i = 0; i < 5; i++) await Promise.all(Array.from({ length: 40 }, async () => await gw.call('Login', { user: 'alice' })))
  const elapsed = performance.now() - started
  // the last interval's summary line comes when its timer fires
  await until(() => failureLines(gw).full + failureLines(gw).suppressed >= 200, 30_000)
  t.equal(await gw.metric('frp_gateway_forward_requests_total', { step: 'down', result: 'connect_error' }), 200)
  const lines = failureLines(gw)
  t.same([lines.full, lines.full + lines.suppressed], [1, 200], 'one stack, every failure counted')
  // an interval's timer starts at the first failure: the failures span at most elapsed ms (on a loaded machine, more than 1.2 s)
  const intervals = Math.floor(elapsed / 300) + 1
  t.ok(lines.summaries >= 1 && lines.summaries <= intervals, `one summary per interval with repeats (${lines.summaries} in ${Math.round(elapsed)} ms)`)
  const summary = gw.logs.find(l => l.msg === 'step failed (repeats)')
  t.same([summary?.step, summary?.code, summary?.intervalMs], ['down', 'ECONNREFUSED', 300])
  // a quiet interval ends the run: the next failure is logged in full again. The timer of the interval after the last
  // summary was set as that line was logged; this one, longer and set later, fires after it
  await new Promise(resolve => setTimeout(resolve, 400))
  await gw.call('Login', { user: 'alice' })
  t.same(failureLines(gw), { ...lines, full: 2 })
})

t.test('a downstream past the deadline: one line, then the repeats counted', async t => {
  const down = await startDownstream(t, () => undefined)
  const gw = await startGateway(t, {
    deadlineMs: 300,
    chain: [{ name: 'slow', plugin: 'forward', ops: ['Login'], options: { url: down.url, timeoutMs: 5000 } }]
  }, { level: 'info', repeatIntervalMs: 300 })
  const answers = await Promise.all(Array.from({ length: 30 }, async () => await gw.call('Login', { user: 'alice' })))
  // the last interval's summary lines come when their timers fire
  const counted = (): number => [failureLines(gw, 'deadline exceeded'), failureLines(gw)].reduce((n, l) => n + l.full + l.suppressed, 0)
  await until(() => counted() >= 30, 30_000)
  const deadline = failureLines(gw, 'deadline exceeded')
  const reasons = answers.map(a => a.body.reject_reason)
  t.equal(deadline.full, 1, 'one line in full')
  t.equal(deadline.full + deadline.suppressed, reasons.filter(r => r === 'frp-plugin-gateway: deadline exceeded in step slow').length, 'every one counted')
  // a call that starts late on a loaded machine has almost no budget left: its request times out first
  const timedOut = failureLines(gw)
  t.ok(timedOut.full <= 1, 'those are a second kind, logged once')
  t.equal(deadline.full + deadline.suppressed + timedOut.full + timedOut.suppressed, 30)
})

t.test('an error is logged with each cause it does not already quote, once: no "X: X: X"', async t => {
  const lines: Array<Record<string, any>> = []
  const log = createLogger({ level: 'info', redact: [] }, { write (line: string) { lines.push(JSON.parse(line)) } })
  const root = Object.assign(new Error('Command timed out'), { code: 'ETIMEDOUT' })
  const quoting = new Error(`users in Redis: reading frpgw:user:{a} failed: ${root.message}`, { cause: root })
  log.warn({ err: new Error(quoting.message, { cause: quoting }) }, 'step failed')
  log.warn({ err: new Error('registry read failed', { cause: new Error('socket closed', { cause: root }) }) }, 'step failed')
  t.same(lines.map(l => l.err.message), ['users in Redis: reading frpgw:user:{a} failed: Command timed out', 'registry read failed: socket closed: Command timed out'])
  t.match(lines[0].err.stack, /caused by: .*caused by: Error: Command timed out/s, 'the stacks keep every cause')
})
