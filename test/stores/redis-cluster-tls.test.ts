import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import t from 'tap'
import { configFile, runCli } from '../helpers/cli.js'
import { freePort, redisCli, waitFor } from '../helpers/redis.js'
import { makeCerts } from '../helpers/tls.js'

// A Redis Cluster that speaks TLS only (no plaintext port), certificates made here, named to the
// gateway by one rediss:// seed: the masters ioredis finds from it must be reached over TLS too.
const certs = await makeCerts(t)
const dir = dirname(certs.caFile)
const tls = ['--tls', '--cacert', certs.caFile]
const ports = [await freePort(), await freePort(), await freePort()]
const servers: ChildProcess[] = []
t.teardown(async () => {
  await Promise.all(servers.map(async s => { if (s.exitCode === null) { s.kill('SIGKILL'); await once(s, 'exit') } }))
})
for (const port of ports) {
  const data = await mkdtemp(join(tmpdir(), 'frpgw-redis-tls-'))
  t.teardown(async () => { await rm(data, { recursive: true, force: true }) })
  servers.push(spawn('redis-server', ['--port', '0', '--tls-port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', data,
    '--tls-cert-file', join(dir, 'server.pem'), '--tls-key-file', join(dir, 'server.key'), '--tls-ca-cert-file', certs.caFile, '--tls-auth-clients', 'no', '--tls-client-cert-file', join(dir, 'server.pem'), '--tls-client-key-file', join(dir, 'server.key'),
    '--tls-cluster', 'yes', '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-port', String(await freePort())], { stdio: 'ignore' }))
}
for (const port of ports) await waitFor(`redis-server on ${port}`, async () => (await redisCli(port, ...tls, 'PING')).trim() === 'PONG')
await redisCli(ports[0], ...tls, '--cluster', 'create', ...ports.map(p => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes')
for (const port of ports) await waitFor(`cluster_state:ok on ${port}`, async () => (await redisCli(port, ...tls, 'CLUSTER', 'INFO')).includes('cluster_state:ok'), 30_000)

t.test('a TLS cluster named by one rediss:// seed: every master is reached over TLS', async t => {
  const steps = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'].map(name => ({ name, plugin: 'rate-limit', ops: ['Login'], options: { key: 'k', limit: 10, window: '1m' } }))
  const file = configFile({ redis: { cluster: [`rediss://127.0.0.1:${ports[0]}`], keyPrefix: 'tls:' }, chain: steps })
  // the gateway trusts the test's CA as an operator's would: NODE_EXTRA_CA_CERTS
  const res = await runCli(['trace', '--config', file, '--op', 'Login'], { stdin: '{"user":"alice"}', env: { NODE_EXTRA_CA_CERTS: certs.caFile } })
  t.equal(res.code, 0, res.stderr)
  t.same(res.stdout.split('\n').filter(l => /^ {2}\d+\. /.test(l)).map(l => l.replace(/ in [\d.]+ ms.*/, '')),
    steps.map((s, i) => `  ${i + 1}. ${s.name} (rate-limit): allow`), 'every step took its token')
  const holders = new Set<number>()
  for (const port of ports) {
    if (Number(await redisCli(port, ...tls, 'DBSIZE')) > 0) holders.add(port)
  }
  t.ok(holders.size >= 2 && [...holders].some(p => p !== ports[0]), `buckets on ${holders.size} masters, not only the seed`)
})
