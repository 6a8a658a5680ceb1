import t from 'tap'
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

t.test('every name of the template list', async t => {
  t.equal(render('{{op}}', 'Login', LOGIN), 'Login')
  t.equal(render('{{reqid}}', 'Login', LOGIN), '09a94d93cea3706b')
  t.equal(render('{{step}}', 'Login', LOGIN), 'my-step')
  t.equal(render('{{user}}', 'Login', LOGIN), 'alice', 'Login: user')
  t.equal(render('{{user}}', 'NewProxy', NEW_PROXY), 'bob', 'other ops: user.user')
  t.equal(render('{{run_id}}', 'Login', LOGIN), 'run-login')
  t.equal(render('{{run_id}}', 'NewProxy', NEW_PROXY), 'run-bob')
  t.equal(render('{{client_ip}}', 'Login', LOGIN), '2001:db8::7', 'without brackets and port')
  t.equal(render('{{client_ip}}', 'Login', { client_address: '203.0.113.7:51234' }), '203.0.113.7')
  t.equal(render('{{remote_ip}}', 'NewUserConn', USER_CONN), '127.0.0.1')
  t.equal(render('{{remote_ip}}', 'NewUserConn', { remote_addr: '[2001:db8::9]:40000' }), '2001:db8::9')
  t.equal(render('{{proxy_name}}', 'NewProxy', NEW_PROXY), 'bob.web')
  t.equal(render('{{proxy_type}}', 'NewUserConn', USER_CONN), 'tcp')
  t.equal(render('{{metas.team}}', 'Login', LOGIN), 'blue', 'Login: metas')
  t.equal(render('{{metas.plan}}', 'NewProxy', NEW_PROXY), 'pro', 'other ops: user.metas')
  t.equal(render('{{metas.owner}}', 'NewProxy', NEW_PROXY), '', 'metas never means the proxy metas')
  t.equal(render('{{proxy_metas.owner}}', 'NewProxy', NEW_PROXY), 'ops')
  t.equal(render('{{proxy_metas.team}}', 'Login', LOGIN), '', 'proxy_metas only on NewProxy')
  t.equal(render('{{content.proxy_name}}', 'NewProxy', NEW_PROXY), 'bob.web')
  t.equal(render('{{content.user.metas.plan}}', 'NewProxy', NEW_PROXY), 'pro')
  t.equal(render('{{content.locations.1}}', 'NewProxy', NEW_PROXY), '/api', 'array index')
  t.equal(render('{{content.locations}}', 'NewProxy', NEW_PROXY), '["/","/api"]', 'objects render as JSON')
  t.equal(render('{{content.headers}}', 'NewProxy', NEW_PROXY), '{"X-A":"1"}')
  t.equal(render('{{content.remote_port}}', 'NewProxy', NEW_PROXY), '0')
  t.equal(render('{{content.use_encryption}}', 'NewProxy', NEW_PROXY), 'false')
  t.equal(render('{{content.client_spec.type}}', 'Login', LOGIN), 'ssh')
  t.equal(render('{{retry_after}}', 'Login', LOGIN, { retryAfter: 42 }, ['retry_after']), '42')
})

t.test('now is unix seconds', async t => {
  const before = Math.floor(Date.now() / 1000)
  const now = Number(render('{{now}}', 'Ping', {}))
  const after = Math.floor(Date.now() / 1000)
  t.ok(now >= before && now <= after, `${now} within [${before}, ${after}]`)
  t.match(render('t={{now}}', 'Ping', {}), /^t=\d{10}$/)
})

t.test('missing values render as an empty string', async t => {
  t.equal(render('[{{user}}]', 'Ping', {}), '[]')
  t.equal(render('[{{user}}]', 'Login', { user: null }), '[]')
  t.equal(render('[{{run_id}}]', 'NewWorkConn', { run_id: 'top-level' }), '[]', 'run_id is the client\'s: user.run_id')
  t.equal(render('[{{client_ip}}]', 'NewProxy', NEW_PROXY), '[]', 'client_ip only on Login')
  t.equal(render('[{{client_ip}}]', 'Login', {}), '[]')
  t.equal(render('[{{remote_ip}}]', 'Login', LOGIN), '[]', 'remote_ip only on NewUserConn')
  t.equal(render('[{{proxy_name}}|{{proxy_type}}]', 'Login', LOGIN), '[|]')
  t.equal(render('[{{metas.nope}}]', 'Login', LOGIN), '[]')
  t.equal(render('[{{metas.team}}]', 'Ping', { user: { user: 'a', metas: null } }), '[]')
  t.equal(render('[{{proxy_metas.x}}]', 'NewProxy', { metas: null }), '[]')
  t.equal(render('[{{content.a.b.c}}]', 'Login', {}), '[]')
  t.equal(render('[{{content.locations.9}}]', 'NewProxy', NEW_PROXY), '[]')
  t.equal(render('[{{retry_after}}]', 'Login', {}, {}, ['retry_after']), '[]')
})

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
