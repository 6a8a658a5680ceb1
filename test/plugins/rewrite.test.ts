import t from 'tap'
import { loadSamples } from '../helpers/fixtures.js'
import { assertNoPollution, configIssues, startGateway } from '../helpers/gateway.js'

const ALLOW = { reject: false, unchange: true }
const modified = (content: unknown) => ({ reject: false, unchange: false, content })
const rewrite = (options: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
  ({ chain: [{ name: 'rw', plugin: 'rewrite', ...extra, options }] })
const PROXY = { ops: ['NewProxy'] }
/** One step per options object (a step reports its first compile error), each on `ops`. */
const steps = (ops: string[] | undefined, ...list: Array<Record<string, unknown>>) =>
  ({ chain: list.map((options, i) => ({ name: `rw${i}`, plugin: 'rewrite', ops, options })) })

const old = loadSamples('frps-0.33.0-requests.jsonl')
const WEB = old[1].body.content // http alice.web, locations [/a, /b], remote_port 0, http_pwd p
const SSH = old[2].body.content // tcp alice.ssh, remote_port 16000, metas {id: 123}
const current = loadSamples('frps-current-shapes.jsonl')
const DB = current[3].body.content // tcp alice.db, remote_port absent, use_encryption true

t.test('set: JSON values of every kind, in place', async t => {
  const gw = await startGateway(t, rewrite({
    set: { x_flag: true, remote_port: 6001, custom_domains: ['x.example'], headers: { 'X-A': '1' }, group: null, subdomain: 'ssh' }
  }))
  const r = await gw.call('NewProxy', SSH)
  t.equal(r.raw, JSON.stringify(modified({
    ...SSH, group: null, remote_port: 6001, custom_domains: ['x.example'], subdomain: 'ssh', headers: { 'X-A': '1' }, x_flag: true
  })), 'the whole content, keys where frps had them')
})

t.test('set: templates and nested dotted paths', async t => {
  const gw = await startGateway(t, rewrite({
    set: {
      host_header_rewrite: '{{proxy_name}}.internal',
      'user.metas.seen_by': '{{step}}@{{op}}',
      'metas.owner': '{{user}}',
      'x_future.a.b': 'deep'
    }
  }, PROXY))
  t.same((await gw.call('NewProxy', WEB)).body, modified({
    ...WEB,
    user: { ...WEB.user, metas: { ...WEB.user.metas, seen_by: 'rw@NewProxy' } },
    metas: { owner: 'alice' },
    host_header_rewrite: 'alice.web.internal',
    x_future: { a: { b: 'deep' } }
  }))
})

t.test('default: only when absent or null', async t => {
  const gw = await startGateway(t, rewrite({ default: { remote_port: 7000, group: 'g', subdomain: '{{user}}', 'user.metas.plan': 'free' } }, PROXY))
  t.same((await gw.call('NewProxy', { remote_port: 0, group: null, user: { user: 'bob', metas: { plan: '' } } })).body,
    modified({ remote_port: 0, group: 'g', user: { user: 'bob', metas: { plan: '' } }, subdomain: 'bob' }), '0 and "" are values')
  t.same((await gw.call('NewProxy', DB)).body, modified({ ...DB, user: { ...DB.user, metas: { ...DB.user.metas, plan: 'free' } }, remote_port: 7000, subdomain: 'alice' }))
  t.same((await gw.call('NewProxy', { remote_port: 1, group: 'x', subdomain: 's', user: { metas: { plan: 'pro' } } })).body, ALLOW)
})

t.test('remove', async t => {
  const gw = await startGateway(t, rewrite({ remove: ['http_pwd', 'user.metas.token', 'nope.deep', 'locations.0'] }, PROXY))
  const { http_pwd: _pwd, ...rest } = WEB
  t.same((await gw.call('NewProxy', WEB)).body, modified({ ...rest, user: { ...WEB.user, metas: { team: 'blue' } }, locations: ['/b'] }))
  t.same((await gw.call('NewProxy', { proxy_name: 'p' })).body, ALLOW, 'nothing to remove')
})

t.test('replace: regex with groups, every match', async t => {
  const gw = await startGateway(t, rewrite({
    replace: [
      { path: 'host_header_rewrite', pattern: '^(\\w+)\\.(.+)$', replacement: '$2-$1' },
      { path: 'subdomain', pattern: '(?<first>a)(?<second>p)', replacement: '$<second>$<first>' },
      { path: 'http_user', pattern: '[aeiou]', replacement: '_' },
      { path: 'custom_domains.1', pattern: '\\.test$', replacement: '.example' },
      { path: 'missing', pattern: '.*', replacement: 'x' }
    ]
  }, PROXY))
  t.same((await gw.call('NewProxy', { ...WEB, http_user: 'queue', host_header_rewrite: 'alice.web' })).body,
    modified({ ...WEB, host_header_rewrite: 'web-alice', subdomain: 'pap', http_user: 'q____' }), 'an absent field is left alone')
  const site = old[8].body.content
  t.same((await gw.call('NewProxy', site)).body,
    modified({ ...site, custom_domains: ['a.example.test', 'b.example.example'] }))
})

t.test('edits apply in order: set, default, remove, replace', async t => {
  const gw = await startGateway(t, rewrite({
    replace: [{ path: 'subdomain', pattern: 'new', replacement: 'newer' }],
    remove: ['group'],
    default: { group: 'g', group_key: 'k' },
    set: { subdomain: 'new', group_key: 's' }
  }))
  t.same((await gw.call('NewProxy', { proxy_name: 'p' })).body, modified({ proxy_name: 'p', subdomain: 'newer', group_key: 's' }))
})

t.test('a value equal to what is there is no change', async t => {
  const gw = await startGateway(t, rewrite({
    set: { multiplexer: '', remote_port: 16000, metas: { id: '123' }, custom_domains: null, 'user.metas.token': '{{content.user.metas.token}}' },
    default: { subdomain: 'x' },
    remove: ['absent'],
    replace: [{ path: 'host_header_rewrite', pattern: 'nomatch', replacement: 'y' }]
  }, PROXY))
  t.equal((await gw.call('NewProxy', SSH)).raw, '{"reject":false,"unchange":true}')
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewProxy', step: 'rw', decision: 'allow' }), 1)
})

t.test('edits that undo each other are no change, and the step counts allow', async t => {
  const gw = await startGateway(t, rewrite({
    set: { bandwidth_limit: '1MB', http_user: 'alice.renamed' },
    remove: ['bandwidth_limit'],
    replace: [{ path: 'http_user', pattern: '^alice\\.renamed$', replacement: '' }]
  }))
  t.equal(SSH.bandwidth_limit, undefined, 'the sample has no bandwidth_limit')
  t.equal((await gw.call('NewProxy', SSH)).raw, '{"reject":false,"unchange":true}')
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewProxy', step: 'rw', decision: 'allow' }), 1)
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewProxy', step: 'rw', decision: 'modify' }), undefined)
})

t.test('a value the field cannot take is a config error naming the path: it would fail every call the step runs on', async t => {
  const issues = await configIssues(t, {
    chain: [
      { name: 'bad-port', plugin: 'rewrite', ops: ['NewProxy'], options: { set: { remote_port: 'x' }, default: { bandwidth_limit: 5 } } },
      { name: 'bad-meta', plugin: 'rewrite', ops: ['Login'], options: { set: { 'metas.n': 5, metas: { m: true } } } },
      { name: 'bad-time', plugin: 'rewrite', ops: ['NewWorkConn'], options: { set: { timestamp: '{{user}}' } } },
      { name: 'fine', plugin: 'rewrite', ops: ['NewProxy'], options: { set: { remote_port: null, 'user.metas.x': 'y', subdomain: '{{user}}' } } },
      { name: 'fine-too', plugin: 'rewrite', ops: ['Login'], options: { set: { 'metas.n': '{{user}}' }, default: { 'metas.m': 'z' } } }
    ]
  })
  t.same(issues.map(i => [i.path, i.message]), [
    ['chain[0].options.set.remote_port', 'remote_port is a number in NewProxy content: "x" would fail every call the step runs on'],
    ['chain[0].options.default.bandwidth_limit', 'bandwidth_limit is a string in NewProxy content: 5 would fail every call the step runs on'],
    ['chain[1].options.set.metas.n', 'metas.n is a string in Login content: 5 would fail every call the step runs on'],
    ['chain[1].options.set.metas', 'metas is a map of strings in Login content: {"m":true} would fail every call the step runs on'],
    ['chain[2].options.set.timestamp', 'timestamp is a number in NewWorkConn content: a template renders a string, which would fail every call the step runs on']
  ])
})

t.test('the user and run_id of a session are rewritten at Login only: frps keeps them, and quotas and the registry would count under another user', async t => {
  const issues = await configIssues(t, {
    chain: [
      { name: 'shared', plugin: 'rewrite', ops: ['NewProxy'], options: { set: { 'user.user': 'shared' } } },
      { name: 'runs', plugin: 'rewrite', options: { remove: ['user.run_id'], default: { user: { user: 'x' } } } },
      { name: 'rename', plugin: 'rewrite', ops: ['Login'], options: { set: { user: 'bob' } } },
      { name: 'tag', plugin: 'rewrite', ops: ['NewProxy'], options: { set: { 'user.metas.team': 'red' } } }
    ]
  })
  t.same(issues.map(i => i.path), ['chain[0].options.set.user.user', 'chain[1].options.default.user', 'chain[1].options.remove[0]'])
  for (const issue of issues) t.match(issue.message, /cannot be rewritten outside Login: frps keeps the user and run_id of the client's session/)
})

t.test('setting an element of a list, past its end or not, is a config error for each path (a list with holes would reach frps as nulls)', async t => {
  const issues = await configIssues(t, rewrite({ set: { 'locations.3': '/x', 'allow_users.1': 'bob' } }))
  t.same(issues.map(i => i.path), ['chain[0].options.set.locations.3', 'chain[0].options.set.allow_users.1'])
  for (const issue of issues) t.match(issue.message, /is an element of a list in NewProxy content/)
})

t.test('paths through __proto__, constructor or prototype are config errors; other keys named like Object.prototype members are plain keys', async t => {
  const through = (path: string, name: string) => `"${path}" goes through "${name}": no frp field is named so, and a path must never reach a prototype`
  t.same(await configIssues(t, steps(['Login'],
    JSON.parse('{ "set": { "__proto__": 1 } }'),
    { set: { '__proto__.polluted': 'yes' } },
    { set: { 'constructor.prototype.polluted': 'yes' } },
    { set: { 'metas.__proto__': 'p' } },
    { default: { 'metas.constructor': 'c' } },
    { remove: ['prototype'] },
    { replace: [{ path: 'metas.prototype', pattern: 'a', replacement: 'b' }] }
  )), [
    { path: 'chain[0].options.set.__proto__', message: through('__proto__', '__proto__') },
    { path: 'chain[1].options.set.__proto__.polluted', message: through('__proto__.polluted', '__proto__') },
    { path: 'chain[2].options.set.constructor.prototype.polluted', message: through('constructor.prototype.polluted', 'constructor') },
    { path: 'chain[3].options.set.metas.__proto__', message: through('metas.__proto__', '__proto__') },
    { path: 'chain[4].options.default.metas.constructor', message: through('metas.constructor', 'constructor') },
    { path: 'chain[5].options.remove[0]', message: through('prototype', 'prototype') },
    { path: 'chain[6].options.replace[0].path', message: through('metas.prototype', 'prototype') }
  ])
  assertNoPollution(t)
  const gw = await startGateway(t, rewrite({ set: { 'metas.toString': 't', 'metas.hasOwnProperty': '{{user}}' } }, { ops: ['Login'] }))
  t.equal((await gw.call('Login', { user: 'a' })).raw,
    '{"reject":false,"unchange":false,"content":{"user":"a","metas":{"toString":"t","hasOwnProperty":"a"}}}')
  assertNoPollution(t)
})

t.test('incoming __proto__ keys stay plain keys while other fields are edited', async t => {
  const gw = await startGateway(t, rewrite({ set: { 'metas.k': 'w' }, remove: ['metas.gone'] }, { ops: ['Login'] }))
  const content = JSON.parse('{"user":"a","__proto__":{"x":"1"},"constructor":"c","metas":{"__proto__":"p","k":"v","gone":"g"}}')
  t.equal((await gw.call('Login', content)).raw,
    '{"reject":false,"unchange":false,"content":{"user":"a","__proto__":{"x":"1"},"constructor":"c","metas":{"__proto__":"p","k":"w"}}}')
  assertNoPollution(t, ['polluted', 'x'])
})

t.test('fields frpc and frps must agree on cannot be rewritten on NewProxy: a config error with the reason', async t => {
  const agreed = (field: string, why: string) => `${field} cannot be rewritten: frpc and frps must agree on it and frpc would never ` +
    `learn of the change (${why}); reject instead, with when.fields`
  const encryption = 'frps would encrypt (or not) the stream to frpc where frpc does the opposite: every connection breaks'
  t.same(await configIssues(t, steps(undefined,
    { set: { use_encryption: true } },
    { set: { 'proxy_type.x': 1 } },
    { default: { use_compression: true } },
    { remove: ['sk'] },
    { replace: [{ path: 'proxy_name', pattern: '^', replacement: 'x-' }] }
  )), [
    { path: 'chain[0].options.set.use_encryption', message: agreed('use_encryption', encryption) },
    { path: 'chain[1].options.set.proxy_type.x', message: agreed('proxy_type', 'frps would serve another kind of proxy than the one frpc runs') },
    { path: 'chain[2].options.default.use_compression', message: agreed('use_compression', encryption.replace('encrypt', 'compress')) },
    { path: 'chain[3].options.remove[0]', message: agreed('sk', "visitors present the secret key the proxy's owner gave them " +
      '(xtcp peers also encrypt with it): they would be refused') },
    { path: 'chain[4].options.replace[0].path', message: agreed('proxy_name', 'frpc finds its proxy by the name frps answers with ' +
      '(NewProxyResp, StartWorkConn): a renamed proxy never starts') }
  ])
  t.same(await configIssues(t, rewrite({ set: { use_encryption: true } }, { ops: ['Login', 'NewProxy'] })).then(i => i.map(x => x.path)),
    ['chain[0].options.set.use_encryption'], 'NewProxy among other ops')
  const gw = await startGateway(t, rewrite({ set: { proxy_name: 'seen-{{proxy_name}}' } }, { ops: ['NewUserConn', 'CloseProxy'] }))
  t.same((await gw.call('NewUserConn', { proxy_name: 'a.ssh' })).body, modified({ proxy_name: 'seen-a.ssh' }),
    'ops whose answer frps ignores may carry another name to the steps after')
})

t.test('a key frps reads as a field of another case is a config error: an agreed field that way too', async t => {
  const agreed = (field: string, why: string) => `${field} cannot be rewritten: frpc and frps must agree on it and frpc would never ` +
    `learn of the change (${why}); reject instead, with when.fields`
  t.same(await configIssues(t, steps(['NewProxy'],
    { set: { USE_ENCRYPTION: true } },
    { remove: ['\u017fk'] },
    { set: { Remote_Port: 'x' } },
    { set: { 'user.USER': 'bob' } },
    { set: { 'user.metas.TEAM': 'blue', 'x_future.Remote_Port': 1 } }
  )), [
    { path: 'chain[0].options.set.USE_ENCRYPTION', message: agreed('USE_ENCRYPTION', 'frps would encrypt (or not) the stream to frpc where ' +
      'frpc does the opposite: every connection breaks') },
    { path: 'chain[1].options.remove[0]', message: agreed('\u017fk', "visitors present the secret key the proxy's owner gave them " +
      '(xtcp peers also encrypt with it): they would be refused') },
    { path: 'chain[2].options.set.Remote_Port', message: 'Remote_Port is no field name, but frps reads it as remote_port ' +
      '(Go matches keys whatever their case): write remote_port' },
    { path: 'chain[3].options.set.user.USER', message: 'user.USER is no field name, but frps reads it as user.user ' +
      '(Go matches keys whatever their case): write user.user' }
  ], 'metas keys and fields frps does not know are taken as written')
  t.same(await configIssues(t, rewrite({ set: { Client_Address: '' } })), [
    { path: 'chain[0].options.set.Client_Address', message: 'Client_Address is no field name, but frps reads it as client_address ' +
      '(Go matches keys whatever their case): write client_address' }
  ])
})

t.test('set and default take a list index up to 1023: past a list\'s end the gap is filled with null', async t => {
  const over = (path: string, index: string) => `${path}: ${index} is over 1023: setting an element past a list's end fills the gap with null, ` +
    'and the answer to frps would carry them all'
  t.same(await configIssues(t, steps(['Login'],
    { set: { 'x_future.300000000': 1 } },
    { default: { 'x_future.1024.a': 1 } }
  )), [
    { path: 'chain[0].options.set.x_future.300000000', message: over('x_future.300000000', '300000000') },
    { path: 'chain[1].options.default.x_future.1024.a', message: over('x_future.1024.a', '1024') }
  ])
  const gw = await startGateway(t, steps(['Login'], { set: { 'x_future.1023': 1 } }, { remove: ['x_future.300000000'] }))
  const r = await gw.call('Login', { x_future: [] })
  t.equal(r.status, 200)
  t.same(r.body.content.x_future, [...Array(1023).fill(null), 1])
})

t.test('a path the step\'s ops cannot hold is a config error, not a reject on every call', async t => {
  t.same(await configIssues(t, steps(['NewProxy'],
    { set: { 'custom_domains.0': 'a.example' } },
    { set: { 'subdomain.x': 'y' } },
    { set: { 'user.metas.team.x': 'y' } },
    { set: { 'remote_port.0': 1 } },
    { default: { 'locations.1': '/b' } },
    { remove: ['custom_domains.first'] },
    { replace: [{ path: 'remote_port', pattern: '0', replacement: '1' }] },
    { replace: [{ path: 'custom_domains', pattern: 'a', replacement: 'b' }] },
    { replace: [{ path: 'metas', pattern: 'a', replacement: 'b' }] }
  )), [
    { path: 'chain[0].options.set.custom_domains.0', message: 'custom_domains.0 is an element of a list in NewProxy content: where the ' +
      'list is absent or null the result would be an object {"0": ...}, which frps refuses; set the whole list' },
    { path: 'chain[1].options.set.subdomain.x', message: 'subdomain is a string in NewProxy content: nothing is inside it' },
    { path: 'chain[2].options.set.user.metas.team.x', message: 'user.metas.team is a string in NewProxy content: nothing is inside it' },
    { path: 'chain[3].options.set.remote_port.0', message: 'remote_port is a number in NewProxy content: nothing is inside it' },
    { path: 'chain[4].options.default.locations.1', message: 'locations.1 is an element of a list in NewProxy content: where the ' +
      'list is absent or null the result would be an object {"1": ...}, which frps refuses; set the whole list' },
    { path: 'chain[5].options.remove[0]', message: 'custom_domains is a list of strings in NewProxy content: only a number names one of its elements' },
    { path: 'chain[6].options.replace[0].path', message: 'remote_port is a number in NewProxy content: replace applies to strings' },
    { path: 'chain[7].options.replace[0].path', message: 'custom_domains is a list of strings in NewProxy content: replace applies to strings' },
    { path: 'chain[8].options.replace[0].path', message: 'metas is a map of strings in NewProxy content: replace applies to strings' }
  ])
  t.same(await configIssues(t, rewrite({ set: { 'user.metas.seen': '{{op}}' } })), [
    { path: 'chain[0].options.set.user.metas.seen', message: 'user is a string in Login content: nothing is inside it' }
  ], 'a step on every op must fit every op: Login\'s user is the name')
  const gw = await startGateway(t, rewrite({
    set: { 'x_future.0.a': 'new', 'user.x_future.y': 1, 'metas.k': 'v' },
    remove: ['locations.0'],
    replace: [{ path: 'custom_domains.0', pattern: '^www\\.', replacement: '' }]
  }, PROXY))
  t.same((await gw.call('NewProxy', { custom_domains: ['www.a.example'], locations: ['/x', '/y'] })).body, modified({
    custom_domains: ['a.example'], locations: ['/y'], x_future: { 0: { a: 'new' } }, user: { x_future: { y: 1 } }, metas: { k: 'v' }
  }), 'below a field frps does not know anything goes; elements of a list can be removed and replaced')
  t.same((await gw.call('NewProxy', { custom_domains: null })).body, modified({ x_future: { 0: { a: 'new' } }, custom_domains: null, user: { x_future: { y: 1 } }, metas: { k: 'v' } }))
})

t.test('a field only other ops carry is a config error on a step none of whose ops carries it: frps would ignore it', async t => {
  t.same(await configIssues(t, steps(['Login'],
    { set: { remote_port: 6000 }, default: { subdomain: 'x' }, remove: ['custom_domains'] }
  )), [
    { path: 'chain[0].options.set.remote_port', message: 'remote_port is a field of NewProxy content only: the step runs on Login, where frps would ignore it; set the step\'s ops' },
    { path: 'chain[0].options.default.subdomain', message: 'subdomain is a field of NewProxy content only: the step runs on Login, where frps would ignore it; set the step\'s ops' },
    { path: 'chain[0].options.remove[0]', message: 'custom_domains is a field of NewProxy content only: the step runs on Login, where frps would ignore it; set the step\'s ops' }
  ])
  t.same(await configIssues(t, steps(['NewProxy', 'Ping'], { replace: [{ path: 'hostname', pattern: 'a', replacement: 'b' }] })), [
    { path: 'chain[0].options.replace[0].path', message: 'hostname is a field of Login content only: the step runs on NewProxy, Ping, where frps would ignore it; set the step\'s ops' }
  ])
  // one op of the step carries it; a field frps does not know goes on every op
  const gw = await startGateway(t, steps(['Login', 'NewProxy'], { set: { remote_port: 6000, 'x_future.a': 1 } }))
  t.same((await gw.call('NewProxy', { proxy_name: 'a' })).body, modified({ proxy_name: 'a', remote_port: 6000, x_future: { a: 1 } }))
})

t.test('replace: unsafe patterns are refused at check; values longer than the bound fail the step, never reach the regex', async t => {
  const unsafe = 'unsafe pattern: nested quantifiers (like (a+)+) or a large repetition can take exponential time on a value frpc sends; simplify it'
  t.same(await configIssues(t, steps(['NewProxy'],
    { replace: [{ path: 'subdomain', pattern: '^(\\w+)\\.(.+)$', replacement: '$2' }, { path: 'subdomain', pattern: '^(a+)+$', replacement: '' }] },
    { replace: [{ path: 'subdomain', pattern: '^([a-z]+\\.?)*x$', replacement: '' }] },
    { replace: [{ path: 'subdomain', pattern: '(x{1,30}){1,30}', replacement: '' }] }
  )), [
    { path: 'chain[0].options.replace[1].pattern', message: unsafe },
    { path: 'chain[1].options.replace[0].pattern', message: unsafe },
    { path: 'chain[2].options.replace[0].pattern', message: unsafe }
  ])
  const gw = await startGateway(t, rewrite({ replace: [{ path: 'subdomain', pattern: '(a|b)+$', replacement: 'x' }] }, PROXY))
  const edge = 'a'.repeat(1023) + 'c'
  t.same((await gw.call('NewProxy', { subdomain: edge })).body, ALLOW, '1024 characters: the pattern runs')
  t.same((await gw.call('NewProxy', { subdomain: 'ab' + 'a'.repeat(1022) })).body, modified({ subdomain: 'x' }))
  const started = performance.now()
  const r = await gw.call('NewProxy', { subdomain: 'a'.repeat(1025) })
  t.same(r.body, { reject: true, unchange: true,
    reject_reason: 'frp-plugin-gateway: step rw failed: subdomain is 1025 characters long: replace runs on at most 1024' })
  t.ok(performance.now() - started < 1000, 'answered at once')
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewProxy', step: 'rw', decision: 'error' }), 1)
  t.same(gw.logs.filter(l => l.msg === 'step failed').map(l => l.err?.message),
    ['subdomain is 1025 characters long: replace runs on at most 1024'])
})

t.test('bad options fail at start, naming the path', async t => {
  const issues = async (options: Record<string, unknown>) => await configIssues(t, rewrite(options))
  const unknownName = (name: string) => `unknown template name {{${name}}}: expected one of op, reqid, user, run_id, client_ip, ` +
    'remote_ip, proxy_name, proxy_type, now, step, metas.KEY, proxy_metas.KEY, content.PATH'
  const notAPath = (path: string) => `"${path}" is not a dotted path like "user.metas.team"`
  t.same(await issues({ set: { subdomain: '{{proxyname}}' } }), [{ path: 'chain[0].options.set.subdomain', message: unknownName('proxyname') }])
  t.same(await issues({ default: { subdomain: 'x{{user' } }),
    [{ path: 'chain[0].options.default.subdomain', message: 'unclosed "{{" at position 1 in template "x{{user"' }])
  t.same(await issues({ set: { 'user..metas': 'x' } }), [{ path: 'chain[0].options.set.user..metas', message: notAPath('user..metas') }])
  t.same(await issues({ default: { '.x': 1 } }), [{ path: 'chain[0].options.default..x', message: notAPath('.x') }])
  t.same(await issues({ remove: ['ok', 'metas.'] }), [{ path: 'chain[0].options.remove[1]', message: notAPath('metas.') }])
  t.same(await issues({ replace: [{ path: '', pattern: 'a', replacement: 'b' }] }),
    [{ path: 'chain[0].options.replace[0].path', message: notAPath('') }])
  t.same(await issues({ replace: [{ path: 'a', pattern: 'ok', replacement: '' }, { path: 'a', pattern: '(', replacement: 'b' }] }),
    [{ path: 'chain[0].options.replace[1].pattern', message: 'Invalid regular expression: /(/g: Unterminated group' }])
  t.same(await issues({ replace: [{ path: 'a', pattern: 'x' }] }),
    [{ path: 'chain[0].options.replace[0].replacement', message: 'missing: expected string' }])
  t.same(await issues({ rename: {} }), [{ path: 'chain[0].options.rename', message: 'unknown key' }])
})

t.test('a value or a path nested more than 8 levels is a config error: what a step writes stays well inside the content depth bound', async t => {
  const nest = (levels: number): unknown => levels === 0 ? 'x' : { a: nest(levels - 1) }
  const deepPath = Array.from({ length: 9 }, (_, i) => `k${i}`).join('.')
  t.same(await configIssues(t, rewrite({ set: { x_note: nest(9), [deepPath]: 1 } }, { ops: ['NewProxy'] })), [
    { path: 'chain[0].options.set.x_note', message: 'the value nests deeper than 8 levels (frps content is 3 deep)' },
    { path: `chain[0].options.set.${deepPath}`, message: `${deepPath} has more than 8 parts (frps content is 3 deep)` }
  ])
  const gw = await startGateway(t, rewrite({ set: { x_note: nest(8), 'k0.k1.k2.k3.k4.k5.k6.k7': 1 } }, { ops: ['NewProxy'] }))
  const r = await gw.call('NewProxy', { proxy_name: 'alice.web', proxy_type: 'http' })
  t.equal(r.body.unchange, false, 'eight levels are written')
  t.same(r.body.content.x_note, nest(8))
})
