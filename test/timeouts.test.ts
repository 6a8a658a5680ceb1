import { readFileSync } from 'node:fs'
import type { Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import tls from 'node:tls'
import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { buildApp, KEEP_ALIVE_TIMEOUT_MS, LISTEN_BACKLOG, serverTimeouts } from '../src/app.js'
import { parseConfig } from '../src/config.js'
import { createLogger } from '../src/log.js'
import { createMetrics } from '../src/metrics.js'
import { createRuntime } from '../src/runtime.js'
import { configFile, serveCli } from './helpers/cli.js'
import { startDownstream } from './helpers/downstream.js'
import { startGateway, type TestGateway } from './helpers/gateway.js'
import { frpsRequest, RawConnection, rawExchange } from './helpers/raw-http.js'
import { makeCerts } from './helpers/tls.js'

// A request must arrive within max(deadlineMs, 1 s); the server checks every 0.5 s. The machine is
// loaded: connections must close no earlier than the timeout and within 2.5 s after it.
const DEADLINE_MS = 1000
const SLACK_MS = 2500
const INVALID = { op: 'invalid', outcome: 'error' }

async function listening (t: Test, config: object): Promise<TestGateway & { port: number }> {
  const gw = await startGateway(t, config)
  await gw.app.listen({ host: '127.0.0.1', port: 0 })
  return { ...gw, port: (gw.app.server.address() as { port: number }).port }
}

t.test('the server is set from the deadline, with a keep-alive longer than frps keeps an idle connection', async t => {
  t.same(serverTimeouts(3000), { request: 3000, idle: 6000, keepAlive: 95_000 })
  t.same(serverTimeouts(10), { request: 1000, idle: 2000, keepAlive: 95_000 }, 'at least 1 s to send a request')
  t.ok(KEEP_ALIVE_TIMEOUT_MS > 90_000, "longer than Go's http.DefaultTransport IdleConnTimeout (90 s)")
  const gw = await listening(t, { deadlineMs: 3000 })
  const server = gw.app.server
  t.same([server.requestTimeout, server.headersTimeout, server.timeout, server.keepAliveTimeout], [3000, 3000, 6000, 95_000])
  const res = await rawExchange(gw.port, s => { s.write(frpsRequest('{"op":"Login","content":{}}', { headers: 'Connection: close\r\n' })) })
  t.equal(res.status, 200)
  const conn = await RawConnection.open(gw.port)
  t.teardown(() => conn.socket.destroy())
  const kept = await conn.request(frpsRequest('{"op":"Login","content":{}}'))
  t.equal(kept.headers['keep-alive'], 'timeout=95', 'the keep-alive time is announced')
})

t.test('slow and idle connections are closed in time', async t => {
  const gw = await listening(t, { deadlineMs: DEADLINE_MS })
  const head = 'POST /handler?op=Login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n'
  const cases = [
    { name: 'nothing at all', send: () => {}, status: 0 },
    { name: 'half the headers', send: (s: Socket) => { s.write('POST /handler HTTP/1.1\r\nHost: x\r\n') }, status: 408 },
    { name: 'headers and then nothing', send: (s: Socket) => { s.write(head) }, status: 408 },
    {
      name: 'a body one byte every 100 ms',
      send: (s: Socket) => {
        s.write(head)
        const drip = setInterval(() => { if (s.destroyed) clearInterval(drip); else s.write(' ') }, 100)
      },
      status: 408
    }
  ]
  const results = await Promise.all(cases.map(async c => await rawExchange(gw.port, c.send, DEADLINE_MS + SLACK_MS + 2000)))
  cases.forEach((c, i) => {
    const res = results[i]
    t.ok(res.closedAfterMs !== undefined && res.closedAfterMs >= DEADLINE_MS - 50 && res.closedAfterMs <= DEADLINE_MS + SLACK_MS,
      `${c.name}: closed after ${res.closedAfterMs?.toFixed(0) ?? 'never'} ms`)
    t.equal(res.status, c.status, `${c.name}: status`)
    if (c.status === 408) t.equal(JSON.parse(res.body).error.code, 'FRPGW_ERR_REQUEST_TIMEOUT', c.name)
    else t.equal(res.raw, '', `${c.name}: a connection that sent nothing is closed without an answer`)
  })
  t.equal(await gw.metric('frp_gateway_requests_total', INVALID), 3, 'each 408 counted once; the silent one not at all')
  t.same(gw.logs.filter(l => l.msg === 'bad request').map(l => l.code), Array(3).fill('FRPGW_ERR_REQUEST_TIMEOUT'))
})

t.test('a request answered before its body came, whose body then drips or goes bad: one answer, counted once, then closed', async t => {
  const gw = await listening(t, { deadlineMs: DEADLINE_MS })
  const head = (line: string, headers: string): string => `${line} HTTP/1.1\r\nHost: 127.0.0.1\r\n${headers}\r\n`
  const drip = (first: string) => (s: Socket) => {
    s.write(first)
    const timer = setInterval(() => { if (s.destroyed) clearInterval(timer); else s.write(' ') }, 100)
  }
  const cases = [
    { name: '405, then a body one byte every 100 ms', send: drip(head('GET /handler', 'Content-Length: 100000\r\n')), status: 405 },
    { name: '415, then a body one byte every 100 ms', send: drip(head('POST /handler?op=Login', 'Content-Type: text/plain\r\nContent-Length: 100000\r\n')), status: 415 },
    { name: '404, then a body one byte every 100 ms', send: drip(head('POST /nope', 'Content-Type: text/plain\r\nContent-Length: 100000\r\n')), status: 404 },
    {
      name: '415, then a bad chunk',
      send: (s: Socket) => {
        s.write(head('POST /handler?op=Login', 'Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n') + '2\r\n{}\r\n')
        // the bad chunk once the answer came
        s.once('data', () => s.write('zz\r\n'))
      },
      status: 415
    }
  ]
  const results = await Promise.all(cases.map(async c => await rawExchange(gw.port, c.send, DEADLINE_MS + SLACK_MS + 2000)))
  cases.forEach((c, i) => {
    const res = results[i]
    t.equal(res.status, c.status, `${c.name}: status`)
    t.equal(res.raw.split('HTTP/1.1 ').length - 1, 1, `${c.name}: one answer`)
    t.ok(res.closedAfterMs !== undefined && res.closedAfterMs <= DEADLINE_MS + SLACK_MS, `${c.name}: closed after ${res.closedAfterMs?.toFixed(0) ?? 'never'} ms`)
  })
  t.equal(await gw.metric('frp_gateway_requests_total', INVALID), cases.length, 'each counted once')
  t.equal(gw.logs.filter(l => l.msg === 'bad request').length, cases.length, 'each logged once')
})

t.test('a kept-alive client is cut neither during a slow call nor while idle between calls', async t => {
  const downstream = await startDownstream(t, async () => {
    await sleep(1500)
    return { reject: false, unchange: true }
  })
  // deadline 2 s: a request must arrive within 2 s; the call itself takes 1.5 s; then the client idles 2.6 s
  const gw = await listening(t, {
    deadlineMs: 2000,
    chain: [{ name: 'slow', plugin: 'forward', ops: ['Login'], options: { url: downstream.url, timeoutMs: 1900 } }]
  })
  const conn = await RawConnection.open(gw.port)
  t.teardown(() => conn.socket.destroy())
  const body = '{"version":"0.1.0","op":"Login","content":{"user":"alice"}}'
  const first = await conn.request(frpsRequest(body))
  t.equal(first.body, '{"reject":false,"unchange":true}', 'a call of 1.5 s is answered')
  await sleep(2600)
  t.equal(conn.closedAt, undefined, 'idle longer than the request timeout: still open')
  const second = await conn.request(frpsRequest(body))
  t.equal(second.body, '{"reject":false,"unchange":true}', 'the next call on the same connection is answered')
  t.equal(downstream.requests.length, 2)
  t.equal(await gw.metric('frp_gateway_requests_total', INVALID), undefined, 'nothing counted as invalid')
})

t.test('https: a connection that never starts its TLS handshake is closed in time', async t => {
  const certs = await makeCerts(t)
  const config = parseConfig({ deadlineMs: DEADLINE_MS })
  const metrics = createMetrics()
  const logger = createLogger({ level: 'silent', redact: [] })
  const ref = { current: await createRuntime(config, { metrics, log: logger }) }
  const app = buildApp(ref, { metrics, logger, path: '/handler', bodyLimitBytes: 1024, adminRoutes: true, https: { cert: certs.cert, key: certs.key } })
  t.teardown(async () => { await app.close(); await ref.current.close() })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const port = (app.server.address() as { port: number }).port
  const idle = await rawExchange(port, () => {}, DEADLINE_MS + SLACK_MS + 2000)
  t.ok(idle.closedAfterMs !== undefined && idle.closedAfterMs >= DEADLINE_MS - 50 && idle.closedAfterMs <= DEADLINE_MS + SLACK_MS,
    `closed after ${idle.closedAfterMs?.toFixed(0) ?? 'never'} ms`)
  const socket = tls.connect({ port, host: '127.0.0.1', ca: readFileSync(certs.caFile) })
  t.teardown(() => socket.destroy())
  await new Promise((resolve, reject) => { socket.once('secureConnect', resolve); socket.once('error', reject) })
  const started = performance.now()
  socket.resume()
  await new Promise(resolve => socket.once('close', resolve))
  const after = performance.now() - started
  t.ok(after >= DEADLINE_MS - 50 && after <= DEADLINE_MS + SLACK_MS, `after the handshake, an idle connection is closed after ${after.toFixed(0)} ms`)
})

t.test('the RPC listener queues a burst of connections (its accept backlog, as ss shows it)', async t => {
  const gw = await serveCli(['--config', configFile({ listen: { port: 0 } })], t)
  const port = new URL(gw.url).port
  const { stdout } = await promisify(execFile)('ss', ['-Hltn', `sport = :${port}`])
  // a listening socket's Send-Q is its backlog, clamped by net.core.somaxconn (4096 by default since Linux 5.4)
  t.equal(Number(stdout.trim().split(/\s+/)[2]), LISTEN_BACKLOG, stdout.trim())
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
})
