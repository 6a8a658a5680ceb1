import { once } from 'node:events'
import { copyFileSync } from 'node:fs'
import { createServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { configIssues, startGateway } from '../helpers/gateway.js'
import { makeCerts } from '../helpers/tls.js'

const certs = await makeCerts(t)

/** A real https receiver with the test CA's certificate for 127.0.0.1: what was posted to it. */
async function httpsReceiver (t: Test): Promise<{ url: string, bodies: unknown[] }> {
  const bodies: unknown[] = []
  const server = createServer({ cert: certs.cert, key: certs.key }, (req, res) => {
    let body = ''
    req.on('data', d => { body += String(d) })
    req.on('end', () => { bodies.push(JSON.parse(body)); res.writeHead(204).end() })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return { url: `https://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, bodies }
}

async function notifyingGateway (t: Test, tls?: unknown) {
  const rx = await httpsReceiver(t)
  const webhook = { url: rx.url, retries: 1, ...(tls === undefined ? {} : { tls }) }
  const gw = await startGateway(t, { chain: [{ name: 'audit', plugin: 'notify', ops: ['Login'], options: { sink: { webhook }, template: { u: '{{user}}' } } }] })
  await gw.call('Login', { user: 'alice', metas: {} })
  return { rx, gw }
}

/** waits until the step has counted `n` events as `result`, or gives up after ms */
async function counted (gw: Awaited<ReturnType<typeof startGateway>>, result: string, n: number, ms = 5000): Promise<number | undefined> {
  const end = performance.now() + ms
  let got: number | undefined
  while ((got = await gw.metric('frp_gateway_notify_events_total', { step: 'audit', result })) !== n && performance.now() < end) await sleep(20)
  return got
}

t.test('https webhook, its CA given in tls.ca: the event is posted', async t => {
  const { rx, gw } = await notifyingGateway(t, { ca: certs.caFile })
  t.equal(await counted(gw, 'sent', 1), 1)
  t.same(rx.bodies, [{ u: 'alice' }])
})

t.test('https webhook whose CA the system does not trust: every attempt refused before a request, the event given up with the reason', async t => {
  const { rx, gw } = await notifyingGateway(t)
  t.equal(await counted(gw, 'failed', 1), 1)
  t.equal(await gw.metric('frp_gateway_notify_events_total', { step: 'audit', result: 'retried' }), 1)
  t.same(rx.bodies, [])
  t.match(gw.logs.filter(l => l.msg === 'notify event given up'), [{ err: { message: `webhook ${new URL(rx.url).origin}/hook: unable to verify the first certificate` } }])
})

t.test('https webhook, tls.verify false: posted without a CA', async t => {
  const { rx, gw } = await notifyingGateway(t, { verify: false })
  t.equal(await counted(gw, 'sent', 1), 1)
  t.same(rx.bodies, [{ u: 'alice' }])
})

t.test('config: tls on an http:// webhook, a CA file that is missing or holds no certificate', async t => {
  const issues = async (webhook: Record<string, unknown>) =>
    await configIssues(t, { chain: [{ name: 'a', plugin: 'notify', options: { sink: { webhook: { url: 'https://127.0.0.1/x', ...webhook } } } }] })
  t.same(await issues({ url: 'http://127.0.0.1/x', tls: { verify: false } }), [{ path: 'chain[0].options.sink.webhook.tls', message: 'tls applies to https:// URLs only' }])
  t.same(await issues({ url: 'http://127.0.0.1/x', tls: { ca: certs.caFile } }), [{ path: 'chain[0].options.sink.webhook.tls', message: 'tls applies to https:// URLs only' }])
  t.match(await issues({ tls: { ca: '/nonexistent/ca.pem' } }), [{ path: 'chain[0].options.sink.webhook.tls.ca', message: /ENOENT.*\/nonexistent\/ca\.pem/ }])
  t.same(await issues({ tls: { ca: new URL(import.meta.url).pathname } }),
    [{ path: 'chain[0].options.sink.webhook.tls.ca', message: `${new URL(import.meta.url).pathname} holds no PEM certificate` }])
  t.match(await issues({ tls: { verify: 'no' } }), [{ path: 'chain[0].options.sink.webhook.tls.verify' }])
  const gw = await startGateway(t, { chain: [{ name: 'a', plugin: 'notify', options: { sink: { webhook: { url: 'https://127.0.0.1/x', tls: { ca: certs.caFile } } } } }] })
  t.equal(gw.logs.filter(l => l.level >= 40).length, 0, 'the same step with a CA file holding one starts, without a warning')
})

t.test('check: a relative tls.ca is read from the config file\'s folder', async t => {
  const { configFile, runCli } = await import('../helpers/cli.js')
  const config = { chain: [{ name: 'a', plugin: 'notify', options: { sink: { webhook: { url: 'https://127.0.0.1/x', tls: { ca: 'hook-ca.pem' } } } } }] }
  const file = configFile(config)
  const missing = await runCli(['check', '--config', file])
  t.equal(missing.code, 1)
  t.match(missing.stderr, `chain[0].options.sink.webhook.tls.ca: ENOENT: no such file or directory, open '${join(dirname(file), 'hook-ca.pem')}'`)
  copyFileSync(certs.caFile, join(dirname(file), 'hook-ca.pem'))
  const found = await runCli(['check', '--config', file])
  t.equal(found.code, 0, found.stderr)
})
