import t from 'tap'
import { startDownstream, until, type ReceivedRequest } from '../helpers/downstream.js'
import { loadSamples } from '../helpers/fixtures.js'
import { configIssues, startGateway } from '../helpers/gateway.js'

const ALLOW = { reject: false, unchange: true }
const rejected = (reason: string) => ({ reject: true, reject_reason: reason, unchange: true })
const modified = (content: unknown) => ({ reject: false, unchange: false, content })

/** What frps's Go client sends, header by header, as the downstream's server reads them. */
const frpsHeaders = (d: { origin: string }, reqid: string, body: string, extra: string[] = []): string[] => [
  'host', d.origin.replace(/^https?:\/\//, ''), 'connection', 'keep-alive',
  'User-Agent', 'Go-http-client/1.1', 'Content-Type', 'application/json', 'X-Frp-Reqid', reqid, ...extra,
  'content-length', String(Buffer.byteLength(body))
]
const envelope = (op: string, content: unknown): string => JSON.stringify({ version: '0.1.0', op, content })
const contentOf = (req: ReceivedRequest): any => JSON.parse(req.body).content

const login = loadSamples('frps-0.41.0-requests.jsonl')[0].body.content

t.test('a chain of built-in steps and two downstreams: each sees the steps before it, its changes reach the steps after it', async t => {
  const auth = await startDownstream(t, req => {
    const content = contentOf(req)
    return { reject: false, unchange: false, content: { ...content, metas: { ...content.metas, auth: 'ok' } } }
  })
  const ports = await startDownstream(t, () => ({ unchange: 'false', content: { metas: { token: null, port_manager: 'pm-1' } } }))
  const gw = await startGateway(t, {
    chain: [
      { name: 'region', plugin: 'metas', ops: ['Login'], options: { set: { region: 'eu-1' } } },
      { name: 'auth', plugin: 'forward', ops: ['Login'], options: { url: auth.url } },
      { name: 'pool', plugin: 'rewrite', ops: ['Login'], options: { set: { pool_count: 5 } } },
      { name: 'ports', plugin: 'forward', ops: ['Login'],
        options: { url: `${ports.origin}/ports?token=k`, merge: 'patch', headers: { Authorization: 'Bearer t0k' } } },
      { name: 'host', plugin: 'rewrite', ops: ['Login'], options: { set: { hostname: 'pm {{metas.port_manager}} auth {{metas.auth}}' } } }
    ]
  })
  const r = await gw.call('Login', login, { reqid: '0123456789abcdef' })

  const seenByAuth = { ...login, metas: { ...login.metas, region: 'eu-1' } }
  t.equal(auth.requests.length, 1)
  const [a] = auth.requests
  t.equal(a.method, 'POST')
  t.equal(a.url, '/handler?op=Login&version=0.1.0')
  t.equal(a.body, envelope('Login', seenByAuth), 'the body as frps would marshal it, with the content the metas step left')
  t.same(a.rawHeaders, frpsHeaders(auth, '0123456789abcdef', a.body))

  const seenByPorts = { ...seenByAuth, metas: { ...seenByAuth.metas, auth: 'ok' }, pool_count: 5 }
  t.equal(ports.requests.length, 1)
  const [p] = ports.requests
  t.equal(p.method, 'POST')
  t.equal(p.url, '/ports?token=k&op=Login&version=0.1.0', 'the url\'s own query is kept')
  t.equal(p.body, envelope('Login', seenByPorts), 'the auth answer and the rewrite before it')
  t.same(p.rawHeaders, frpsHeaders(ports, '0123456789abcdef', p.body, ['Authorization', 'Bearer t0k']), 'the same reqid, the extra header')

  t.same(r.body, modified({
    ...seenByPorts,
    hostname: 'pm pm-1 auth ok',
    metas: { plan: 'pro', region: 'eu-1', auth: 'ok', port_manager: 'pm-1' }
  }), 'the patch reached the step after it and the answer')
  t.equal(await gw.metric('frp_gateway_forward_requests_total', { step: 'auth', result: 'ok' }), 1)
  t.equal(await gw.metric('frp_gateway_forward_requests_total', { step: 'ports', result: 'ok' }), 1)
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'Login', step: 'ports', decision: 'modify' }), 1)
})

t.test('every recorded frps request reaches the downstream as that frps sent it', async t => {
  const down = await startDownstream(t, () => ({}))
  const gw = await startGateway(t, { chain: [{ name: 'fw', plugin: 'forward', options: { url: down.url } }] })
  const samples = [...loadSamples('frps-0.33.0-requests.jsonl'), ...loadSamples('frps-0.41.0-requests.jsonl'), ...loadSamples('frps-current-shapes.jsonl')]
  for (const [i, sample] of samples.entries()) {
    const reqid = sample.headers?.['x-frp-reqid'] ?? `current0000000${String(i).padStart(2, '0')}`
    const r = await gw.call(sample.body.op, sample.body.content, { reqid, query: sample.query })
    t.same(r.body, ALLOW, `${i}: ${sample.body.op}`)
    const got = down.requests[i]
    t.equal(got.url, `/handler?${sample.query}`, `${i}: query`)
    t.equal(got.body, JSON.stringify(sample.body), `${i}: body`)
    for (const [name, value] of Object.entries(sample.headers ?? {})) t.equal(got.headers[name], value, `${i}: ${name}`)
  }
  const mislabelled = samples.filter(s => s.body.op === 'Ping' && 'run_id' in s.body.content)
  t.ok(mislabelled.length > 0, 'the 0.41 NewWorkConn sent as Ping is among them, forwarded with the op frps put on the wire')
  const workConns = mislabelled.length + samples.filter(s => s.body.op === 'NewWorkConn').length
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewWorkConn', step: 'fw', decision: 'allow' }), workConns)
  t.equal(down.connections, 1, 'one keep-alive connection served every call')
})

t.test('answers: forgiving parse, exact results', async t => {
  const content = { user: 'alice', pool_count: 1, metas: { team: 'blue' } }
  const down = await startDownstream(t, () => ({}))
  const gw = await startGateway(t, { chain: [{ name: 'fw', plugin: 'forward', ops: ['Login'], options: { url: down.url } }] })
  const cases: Array<[string, unknown, unknown]> = [
    ['{}', {}, ALLOW],
    ['reject false only', { reject: false }, ALLOW],
    ['unchange false without content', { unchange: false }, ALLOW],
    ['unchange "false" without content', { reject: 'false', unchange: 'false' }, ALLOW],
    ['content null', { unchange: false, content: null }, ALLOW],
    ['unchange true with content', { unchange: true, content: { user: 'bob' } }, ALLOW],
    ['unchange "true" with content', { unchange: 'true', content: { user: 'bob' } }, ALLOW],
    ['reject', { reject: true, reject_reason: 'no entry' }, rejected('no entry')],
    ['reject "true"', { reject: 'true', reject_reason: 'no entry', unchange: 'true' }, rejected('no entry')],
    ['reject without reason', { reject: true }, rejected('rejected by fw')],
    ['reject with content', { reject: true, reject_reason: 'no', unchange: false, content: { user: 'bob' } }, rejected('no')],
    ['whole content back', { unchange: false, content: { ...content, user: 'bob' } }, modified({ ...content, user: 'bob' })],
    ['strings for booleans', { reject: 'false', unchange: 'false', content: { ...content, user: 'bob' } }, modified({ ...content, user: 'bob' })],
    ['the same content in another key order', { unchange: false, content: { metas: { team: 'blue' }, pool_count: 1, user: 'alice' } }, ALLOW]
  ]
  for (const [name, answer, expected] of cases) {
    down.handler = () => answer
    t.same((await gw.call('Login', content)).body, expected, name)
  }
  t.equal(await gw.metric('frp_gateway_forward_requests_total', { step: 'fw', result: 'ok' }), cases.length)

  const failed = rejected('frp-plugin-gateway: step fw failed')
  const invalid: Array<[string, unknown, string]> = [
    ['reject 1', { reject: 1 }, '"reject" is a number, not a boolean'],
    ['unchange "no"', { unchange: 'no', content: {} }, '"unchange" is a string, not a boolean'],
    ['content not an object', { unchange: false, content: ['x'] }, '"content" is not a JSON object'],
    ['wrong types', { unchange: false, content: { ...content, pool_count: 'five' } },
      'the answer makes invalid Login content: content.pool_count: Invalid input: expected number, received string']
  ]
  for (const [name, answer, message] of invalid) {
    down.handler = () => answer
    t.same((await gw.call('Login', content)).body, failed, name)
    t.equal(gw.logs.filter(l => l.msg === 'step failed').at(-1)?.err.message, message, `${name}: logged`)
  }
  t.equal(await gw.metric('frp_gateway_forward_requests_total', { step: 'fw', result: 'invalid_response' }), invalid.length)
})

t.test('a downstream reject ends the chain', async t => {
  const first = await startDownstream(t, () => ({ reject: true, reject_reason: 'user alice is suspended' }))
  const second = await startDownstream(t, () => ({}))
  const gw = await startGateway(t, {
    chain: [
      { name: 'first', plugin: 'forward', options: { url: first.url } },
      { name: 'second', plugin: 'forward', options: { url: second.url } }
    ]
  })
  t.same((await gw.call('NewProxy', { proxy_name: 'alice.ssh' })).body, rejected('user alice is suspended'))
  t.equal(second.requests.length, 0)
  t.same((await gw.call('CloseProxy', { proxy_name: 'alice.ssh' })).body, ALLOW, 'CloseProxy: every step runs, the answer is allow')
  t.equal(second.requests.length, 1)
})

t.test('merge patch: RFC 7396, and no key reaches a prototype', async t => {
  const down = await startDownstream(t, () => '{"unchange":false,"content":{"metas":{"b":null,"c":"3","__proto__":"m"},' +
    '"locations":["/x"],"custom_domains":null,"__proto__":{"polluted":"yes"},"constructor":{"prototype":{"polluted":"yes"}},"prototype":"p"}}')
  const gw = await startGateway(t, { chain: [{ name: 'fw', plugin: 'forward', ops: ['NewProxy'], options: { url: down.url, merge: 'patch' } }] })
  const r = await gw.call('NewProxy', { proxy_name: 'web', metas: { a: '1', b: '2' }, locations: ['/a', '/b'], custom_domains: ['x.example'] })
  t.equal(r.raw, '{"reject":false,"unchange":false,"content":{"proxy_name":"web","metas":{"a":"1","c":"3","__proto__":"m"},' +
    '"locations":["/x"],"__proto__":{"polluted":"yes"},"constructor":{"prototype":{"polluted":"yes"}},"prototype":"p"}}')
  t.equal(({} as Record<string, unknown>).polluted, undefined, 'Object.prototype untouched')

  down.handler = () => '{"unchange":false,"content":{"__proto__":{"x":"1"}}}'
  const body = '{"proxy_name":"web","__proto__":{"x":"1"}}'
  const same = await gw.call('NewProxy', JSON.parse(body))
  t.same(same.body, ALLOW, 'patching a value to what it is, through a __proto__ key, is no change')
  t.equal(down.requests[1].body, `{"version":"0.1.0","op":"NewProxy","content":${body}}`, 'a __proto__ key is forwarded as a plain key')
})

t.test('partial content: replace takes it whole (as frps), patch merges it', async t => {
  const content = { user: { user: 'alice' }, proxy_name: 'alice.ssh', proxy_type: 'tcp', remote_port: 6000 }
  const down = await startDownstream(t, req => {
    const { proxy_name: name, proxy_type: type } = contentOf(req)
    return { unchange: false, content: { proxy_name: name, proxy_type: type, remote_port: 7000 } }
  })
  const gw = await startGateway(t, {
    chain: [
      { name: 'replace', plugin: 'forward', ops: ['NewProxy'], when: { proxyNames: ['replace'] }, options: { url: down.url } },
      { name: 'patch', plugin: 'forward', ops: ['NewProxy'], when: { proxyNames: ['alice.*'] }, options: { url: down.url, merge: 'patch' } }
    ]
  })
  t.same((await gw.call('NewProxy', { ...content, proxy_name: 'replace' })).body,
    modified({ proxy_name: 'replace', proxy_type: 'tcp', remote_port: 7000, user: { user: 'alice' } }), "but the session's user, as frps keeps it")
  t.same((await gw.call('NewProxy', content)).body, modified({ ...content, remote_port: 7000 }))
})

t.test('an answer that changes a field frpc and frps must agree on is an invalid_response naming the field', async t => {
  const sent = { user: { user: 'alice' }, proxy_name: 'alice.db', proxy_type: 'stcp', use_encryption: true, sk: 'k1' }
  let answer: (content: any) => unknown = () => ({})
  const down = await startDownstream(t, req => answer(contentOf(req)))
  const gw = await startGateway(t, {
    chain: [
      { name: 'fw', plugin: 'forward', when: { not: { fields: { group: 'patch' } } }, options: { url: down.url } },
      { name: 'patch', plugin: 'forward', ops: ['NewProxy'], when: { fields: { group: 'patch' } }, options: { url: down.url, merge: 'patch' } }
    ]
  })
  const why = {
    use_encryption: 'frps would encrypt (or not) the stream to frpc where frpc does the opposite: every connection breaks',
    use_compression: 'frps would compress (or not) the stream to frpc where frpc does the opposite: every connection breaks',
    proxy_type: 'frps would serve another kind of proxy than the one frpc runs',
    proxy_name: 'frpc finds its proxy by the name frps answers with (NewProxyResp, StartWorkConn): a renamed proxy never starts',
    sk: "visitors present the secret key the proxy's owner gave them (xtcp peers also encrypt with it): they would be refused"
  }
  const changes: Array<[string, (c: any) => unknown, keyof typeof why]> = [
    ['use_encryption false', c => ({ ...c, use_encryption: false }), 'use_encryption'],
    ['use_encryption dropped', ({ use_encryption: _, ...c }) => c, 'use_encryption'],
    ['use_compression set', c => ({ ...c, use_compression: true }), 'use_compression'],
    ['proxy_type', c => ({ ...c, proxy_type: 'tcp' }), 'proxy_type'],
    ['proxy_name', c => ({ ...c, proxy_name: 'alice.other' }), 'proxy_name'],
    ['sk', c => ({ ...c, sk: 'k2' }), 'sk']
  ]
  for (const [name, change, field] of changes) {
    answer = c => ({ unchange: false, content: change(c) })
    t.same((await gw.call('NewProxy', sent)).body, rejected('frp-plugin-gateway: step fw failed'), name)
    t.match(gw.logs.filter(l => l.msg === 'step failed').at(-1), { step: 'fw', err: { result: 'invalid_response',
      message: `the answer changes ${field}, which frpc and frps must agree on (${why[field]})` } }, `${name}: logged, naming ${field}`)
  }
  t.equal(await gw.metric('frp_gateway_forward_requests_total', { step: 'fw', result: 'invalid_response' }), changes.length)
  t.equal(await gw.metric('frp_gateway_step_decisions_total', { op: 'NewProxy', step: 'fw', decision: 'error' }), changes.length)

  answer = c => ({ unchange: false, content: { ...c, use_compression: false, proxy_type: 'stcp', group: '', remote_port: 6000 } })
  t.same((await gw.call('NewProxy', sent)).body, modified({ ...sent, use_compression: false, group: '', remote_port: 6000 }),
    'false for an absent flag is no change: frps 0.4x+ omits zero values')
  answer = c => ({ unchange: false, content: { ...c, proxy_name: null, use_encryption: false, sk: '' } })
  t.same((await gw.call('NewProxy', { proxy_name: '', proxy_type: 'tcp' })).body,
    modified({ proxy_name: null, proxy_type: 'tcp', use_encryption: false, sk: '' }), 'nor null for "", or "" for absent')
  answer = c => ({ unchange: false, content: { ...c, use_encryption: true } })
  t.same((await gw.call('NewProxy', { proxy_name: 'p', proxy_type: 'tcp' })).body, rejected('frp-plugin-gateway: step fw failed'),
    'true for an absent use_encryption is a change')

  answer = () => ({ content: { use_encryption: null, remote_port: 7000 } })
  t.same((await gw.call('NewProxy', { ...sent, group: 'patch' })).body, rejected('frp-plugin-gateway: step patch failed'), 'patch: null removes it')
  t.match(gw.logs.filter(l => l.msg === 'step failed').at(-1), { step: 'patch', err: { result: 'invalid_response', message: /^the answer changes use_encryption,/ } })
  answer = () => ({ content: { use_compression: false, remote_port: 7000 } })
  t.same((await gw.call('NewProxy', { ...sent, group: 'patch' })).body, modified({ ...sent, group: 'patch', use_compression: false, remote_port: 7000 }))

  answer = c => ({ unchange: false, content: { ...c, proxy_name: 'renamed' } })
  t.same((await gw.call('NewUserConn', { proxy_name: 'alice.db', proxy_type: 'stcp' })).body, modified({ proxy_name: 'renamed', proxy_type: 'stcp' }),
    'frps ignores the content of a NewUserConn answer: no rule there')
})

t.test('outside Login, user.user and user.run_id stay as frps sent them, whatever an answer says (frps keeps its session\'s)', async t => {
  let answer: (content: any) => unknown = () => ({ unchange: true })
  const down = await startDownstream(t, req => answer(contentOf(req)))
  const gw = await startGateway(t, {
    registry: { store: 'memory' },
    chain: [
      { name: 'fw', plugin: 'forward', options: { url: down.url } },
      { name: 'tag', plugin: 'metas', ops: ['NewProxy', 'CloseProxy', 'Ping'], options: { set: { seen: '{{user}}/{{run_id}}' }, scope: 'user' } }
    ]
  })
  const alice = { user: 'alice', run_id: 'r1', metas: { team: 'a' } }
  const seen = { team: 'a', seen: 'alice/r1' }
  const proxy = { user: alice, proxy_name: 'alice.web', proxy_type: 'tcp', remote_port: 6000 }
  let proxies: any[] = []
  const listed = async (): Promise<any[]> => (proxies = (await gw.app.inject({ method: 'GET', url: '/proxies' })).json().proxies)
  const settled = async (n: number): Promise<boolean> => {
    for (let i = 0; i < 100 && (await listed()).length !== n; i++) await new Promise(resolve => setTimeout(resolve, 10))
    return proxies.length === n
  }
  answer = c => ({ unchange: false, content: { ...c, user: { ...c.user, user: 'bob', run_id: 'r9' } } })
  await gw.call('NewProxy', proxy)
  t.ok(await settled(1), 'recorded once')
  t.match(proxies, [{ user: 'alice', name: 'alice.web', run_id: 'r1', remote_port: 6000 }], 'under the user and run_id frps will close it with')
  t.same((await gw.call('CloseProxy', { user: alice, proxy_name: 'alice.web' })).body, ALLOW, 'CloseProxy: frps reads no answer')
  t.ok(await settled(0), "frps's CloseProxy removes it, the answer renaming its user too")

  const cases: Array<[string, string, unknown, (c: any) => unknown]> = [
    ['NewProxy renames the user', 'NewProxy', proxy, c => ({ ...c, user: { ...c.user, user: 'bob' }, remote_port: 7000 })],
    ['NewProxy answers without user', 'NewProxy', proxy, ({ user: _, ...c }) => ({ ...c, remote_port: 7000 })],
    ['NewProxy changes the run_id', 'NewProxy', proxy, c => ({ ...c, user: { ...c.user, run_id: 'r2' }, remote_port: 7000 })],
    ['Ping drops the run_id', 'Ping', { user: alice }, c => ({ ...c, user: { user: 'alice', metas: c.user.metas } })]
  ]
  for (const [name, op, content, change] of cases) {
    answer = c => ({ unchange: false, content: change(c) })
    const expected = { ...change(content) as object, user: { ...alice, metas: seen } }
    t.same((await gw.call(op, content)).body, modified(expected), `${name}: the steps after and frps see the session's user`)
  }
  answer = c => ({ unchange: false, content: { ...c, user: 'carol' } })
  const login = { user: 'alice', run_id: 'r1', privilege_key: 'k', timestamp: 1 }
  t.same((await gw.call('Login', login)).body, modified({ ...login, user: 'carol' }), 'at Login frps takes the user from the answer')
})

t.test('closing the runtime closes the pool and its keep-alive connections', async t => {
  const down = await startDownstream(t, () => ({}))
  const gw = await startGateway(t, { chain: [{ name: 'fw', plugin: 'forward', options: { url: down.url } }] })
  await gw.call('Ping', {})
  t.equal(down.openSockets(), 1, 'kept alive')
  await gw.ref.current.close()
  t.ok(await until(() => down.openSockets() === 0), 'no connection left open')
})

t.test('bad options fail at start, naming the path', async t => {
  const issues = async (options: unknown) => await configIssues(t, { chain: [{ name: 'fw', plugin: 'forward', options }] })
  const url = 'http://127.0.0.1:9100/handler'
  t.same(await issues({ url: 'ftp://127.0.0.1/x' }), [{ path: 'chain[0].options.url', message: 'expected an http:// or https:// URL, got ftp:' }])
  t.same(await issues({ url: '127.0.0.1:9100' }), [{ path: 'chain[0].options.url', message: 'Invalid URL' }])
  t.same(await issues({ url: 'http://127.0.0.1:9100/h?x=1&op=Login' }),
    [{ path: 'chain[0].options.url', message: '?x=1&op=Login has "op", which the gateway sets on every call as frps does: leave it out of the url' }])
  t.same(await issues({ url: 'http://127.0.0.1:9100/h?version=2' }),
    [{ path: 'chain[0].options.url', message: '?version=2 has "version", which the gateway sets on every call as frps does: leave it out of the url' }])
  const kept = await startDownstream(t, () => ({ reject: false, unchange: true }))
  const keeps = await startGateway(t, { chain: [{ name: 'fw', plugin: 'forward', options: { url: `${kept.origin}/h?opt=1&versions=2` } }] })
  t.equal((await keeps.call('Ping', {})).status, 200)
  t.equal(kept.requests[0]?.url, '/h?opt=1&versions=2&op=Ping&version=0.1.0', 'other keys go, op and version after them')
  t.same(await issues({ url: 'http://u:p@127.0.0.1/' }),
    [{ path: 'chain[0].options.url', message: 'credentials in the URL are not sent: put an Authorization header in headers' }])
  t.same(await issues({ url, headers: { 'X-Frp-Reqid': 'x' } }),
    [{ path: 'chain[0].options.headers.X-Frp-Reqid', message: 'the gateway sets this header as frps does; it cannot be replaced' }])
  t.same(await issues({ url, headers: { 'content-type': 'text/plain' } }),
    [{ path: 'chain[0].options.headers.content-type', message: 'the gateway sets this header as frps does; it cannot be replaced' }])
  t.same(await issues({ url, headers: { 'Accept-Encoding': 'gzip' } }),
    [{ path: 'chain[0].options.headers.Accept-Encoding', message: 'the gateway reads answers as they come, uncompressed: it cannot ask for an encoding' }])
  t.same(await issues({ url, headers: { 'X Team': 'a' } }), [{ path: 'chain[0].options.headers.X Team', message: 'not a valid header name' }])
  // undici would send both, and the plugin take either
  t.same(await issues({ url, headers: { Authorization: 'Bearer a', authorization: 'Bearer b' } }),
    [{ path: 'chain[0].options.headers.authorization', message: 'the same header as Authorization (header names ignore case): both would be sent' }])
  t.same(await issues({ url, headers: { 'X-Team': 'a\r\nHost: evil' } }),
    [{ path: 'chain[0].options.headers.X-Team', message: 'the value holds a control character' }])
  t.same(await issues({ url, tls: { verify: false } }), [{ path: 'chain[0].options.tls', message: 'tls applies to https:// URLs only' }])
  // the gateway's own [[httpPlugins]] entry copied into the chain: each call would call the gateway again, a hundred deep
  const self = "is this gateway's own RPC (listen): the step would call the gateway, which would call it again, on every call"
  t.same(await issues({ url: 'http://localhost:9000/handler?a=b' }), [{ path: 'chain[0].options.url', message: `http://localhost:9000/handler ${self}` }])
  t.same(await configIssues(t, { listen: { host: '::', port: 9100 }, chain: [{ name: 'fw', plugin: 'forward', options: { url: 'http://[::1]:9100/handler' } }] }),
    [{ path: 'chain[0].options.url', message: `http://[::1]:9100/handler ${self}` }])
  t.same(await configIssues(t, { listen: { host: '10.0.0.5', port: 9100 }, chain: [{ name: 'fw', plugin: 'forward', options: { url: 'http://10.0.0.5:9100/handler' } }] }),
    [{ path: 'chain[0].options.url', message: `http://10.0.0.5:9100/handler ${self}` }])
  // the same port and path on another host, or on loopback while the gateway listens elsewhere, is another gateway
  for (const [host, to] of [['0.0.0.0', 'http://10.0.0.6:9100/handler'], ['10.0.0.5', 'http://127.0.0.1:9100/handler']]) {
    const gw = await startGateway(t, { listen: { host, port: 9100 }, chain: [{ name: 'fw', plugin: 'forward', options: { url: to } }] })
    t.same(gw.ref.current.chains.Login.map(s => s.name), ['fw'], `${to} from a gateway on ${host}: the step is built`)
  }
  t.same(await issues({ url: 'https://127.0.0.1/', tls: { ca: '/nonexistent/ca.pem' } }),
    [{ path: 'chain[0].options.tls.ca', message: 'ENOENT: no such file or directory, open \'/nonexistent/ca.pem\'' }])
  t.same(await issues({ url: 'https://127.0.0.1/', tls: { ca: new URL(import.meta.url).pathname } }),
    [{ path: 'chain[0].options.tls.ca', message: `${new URL(import.meta.url).pathname} holds no PEM certificate` }])
  t.match(await issues({ url, retries: 6, timeoutMs: 0 }), [{ path: 'chain[0].options.timeoutMs' }, { path: 'chain[0].options.retries' }])
  t.match(await issues({ url, circuitBreaker: { failureThreshold: 0 } }),
    [{ path: 'chain[0].options.circuitBreaker.failureThreshold' }, { path: 'chain[0].options.circuitBreaker.resetAfterMs' }])
  t.same(await issues({ url, timeout: 5 }), [{ path: 'chain[0].options.timeout', message: 'unknown key' }])
})

t.test('an answer with a key frps would read as another field (Go matches keys whatever their case) is an invalid_response naming both', async t => {
  const sent = { user: { user: 'alice', metas: { team: 'blue' } }, proxy_name: 'alice.ssh', proxy_type: 'tcp', remote_port: 6000, sk: 'k1' }
  let extra: Record<string, unknown> = {}
  const down = await startDownstream(t, req => ({ unchange: false, content: { ...contentOf(req), ...extra } }))
  const gw = await startGateway(t, { chain: [{ name: 'fw', plugin: 'forward', ops: ['NewProxy'], options: { url: down.url } }] })
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ PROXY_NAME: 'evil' }, 'content.PROXY_NAME, which frps reads as content.proxy_name'],
    [{ '\u017fk': 'other-secret' }, 'content.\u017fk, which frps reads as content.sk'],
    [{ Remote_Port: 'not a port' }, 'content.Remote_Port, which frps reads as content.remote_port'],
    [{ user: { user: 'alice', metas: { team: 'blue' }, USER: 'eve' } }, 'content.user.USER, which frps reads as content.user.user']
  ]
  for (const [added, named] of cases) {
    extra = added
    t.same((await gw.call('NewProxy', sent)).body, rejected('frp-plugin-gateway: step fw failed'), Object.keys(added)[0])
    t.match(gw.logs.filter(l => l.msg === 'step failed').at(-1), { err: { result: 'invalid_response', message: `the answer has ${named} (Go matches keys whatever their case)` } })
  }
  extra = { user: { user: 'alice', metas: { TEAM: 'red' } }, plugin_x: 1 }
  t.same((await gw.call('NewProxy', sent)).body, modified({ ...sent, ...extra }), 'map keys (metas) and unknown fields are no fields of frps')
})
