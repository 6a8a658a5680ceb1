import t from 'tap'
import { loadSamples } from '../helpers/fixtures.js'
import { configIssues, startGateway } from '../helpers/gateway.js'

const rejected = (reason: string) => ({ reject: true, reject_reason: reason, unchange: true })
const ALLOW = { reject: false, unchange: true }

t.test('default reason names the step; every op', async t => {
  const gw = await startGateway(t, { chain: [{ name: 'deny-all', plugin: 'reject' }] })
  for (const op of ['Login', 'NewProxy', 'Ping', 'NewWorkConn', 'NewUserConn']) {
    const r = await gw.call(op, {})
    t.equal(r.raw, '{"reject":true,"reject_reason":"rejected by deny-all","unchange":true}', op)
  }
  t.same((await gw.call('CloseProxy', {})).body, ALLOW, 'frps ignores the CloseProxy answer: allow')
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'CloseProxy', step: 'deny-all', decision: 'reject' }), 1)
  t.equal(await gw.metric('frp_gateway_requests_total', { op: 'Login', outcome: 'reject' }), 1)
})

t.test('reason template', async t => {
  const gw = await startGateway(t, {
    chain: [
      { name: 'ports', plugin: 'reject', ops: ['NewProxy'], when: { not: { remotePorts: ['6000-6999'] } },
        options: { reason: '{{user}}: {{proxy_type}} proxy {{proxy_name}} may not use port {{content.remote_port}} (team {{metas.team}}, {{step}}, {{op}})' } },
      { name: 'visitors', plugin: 'reject', ops: ['NewUserConn'], options: { reason: 'visitor {{remote_ip}} refused by {{metas.missing}}.' } },
      { name: 'login', plugin: 'reject', ops: ['Login'], when: { clientCidrs: ['2001:db8::/32'] }, options: { reason: 'from {{client_ip}}' } },
      { name: 'constant', plugin: 'reject', ops: ['Ping'], options: { reason: 'no pings today' } }
    ]
  })
  const np = loadSamples('frps-0.41.0-requests.jsonl')[2].body
  t.same((await gw.call(np.op, np.content)).body,
    rejected('alice: tcp proxy alice.ssh may not use port 16000 (team blue, ports, NewProxy)'))
  t.same((await gw.call('NewProxy', { ...np.content, remote_port: 6000 })).body, ALLOW)
  t.same((await gw.call('NewUserConn', { remote_addr: '[2001:db8::9]:40000' })).body, rejected('visitor 2001:db8::9 refused by .'))
  t.same((await gw.call('Login', { client_address: '[2001:db8::7]:40022' })).body, rejected('from 2001:db8::7'))
  t.same((await gw.call('Login', { client_address: '203.0.113.7:1' })).body, ALLOW)
  t.same((await gw.call('Ping', {})).body, rejected('no pings today'))
})

t.test('a reason that renders empty names the step: frpc takes an empty error text for success', async t => {
  const gw = await startGateway(t, {
    chain: [
      { name: 'why', plugin: 'reject', ops: ['NewProxy'], options: { reason: '{{metas.why}}' } },
      { name: 'blank', plugin: 'reject', ops: ['Login'], options: { reason: '' } }
    ]
  })
  t.equal((await gw.call('NewProxy', { user: { user: 'a', metas: null } })).raw, '{"reject":true,"reject_reason":"rejected by why","unchange":true}')
  t.same((await gw.call('NewProxy', { user: { user: 'a', metas: { why: 'closed' } } })).body, rejected('closed'))
  t.same((await gw.call('Login', {})).body, rejected('rejected by blank'))
})

t.test('as an access-control list: when with not', async t => {
  const gw = await startGateway(t, {
    chain: [{ name: 'acl', plugin: 'reject', ops: ['Login'], when: { not: { users: ['alice', 'bob'], clientCidrs: ['10.0.0.0/8'] } },
      options: { reason: '{{user}} from {{client_ip}} is not allowed' } }]
  })
  t.same((await gw.call('Login', { user: 'alice', client_address: '10.1.1.1:1' })).body, ALLOW)
  t.same((await gw.call('Login', { user: 'alice', client_address: '11.1.1.1:1' })).body, rejected('alice from 11.1.1.1 is not allowed'))
  t.same((await gw.call('Login', { user: 'carol', client_address: '10.1.1.1:1' })).body, rejected('carol from 10.1.1.1 is not allowed'))
})

t.test('bad options fail at start, naming the path', async t => {
  const issues = async (config: unknown) => await configIssues(t, config)
  const unknownName = (name: string) => `unknown template name {{${name}}}: expected one of op, reqid, user, run_id, client_ip, ` +
    'remote_ip, proxy_name, proxy_type, now, step, metas.KEY, proxy_metas.KEY, content.PATH'
  t.same(await issues({ chain: [{ name: 'r', plugin: 'reject', options: { reason: 'by {{who}}' } }] }),
    [{ path: 'chain[0].options.reason', message: unknownName('who') }])
  t.same(await issues({ chain: [{ name: 'ok', plugin: 'reject' }, { name: 'r', plugin: 'reject', options: { reason: 'by {{step' } }] }),
    [{ path: 'chain[1].options.reason', message: 'unclosed "{{" at position 3 in template "by {{step"' }])
  t.same(await issues({ chain: [{ name: 'r', plugin: 'reject', options: { reason: 'wait {{retry_after}}s' } }] }),
    [{ path: 'chain[0].options.reason', message: unknownName('retry_after') }], 'retry_after is for rate-limit reasons only')
  t.same(await issues({ chain: [{ name: 'r', plugin: 'reject', options: { why: 'x' } }] }),
    [{ path: 'chain[0].options.why', message: 'unknown key' }])
})

t.test('a reason over 1,000 characters reaches frps cut there: frpc drops its session on a message over 10,240 bytes', async t => {
  const gw = await startGateway(t, {
    chain: [{ name: 'why', plugin: 'reject', options: { reason: '{{metas.why}}' } }]
  })
  const answer = async (why: string): Promise<string> => ((await gw.call('Login', { user: 'alice', metas: { why } })).body as { reject_reason: string }).reject_reason
  t.equal(await answer('x'.repeat(1000)), 'x'.repeat(1000), '1,000 characters are sent whole')
  t.equal(await answer('<'.repeat(20_000)), `${'<'.repeat(1000)}...`, 'more are cut at 1,000')
  // frps writes "<" as \u003c: 6 bytes each, 6,003 for the reason, within frpc's 10,240 with the other fields
  t.equal(await answer(`${'a'.repeat(999)}\u{1F600}tail`), `${'a'.repeat(999)}...`, 'never half of a surrogate pair')
})
