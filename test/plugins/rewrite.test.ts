import t from 'tap'
import { loadSamples } from '../helpers/fixtures.js'
import { assertNoPollution, configIssues, startGateway } from '../helpers/gateway.js'

const ALLOW = { reject: false, unchange: true }
const modified = (content: unknown) => ({ reject: false, unchange: false, content })
const rewrite = (options: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
  ({ chain: [{ name: 'rw', plugin: 'rewrite', ...extra, options }] })

const old = loadSamples('frps-0.33.0-requests.jsonl')
const WEB = old[1].body.content // http alice.web, locations [/a, /b], remote_port 0, http_pwd p
const SSH = old[2].body.content // tcp alice.ssh, remote_port 16000, metas {id: 123}
const current = loadSamples('frps-current-shapes.jsonl')
const DB = current[3].body.content // tcp alice.db, remote_port absent, use_encryption true

t.test('set: JSON values of every kind, in place', async t => {
  const gw = await startGateway(t, rewrite({
    set: { use_encryption: true, remote_port: 6001, custom_domains: ['x.example'], headers: { 'X-A': '1' }, group: null, subdomain: '' }
  }))
  const r = await gw.call('NewProxy', SSH)
  t.equal(r.raw, JSON.stringify(modified({
    ...SSH, use_encryption: true, group: null, remote_port: 6001, custom_domains: ['x.example'], subdomain: '', headers: { 'X-A': '1' }
  })), 'the whole content, keys where frps had them')
})

t.test('set: templates and nested dotted paths', async t => {
  const gw = await startGateway(t, rewrite({
    set: {
      host_header_rewrite: '{{proxy_name}}.internal',
      'user.metas.seen_by': '{{step}}@{{op}}',
      'metas.owner': '{{user}}',
      'x_future.a.b': 'deep',
      'locations.1': '/v2'
    }
  }))
  t.same((await gw.call('NewProxy', WEB)).body, modified({
    ...WEB,
    user: { ...WEB.user, metas: { ...WEB.user.metas, seen_by: 'rw@NewProxy' } },
    metas: { owner: 'alice' },
    locations: ['/a', '/v2'],
    host_header_rewrite: 'alice.web.internal',
    x_future: { a: { b: 'deep' } }
  }))
})

t.test('default: only when absent or null', async t => {
  const gw = await startGateway(t, rewrite({ default: { remote_port: 7000, group: 'g', subdomain: '{{user}}', 'user.metas.plan': 'free' } }))
  t.same((await gw.call('NewProxy', { remote_port: 0, group: null, user: { user: 'bob', metas: { plan: '' } } })).body,
    modified({ remote_port: 0, group: 'g', user: { user: 'bob', metas: { plan: '' } }, subdomain: 'bob' }), '0 and "" are values')
  t.same((await gw.call('NewProxy', DB)).body, modified({ ...DB, user: { ...DB.user, metas: { ...DB.user.metas, plan: 'free' } }, remote_port: 7000, subdomain: 'alice' }))
  t.same((await gw.call('NewProxy', { remote_port: 1, group: 'x', subdomain: 's', user: { metas: { plan: 'pro' } } })).body, ALLOW)
})

t.test('remove', async t => {
  const gw = await startGateway(t, rewrite({ remove: ['http_pwd', 'user.metas.token', 'nope.deep', 'locations.0'] }))
  const { http_pwd: _pwd, ...rest } = WEB
  t.same((await gw.call('NewProxy', WEB)).body, modified({ ...rest, user: { ...WEB.user, metas: { team: 'blue' } }, locations: ['/b'] }))
  t.same((await gw.call('NewProxy', { proxy_name: 'p' })).body, ALLOW, 'nothing to remove')
})

t.test('replace: regex with groups, every match', async t => {
  const gw = await startGateway(t, rewrite({
    replace: [
      { path: 'proxy_name', pattern: '^(\\w+)\\.(.+)$', replacement: '$2-$1' },
      { path: 'subdomain', pattern: '(?<first>a)(?<second>p)', replacement: '$<second>$<first>' },
      { path: 'http_user', pattern: '[aeiou]', replacement: '_' },
      { path: 'remote_port', pattern: '0', replacement: '1' },
      { path: 'custom_domains.1', pattern: '\\.test$', replacement: '.example' },
      { path: 'missing', pattern: '.*', replacement: 'x' }
    ]
  }))
  t.same((await gw.call('NewProxy', { ...WEB, http_user: 'queue' })).body,
    modified({ ...WEB, proxy_name: 'web-alice', subdomain: 'pap', http_user: 'q____' }), 'a number or an absent field is left alone')
  const site = old[8].body.content
  t.same((await gw.call('NewProxy', site)).body,
    modified({ ...site, proxy_name: 'site-bob', custom_domains: ['a.example.test', 'b.example.example'] }))
})

t.test('edits apply in order: set, default, remove, replace', async t => {
  const gw = await startGateway(t, rewrite({
    replace: [{ path: 'subdomain', pattern: 'new', replacement: 'newer' }],
    remove: ['group'],
    default: { group: 'g', sk: 'k' },
    set: { subdomain: 'new', sk: 's' }
  }))
  t.same((await gw.call('NewProxy', { proxy_name: 'p' })).body, modified({ proxy_name: 'p', subdomain: 'newer', sk: 's' }))
})

t.test('a value equal to what is there is no change', async t => {
  const gw = await startGateway(t, rewrite({
    set: { proxy_type: 'tcp', remote_port: 16000, metas: { id: '123' }, custom_domains: null, 'user.user': '{{user}}' },
    default: { subdomain: 'x' },
    remove: ['absent'],
    replace: [{ path: 'proxy_name', pattern: 'nomatch', replacement: 'y' }]
  }))
  t.equal((await gw.call('NewProxy', SSH)).raw, '{"reject":false,"unchange":true}')
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewProxy', step: 'rw', decision: 'allow' }), 1)
})

t.test('edits that undo each other are no change, and the step counts allow', async t => {
  const gw = await startGateway(t, rewrite({
    set: { bandwidth_limit: '1MB', proxy_name: 'alice.renamed' },
    remove: ['bandwidth_limit'],
    replace: [{ path: 'proxy_name', pattern: 'renamed$', replacement: 'ssh' }]
  }))
  t.equal(SSH.bandwidth_limit, undefined, 'the sample has no bandwidth_limit')
  t.equal((await gw.call('NewProxy', SSH)).raw, '{"reject":false,"unchange":true}')
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewProxy', step: 'rw', decision: 'allow' }), 1)
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewProxy', step: 'rw', decision: 'modify' }), undefined)
})

t.test('a result that breaks the op\'s schema is an error reject naming the step', async t => {
  const gw = await startGateway(t, {
    chain: [
      { name: 'bad-port', plugin: 'rewrite', ops: ['NewProxy'], options: { set: { remote_port: 'x' } } },
      { name: 'after', plugin: 'reject', ops: ['NewProxy'] },
      { name: 'bad-meta', plugin: 'rewrite', ops: ['Login'], options: { set: { 'metas.n': 5 } } },
      { name: 'bad-user', plugin: 'rewrite', ops: ['Ping'], options: { set: { user: '{{user}}' } } }
    ]
  })
  t.equal((await gw.call('NewProxy', SSH)).raw, '{"reject":true,"reject_reason":"frp-plugin-gateway: step bad-port made invalid NewProxy ' +
    'content: content.remote_port: Invalid input: expected number, received string","unchange":true}')
  t.same((await gw.call('Login', { user: 'a' })).body, { reject: true, unchange: true,
    reject_reason: 'frp-plugin-gateway: step bad-meta made invalid Login content: content.metas.n: Invalid input: expected string, received number' })
  t.same((await gw.call('Ping', { user: { user: 'a' } })).body, { reject: true, unchange: true,
    reject_reason: 'frp-plugin-gateway: step bad-user made invalid Ping content: content.user: Invalid input: expected object, received string' })
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewProxy', step: 'bad-port', decision: 'error' }), 1)
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewProxy', step: 'after' }), undefined)
  t.equal(await gw.metric('frp_gateway_requests_total', { op: 'NewProxy', outcome: 'error' }), 1)
  t.equal(await gw.metric('frp_gateway_requests_total', { op: 'Login', outcome: 'error' }), 1)
  t.same(gw.logs.filter(l => l.msg === 'step failed').map(l => [l.step, l.err?.message]), [
    ['bad-port', 'invalid NewProxy content: content.remote_port: Invalid input: expected number, received string'],
    ['bad-meta', 'invalid Login content: content.metas.n: Invalid input: expected string, received number'],
    ['bad-user', 'invalid Ping content: content.user: Invalid input: expected object, received string']
  ])
})

t.test('setting past the end of a list is an error reject naming the step, not a list with holes (null to frps)', async t => {
  const gw = await startGateway(t, rewrite({ set: { 'locations.3': '/x', 'allow_users.1': 'bob' } }))
  t.same((await gw.call('NewProxy', WEB)).body, { reject: true, unchange: true,
    reject_reason: 'frp-plugin-gateway: step rw made invalid NewProxy content: content.locations[2]: Invalid input: expected string, received undefined' })
  t.same((await gw.call('NewProxy', { locations: ['/a', '/b', '/c'], allow_users: ['alice'] })).body,
    modified({ locations: ['/a', '/b', '/c', '/x'], allow_users: ['alice', 'bob'] }), 'the next index appends')
})


t.test('paths through __proto__, constructor and prototype set plain keys', async t => {
  const gw = await startGateway(t, rewrite({
    set: { '__proto__.polluted': 'yes', 'constructor.prototype.polluted': 'yes', 'metas.__proto__': 'p', 'prototype.polluted': '{{user}}' },
    default: { 'metas.constructor': 'c', 'metas.toString': 't' }
  }))
  const r = await gw.call('Login', { user: 'a' })
  t.equal(r.raw, '{"reject":false,"unchange":false,"content":{"user":"a","__proto__":{"polluted":"yes"},' +
    '"constructor":{"prototype":{"polluted":"yes"}},"metas":{"__proto__":"p","constructor":"c","toString":"t"},"prototype":{"polluted":"a"}}}')
  assertNoPollution(t)
  t.equal((await gw.call('Login', r.body.content)).raw, '{"reject":false,"unchange":true}', 'applied again: no change')
  assertNoPollution(t)
})

t.test('incoming __proto__ keys are edited and removed as plain keys', async t => {
  const gw = await startGateway(t, rewrite({
    set: { '__proto__.x': '2' },
    remove: ['metas.__proto__', 'constructor'],
    replace: [{ path: 'metas.prototype', pattern: 'a', replacement: 'b' }]
  }))
  const content = JSON.parse('{"user":"a","__proto__":{"x":"1","y":"1"},"constructor":"c","metas":{"__proto__":"p","prototype":"a","k":"v"}}')
  t.equal((await gw.call('Login', content)).raw,
    '{"reject":false,"unchange":false,"content":{"user":"a","__proto__":{"x":"2","y":"1"},"metas":{"prototype":"b","k":"v"}}}')
  assertNoPollution(t)
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
    [{ path: 'chain[0].options.replace[0].replacement', message: 'Invalid input: expected string, received undefined' }])
  t.same(await issues({ rename: {} }), [{ path: 'chain[0].options.rename', message: 'unknown key' }])
})
