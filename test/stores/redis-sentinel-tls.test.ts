import t from 'tap'
import { configFile, runCli } from '../helpers/cli.js'
import { startRedis, startSentinel, type ServerAuth } from '../helpers/redis.js'
import { makeCerts } from '../helpers/tls.js'

// A Sentinel set that speaks TLS only (no plaintext port on the master or the Sentinel), each side
// with its own password, certificates made here: the Sentinel and the master it names must both be
// reached over TLS.
t.test('a TLS Sentinel set with passwords: a rate-limit step takes its token in the master', async t => {
  const certs = await makeCerts(t)
  const auth: ServerAuth = { password: 'master-s3cret' }
  const master = await startRedis(t, { auth, tls: certs })
  const sentinel = await startSentinel(t, master, 'gw', { masterAuth: auth, auth: { password: 'sentinel-s3cret' }, tls: certs })
  const redis = { sentinels: [{ host: '127.0.0.1', port: sentinel.port }], name: 'gw', password: auth.password, sentinelPassword: 'sentinel-s3cret', tls: true }
  const chain = [{ name: 'rl', plugin: 'rate-limit', ops: ['Login'], options: { key: 'k', limit: 10, window: '1m', onStoreError: 'reject' } }]
  // the gateway trusts the test's CA as an operator's would: NODE_EXTRA_CA_CERTS
  const trace = async (cfg: object): Promise<string> => {
    const res = await runCli(['trace', '--config', configFile({ redis: cfg, chain }), '--op', 'Login'], { stdin: '{"user":"alice"}', env: { NODE_EXTRA_CA_CERTS: certs.caFile } })
    return res.stdout.split('\n').find(l => /^ {2}1\. /.test(l))?.replace(/ in [\d.]+ ms.*/, '') ?? res.stderr
  }
  t.equal(await trace(redis), '  1. rl (rate-limit): allow')
  t.equal(await master.cli('DBSIZE'), '1\n', 'the bucket is in the master')
  const { tls: _, ...plain } = redis
  t.equal(await trace(plain), '  1. rl (rate-limit): error', 'without tls the same set is not reached')
})
