import { createHash } from 'node:crypto'
import t from 'tap'
import { configFile, runCli } from '../helpers/cli.js'
import { configIssues, startGateway } from '../helpers/gateway.js'

const SECRET = 's3cret-alice'
const USERS = {
  alice: {
    token: SECRET,
    ports: ['6000-6099'],
    proxyTypes: ['tcp', 'udp', 'http'],
    domains: ['*.alice.example'],
    subdomains: ['a-*'],
    proxyNames: ['web*', 'ssh', 'dns'],
    metas: { team: 'blue' },
    bandwidthLimit: '10MB'
  },
  bob: { token: 'bob-token', enabled: false },
  old: { token: 'old-token', expires: '2020-01-01T01:00:00+01:00' },
  hashed: { tokenSha256: createHash('sha256').update('hashed-token').digest('hex') },
  policy: { ports: [] },
  office: { token: 'office-token', clientCidrs: ['10.0.0.0/8', '2001:db8::/32'] },
  free: { token: 'free-token' }
}

const usersConfig = (options: Record<string, unknown> = {}, users: unknown = USERS, extra: Record<string, unknown> = {}) => ({
  users: { file: configFile({ users }, 'users.json') },
  chain: [{ name: 'users', plugin: 'users', options }],
  ...extra
})

const now = (): number => Math.floor(Date.now() / 1000)
const login = (user: string, token?: string, extra: Record<string, unknown> = {}) => ({
  version: '0.64.0', os: 'linux', arch: 'amd64', user, privilege_key: '1ed4f845b2c6750ddaae8b22955c6847', timestamp: now(),
  metas: token === undefined ? { team: 'red' } : { team: 'red', token },
  client_spec: {}, pool_count: 1, client_address: '127.0.0.1:47476', ...extra
})
const client = (user: string, token?: string) => ({ user, metas: token === undefined ? { team: 'blue' } : { team: 'blue', token }, run_id: '9a961f8f3302e589' })
const newProxy = (user: string, token: string | undefined, proxy: Record<string, unknown>) => ({ user: client(user, token), ...proxy })

const ALLOW = { reject: false, unchange: true }
const rejected = (reason: string) => ({ reject: true, reject_reason: reason, unchange: true })

t.test('Login: each rule in order, its reason naming the rule and never the secret, its result counted', async t => {
  const gw = await startGateway(t, usersConfig())
  const cases: Array<[string, unknown, unknown]> = [
    ['unknown user', login('carol', SECRET), rejected('unknown user carol')],
    ['no user', login('', SECRET), rejected('unknown user: frpc sets no user (set user in the frpc config)')],
    ['a name no table holds', login('a{b}', SECRET), rejected('unknown user a{b}')],
    ['disabled', login('bob', 'bob-token'), rejected('user bob is disabled')],
    ['expired', login('old', 'old-token'), rejected('user old expired at 2020-01-01T00:00:00.000Z')],
    ['a record without token', login('policy', 'anything'), rejected('user policy has no token in the user table (token or tokenSha256)')],
    ['wrong token', login('alice', 'guess'), rejected('token does not match for alice')],
    ['no token', login('alice'), rejected('token does not match for alice')],
    ['a token of another user', login('alice', 'free-token'), rejected('token does not match for alice')],
    ['outside clientCidrs', login('office', 'office-token', { client_address: '192.168.1.5:4000' }), rejected('client address 192.168.1.5 is outside the clientCidrs of office')],
    ['outside clientCidrs (IPv6)', login('office', 'office-token', { client_address: '[2001:db9::1]:4000' }), rejected('client address 2001:db9::1 is outside the clientCidrs of office')],
    ['inside clientCidrs', login('office', 'office-token', { client_address: '10.1.2.3:4000' }), ALLOW],
    ['no client_address (frps < 0.39): the condition holds', login('office', 'office-token', { client_address: undefined }), ALLOW],
    ['tokenSha256, right secret', login('hashed', 'hashed-token'), ALLOW],
    ['tokenSha256, wrong secret', login('hashed', 'hashed-token2'), rejected('token does not match for hashed')],
    ['no record metas: unchanged', login('free', 'free-token'), ALLOW]
  ]
  for (const [what, content, answer] of cases) {
    const res = await gw.call('Login', content)
    t.same(res.body, answer, what)
    t.notOk(res.raw.includes(SECRET), `${what}: the secret is not in the answer`)
  }
  for (const line of gw.lines) t.notOk(line.includes(SECRET) || line.includes('office-token'), 'no log line holds a secret')
  const results = { unknown_user: 3, disabled: 1, expired: 1, bad_token: 5, client_cidr: 2, ok: 4 }
  for (const [result, n] of Object.entries(results)) {
    t.equal(await gw.metric('frp_gateway_users_decisions_total', { step: 'users', result }), n, `${result}: ${n}`)
  }
  t.equal(await gw.metric('frp_gateway_users_decisions_total', { step: 'users', result: 'clock_skew' }), undefined, 'nothing else counted')
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'Login', step: 'users', decision: 'reject' }), 12)
})

t.test('Login: the record\'s metas override what frpc sent, the rest of the content untouched', async t => {
  const gw = await startGateway(t, usersConfig())
  const content = login('alice', SECRET, { metas: { team: 'red', token: SECRET, host: 'pi' } })
  const res = await gw.call('Login', content)
  t.same(res.body, { reject: false, unchange: false, content: { ...content, metas: { team: 'blue', token: SECRET, host: 'pi' } } })
  const already = await gw.call('Login', { ...content, metas: { team: 'blue', token: SECRET } })
  t.same(already.body, ALLOW, 'metas already as the record has them: no change')
  const none = await gw.call('Login', { ...content, metas: null })
  t.same(none.body, rejected('token does not match for alice'), 'metas null (frps 0.33): no token')
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'Login', step: 'users', decision: 'modify' }), 1)
})

t.test('stripToken: the secret is checked, then removed from the metas frps keeps; later ops skip the token check', async t => {
  const gw = await startGateway(t, usersConfig({ stripToken: true, tokenMeta: 'key' }))
  const res = await gw.call('Login', login('free', undefined, { metas: { key: 'free-token', team: 'red' } }))
  t.same(res.body.content.metas, { team: 'red' })
  t.same((await gw.call('Login', login('free', undefined, { metas: { key: 'nope' } }))).body, rejected('token does not match for free'))
  t.same((await gw.call('Login', login('free', 'free-token'))).body, rejected('token does not match for free'), 'the token under another meta than tokenMeta is no token')
  const aliceLogin = await gw.call('Login', login('alice', undefined, { metas: { key: SECRET } }))
  t.same(aliceLogin.body.content.metas, { team: 'blue' }, 'record metas set and the secret removed in one change')
  for (const op of ['Ping', 'NewWorkConn', 'NewUserConn']) {
    t.same((await gw.call(op, { user: { user: 'free', metas: { team: 'red' } } })).body, ALLOW, `${op} without the token in the metas`)
    t.same((await gw.call(op, { user: { user: 'bob', metas: {} } })).body, rejected('user bob is disabled'), `${op}: the other rules still hold`)
  }
})

t.test('requireToken false: records without a token skip the token check; records with one still check it', async t => {
  const gw = await startGateway(t, usersConfig({ requireToken: false }))
  t.same((await gw.call('Login', login('policy'))).body, ALLOW)
  t.same((await gw.call('Login', login('policy', 'anything'))).body, ALLOW)
  t.same((await gw.call('Ping', { user: client('policy', 'anything') })).body, ALLOW)
  t.same((await gw.call('Login', login('alice', 'guess'))).body, rejected('token does not match for alice'))
  t.same((await gw.call('NewProxy', newProxy('policy', undefined, { proxy_name: 'policy.ssh', proxy_type: 'tcp', remote_port: 6000 }))).body,
    rejected('policy may have no tcp or udp proxy (ports is empty)'), 'the policy itself still applies')
})

t.test('unknownUsers allow: unknown users go on to later steps, and count as unknown_user', async t => {
  const gw = await startGateway(t, {
    ...usersConfig({ unknownUsers: 'allow' }),
    chain: [
      { name: 'users', plugin: 'users', options: { unknownUsers: 'allow' } },
      { name: 'no-eve', plugin: 'reject', when: { users: ['eve'] }, options: { reason: 'no {{user}} here' } }
    ]
  })
  t.same((await gw.call('Login', login('carol', 'x'))).body, ALLOW)
  t.same((await gw.call('NewProxy', newProxy('carol', 'x', { proxy_name: 'carol.ssh', proxy_type: 'tcp', remote_port: 1 }))).body, ALLOW)
  t.same((await gw.call('Login', login('eve', 'x'))).body, rejected('no eve here'), 'a later step decides')
  t.same((await gw.call('Login', login('alice', 'guess'))).body, rejected('token does not match for alice'), 'known users are checked')
  t.equal(await gw.metric('frp_gateway_users_decisions_total', { step: 'users', result: 'unknown_user' }), 3)
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'Login', step: 'users', decision: 'allow' }), 2)
})

t.test('NewProxy: the user still in good standing, then type, port, domains, subdomain, name; bandwidthLimit set', async t => {
  const gw = await startGateway(t, usersConfig())
  const tcp = { proxy_name: 'alice.ssh', proxy_type: 'tcp', remote_port: 6050 }
  const cases: Array<[string, unknown, unknown]> = [
    ['unknown', newProxy('carol', 'x', tcp), rejected('unknown user carol')],
    ['disabled', newProxy('bob', 'bob-token', tcp), rejected('user bob is disabled')],
    ['expired', newProxy('old', 'old-token', tcp), rejected('user old expired at 2020-01-01T00:00:00.000Z')],
    ['token changed', newProxy('alice', 'stale', tcp), rejected('token does not match for alice')],
    ['proxy type', newProxy('alice', SECRET, { ...tcp, proxy_type: 'stcp' }), rejected('proxy type stcp is not allowed for alice')],
    ['port outside', newProxy('alice', SECRET, { ...tcp, remote_port: 6150 }), rejected("remote port 6150 is outside alice's ports 6000-6099")],
    ['udp port outside', newProxy('alice', SECRET, { ...tcp, proxy_name: 'alice.dns', proxy_type: 'udp', remote_port: 53 }), rejected("remote port 53 is outside alice's ports 6000-6099")],
    ['port absent', newProxy('alice', SECRET, { ...tcp, remote_port: undefined }),
      rejected('alice may use the ports 6000-6099 only: set remotePort on the proxy (frps would pick a port)')],
    ['port 0', newProxy('alice', SECRET, { ...tcp, remote_port: 0 }),
      rejected('alice may use the ports 6000-6099 only: set remotePort on the proxy (frps would pick a port)')],
    ['ports []', newProxy('policy', undefined, { ...tcp, proxy_name: 'policy.x' }), rejected('policy may have no tcp or udp proxy (ports is empty)')],
    ['domain', newProxy('alice', SECRET, { proxy_name: 'alice.web', proxy_type: 'http', custom_domains: ['x.alice.example', 'evil.example'] }),
      rejected("domain evil.example is not one of alice's domains")],
    ['subdomain', newProxy('alice', SECRET, { proxy_name: 'alice.web', proxy_type: 'http', subdomain: 'b-1' }), rejected("subdomain b-1 is not one of alice's subdomains")],
    ['name', newProxy('alice', SECRET, { ...tcp, proxy_name: 'alice.db' }), rejected("proxy name db is not one of alice's proxyNames")],
    ['name matched without the user. prefix', newProxy('alice', SECRET, { ...tcp, proxy_name: 'alice.alice.ssh' }), rejected("proxy name alice.ssh is not one of alice's proxyNames")]
  ]
  for (const [what, content, answer] of cases) t.same((await gw.call('NewProxy', content)).body, answer, what)

  const ok = newProxy('alice', SECRET, { ...tcp, use_encryption: true })
  t.same((await gw.call('NewProxy', ok)).body, { reject: false, unchange: false, content: { ...ok, bandwidth_limit: '10MB', bandwidth_limit_mode: 'server' } }, 'bandwidth limit set, enforced by frps')
  const http = newProxy('alice', SECRET, { proxy_name: 'alice.web2', proxy_type: 'http', custom_domains: ['x.alice.example'], subdomain: 'a-1', bandwidth_limit: '10MB', bandwidth_limit_mode: 'server' })
  t.same((await gw.call('NewProxy', http)).body, ALLOW, 'http: no port needed; the limit already there: no change')
  t.same((await gw.call('NewProxy', newProxy('alice', undefined, { ...tcp, bandwidth_limit: '10MB', bandwidth_limit_mode: 'server' }))).body, ALLOW,
    'metas without the token (stripped at Login): the token check is Login\'s')
  const free = newProxy('free', 'free-token', { proxy_name: 'free.any', proxy_type: 'tcp' })
  t.same((await gw.call('NewProxy', free)).body, ALLOW, 'no ports: frps may pick one')
  const results = { unknown_user: 1, disabled: 1, expired: 1, bad_token: 1, proxy_type: 1, port: 5, domain: 1, subdomain: 1, proxy_name: 2, ok: 4 }
  for (const [result, n] of Object.entries(results)) t.equal(await gw.metric('frp_gateway_users_decisions_total', { step: 'users', result }), n, `${result}: ${n}`)
})

t.test('ports []: no tcp or udp proxy at all, other types allowed', async t => {
  const gw = await startGateway(t, usersConfig({ requireToken: false }))
  t.same((await gw.call('NewProxy', newProxy('policy', undefined, { proxy_name: 'policy.x', proxy_type: 'udp', remote_port: 6000 }))).body,
    rejected('policy may have no tcp or udp proxy (ports is empty)'))
  t.same((await gw.call('NewProxy', newProxy('policy', undefined, { proxy_name: 'policy.x', proxy_type: 'tcp' }))).body,
    rejected('policy may have no tcp or udp proxy (ports is empty)'))
  t.same((await gw.call('NewProxy', newProxy('policy', undefined, { proxy_name: 'policy.w', proxy_type: 'http', custom_domains: ['w.example'] }))).body, ALLOW)
})

t.test('Ping, NewWorkConn, NewUserConn: the client\'s user (NewUserConn: the proxy owner) still known, enabled, unexpired, token matching', async t => {
  const gw = await startGateway(t, usersConfig())
  const extra: Record<string, Record<string, unknown>> = {
    Ping: {},
    NewWorkConn: { run_id: '9a961f8f3302e589' },
    NewUserConn: { proxy_name: 'alice.ssh', proxy_type: 'tcp', remote_addr: '127.0.0.1:57760' }
  }
  for (const op of ['Ping', 'NewWorkConn', 'NewUserConn']) {
    const call = async (user: string, token?: string) => (await gw.call(op, { user: client(user, token), ...extra[op] })).body
    t.same(await call('alice', SECRET), ALLOW, `${op}: allowed`)
    t.same(await call('alice', 'old-secret'), rejected('token does not match for alice'), `${op}: token changed`)
    t.same(await call('bob', 'bob-token'), rejected('user bob is disabled'), `${op}: disabled`)
    t.same(await call('old', 'old-token'), rejected('user old expired at 2020-01-01T00:00:00.000Z'), `${op}: expired`)
    t.same(await call('carol', 'x'), rejected('unknown user carol'), `${op}: unknown`)
    t.same(await call('office', 'office-token'), ALLOW, `${op}: clientCidrs are Login's`)
  }
  t.equal(await gw.metric('frp_gateway_users_decisions_total', { step: 'users', result: 'ok' }), 6)
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewUserConn', step: 'users', decision: 'reject' }), 4)
})

t.test('maxClockSkew: a Login timestamp too far behind or ahead is refused, within it allowed', async t => {
  const gw = await startGateway(t, usersConfig({ maxClockSkew: '15m' }))
  const at = (offset: number, ts = now() + offset) => login('free', 'free-token', { timestamp: ts })
  // the gateway reads its clock a moment after the test: a second may have begun meanwhile
  const skewed = async (offset: number, words: (s: number) => string): Promise<void> => {
    const reason = (await gw.call('Login', at(offset))).body.reject_reason as string
    const seconds = Math.abs(offset)
    t.ok([seconds, offset < 0 ? seconds + 1 : seconds - 1].some(s => reason === words(s)), reason)
  }
  await skewed(-20 * 60, s => `Login timestamp of free is ${s} s behind the gateway's clock (maxClockSkew 15m): check the client's clock`)
  await skewed(3600, s => `Login timestamp of free is ${s} s ahead of the gateway's clock (maxClockSkew 15m): check the client's clock`)
  t.same((await gw.call('Login', at(-14 * 60))).body, ALLOW, '14 minutes behind')
  t.same((await gw.call('Login', at(14 * 60))).body, ALLOW, '14 minutes ahead')
  t.same((await gw.call('Login', login('free', 'free-token', { timestamp: undefined }))).body, rejected('Login of free carries no timestamp (maxClockSkew 15m)'))
  t.same((await gw.call('Login', { ...at(-20 * 60), metas: { token: 'nope' } })).body, rejected('token does not match for free'), 'the token is checked first')
  t.equal(await gw.metric('frp_gateway_users_decisions_total', { step: 'users', result: 'clock_skew' }), 3)
  const ms = await startGateway(t, usersConfig({ maxClockSkew: 30_000 }))
  const late = (await ms.call('Login', at(-40))).body.reject_reason as string
  t.ok([40, 41].some(s => late === `Login timestamp of free is ${s} s behind the gateway's clock (maxClockSkew 30s): check the client's clock`), late)
  t.same((await ms.call('Login', at(-20))).body, ALLOW)
  const off = await startGateway(t, usersConfig())
  t.same((await off.call('Login', at(-86400 * 365))).body, ALLOW, 'off by default')
})

t.test('shadow mode: a reject is logged and counted, the call goes through', async t => {
  const gw = await startGateway(t, { ...usersConfig(), chain: [{ name: 'users', plugin: 'users', mode: 'shadow' }] })
  t.same((await gw.call('Login', login('alice', 'guess'))).body, ALLOW)
  t.same((await gw.call('Login', login('alice', SECRET))).body, ALLOW, 'shadow: no modification either')
  t.equal(await gw.metric('frp_gateway_users_decisions_total', { step: 'users', result: 'bad_token' }), 1)
  t.equal(await gw.metric('frp_gateway_users_decisions_total', { step: 'users', result: 'ok' }), 1)
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'Login', step: 'users', decision: 'shadow_reject' }), 1)
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'Login', step: 'users', decision: 'shadow_modify' }), 1)
})

t.test('config errors: no users block, bad options', async t => {
  const none = await configIssues(t, { chain: [{ name: 'users', plugin: 'users' }] })
  t.same(none, [{ path: 'chain[0].options', message: 'the users step needs the top-level "users" block: {"file": "users.json"} or {"redis": {}}' }])
  const bad = await configIssues(t, usersConfig({ maxClockSkew: '25h', unknownUsers: 'maybe', tokenMeta: '', extra: 1 }))
  t.same(bad.map(i => i.path).sort(), ['chain[0].options.extra', 'chain[0].options.maxClockSkew', 'chain[0].options.tokenMeta', 'chain[0].options.unknownUsers'])
  t.match(bad.find(i => i.path === 'chain[0].options.maxClockSkew')?.message, 'expected a clock skew from 1s to 24h')
  for (const skew of ['0s', 'soon', 999, 86_400_001]) {
    const issues = await configIssues(t, usersConfig({ maxClockSkew: skew }))
    t.same(issues.map(i => i.path), ['chain[0].options.maxClockSkew'], `maxClockSkew ${skew}`)
    t.match(issues[0].message, /from 1s to 24h/)
  }
  for (const skew of ['24h', 1000]) {
    const gw = await startGateway(t, usersConfig({ maxClockSkew: skew }))
    t.same(gw.ref.current.chains.Login.map(s => s.name), ['users'], `maxClockSkew ${skew} goes`)
  }
  const check = await runCli(['check', '--config', configFile({ chain: [{ name: 'who', plugin: 'users', ops: ['Login'] }] })])
  t.equal(check.code, 1)
  t.match(check.stderr, 'chain[0].options: the users step needs the top-level "users" block')
  const good = await runCli(['check', '--config', configFile(usersConfig())])
  t.equal(good.code, 0, good.stderr)
  t.match(good.stdout, /Login: +users \(users\)/)
})

t.test('trace names the rule that decided', async t => {
  const file = configFile(usersConfig())
  const timings = (out: string) => out.replace(/in \d+\.\d{3} ms/g, 'in X ms')
  const bad = await runCli(['trace', '--config', file, '--op', 'Login'], { stdin: JSON.stringify({ user: 'alice', metas: { token: 'x' } }) })
  t.equal(bad.code, 3)
  t.equal(timings(bad.stdout), [
    'trace Login',
    '  1. users (users): reject in X ms: token does not match for alice (rule bad_token)',
    'outcome: reject',
    'answer: {"reject":true,"reject_reason":"token does not match for alice","unchange":true}',
    ''
  ].join('\n'))
  const good = await runCli(['trace', '--config', file, '--op', 'Ping'], { stdin: JSON.stringify({ user: { user: 'alice', metas: { token: SECRET } } }) })
  t.equal(good.code, 0)
  t.equal(timings(good.stdout), 'trace Ping\n  1. users (users): allow in X ms (rule ok)\noutcome: allow\nanswer: {"reject":false,"unchange":true}\n')
  const modified = await runCli(['trace', '--config', file, '--op', 'Login'], { stdin: JSON.stringify({ user: 'alice', metas: { token: SECRET } }) })
  t.match(timings(modified.stdout), '  1. users (users): modify in X ms (rule ok)\n       + metas.team = "blue"\n')
})

t.test('a record\'s metas never overwrite the token\'s meta: frps hands those metas to every later call, whose token check would fail', async t => {
  const gw = await startGateway(t, usersConfig({}, { carol: { token: 'c1', metas: { token: 'public', team: 'green' } } }))
  const res = await gw.call('Login', login('carol', 'c1'))
  t.same(res.body.content?.metas, { team: 'green', token: 'c1' })
  const ping = await gw.call('Ping', { user: { user: 'carol', metas: res.body.content.metas, run_id: 'r1' }, timestamp: now(), privilege_key: 'x' })
  t.same(ping.body, ALLOW, 'the next call passes its token check')
})

t.test('an empty secret never matches: the SHA-256 of "" is refused in a record, and an empty token meta is no token', async t => {
  const empty = createHash('sha256').update('').digest('hex')
  t.match(await configIssues(t, usersConfig({}, { dave: { tokenSha256: empty } })), [{ path: /^users\.file .*users\.json: users\.dave\.tokenSha256$/, message: /^this is the SHA-256 of an empty secret/ }])
  const gw = await startGateway(t, usersConfig())
  t.same((await gw.call('Login', login('hashed', ''))).body, rejected('token does not match for hashed'))
})
