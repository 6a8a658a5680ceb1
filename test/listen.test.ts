import { readFileSync } from 'node:fs'
import { Agent, request } from 'undici'
import t from 'tap'
import { configFile, runCli, serveCli } from './helpers/cli.js'
import { makeCerts } from './helpers/tls.js'
import { loadSamples } from './helpers/fixtures.js'

const chain = [{ name: 'no-eve', plugin: 'reject', ops: ['Login'], when: { users: ['eve'] } }]

t.test('admin listener: metrics and health apart from the RPC port', async t => {
  const gw = await serveCli(['--config', configFile({ listen: { port: 0 }, admin: { port: 0 }, chain })], t, 2)
  const [rpc, admin] = gw.urls
  t.not(rpc, admin)
  const call = await fetch(`${rpc}/handler?op=Login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"op":"Login","content":{"user":"eve"}}' })
  t.same(await call.json(), { reject: true, reject_reason: 'rejected by no-eve', unchange: true })
  t.match(await (await fetch(`${admin}/metrics`)).text(), /frp_gateway_requests_total\{op="Login",outcome="reject"\} 1/)
  t.same(await (await fetch(`${admin}/healthz`)).json(), { status: 'ok' })
  t.same(await (await fetch(`${admin}/readyz`)).json(), { status: 'ready' })
  for (const path of ['/metrics', '/healthz', '/readyz']) t.equal((await fetch(`${rpc}${path}`)).status, 404, `${path} is not on the RPC port`)
  t.equal((await fetch(`${admin}/handler?op=Login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"op":"Login","content":{}}' })).status, 404, 'the RPC is not on the admin port')
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
})

t.test('listen.tls: frps-shaped calls over https with a certificate made at test time', async t => {
  const certs = await makeCerts(t)
  const cert = configFile(certs.cert, 'server.pem')
  const key = configFile(certs.key, 'server.key')
  const gw = await serveCli(['--config', configFile({ listen: { port: 0, tls: { cert, key } }, chain })], t)
  t.match(gw.url, /^https:\/\/127\.0\.0\.1:\d+$/)
  const ca = readFileSync(certs.caFile, 'utf8')
  const agent = new Agent({ connect: { ca } })
  t.teardown(async () => await agent.close())
  for (const sample of loadSamples('frps-0.41.0-requests.jsonl').slice(0, 3)) {
    const res = await request(`${gw.url}/handler?${sample.query}`, { method: 'POST', dispatcher: agent, headers: sample.headers, body: JSON.stringify(sample.body) })
    t.equal(res.statusCode, 200)
    t.same(await res.body.json(), { reject: false, unchange: true }, sample.body.op)
  }
  const eve = await request(`${gw.url}/handler?op=Login`, { method: 'POST', dispatcher: agent, headers: { 'content-type': 'application/json' }, body: '{"op":"Login","content":{"user":"eve"}}' })
  t.same(await eve.body.json(), { reject: true, reject_reason: 'rejected by no-eve', unchange: true })
  const untrusted = new Agent()
  t.teardown(async () => await untrusted.close())
  await t.rejects(request(`${gw.url}/healthz`, { dispatcher: untrusted }), 'a client without the CA refuses the certificate')
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
})

t.test('listen.tls with an unreadable key fails to start with exit 1', async t => {
  const file = configFile({ listen: { port: 0, tls: { cert: '/nonexistent/cert.pem', key: '/nonexistent/key.pem' } }, chain })
  const res = await runCli(['--config', file])
  t.equal(res.code, 1)
  t.match(res.stderr, /\/nonexistent\/cert\.pem/)
})
