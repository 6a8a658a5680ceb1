import { randomUUID } from 'node:crypto'
import t from 'tap'
import { configFile, runCli } from '../helpers/cli.js'
import { redisCli, startRedis } from '../helpers/redis.js'
import { expect, lines, MULTIUSER, redisCommands } from './users-commands.js'

t.test('Redis standalone: every sub-command', async t => {
  const redis = await startRedis(t)
  await redisCommands(t, { url: redis.url }, async (...args) => lines(await redisCli(redis.port, ...args)))

  // a config without a users block can still be imported into, with a note on stderr
  const keyPrefix = `frpgw:test:${randomUUID()}:`
  const bare = configFile({ redis: { url: redis.url, keyPrefix } })
  expect(t, await runCli(['users', 'import', '--from', 'fp-multiuser', MULTIUSER, '--to-redis', '-c', bare]), 0,
    'user1: created\nuser2: created\nuser3: created\n3 users: 3 created, 0 replaced\n',
    `note: ${bare} has no "users" block yet: add "users": {"redis": {}} for the gateway to read this table\n`, 'import without a users block')
  t.same(lines(await redisCli(redis.port, 'HGETALL', `${keyPrefix}user:{user3}`)), ['token', '"with spaces around = and an equals sign"', 'enabled', 'true'])
})
