import t, { type Test } from 'tap'
import { startDownstream } from '../helpers/downstream.js'
import { startGateway } from '../helpers/gateway.js'
import { makeCerts } from '../helpers/tls.js'

const certs = await makeCerts(t)
const content = { user: 'alice', metas: { team: 'blue' } }
const changed = { reject: false, unchange: false, content: { user: 'alice', metas: { team: 'red' } } }

async function httpsGateway (t: Test, tls: unknown) {
  const down = await startDownstream(t, () => ({ unchange: false, content: changed.content }), { tls: certs })
  const gw = await startGateway(t, { chain: [{ name: 'fw', plugin: 'forward', ops: ['Login'], options: { url: down.url, tls } }] })
  return { down, gw }
}

t.test('https downstream, its CA given: accepted', async t => {
  const { down, gw } = await httpsGateway(t, { ca: certs.caFile })
  t.same((await gw.call('Login', content)).body, changed)
  t.equal(down.requests.length, 1)
  t.equal(down.requests[0].headers['x-frp-reqid'], 'test0000000000ab')
  t.equal(await gw.metric('frp_gateway_forward_requests_total', { step: 'fw', result: 'ok' }), 1)
})

t.test('https downstream, verify on and its CA unknown: refused before any request', async t => {
  const { down, gw } = await httpsGateway(t, {})
  t.same((await gw.call('Login', content)).body, { reject: true, reject_reason: 'frp-plugin-gateway: step fw failed', unchange: true })
  t.equal(down.requests.length, 0)
  t.equal(await gw.metric('frp_gateway_forward_requests_total', { step: 'fw', result: 'connect_error' }), 1)
  t.match(gw.logs.filter(l => l.msg === 'step failed'),
    [{ err: { result: 'connect_error', code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', message: 'request failed: unable to verify the first certificate' } }])
})

t.test('https downstream, verify false: accepted without a CA', async t => {
  const { down, gw } = await httpsGateway(t, { verify: false })
  t.same((await gw.call('Login', content)).body, changed)
  t.equal(down.requests.length, 1)
})
