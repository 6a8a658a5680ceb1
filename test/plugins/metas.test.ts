import t from 'tap'
import { loadSamples } from '../helpers/fixtures.js'
import { assertNoPollution, configIssues, startGateway } from '../helpers/gateway.js'

const ALLOW = { reject: false, unchange: true }
const modified = (content: unknown) => ({ reject: false, unchange: false, content })
const metasStep = (options: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
  ({ chain: [{ name: 'm', plugin: 'metas', ...extra, options }] })

const samples = loadSamples('frps-current-shapes.jsonl')
const LOGIN = samples[0].body.content // metas {token: abc, team: blue}, client_address 203.0.113.7:51234
const PROXY = samples[3].body.content // user.metas {token, team}, metas {owner: ops}
const PING = samples[8].body.content // user.metas {token, team}

t.test('set: templates, added after the keys already there', async t => {
  const gw = await startGateway(t, metasStep({ set: { region: 'eu-1', login_ip: '{{client_ip}}', team: '{{metas.team}}-x' } }))
  const r = await gw.call('Login', LOGIN)
  t.equal(r.raw, JSON.stringify(modified({ ...LOGIN, metas: { token: 'abc', team: 'blue-x', region: 'eu-1', login_ip: '203.0.113.7' } })))
})

t.test('default: only when absent', async t => {
  const gw = await startGateway(t, metasStep({ default: { team: 'red', plan: 'free', gone: 'back' } }))
  t.same((await gw.call('Login', { ...LOGIN, metas: { team: 'blue' } })).body,
    modified({ ...LOGIN, metas: { team: 'blue', plan: 'free', gone: 'back' } }))
  t.same((await gw.call('Login', { ...LOGIN, metas: { team: '', plan: 'pro', gone: 'x' } })).body, ALLOW, 'an empty string is a value')
  t.same((await gw.call('Login', { user: 'a', metas: null })).body, modified({ user: 'a', metas: { team: 'red', plan: 'free', gone: 'back' } }))
  t.same((await gw.call('Login', { user: 'a' })).body, modified({ user: 'a', metas: { team: 'red', plan: 'free', gone: 'back' } }))
})

t.test('remove', async t => {
  const gw = await startGateway(t, metasStep({ remove: ['token', 'absent'] }))
  t.same((await gw.call('Login', LOGIN)).body, modified({ ...LOGIN, metas: { team: 'blue' } }))
  t.same((await gw.call('Login', { user: 'a', metas: { team: 'blue' } })).body, ALLOW, 'nothing to remove')
  t.same((await gw.call('Login', { user: 'a', metas: null })).body, ALLOW)
  t.same((await gw.call('Login', { user: 'a' })).body, ALLOW)
})

t.test('set, default and remove together, on other keys', async t => {
  const gw = await startGateway(t, metasStep({ set: { a: '1', b: '2' }, default: { c: '3' }, remove: ['token'] }))
  t.same((await gw.call('Login', LOGIN)).body, modified({ ...LOGIN, metas: { team: 'blue', a: '1', b: '2', c: '3' } }))
})

t.test('a value equal to what is there is no change', async t => {
  const gw = await startGateway(t, metasStep({ set: { team: 'blue' }, default: { token: 'other' }, remove: ['nope'] }))
  t.equal((await gw.call('Login', LOGIN)).raw, '{"reject":false,"unchange":true}')
  t.equal((await gw.call('Ping', PING)).raw, '{"reject":false,"unchange":true}')
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'Login', step: 'm', decision: 'allow' }), 1)
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'Login', step: 'm', decision: 'modify' }), undefined)
})

t.test('scope auto: Login metas, NewProxy proxy metas, user.metas elsewhere', async t => {
  const gw = await startGateway(t, metasStep({ set: { k: 'v' } }))
  const withUserMeta = (c: Record<string, any>) => ({ ...c, user: { ...c.user, metas: { ...c.user.metas, k: 'v' } } })
  t.same((await gw.call('Login', LOGIN)).body, modified({ ...LOGIN, metas: { ...LOGIN.metas, k: 'v' } }))
  t.same((await gw.call('NewProxy', PROXY)).body, modified({ ...PROXY, metas: { owner: 'ops', k: 'v' } }))
  for (const i of [8, 9, 10, 11]) {
    const { op, content } = samples[i].body
    t.same((await gw.call(op, content)).body, modified(withUserMeta(content)), `${op} ${i}`)
  }
  t.same((await gw.call('CloseProxy', samples[7].body.content)).body, ALLOW, 'CloseProxy: frps ignores the answer')
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'CloseProxy', step: 'm', decision: 'modify' }), 1, 'though the step modified')
  const np = loadSamples('frps-0.41.0-requests.jsonl')[3].body
  t.equal(np.content.metas, null)
  t.same((await gw.call(np.op, np.content)).body, modified({ ...np.content, metas: { k: 'v' } }), 'proxy metas null')
  t.same((await gw.call('Ping', {})).body, modified({ user: { metas: { k: 'v' } } }), 'no user at all')
})

t.test('scope user: the client metas on every op', async t => {
  const gw = await startGateway(t, metasStep({ scope: 'user', set: { k: 'v' } }))
  t.same((await gw.call('Login', LOGIN)).body, modified({ ...LOGIN, metas: { ...LOGIN.metas, k: 'v' } }))
  t.same((await gw.call('NewProxy', PROXY)).body, modified({ ...PROXY, user: { ...PROXY.user, metas: { ...PROXY.user.metas, k: 'v' } } }))
  t.same((await gw.call('Ping', PING)).body, modified({ ...PING, user: { ...PING.user, metas: { ...PING.user.metas, k: 'v' } } }))
})

t.test('scope proxy: NewProxy metas only', async t => {
  const gw = await startGateway(t, metasStep({ scope: 'proxy', set: { k: 'v' } }))
  t.same((await gw.call('NewProxy', PROXY)).body, modified({ ...PROXY, metas: { owner: 'ops', k: 'v' } }))
  t.same((await gw.call('NewProxy', { proxy_name: 'p' })).body, modified({ proxy_name: 'p', metas: { k: 'v' } }))
  t.same((await gw.call('Login', LOGIN)).body, ALLOW)
  t.same((await gw.call('Ping', PING)).body, ALLOW)
  t.same((await gw.call('NewUserConn', samples[11].body.content)).body, ALLOW)
})


t.test('__proto__ and constructor keys in incoming content are plain keys', async t => {
  const gw = await startGateway(t, metasStep({ set: { added: '{{metas.__proto__}}/{{metas.constructor}}' } }))
  const content = JSON.parse('{"user":"a","__proto__":{"polluted":"yes"},"metas":{"__proto__":"p","constructor":"c","team":"blue"}}')
  const r = await gw.call('Login', content)
  t.equal(r.raw, '{"reject":false,"unchange":false,"content":{"user":"a","__proto__":{"polluted":"yes"},' +
    '"metas":{"__proto__":"p","constructor":"c","team":"blue","added":"p/c"}}}')
  assertNoPollution(t, ['polluted', 'x', 'p', 'c'])
  const scoped = await startGateway(t, metasStep({ scope: 'user', set: { k: 'v' } }))
  const ping = JSON.parse('{"user":{"__proto__":{"polluted":"yes"},"metas":{"constructor":"c"}}}')
  t.equal((await scoped.call('Ping', ping)).raw,
    '{"reject":false,"unchange":false,"content":{"user":{"__proto__":{"polluted":"yes"},"metas":{"constructor":"c","k":"v"}}}}')
  assertNoPollution(t, ['polluted', 'x', 'p', 'c'])
})

t.test('__proto__ and constructor as option keys are plain keys', async t => {
  const set = JSON.parse('{"__proto__":"p","constructor":"c","prototype":"x"}')
  const gw = await startGateway(t, metasStep({ set, default: JSON.parse('{"toString":"d","hasOwnProperty":"h"}') }))
  const r = await gw.call('Login', { user: 'a', metas: { team: 'blue' } })
  t.equal(r.raw, '{"reject":false,"unchange":false,"content":{"user":"a","metas":' +
    '{"team":"blue","__proto__":"p","constructor":"c","prototype":"x","toString":"d","hasOwnProperty":"h"}}}')
  t.same(Object.keys(r.body.content.metas), ['team', '__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty'])
  assertNoPollution(t, ['polluted', 'x', 'p', 'c'])

  const again = await gw.call('Login', r.body.content)
  t.equal(again.raw, '{"reject":false,"unchange":true}', 'the same keys again: no change')

  const remover = await startGateway(t, metasStep({ remove: ['__proto__', 'constructor'] }))
  const cleaned = await remover.call('Login', { user: 'a', metas: JSON.parse('{"__proto__":"p","constructor":"c","team":"blue"}') })
  t.equal(cleaned.raw, '{"reject":false,"unchange":false,"content":{"user":"a","metas":{"team":"blue"}}}')
  t.equal((await remover.call('Login', { user: 'a', metas: { team: 'blue' } })).raw, '{"reject":false,"unchange":true}',
    'inherited members are not own keys to remove')
  assertNoPollution(t, ['polluted', 'x', 'p', 'c'])
})

t.test('bad options fail at start, naming the path', async t => {
  const issues = async (options: Record<string, unknown>) => await configIssues(t, metasStep(options))
  const unknownName = (name: string) => `unknown template name {{${name}}}: expected one of op, reqid, user, run_id, client_ip, ` +
    'remote_ip, proxy_name, proxy_type, now, step, metas.KEY, proxy_metas.KEY, content.PATH'
  t.same(await issues({ set: { ok: '{{user}}', region: '{{regio}}' } }), [{ path: 'chain[0].options.set.region', message: unknownName('regio') }])
  t.same(await issues({ default: { k: 'a {{user' } }), [{ path: 'chain[0].options.default.k', message: 'unclosed "{{" at position 2 in template "a {{user"' }])
  t.same(await issues({ set: { k: 1 } }), [{ path: 'chain[0].options.set.k', message: 'Invalid input: expected string, received number' }])
  t.same(await issues({ set: JSON.parse('{"__proto__":1}') }), [{ path: 'chain[0].options.set.__proto__', message: 'Invalid input: expected string, received number' }])
  t.same(await issues({ remove: 'token' }), [{ path: 'chain[0].options.remove', message: 'Invalid input: expected array, received string' }])
  t.same(await issues({ scope: 'client' }), [{ path: 'chain[0].options.scope', message: 'Invalid option: expected one of "auto"|"user"|"proxy"' }])
  t.same(await issues({ sett: {} }), [{ path: 'chain[0].options.sett', message: 'unknown key' }])
  const removedAndSet = (key: string, by: string) => `"${key}" is removed here and set by ${by}: remove runs last, so that value is never sent; keep one of them`
  t.same(await issues({ set: { a: '1', b: '2' }, default: { c: '3', d: '4' }, remove: ['token', 'b', 'c'] }), [
    { path: 'chain[0].options.remove[1]', message: removedAndSet('b', 'options.set.b') },
    { path: 'chain[0].options.remove[2]', message: removedAndSet('c', 'options.default.c') }
  ], 'a key set (or defaulted) and removed: the value is dead configuration')
  t.same(await issues({ set: JSON.parse('{"__proto__":"x"}'), default: { k: 'y' }, remove: ['k', '__proto__'] }), [
    { path: 'chain[0].options.remove[0]', message: removedAndSet('k', 'options.default.k') },
    { path: 'chain[0].options.remove[1]', message: removedAndSet('__proto__', 'options.set.__proto__') }
  ])
  const setAndDefault = (key: string) => `"${key}" is set by options.set.${key} on every call, so this default never applies; keep one of them`
  t.same(await issues({ set: { k: 'x' }, default: { k: 'y' }, remove: ['k'] }), [
    { path: 'chain[0].options.remove[0]', message: removedAndSet('k', 'options.set.k and options.default.k') },
    { path: 'chain[0].options.default.k', message: setAndDefault('k') }
  ])
  t.same(await issues({ set: { a: '1', k: '{{user}}' }, default: { k: 'anonymous', b: '2' } }), [{ path: 'chain[0].options.default.k', message: setAndDefault('k') }],
    'a key set and defaulted: the default is dead configuration')
  t.same(await configIssues(t, metasStep({ scope: 'proxy', set: { k: 'v' } }, { ops: ['Login', 'Ping'] })), [{
    path: 'chain[0].options.scope', message: "scope proxy acts on NewProxy only, and the step's ops (Login, Ping) have none: it would never change anything"
  }])
})
