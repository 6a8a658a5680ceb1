import t from 'tap'
import { configFile, runCli } from '../helpers/cli.js'
import { startRedis, startSentinel, type ServerAuth } from '../helpers/redis.js'
import { expect, lines, redisCommands } from './users-commands.js'

// requirepass on the master and on the Sentinel, each its own: the commands must send each its own
const master: ServerAuth = { password: 'master-s3cret' }
const sentinel: ServerAuth = { password: 'sentinel-s3cret' }

t.test('Redis Sentinel with passwords: every sub-command', async t => {
  const redis = await startRedis(t, { auth: master })
  const set = await startSentinel(t, redis, 'gw', { masterAuth: master, auth: sentinel })
  const block = { sentinels: [{ host: '127.0.0.1', port: set.port }], name: 'gw', password: master.password, sentinelPassword: sentinel.password }
  await redisCommands(t, block, async (...args) => lines(await redis.cli(...args)))

  const name = `redis sentinels 127.0.0.1:${set.port} (gw)`
  for (const [what, wrong, cause] of [
    ['the master\'s', { password: 'wrong-pw' }, `the master 127.0.0.1:${redis.port}: WRONGPASS invalid username-password pair or user is disabled.`],
    ['the Sentinel\'s', { sentinelPassword: 'wrong-pw' }, 'no Sentinel gave the master\'s address: WRONGPASS invalid username-password pair or user is disabled.']
  ] as const) {
    const config = configFile({ redis: { ...block, ...wrong }, users: { redis: {} } })
    expect(t, await runCli(['users', 'list', '--config', config]), 1, '', `${name} is not reachable: ${cause}\n`, `${what} password wrong`)
  }
})
