import t, { type Test } from 'tap'
import type { Content, Op } from '../src/protocol.js'
import { compileTemplate, isConstantTemplate, type TemplateContext } from '../src/template.js'

const LOGIN: Content = {
  version: '0.70.1', user: 'alice', run_id: 'run-login', metas: { team: 'blue', token: 'abc' },
  client_address: '[2001:db8::7]:40022', pool_count: 1, client_spec: { type: 'ssh' }
}
const NEW_PROXY: Content = {
  user: { user: 'bob', metas: { plan: 'pro' }, run_id: 'run-bob' }, proxy_name: 'bob.web', proxy_type: 'http',
  metas: { owner: 'ops' }, locations: ['/', '/api'], remote_port: 0, use_encryption: false, headers: { 'X-A': '1' }
}
const USER_CONN: Content = { user: { user: 'carol', run_id: 'run-carol' }, proxy_name: 'carol.ssh', proxy_type: 'tcp', remote_addr: '127.0.0.1:54738' }

const render = (source: string, op: Op, content: Content, ctx: Partial<TemplateContext> = {}, extra?: string[]): string =>
  compileTemplate(source, { step: 'my-step', extra })(content, { op, reqid: '09a94d93cea3706b', ...ctx })

// [template, op, content, expected]: retry_after is allowed here, as in a rate-limit reason
type Case = [string, Op, Content, string]
const renderAll = (t: Test, cases: Case[], retryAfter?: number) => {
  for (const [source, op, content, expected] of cases) {
    t.equal(render(source, op, content, { retryAfter }, ['retry_after']), expected, `${source} on ${op}`)
  }
}

t.test('every name of the template list', async t => renderAll(t, [
  ['{{op}}', 'Login', LOGIN, 'Login'],
  ['{{reqid}}', 'Login', LOGIN, '09a94d93cea3706b'],
  ['{{step}}', 'Login', LOGIN, 'my-step'],
  ['{{user}}', 'Login', LOGIN, 'alice'], // Login: user
  ['{{user}}', 'NewProxy', NEW_PROXY, 'bob'], // other ops: user.user
  ['{{run_id}}', 'Login', LOGIN, 'run-login'],
  ['{{run_id}}', 'NewProxy', NEW_PROXY, 'run-bob'],
  ['{{client_ip}}', 'Login', LOGIN, '2001:db8::7'], // without brackets and port
  ['{{client_ip}}', 'Login', { client_address: '203.0.113.7:51234' }, '203.0.113.7'],
  ['{{remote_ip}}', 'NewUserConn', USER_CONN, '127.0.0.1'],
  ['{{remote_ip}}', 'NewUserConn', { remote_addr: '[2001:db8::9]:40000' }, '2001:db8::9'],
  ['{{proxy_name}}', 'NewProxy', NEW_PROXY, 'bob.web'],
  ['{{proxy_type}}', 'NewUserConn', USER_CONN, 'tcp'],
  ['{{metas.team}}', 'Login', LOGIN, 'blue'], // Login: metas
  ['{{metas.plan}}', 'NewProxy', NEW_PROXY, 'pro'], // other ops: user.metas
  ['{{metas.owner}}', 'NewProxy', NEW_PROXY, ''], // never the proxy's metas
  ['{{proxy_metas.owner}}', 'NewProxy', NEW_PROXY, 'ops'],
  ['{{proxy_metas.team}}', 'Login', LOGIN, ''], // NewProxy, and NewUserConn and CloseProxy from the registry (below)
  ['{{proxy_metas.owner}}', 'NewUserConn', { ...USER_CONN, metas: { owner: 'x' } }, ''], // never a stray content field
  ['{{content.proxy_name}}', 'NewProxy', NEW_PROXY, 'bob.web'],
  ['{{content.user.metas.plan}}', 'NewProxy', NEW_PROXY, 'pro'],
  ['{{content.locations.1}}', 'NewProxy', NEW_PROXY, '/api'],
  ['{{content.locations}}', 'NewProxy', NEW_PROXY, '["/","/api"]'], // objects render as JSON
  ['{{content.headers}}', 'NewProxy', NEW_PROXY, '{"X-A":"1"}'],
  ['{{content.remote_port}}', 'NewProxy', NEW_PROXY, '0'],
  ['{{content.use_encryption}}', 'NewProxy', NEW_PROXY, 'false'],
  ['{{content.client_spec.type}}', 'Login', LOGIN, 'ssh'],
  ['{{retry_after}}', 'Login', LOGIN, '42']
], 42))

t.test('now is unix seconds', async t => {
  const before = Math.floor(Date.now() / 1000)
  const now = Number(render('{{now}}', 'Ping', {}))
  const after = Math.floor(Date.now() / 1000)
  t.ok(now >= before && now <= after, `${now} within [${before}, ${after}]`)
  t.match(render('t={{now}}', 'Ping', {}), /^t=\d{10}$/)
})

t.test('missing values render as an empty string', async t => renderAll(t, [
  ['[{{user}}]', 'Ping', {}, '[]'],
  ['[{{user}}]', 'Login', { user: null }, '[]'],
  ['[{{run_id}}]', 'NewWorkConn', { run_id: 'top-level' }, '[]'], // the client's: user.run_id
  ['[{{client_ip}}]', 'NewProxy', NEW_PROXY, '[]'], // Login only
  ['[{{client_ip}}]', 'Login', {}, '[]'],
  ['[{{remote_ip}}]', 'Login', LOGIN, '[]'], // NewUserConn only
  ['[{{proxy_name}}|{{proxy_type}}]', 'Login', LOGIN, '[|]'],
  ['[{{metas.nope}}]', 'Login', LOGIN, '[]'],
  ['[{{metas.team}}]', 'Ping', { user: { user: 'a', metas: null } }, '[]'],
  ['[{{proxy_metas.x}}]', 'NewProxy', { metas: null }, '[]'],
  ['[{{content.a.b.c}}]', 'Login', {}, '[]'],
  ['[{{content.locations.9}}]', 'NewProxy', NEW_PROXY, '[]'],
  ['[{{retry_after}}]', 'Ping', {}, '[]']
]))

t.test('names never read through the prototype', async t => {
  t.equal(render('[{{metas.constructor}}|{{metas.toString}}|{{metas.__proto__}}]', 'Login', { metas: {} }), '[||]')
  t.equal(render('[{{content.constructor}}|{{content.user.__proto__}}]', 'NewProxy', NEW_PROXY), '[|]')
  t.equal(render('{{metas.__proto__}}', 'Login', { metas: JSON.parse('{"__proto__":"own"}') }), 'own')
  t.throws(() => render('{{constructor}}', 'Login', {}), { message: /^unknown template name \{\{constructor\}\}/ })
  t.throws(() => render('{{toString}}', 'Login', {}), { message: /^unknown template name \{\{toString\}\}/ })
})

t.test('text around names, spaces inside braces', async t => {
  t.equal(render('user {{ user }} from {{client_ip}}:{{metas.team}}!', 'Login', LOGIN), 'user alice from 2001:db8::7:blue!')
  t.equal(render('{{user}}{{user}}', 'Login', LOGIN), 'alicealice')
  t.equal(render('a }} b', 'Login', LOGIN), 'a }} b', 'a lone }} is text')
})

t.test('constant templates', async t => {
  t.equal(render('plain text', 'Login', LOGIN), 'plain text')
  t.equal(render('', 'Login', LOGIN), '')
  t.ok(isConstantTemplate('plain text'))
  t.ok(isConstantTemplate(''))
  t.ok(isConstantTemplate('a }} b'))
  t.notOk(isConstantTemplate('{{user}}'))
  t.notOk(isConstantTemplate('x {{'))
})

t.test('unknown names and malformed templates throw naming the problem', async t => {
  const known = 'expected one of op, reqid, user, run_id, client_ip, remote_ip, proxy_name, proxy_type, now, step, metas.KEY, proxy_metas.KEY, content.PATH'
  const compile = (source: string, extra?: string[]) => () => compileTemplate(source, { step: 's', extra })
  t.throws(compile('{{nope}}'), { message: `unknown template name {{nope}}: ${known}` })
  t.throws(compile('a {{ User }} b'), { message: `unknown template name {{User}}: ${known}` })
  t.throws(compile('{{retry_after}}'), { message: `unknown template name {{retry_after}}: ${known}` }, 'retry_after only where allowed')
  t.throws(compile('{{}}'), { message: `unknown template name {{}}: ${known}` })
  for (const name of ['metas.', 'proxy_metas.', 'content.', '.x', 'content.a..b', 'content.a.', 'other.x']) {
    t.throws(compile(`{{${name}}}`), { message: `unknown template name {{${name}}}: ${known}` }, name)
  }
  t.throws(compile('{{nope}}', ['retry_after']),
    { message: 'unknown template name {{nope}}: expected one of op, reqid, user, run_id, client_ip, remote_ip, proxy_name, proxy_type, now, step, retry_after, metas.KEY, proxy_metas.KEY, content.PATH' })
  t.throws(compile('hello {{user'), { message: 'unclosed "{{" at position 6 in template "hello {{user"' })
  t.throws(compile('{{user}} and {{'), { message: 'unclosed "{{" at position 13 in template "{{user}} and {{"' })
})

t.test('proxy_metas on NewUserConn and CloseProxy: the registry record read before the chain; empty when none or unreadable', async t => {
  const proxy = { user: 'carol', name: 'carol.ssh', type: 'tcp', run_id: 'run-carol', registered_at: 0, metas: { owner: 'ops', api_key: 'k1' } }
  const tpl = compileTemplate('[{{proxy_metas.owner}}|{{proxy_metas.api_key}}]', { step: 's' })
  const at = (op: Op, p: TemplateContext['proxy']): TemplateContext => ({ op, reqid: 'r', proxy: p })
  t.equal(tpl(USER_CONN, at('NewUserConn', proxy)), '[ops|k1]')
  t.equal(tpl.masked?.(USER_CONN, at('NewUserConn', proxy)), '[ops|[redacted]]', 'a secret-named meta is masked in log lines')
  t.equal(tpl({ proxy_name: 'carol.ssh' }, at('CloseProxy', proxy)), '[ops|k1]')
  t.equal(tpl(USER_CONN, at('NewUserConn', null)), '[|]')
  t.equal(tpl(USER_CONN, at('NewUserConn', 'error')), '[|]')
  t.equal(tpl(USER_CONN, at('NewUserConn', { ...proxy, run_id: 'another-frpc' })), '[|]', 'a record of another client (a NewProxy frps refused): none')
  t.equal(tpl(NEW_PROXY, at('NewProxy', proxy)), '[ops|]', 'NewProxy: its own metas, never a record')
  t.equal(tpl(USER_CONN, at('Ping', proxy)), '[|]')
})
