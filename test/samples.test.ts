import t from 'tap'
import { loadSamples, type Sample } from './helpers/fixtures.js'
import { startGateway } from './helpers/gateway.js'

// A chain that rejects some calls, modifies some and leaves the rest alone.
const config = {
  chain: [
    { name: 'no-bob', plugin: 'reject', ops: ['Login'], when: { users: ['bob'] }, options: { reason: 'bob is suspended' } },
    { name: 'tag-login', plugin: 'metas', ops: ['Login'], options: { set: { gateway: 'gw-1', login_ip: '{{client_ip}}' } } },
    {
      name: 'ports', plugin: 'reject', ops: ['NewProxy'],
      when: { proxyTypes: ['tcp', 'udp'], not: { remotePorts: [0, '6000-7000'] } },
      options: { reason: 'port {{content.remote_port}} not allowed' }
    },
    { name: 'http-host', plugin: 'rewrite', ops: ['NewProxy'], when: { proxyTypes: ['http'] }, options: { set: { host_header_rewrite: '{{proxy_name}}.internal' } } },
    { name: 'v6-visitors', plugin: 'reject', ops: ['NewUserConn'], when: { remoteCidrs: ['2001:db8::/32'] }, options: { reason: 'visitor {{remote_ip}} blocked' } },
    { name: 'close-reject', plugin: 'reject', ops: ['CloseProxy'] },
    { name: 'team', plugin: 'metas', ops: ['Ping', 'NewWorkConn'], options: { scope: 'user', set: { team: 'blue' } } }
  ]
}

type Expect = { reject: string } | { modify: (c: Record<string, any>) => Record<string, any> } | 'unchanged'

// The content a modifying answer must carry: built from the request by spreading, so key order is the request's.
const loginTagged = (ip: string) => (c: Record<string, any>) => ({ ...c, metas: { ...c.metas, gateway: 'gw-1', login_ip: ip } })
const teamBlue = (c: Record<string, any>) => ({ ...c, user: { ...c.user, metas: { ...c.user.metas, team: 'blue' } } })
const httpHost = (c: Record<string, any>) => ({ ...c, host_header_rewrite: `${c.proxy_name as string}.internal` })

const expectations: Record<string, Expect[]> = {
  'frps-0.33.0-requests.jsonl': [
    { modify: loginTagged('') }, { modify: httpHost }, { reject: 'port 16000 not allowed' }, { modify: loginTagged('') },
    'unchanged', 'unchanged', { reject: 'bob is suspended' }, 'unchanged', 'unchanged', { reject: 'port 16053 not allowed' }
  ],
  'frps-0.41.0-requests.jsonl': [
    // [1] is the NewWorkConn frps 0.41 sent as Ping: NewWorkConn steps run on it
    { reject: 'bob is suspended' }, { modify: teamBlue }, { reject: 'port 16000 not allowed' }, { reject: 'port 16053 not allowed' },
    { modify: httpHost }, 'unchanged', 'unchanged', 'unchanged', 'unchanged', 'unchanged'
  ],
  'frps-current-shapes.jsonl': [
    { modify: loginTagged('203.0.113.7') }, { modify: loginTagged('2001:db8::7') }, 'unchanged', 'unchanged', { modify: httpHost },
    'unchanged', 'unchanged', 'unchanged', 'unchanged', 'unchanged', 'unchanged', { reject: 'visitor 2001:db8::9 blocked' }, 'unchanged'
  ]
}

function expectedRaw (sample: Sample, expect: Expect): string {
  if (expect === 'unchanged') return '{"reject":false,"unchange":true}'
  if ('reject' in expect) return `{"reject":true,"reject_reason":${JSON.stringify(expect.reject)},"unchange":true}`
  return `{"reject":false,"unchange":false,"content":${JSON.stringify(expect.modify(sample.body.content))}}`
}

for (const [file, expects] of Object.entries(expectations)) {
  t.test(`replays ${file} with exact answers`, async t => {
    const samples = loadSamples(file)
    t.equal(samples.length, expects.length, 'one expectation per sample')
    const gw = await startGateway(t, config)
    const counts = new Map<string, number>()
    for (const [i, sample] of samples.entries()) {
      const res = await gw.app.inject({
        method: 'POST',
        url: `/handler?${sample.query}`,
        headers: sample.headers ?? { 'content-type': 'application/json' },
        payload: JSON.stringify(sample.body)
      })
      const label = `${i}: ${sample.body.op} ${sample.note ?? JSON.stringify(sample.body.content).slice(0, 80)}`
      t.equal(res.statusCode, 200, label)
      t.equal(res.body, expectedRaw(sample, expects[i]), label)
      // a NewWorkConn that frps 0.41 sent as Ping counts as NewWorkConn
      const op = sample.body.op === 'Ping' && 'run_id' in sample.body.content ? 'NewWorkConn' : sample.body.op
      const expect = expects[i]
      const outcome = expect === 'unchanged' ? 'allow' : 'reject' in expect ? (op === 'CloseProxy' ? 'allow' : 'reject') : 'modify'
      counts.set(`${op}/${outcome}`, (counts.get(`${op}/${outcome}`) ?? 0) + 1)
    }
    for (const [key, n] of counts) {
      const [op, outcome] = key.split('/')
      t.equal(await gw.metric('frp_gateway_requests_total', { op, outcome }), n, `requests_total ${key}`)
    }
  })
}

t.test('frps headers reach the log: every line of a call carries its reqid', async t => {
  const gw = await startGateway(t, config)
  const [login] = loadSamples('frps-0.41.0-requests.jsonl')
  await gw.app.inject({ method: 'POST', url: `/handler?${login.query}`, headers: login.headers, payload: JSON.stringify(login.body) })
  const lines = gw.logs.filter(l => l.msg === 'call')
  t.equal(lines.length, 1)
  t.equal(lines[0].reqid, login.headers?.['x-frp-reqid'])
  t.equal(lines[0].step, 'no-bob')
})
