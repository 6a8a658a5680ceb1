import { readFileSync } from 'node:fs'
import t from 'tap'
import { configJsonSchema, loadConfig, parseConfig } from '../src/config.js'
import { ConfigError } from '../src/errors.js'
import { createLogger } from '../src/log.js'
import { createMetrics } from '../src/metrics.js'
import { createRuntime } from '../src/runtime.js'
import { configFile, ROOT } from './helpers/cli.js'
import { issuesOf, issuesOfAsync } from './helpers/issues.js'

t.test('config/gateway.schema.json is the schema the code generates (regenerate with `frp-plugin-gateway schema`)', async t => {
  const committed = JSON.parse(readFileSync(`${ROOT}config/gateway.schema.json`, 'utf8'))
  t.same(committed, configJsonSchema())
})

t.test('the example config is valid and needs neither Redis nor a downstream', async t => {
  const config = await loadConfig(`${ROOT}config/gateway.example.json`)
  t.equal(config.redis, undefined)
  t.notOk(config.chain.some(s => s.plugin === 'forward' || (s.plugin === 'rate-limit' && (s.options as { store?: string }).store === 'redis')))
  t.ok(config.chain.length >= 3)
})

t.test('defaults live in one place and apply', async t => {
  const config = parseConfig({ chain: [{ name: 'a', plugin: 'reject' }] })
  t.same(config.listen, { host: '127.0.0.1', port: 9000, path: '/handler', bodyLimitBytes: 1048576 })
  t.equal(config.deadlineMs, 3000)
  t.same(config.log, { level: 'info', redact: [] })
  t.same(config.chain[0], { name: 'a', plugin: 'reject', mode: 'enforce', enabled: true, options: { reason: 'rejected by {{step}}' } })
})

t.test('every error is reported with its JSON path', async t => {
  const issues = issuesOf(() => parseConfig({
    listen: { port: 'x' },
    redis: { url: 'http://x' },
    deadlineMs: -1,
    surprise: true,
    chain: [
      { name: 'a', plugin: 'nope', extra: 1, ops: ['Login'], options: {} },
      { name: 'a', plugin: 'reject', options: { reason: 1 } },
      { name: 'Bad Name', plugin: 'metas', ops: ['Logout'], options: { x: 1 }, when: { users: [], not: { clientCidrs: [3] } } }
    ]
  }))
  t.same(issues.map(i => i.path).sort(), [
    '(top level)',
    'chain[0].extra',
    'chain[0].plugin',
    'chain[1].name',
    'chain[1].options.reason',
    'chain[2].name',
    'chain[2].ops[0]',
    'chain[2].options.x',
    'chain[2].when.not.clientCidrs[0]',
    'chain[2].when.users',
    'deadlineMs',
    'listen.port',
    'redis.url',
    'surprise'
  ].filter(p => p !== '(top level)').sort())
  const byPath = Object.fromEntries(issues.map(i => [i.path, i.message]))
  t.match(byPath['chain[0].plugin'], /unknown plugin: expected one of .*reject.*metas.*rewrite/)
  t.equal(byPath['chain[1].name'], 'duplicate step name "a"')
  t.equal(byPath.surprise, 'unknown key')
  t.equal(byPath['chain[0].extra'], 'unknown key', 'a step of an unknown plugin has its keys checked too')
  t.equal(byPath['chain[2].options.x'], 'unknown key')
})

t.test('a key left out is said to be missing, with what it takes', async t => {
  const problems = issuesOf(() => parseConfig({ chain: [{ plugin: 'reject' }, { name: 'x' }, { name: 'f', plugin: 'forward' }] })).map(i => [i.path, i.message])
  t.same(problems, [
    ['chain[0].name', 'missing: expected string'],
    ['chain[1].plugin', 'missing: expected one of reject, metas, rewrite, rate-limit, forward, users, ports, quota, notify'],
    ['chain[2].options.url', 'missing: expected string']
  ])
})

t.test('the Sentinel form of redis takes credentials and tls for each side; a wrong value names its path, never the password', async t => {
  const sentinels = [{ host: '127.0.0.1', port: 26379 }]
  const full = { sentinels, name: 'gw', username: 'app', password: 'pw1', sentinelUsername: 'watch', sentinelPassword: 'pw2', tls: true }
  t.same(parseConfig({ redis: full }).redis, { ...full, keyPrefix: 'frpgw:' })
  t.same(parseConfig({ redis: { sentinels, name: 'gw' } }).redis, { sentinels, name: 'gw', keyPrefix: 'frpgw:' }, 'all optional')
  const problems = (redis: object): Array<[string, string]> => issuesOf(() => parseConfig({ redis: { sentinels, name: 'gw', ...redis } })).map(i => [i.path, i.message])
  t.same(problems({ password: 1234, tls: 'yes', sentinelUsername: 7, sentinelPassword: 'pw2' }), [
    ['redis.password', 'Invalid input: expected string, received number'],
    ['redis.sentinelUsername', 'Invalid input: expected string, received number'],
    ['redis.tls', 'Invalid input: expected boolean, received string']
  ])
  t.same(problems({ sentinelPasword: 'pw-typo' }), [['redis.sentinelPasword', 'unknown key']])
  t.same(problems({ password: '' }), [['redis.password', 'expected a non-empty password']])
  t.same(problems({ username: 'app', sentinelUsername: 'watch' }), [
    ['redis.username', 'username needs password (Redis\'s AUTH takes both)'],
    ['redis.sentinelUsername', 'sentinelUsername needs sentinelPassword (Redis\'s AUTH takes both)']
  ])
  t.same(problems({ password: ['pw-in-a-list'] }), [['redis.password', 'Invalid input: expected string, received array']])
  // ioredis took an empty host for localhost, and said of an empty name 'chain[0].options.store: Requires the name of master.'
  t.same(problems({ name: '', sentinels: [{ host: '', port: 26379 }] }), [
    ['redis.sentinels[0].host', 'expected a host name or address'],
    ['redis.name', 'expected the master\'s name, as the Sentinels monitor it']
  ])
  // the other forms keep their own, the wrong form's keys are unknown there
  t.same(issuesOf(() => parseConfig({ redis: { url: 'redis://h', password: 'pw' } })).map(i => [i.path, i.message]), [['redis.password', 'unknown key']])
  t.same(issuesOf(() => parseConfig({ redis: { host: 'h' } })).map(i => [i.path, i.message]), [['redis', 'expected {url}, {cluster: [urls]} or {sentinels: [{host, port}], name}']])
})

t.test('compile errors (templates, CIDRs, regexes) name their path, all of them at once', async t => {
  const config = parseConfig({
    chain: [
      { name: 'a', plugin: 'reject', options: { reason: 'hi {{usr}}' } },
      { name: 'b', plugin: 'reject', when: { not: { clientCidrs: ['10.0.0.0/33'] } } },
      { name: 'c', plugin: 'rewrite', options: { replace: [{ path: 'subdomain', pattern: '(', replacement: '' }] } },
      { name: 'd', plugin: 'metas', options: { default: { k: '{{metas.}}' } } }
    ]
  })
  const err = await createRuntime(config, { metrics: createMetrics(), log: createLogger({ level: 'silent', redact: [] }) })
    .then(() => undefined, (e: unknown) => e)
  t.ok(err instanceof ConfigError)
  const issues = (err as ConfigError).issues
  t.same(issues.map(i => i.path), ['chain[0].options.reason', 'chain[1].when.not.clientCidrs[0]', 'chain[2].options.replace[0].pattern', 'chain[3].options.default.k'])
  t.match(issues[0].message, /unknown template name \{\{usr\}\}/)
  t.match(issues[1].message, /"10\.0\.0\.0\/33"/)
  t.match(issues[2].message, /Invalid regular expression/)
})

t.test('loadConfig names unreadable files and JSON syntax errors', async t => {
  const missing = await loadConfig('/nonexistent/gw.json').catch((e: unknown) => e)
  t.ok(missing instanceof ConfigError)
  t.match((missing as ConfigError).message, /\/nonexistent\/gw\.json/)
  t.match((missing as ConfigError).issues[0].message, /cannot read/)
  const broken = await loadConfig(configFile('{"chain": [')).catch((e: unknown) => e)
  t.match((broken as ConfigError).issues[0].message, /not valid JSON/)
  // the commonest slip, a trailing comma: where, in one line, quoting nothing of the file (it may hold a password)
  const comma = await loadConfig(configFile('{\n  "redis": {"url": "redis://:s3cret@h:6379"},\n  "chain": [\n    {"name": "a", "plugin": "reject"},\n  ]\n}\n')).catch((e: unknown) => e)
  t.same((comma as ConfigError).issues, [{ path: '(file)', message: 'not valid JSON: unexpected character at line 5, column 3' }])
})

t.test('loadConfig: a key given twice in the file is an error with both lines, beside every other problem (top level first)', async t => {
  // a step copied and its limit edited in one place, and a second redis block pasted below the first
  const text = [
    '{',
    '  "redis": {"url": "redis://127.0.0.1:6379"},',
    '  "chain": [',
    '    {"name": "rl", "plugin": "rate-limit", "options": {"limit": 5, "window": "1m", "limit": 50}},',
    '    {"name": "no", "plugin": "reject", "options": {"reason": 7}}',
    '  ],',
    '  "redis": {"url": "redis://10.0.0.2:6379"}',
    '}'
  ].join('\n')
  t.same(await issuesOfAsync(async () => await loadConfig(configFile(text))), [
    { path: 'redis', message: 'given again on line 7 (first on line 2): JSON would keep only the last' },
    { path: 'chain[0].options.limit', message: 'given again on line 4 (first on line 4): JSON would keep only the last' },
    { path: 'chain[1].options.reason', message: 'Invalid input: expected string, received number' }
  ])
})

t.test('every number has a bound the code honours: past it, the error names the path and the range', async t => {
  const step = (plugin: string, options: unknown): unknown => ({ chain: [{ name: 's', plugin, options }] })
  const forward = (options: object): unknown => step('forward', { url: 'http://127.0.0.1:1/', ...options })
  const rate = (options: object): unknown => step('rate-limit', { limit: 1, window: '1s', ...options })
  const cases: Array<[string, unknown, unknown, string, RegExp]> = [
    // [what, at the bound (valid), past it, path, message]
    ['deadlineMs max', { deadlineMs: 10000 }, { deadlineMs: 2 ** 31 }, 'deadlineMs', /from 1 to 10000/],
    ['deadlineMs min', { deadlineMs: 1 }, { deadlineMs: 0 }, 'deadlineMs', /from 1 to 10000/],
    ['bodyLimitBytes max', { listen: { bodyLimitBytes: 16777216 } }, { listen: { bodyLimitBytes: 1e15 } }, 'listen.bodyLimitBytes', /from 1024 to 16777216/],
    ['bodyLimitBytes min', { listen: { bodyLimitBytes: 1024 } }, { listen: { bodyLimitBytes: 1023 } }, 'listen.bodyLimitBytes', /from 1024 to 16777216/],
    ['listen.port', { listen: { port: 65535 } }, { listen: { port: 65536 } }, 'listen.port', /from 0 to 65535/],
    ['admin.port', { admin: { port: 0 } }, { admin: { port: -1 } }, 'admin.port', /from 0 to 65535/],
    ['forward timeoutMs max', forward({ timeoutMs: 10000 }), forward({ timeoutMs: 1e15 }), 'chain[0].options.timeoutMs', /from 1 to 10000/],
    ['forward timeoutMs min', forward({ timeoutMs: 1 }), forward({ timeoutMs: 0 }), 'chain[0].options.timeoutMs', /from 1 to 10000/],
    ['forward retries', forward({ retries: 5 }), forward({ retries: 6 }), 'chain[0].options.retries', /from 0 to 5/],
    ['failureThreshold', forward({ circuitBreaker: { failureThreshold: 1000, resetAfterMs: 1 } }),
      forward({ circuitBreaker: { failureThreshold: 1001, resetAfterMs: 1 } }), 'chain[0].options.circuitBreaker.failureThreshold', /from 1 to 1000/],
    ['resetAfterMs', forward({ circuitBreaker: { failureThreshold: 1, resetAfterMs: 3_600_000 } }),
      forward({ circuitBreaker: { failureThreshold: 1, resetAfterMs: 1e15 } }), 'chain[0].options.circuitBreaker.resetAfterMs', /from 1 to 3600000/],
    ['window max (string)', rate({ window: '8760h' }), rate({ window: '100000000000000000000h' }), 'chain[0].options.window', /from 1 ms to 8760h/],
    ['window max (days)', rate({ window: '365d' }), rate({ window: '366d' }), 'chain[0].options.window', /from 1 ms to 8760h/],
    ['reconcileEvery max (days)', { registry: { reconcileEvery: '1d' } }, { registry: { reconcileEvery: '2d' } }, 'registry.reconcileEvery', /from 1s to 24h/],
    ['window max (ms)', rate({ window: 31_536_000_000 }), rate({ window: 31_536_000_001 }), 'chain[0].options.window', /from 1 to 31536000000/],
    ['window min', rate({ window: 1, limit: 10 }), rate({ window: 0 }), 'chain[0].options.window', /from 1 ms to 8760h|from 1 to/],
    ['limit: one token per 0.1 ms at most', rate({ limit: 10_000, burst: 1 }), rate({ limit: 10_001, burst: 1 }), 'chain[0].options.limit', /at most 10000 per window of 1000 ms/],
    ['limit: a bucket refills within 365 days', rate({ limit: 1, window: '8760h' }), rate({ limit: 1e-300, window: '1h' }), 'chain[0].options.limit', /expected at most 365/],
    ['limit above 0', rate({ limit: 0.5 }), rate({ limit: 0 }), 'chain[0].options.limit', /above 0/],
    ['burst: a bucket refills within 365 days', rate({ window: '24h', burst: 365 }), rate({ window: '24h', burst: 366 }), 'chain[0].options.burst', /refills in 366 days: expected at most 365/],
    ['burst: counted exactly at one instant', rate({ limit: 1000, burst: 2027 }), rate({ limit: 1000, burst: 2028 }), 'chain[0].options.burst', /expected a burst of at most 2027 /],
    ['burst: counted exactly (default burst)', rate({ limit: 1420 }), rate({ limit: 1421 }), 'chain[0].options.limit', /a bucket of 1421 .* at most 1420 /],
    ['burst min', rate({ burst: 1 }), rate({ burst: 0 }), 'chain[0].options.burst', /from 1 to 1000000000/],
    ['remotePorts entries', step('reject', {}), { chain: [{ name: 's', plugin: 'reject', when: { remotePorts: [65536] } }] }, 'chain[0].when.remotePorts[0]', /within 0-65535/]
  ]
  // what check does: load (schema), then compile
  const problems = async (raw: unknown): Promise<Array<{ path: string, message: string }>> => {
    try {
      const config = await loadConfig(configFile(raw))
      await (await createRuntime(config, { metrics: createMetrics(), log: createLogger({ level: 'silent', redact: [] }), open: false })).close()
      return []
    } catch (err) {
      return [...(err as ConfigError).issues]
    }
  }
  for (const [what, ok, bad, path, message] of cases) {
    t.same(await problems(ok), [], `${what}: the bound itself is accepted`)
    const issues = await problems(bad)
    t.same(issues.map(i => i.path), [path], what)
    t.match(issues[0]?.message, message, what)
  }
})

t.test('a proxy type frps does not know (misspelt, in another case) is a config error naming it: it would match nothing', async t => {
  const known = 'tcp, udp, http, https, stcp, xtcp, sudp, tcpmux'
  t.same(issuesOf(() => parseConfig({
    chain: [{ name: 'a', plugin: 'reject', ops: ['NewProxy'], when: { proxyTypes: ['TCP', 'udp', 'htpp'], not: { proxyTypes: ['xtcp', 'quic'] } } }]
  })), [
    { path: 'chain[0].when.proxyTypes[0]', message: `"TCP" is not a proxy type frps knows: ${known}` },
    { path: 'chain[0].when.proxyTypes[2]', message: `"htpp" is not a proxy type frps knows: ${known}` },
    { path: 'chain[0].when.not.proxyTypes[1]', message: `"quic" is not a proxy type frps knows: ${known}` }
  ])
  // quoting one nested 100,000 deep overflowed the stack: check ended in a stack trace
  const deep = (open: string, inner: string, close: string) => JSON.parse(open.repeat(100_000) + inner + close.repeat(100_000))
  t.same(issuesOf(() => parseConfig({
    chain: [{ name: 'a', plugin: 'reject', ops: ['NewProxy'], when: { proxyTypes: [['a'], 7, { a: 1 }] } }]
  })), [
    { path: 'chain[0].when.proxyTypes[0]', message: `an array is not a proxy type frps knows: ${known}` },
    { path: 'chain[0].when.proxyTypes[1]', message: `7 is not a proxy type frps knows: ${known}` },
    { path: 'chain[0].when.proxyTypes[2]', message: `an object is not a proxy type frps knows: ${known}` }
  ])
  for (const value of [deep('[', '', ']'), deep('{"a":', '1', '}')]) {
    const issues = issuesOf(() => parseConfig({ chain: [{ name: 'a', plugin: 'reject', ops: ['NewProxy'], when: { proxyTypes: [value] } }] }))
    t.same(issues.map(i => i.message), ['nested deeper than 100 levels of objects and arrays'])
    t.match(issues[0].path, /^chain\[0\]\.when\.proxyTypes\[0\](\[0\]|\.a)+$/)
  }
})

t.test('when.fields: a proxy_type frps does not know is a config error too', async t => {
  const config = parseConfig({
    chain: [{ name: 'a', plugin: 'reject', ops: ['NewProxy'], when: { fields: { proxy_type: ['tcp', 'Tcp'] }, not: { fields: { proxy_type: 'htpp' } } } }]
  })
  t.same(await issuesOfAsync(async () => await createRuntime(config, { metrics: createMetrics(), log: createLogger({ level: 'silent', redact: [] }), open: false })), [
    { path: 'chain[0].when.fields.proxy_type', message: '"Tcp" is not a proxy type frps knows: tcp, udp, http, https, stcp, xtcp, sudp, tcpmux' },
    { path: 'chain[0].when.not.fields.proxy_type', message: '"htpp" is not a proxy type frps knows: tcp, udp, http, https, stcp, xtcp, sudp, tcpmux' }
  ])
})

t.test('an op given twice in a step\'s ops is a config error: the step would run twice on each call', async t => {
  t.same(issuesOf(() => parseConfig({
    chain: [{ name: 'a', plugin: 'rate-limit', ops: ['Login', 'NewProxy', 'Login', 'NewProxy'], options: { limit: 2, window: '1h' } }]
  })), [
    { path: 'chain[0].ops[2]', message: 'Login is given again (first at ops[0]): the step would run twice on each call' },
    { path: 'chain[0].ops[3]', message: 'NewProxy is given again (first at ops[1]): the step would run twice on each call' }
  ])
})

t.test('empty names in when and bad when.fields paths are config errors with their path', async t => {
  t.same(issuesOf(() => parseConfig({
    chain: [{ name: 'a', plugin: 'reject', when: { users: ['root', ''], proxyNames: [''], not: { proxyTypes: ['tcp', ''] } } }]
  })), [
    { path: 'chain[0].when.users[1]', message: 'an empty name never matches: frps omits empty values' },
    { path: 'chain[0].when.proxyNames[0]', message: 'an empty name never matches: frps omits empty values' },
    { path: 'chain[0].when.not.proxyTypes[1]', message: '"" is not a proxy type frps knows: tcp, udp, http, https, stcp, xtcp, sudp, tcpmux' }
  ])
  const config = parseConfig(JSON.parse(`{ "chain": [
    { "name": "a", "plugin": "reject", "when": { "fields": { "__proto__.x": 1 } } },
    { "name": "b", "plugin": "reject", "when": { "not": { "fields": { "use_encryption": "no" } } } }
  ] }`))
  const err = await createRuntime(config, { metrics: createMetrics(), log: createLogger({ level: 'silent', redact: [] }) })
    .then(() => undefined, (e: unknown) => e)
  t.ok(err instanceof ConfigError)
  t.same((err as ConfigError).issues, [
    { path: 'chain[0].when.fields.__proto__.x', message: '"__proto__.x" goes through "__proto__": no frp field is named so, and a path must never reach a prototype' },
    { path: 'chain[1].when.not.fields.use_encryption', message: '"no" can never match: use_encryption is a boolean' }
  ])
})

t.test('a when condition that holds on none of the step\'s ops is a config error naming it: the step would never run', async t => {
  const config = parseConfig({
    chain: [
      { name: 'a', plugin: 'reject', ops: ['Login'], when: { proxyTypes: ['tcp'], fields: { remote_port: 6000 } } },
      { name: 'b', plugin: 'reject', ops: ['NewProxy', 'Ping'], when: { clientCidrs: ['10.0.0.0/8'], remoteCidrs: ['10.0.0.0/8'] } },
      { name: 'c', plugin: 'reject', when: { clientCidrs: ['10.0.0.0/8'], remotePorts: [6000] } },
      // each holds on some op of these, and under not a condition holds where its field is absent
      { name: 'd', plugin: 'reject', ops: ['Login', 'NewProxy'], when: { proxyNames: ['a.*'], not: { clientCidrs: ['10.0.0.0/8'] } } },
      { name: 'e', plugin: 'reject', ops: ['Login'], when: { users: ['a'], metas: { k: 'v' }, fields: { 'x.y': 1 } } }
    ]
  })
  t.same(await issuesOfAsync(async () => await createRuntime(config, { metrics: createMetrics(), log: createLogger({ level: 'silent', redact: [] }), open: false })), [
    { path: 'chain[0].when.proxyTypes', message: 'this holds only on NewProxy, NewUserConn, and the step runs on Login: it would never run; set its "ops" or drop the condition' },
    { path: 'chain[0].when.fields.remote_port', message: 'this holds only on NewProxy, and the step runs on Login: it would never run; set its "ops" or drop the condition' },
    { path: 'chain[1].when.clientCidrs', message: 'this holds only on Login, and the step runs on NewProxy, Ping: it would never run; set its "ops" or drop the condition' },
    { path: 'chain[1].when.remoteCidrs', message: 'this holds only on NewUserConn, and the step runs on NewProxy, Ping: it would never run; set its "ops" or drop the condition' },
    { path: 'chain[2].when', message: 'its conditions hold together on no op the step runs on (clientCidrs only on Login; remotePorts only on NewProxy): it would never run' }
  ])
})

t.test('the example config rejects proxies that do not ask for encryption, and changes none', async t => {
  const config = parseConfig(JSON.parse(readFileSync(`${ROOT}config/gateway.example.json`, 'utf8')))
  const runtime = await createRuntime(config, { metrics: createMetrics(), log: createLogger({ level: 'silent', redact: [] }), open: false })
  t.teardown(async () => { await runtime.close() })
  const call = async (content: Record<string, unknown>) => await runtime.call('NewProxy', content, performance.now(), 'r', createLogger({ level: 'silent', redact: [] })).result
  const proxy = { user: { user: 'alice' }, proxy_name: 'alice.ssh', remote_port: 6000 }
  for (const type of ['tcp', 'udp', 'stcp']) {
    for (const flag of [false, null, undefined]) {
      t.same(await call({ ...proxy, proxy_type: type, use_encryption: flag }),
        { outcome: 'reject', reason: 'turn on encryption for alice.ssh (transport.useEncryption = true in frpc.toml, use_encryption = true in frpc.ini)', step: 'need-encryption' }, `${type}, use_encryption ${String(flag)}`)
    }
    t.same(await call({ ...proxy, proxy_type: type, use_encryption: true }), { outcome: 'allow' }, `${type} with encryption`)
  }
  t.same(await call({ ...proxy, proxy_type: 'xtcp' }), { outcome: 'allow' }, 'xtcp streams never pass frps')
  t.notMatch(readFileSync(`${ROOT}config/gateway.example.json`, 'utf8'), /"rewrite"/, 'no rewrite step in the example')
})

t.test('listen.path: a plain path, and no admin route when the admin routes are served beside it', async t => {
  const problems = (raw: unknown) => issuesOf(() => parseConfig(raw))
  for (const path of ['/:x', '/handler/*', '/h?x=1', '/a b', '/a%20b', 'handler']) {
    t.same(problems({ listen: { path } }), [{ path: 'listen.path', message: 'expected a path starting with /, of letters, digits, "/", ".", "_", "~" and "-"' }], path)
  }
  for (const path of ['/metrics', '/healthz', '/readyz', '/proxies', '/proxies/alice']) {
    t.same(problems({ listen: { path } }), [{ path: 'listen.path', message: `"${path}" is an admin route, served on this listener without an "admin" block: choose another path, or add "admin"` }], path)
    t.equal(parseConfig({ listen: { path }, admin: {} }).listen.path, path, `${path} with an admin listener`)
  }
  t.equal(parseConfig({ listen: { path: '/frp/plugin-v1.0_~x' } }).listen.path, '/frp/plugin-v1.0_~x')
})

t.test('an empty listen.host or admin.host is an error: Node would listen on every interface', async t => {
  const issues = issuesOf(() => parseConfig({ listen: { host: '' }, admin: { host: '' } }))
  const message = 'expected an address or host name: "0.0.0.0" or "::" to listen on every interface'
  t.same(issues, [{ path: 'listen.host', message }, { path: 'admin.host', message }])
})

t.test('registry.frpsApi.url that does not parse, or carries credentials (never sent), fails the config, not every reconciliation', async t => {
  const at = (url: string) => issuesOf(() => parseConfig({ registry: { frpsApi: { url } } }))
  t.same(at('http://'), [{ path: 'registry.frpsApi.url', message: 'not a valid URL (a host, and a port up to 65535)' }])
  t.same(at('https://frps:99999'), [{ path: 'registry.frpsApi.url', message: 'not a valid URL (a host, and a port up to 65535)' }])
  t.same(at('http://admin:secret@127.0.0.1:7500'), [{ path: 'registry.frpsApi.url', message: 'give the credentials as frpsApi.user and frpsApi.password, not in the URL' }])
  t.same(at('ftp://x'), [{ path: 'registry.frpsApi.url', message: 'expected an http:// or https:// URL' }])
  t.equal(parseConfig({ registry: { frpsApi: { url: 'http://127.0.0.1:7500' } } }).registry?.frpsApi?.url, 'http://127.0.0.1:7500')
})

t.test('a Redis URL that does not parse, or names a database that is not a number, fails the config, not the connection', async t => {
  const at = (url: string) => issuesOf(() => parseConfig({ redis: { url } }))
  const invalid = 'not a valid URL (a host, and a port up to 65535)'
  t.same(at('redis://:hunter2@redis:99999'), [{ path: 'redis.url', message: invalid }], 'the URL, with its password, is not quoted')
  t.same(at('redis://a b'), [{ path: 'redis.url', message: invalid }])
  t.same(at('redis://127.0.0.1:6379/zero'), [{ path: 'redis.url', message: 'the database (the path) must be a number, as in redis://host:6379/0' }])
  t.same(at('redis://127.0.0.1:6379?db=x'), [{ path: 'redis.url', message: 'the database (?db=) must be a number, as in redis://host:6379/0' }])
  t.same(issuesOf(() => parseConfig({ redis: { cluster: ['redis://127.0.0.1:7000', 'redis://a b'] } })), [{ path: 'redis.cluster[1]', message: invalid }])
  const noHost = 'no host: write it, as in redis://127.0.0.1:6379 (without one, ioredis would connect to localhost:6379)'
  for (const url of ['redis://', 'rediss://', 'redis:///1', 'redis://?db=1']) t.same(at(url), [{ path: 'redis.url', message: noHost }], url)
  t.same(at('redis://:6380'), [{ path: 'redis.url', message: invalid }], 'a port without a host')
  t.same(issuesOf(() => parseConfig({ redis: { cluster: ['redis://127.0.0.1:7000', 'redis://'] } })), [{ path: 'redis.cluster[1]', message: noHost }])
  for (const url of ['redis://127.0.0.1:6379/2', 'rediss://[::1]:6380?family=6', 'redis://:p%40ss@redis:6379', 'redis://r:6379/1?db=x']) t.same(parseConfig({ redis: { url } }).redis, { url, keyPrefix: 'frpgw:' }, url)
})

t.test('admin on the host and port of listen is a config error, not an "already in use" at start', async t => {
  t.same(issuesOf(() => parseConfig({ listen: { port: 9100 }, admin: { port: 9100 } })), [{
    path: 'admin.port',
    message: '127.0.0.1:9100 is the RPC listener\'s (listen.host and .port): give admin another port, or leave "admin" out to serve /metrics on the RPC listener'
  }])
  t.ok(parseConfig({ listen: { port: 0 }, admin: { port: 0 } }).admin, 'port 0 picks a free port for each')
  t.ok(parseConfig({ listen: { host: '127.0.0.1', port: 9100 }, admin: { host: '::1', port: 9100 } }).admin, 'another host')
})

t.test('a config nested past 100 levels is one problem at the path where it goes too deep, not a stack overflow', async t => {
  const nested = (levels: number): unknown => {
    let when: unknown = { users: ['x'] }
    for (let i = 0; i < levels; i++) when = { not: when }
    return { chain: [{ name: 'r', plugin: 'reject', when, options: { reason: 'x' } }] }
  }
  t.equal(parseConfig(nested(40)).chain.length, 1, '40 nested nots are a config')
  for (const levels of [200, 5000]) {
    const issues = issuesOf(() => parseConfig(nested(levels)))
    t.same(issues.map(i => i.message), ['nested deeper than 100 levels of objects and arrays'], `${levels} levels`)
    t.equal(issues[0].path, `chain[0].when${'.not'.repeat(97)}`)
  }
  const file = configFile(`{"chain":[{"name":"r","plugin":"reject","when":${'{"not":'.repeat(5000)}{"users":["x"]}${'}'.repeat(5000)},"options":{"reason":"x"}}]}`)
  t.same((await issuesOfAsync(async () => await loadConfig(file))).map(i => i.path), [`chain[0].when${'.not'.repeat(97)}`], 'loadConfig (check, a reload) too')
})

t.test('a number past 2^53 is one problem, not one per check that fails it', async t => {
  t.same(issuesOf(() => parseConfig({ deadlineMs: 1e20, listen: { port: 1e20 }, chain: [] })), [
    { path: 'listen.port', message: 'expected an integer from 0 to 65535' },
    { path: 'deadlineMs', message: 'expected an integer from 1 to 10000' }
  ])
})

t.test('a config file\'s lone surrogate escapes are read as U+FFFD, as a call\'s are: a rule on such a name meets the calls', async t => {
  const file = configFile('{"chain":[{"name":"r","plugin":"reject","ops":["Login"],"when":{"users":["eve\\ud800", "\\ud83d\\ude00"]},"options":{"reason":"no"}}]}')
  const config = await loadConfig(file)
  t.same((config.chain[0].when as { users: string[] }).users, ['eve\ufffd', '\u{1F600}'], 'a pair stays its character')
})
