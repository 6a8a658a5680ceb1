import { readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { createServer } from 'node:net'
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
  t.same(gw.lines.filter(l => l.listener !== undefined).map(({ msg, listener, url, admin }) => ({ msg, listener, url, admin })), [
    { msg: 'listening for frps calls', listener: 'rpc', url: `${rpc}/handler`, admin: undefined },
    { msg: 'admin listener: /metrics, /healthz and /readyz', listener: 'admin', url: admin, admin: undefined }
  ], 'one start-up line per listener, saying which')
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

t.test('listen.tls that cannot be used fails to start with exit 1 and names the file', async t => {
  const certs = await makeCerts(t)
  const cert = configFile(certs.cert, 'server.pem')
  const missing = configFile({ listen: { port: 0, tls: { cert: '/nonexistent/cert.pem', key: '/nonexistent/key.pem' } }, chain })
  const notPem = configFile({ listen: { port: 0, tls: { cert, key: cert } }, chain })
  const [unread, unusable] = await Promise.all([runCli(['--config', missing]), runCli(['--config', notPem])])
  t.equal(unread.code, 1)
  t.equal(unread.stdout, '')
  t.equal(unread.stderr, `invalid config ${missing}:\n  listen.tls.cert: cannot read /nonexistent/cert.pem: ENOENT: no such file or directory, open '/nonexistent/cert.pem'\n` +
    "  listen.tls.key: cannot read /nonexistent/key.pem: ENOENT: no such file or directory, open '/nonexistent/key.pem'\n", 'both files named')
  t.equal(unusable.code, 1)
  t.equal(unusable.stdout, '')
  t.equal(unusable.stderr.split('\n')[0], `invalid config ${notPem}:`)
  t.ok(unusable.stderr.split('\n')[1].startsWith(`  listen.tls: ${cert} and ${cert} are not a usable certificate and key: `), unusable.stderr)
  const checked = await runCli(['check', '--config', missing])
  t.same({ code: checked.code, stderr: checked.stderr }, { code: 1, stderr: unread.stderr }, 'check refuses what run refuses')
  // check says every error at once: the TLS files too when another key is wrong
  const alsoBad = configFile({ listen: { port: 0, tls: { cert: '/nonexistent/cert.pem', key: '/nonexistent/key.pem' } }, deadlineMs: 0, chain })
  const both = await runCli(['check', '--config', alsoBad])
  t.equal(both.code, 1)
  t.same(both.stderr.split('\n').slice(1, -1).map(line => line.split(':')[0].trim()), ['deadlineMs', 'listen.tls.cert', 'listen.tls.key'], both.stderr)
})

t.test('listen.tls paths are from the config file\'s folder, wherever the gateway is started', async t => {
  const certs = await makeCerts(t)
  const dir = dirname(configFile(certs.cert, 'server.pem'))
  writeFileSync(join(dir, 'server.key'), certs.key)
  const file = join(dir, 'gateway.json')
  writeFileSync(file, JSON.stringify({ listen: { port: 0, tls: { cert: 'server.pem', key: 'server.key' } }, chain }))
  t.equal((await runCli(['check', '--config', file])).code, 0)
  const gw = await serveCli(['--config', file], t)
  t.match(gw.url, /^https:\/\//)
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
})

t.test('a listen address in use: one line naming it and the listener, exit 1', async t => {
  const taken = createServer().listen(0, '127.0.0.1')
  await new Promise(resolve => taken.once('listening', resolve))
  t.teardown(() => { taken.close() })
  const port = (taken.address() as { port: number }).port
  const [rpc, admin] = await Promise.all([
    runCli(['--config', configFile({ listen: { port }, chain })]),
    runCli(['--config', configFile({ listen: { port: 0 }, admin: { port }, chain })])
  ])
  t.equal(rpc.code, 1)
  t.equal(rpc.stderr, `cannot start: 127.0.0.1:${port} (the RPC listener: listen.host and .port) is already in use\n`)
  t.equal(admin.code, 1, 'the RPC listener, already up, does not keep the process alive')
  t.equal(admin.stderr, `cannot start: 127.0.0.1:${port} (the admin listener: admin.host and .port) is already in use\n`)
  t.match(admin.stdout, /"listener":"rpc"/, 'the RPC listener came up first')
})
