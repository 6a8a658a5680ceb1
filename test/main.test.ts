import { copyFileSync, existsSync, readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { dirname, join } from 'node:path'
import t from 'tap'
import { configFile, ROOT, runCli, serveCli } from './helpers/cli.js'
import { until } from './helpers/downstream.js'
import { freePort } from './helpers/redis.js'
import { makeCerts } from './helpers/tls.js'


const good = {
  chain: [
    { name: 'deny-guest', plugin: 'reject', ops: ['Login'], when: { users: ['guest'] } },
    { name: 'tag', plugin: 'metas', options: { set: { gw: '1' } } },
    { name: 'watch', plugin: 'reject', ops: ['NewUserConn'], mode: 'shadow' },
    { name: 'off', plugin: 'reject', enabled: false }
  ]
}

t.test('check on a good config prints, per op, the steps that will run', async t => {
  const file = configFile(good)
  const res = await runCli(['check', '--config', file])
  t.equal(res.code, 0, res.stderr)
  t.equal(res.stdout, [
    `${file}: OK`,
    'Login:       deny-guest (reject; when users) -> tag (metas)',
    'NewProxy:    tag (metas)',
    'CloseProxy:  tag (metas)',
    'Ping:        tag (metas)',
    'NewWorkConn: tag (metas)',
    'NewUserConn: tag (metas) -> watch (reject; shadow)',
    'frps.toml:   ops = ["Login", "NewProxy", "CloseProxy", "Ping", "NewWorkConn", "NewUserConn"]  (INI: ops = Login,NewProxy,CloseProxy,Ping,NewWorkConn,NewUserConn)',
    ''
  ].join('\n'))
})

t.test('check does not wait for Redis: it validates and compiles only', async t => {
  const chain = [{ name: 'r', plugin: 'rate-limit', options: { limit: 1, window: '1s' } }]
  const timed = async (config: unknown) => {
    const started = performance.now()
    const res = await runCli(['check', '--config', configFile(config)])
    t.equal(res.code, 0, res.stderr)
    t.match(res.stdout, /^Login: +r \(rate-limit\)$/m)
    return performance.now() - started
  }
  const memory = await timed({ chain })
  const redis = await timed({ redis: { url: 'redis://127.0.0.1:1' }, chain })
  // a runtime that serves waits up to 2 s for Redis; check must not
  t.ok(redis < memory + 1500, `no wait for an unreachable Redis (${Math.round(redis)} ms, ${Math.round(memory)} ms without Redis)`)
})

t.test('check names a missing file and bad JSON', async t => {
  const missing = await runCli(['check', '--config', '/nonexistent.json'])
  t.equal(missing.code, 1)
  t.match(missing.stderr, /\/nonexistent\.json/)
  const broken = await runCli(['check', '--config', configFile('{ "chain": ')])
  t.equal(broken.code, 1)
  t.match(broken.stderr, /not valid JSON/)
})

t.test('--config defaults to $FRP_GATEWAY_CONFIG', async t => {
  const res = await runCli(['check'], { env: { FRP_GATEWAY_CONFIG: configFile(good) } })
  t.equal(res.code, 0, res.stderr)
  t.match(res.stdout, /deny-guest/)
})

t.test('schema prints config/gateway.schema.json', async t => {
  const res = await runCli(['schema'])
  t.equal(res.code, 0)
  t.same(JSON.parse(res.stdout), JSON.parse(readFileSync(`${ROOT}config/gateway.schema.json`, 'utf8')))
})

t.test('run serves frps calls and /metrics, and exits 0 on SIGTERM', async t => {
  const file = configFile({ ...good, listen: { port: 0 } })
  const gw = await serveCli(['--config', file], t)
  const res = await fetch(`${gw.url}/handler?version=0.1.0&op=Login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-frp-reqid': 'aaaaaaaaaaaaaaaa' },
    body: JSON.stringify({ version: '0.1.0', op: 'Login', content: { user: 'guest' } })
  })
  t.same(await res.json(), { reject: true, reject_reason: 'rejected by deny-guest', unchange: true })
  t.match(await (await fetch(`${gw.url}/metrics`)).text(), /frp_gateway_requests_total\{op="Login",outcome="reject"\} 1/)
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
  t.ok(gw.lines.some(l => l.msg === 'call' && l.reqid === 'aaaaaaaaaaaaaaaa'))
})

t.test('relative paths in step options (forward tls.ca, notify file.path) are from the config file\'s folder, as users.file and listen.tls', async t => {
  const file = configFile({ listen: { port: 0 }, chain: [
    { name: 'fw', plugin: 'forward', ops: ['NewProxy'], options: { url: 'https://127.0.0.1:1/handler', tls: { ca: 'ca.pem' } } },
    { name: 'audit', plugin: 'notify', options: { sink: { file: { path: 'events.log' } } } }
  ] })
  copyFileSync((await makeCerts(t)).caFile, join(dirname(file), 'ca.pem'))
  t.equal((await runCli(['check', '--config', file])).code, 0, 'check reads the CA beside the config (the working directory is another)')
  const gw = await serveCli(['--config', file], t)
  await fetch(`${gw.url}/handler?version=0.1.0&op=Login`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ version: '0.1.0', op: 'Login', content: { user: 'alice' } })
  })
  const log = join(dirname(file), 'events.log')
  t.ok(await until(() => existsSync(log) && readFileSync(log, 'utf8').includes('"user":"alice"'), 3000), 'the event is written beside the config')
  t.notOk(existsSync(join(ROOT, 'events.log')), 'not in the working directory')
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
})

t.test('run logs at start the config file, the chain of every op, and each listener with its URL', async t => {
  const file = configFile({ ...good, listen: { port: 0, path: '/frps' } })
  const gw = await serveCli(['--config', file], t)
  const pick = ({ msg, file, chains, listener, url, admin }: Record<string, unknown>) => ({ msg, file, chains, listener, url, admin })
  t.same(gw.lines.map(pick), [
    {
      msg: 'config loaded',
      file,
      chains: { Login: ['deny-guest', 'tag'], NewProxy: ['tag'], CloseProxy: ['tag'], Ping: ['tag'], NewWorkConn: ['tag'], NewUserConn: ['tag', 'watch'] }
    },
    { msg: 'listening for frps calls; /metrics, /healthz and /readyz are on this listener too', listener: 'rpc', url: `${gw.url}/frps`, admin: gw.url }
  ])
  t.match(gw.url, /^http:\/\/127\.0\.0\.1:\d+$/)
  t.notOk(gw.lines.some(l => /Server listening/.test(l.msg)), 'no line that names no listener')
})

t.test('run with its Redis away: the start warning names the Redis and why (a refused connection), its password hidden', async t => {
  const port = await freePort()
  const file = configFile({ listen: { port: 0 }, redis: { url: `redis://:hunter2@127.0.0.1:${port}` }, chain: [{ name: 'rl', plugin: 'rate-limit', options: { limit: 5, window: '1m' } }] })
  const gw = await serveCli(['--config', file], t)
  const warning = gw.lines.find(l => /^redis not reachable yet/.test(l.msg))
  t.equal(warning?.error, `redis redis://:***@127.0.0.1:${port} is not reachable: connect ECONNREFUSED 127.0.0.1:${port}`)
  t.equal(warning?.msg, 'redis not reachable yet: the steps that use it follow their failure policy until it is')
})

t.test('run with a Redis URL whose port is an HTTP server: the warning says it is no Redis, not ioredis\'s "Please report this."', async t => {
  const server = createServer((_, res) => res.end('hello'))
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  const { port } = server.address() as AddressInfo
  const file = configFile({ listen: { port: 0 }, redis: { url: `redis://127.0.0.1:${port}` }, chain: [{ name: 'rl', plugin: 'rate-limit', options: { limit: 5, window: '1m' } }] })
  const gw = await serveCli(['--config', file], t)
  const warning = gw.lines.find(l => /^redis not reachable yet/.test(l.msg))
  t.equal(warning?.error, `redis redis://127.0.0.1:${port} is not reachable: what answers there does not speak the Redis protocol (Protocol error, got "H" as reply type byte): is it the port of a Redis?`)
})

t.test('run with a broken config exits 1 before listening', async t => {
  const res = await runCli(['--config', configFile({ chain: [{ name: 'x', plugin: 'nope' }] })])
  t.equal(res.code, 1)
  t.match(res.stderr, /chain\[0\]\.plugin: unknown plugin/)
})

t.test('a log.redact path pino cannot take is a config error with its path, for check and for run (no stack)', async t => {
  const file = configFile({ listen: { port: 0 }, log: { redact: ['content.metas.ok', 'a..b'] } })
  for (const args of [['check', '--config', file], ['--config', file]]) {
    const res = await runCli(args)
    t.equal(res.code, 1, args[0])
    t.match(res.stderr, /^ {2}log\.redact\[1\]: .*a\.\.b/m, args[0])
    t.notMatch(res.stderr, /\n\s+at /, `${args[0]}: no stack`)
  }
})
