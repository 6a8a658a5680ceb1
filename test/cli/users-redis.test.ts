import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import t from 'tap'
import { configFile, runCli } from '../helpers/cli.js'
import { startGateway } from '../helpers/gateway.js'
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

t.test('Redis: a hand-made value read as the gateway reads it; a key that holds no hash is that user\'s problem, not the list\'s', async t => {
  const redis = await startRedis(t)
  const cfg = configFile({ redis: { url: redis.url }, users: { redis: {} }, chain: [{ name: 'users', plugin: 'users' }] })
  const users = async (...args: string[]) => await runCli(['users', ...args, '--config', cfg])
  await redisCli(redis.port, 'HSET', 'frpgw:user:{alice}', 'token', '"a1"', 'enabled', 'false\n')
  await redisCli(redis.port, 'SADD', 'frpgw:users', 'alice', 'bob')
  expect(t, await users('list'), 0, 'alice (disabled)\n', '', 'JSON false with a newline is false')
  expect(t, await users('enable', 'alice'), 0, 'alice: enabled\n', '', 'and enabling it is a change')
  await redisCli(redis.port, 'SET', 'frpgw:user:{bob}', 'x')
  expect(t, await users('list'), 0, 'alice\nbob (not a valid record: frpgw:user:{bob} is not a hash)\n')
  const notHash = 'bob: not a valid record: frpgw:user:{bob} is not a hash (users set replaces it)\n'
  for (const sub of ['get', 'enable', 'disable']) expect(t, await users(sub, 'bob'), 1, '', notHash, `${sub}: the key named, as list names it`)
  t.equal(await redisCli(redis.port, 'TYPE', 'frpgw:user:{bob}'), 'string\n', 'and left as it was')
  const gw = await (await import('../helpers/gateway.js')).startGateway(t, { redis: { url: redis.url }, users: { redis: {} }, chain: [{ name: 'users', plugin: 'users', ops: ['Login'] }] })
  t.same((await gw.call('Login', { user: 'bob', metas: { token: 'x' } })).body, { reject: true, reject_reason: 'frp-plugin-gateway: step users failed: the record of bob is not valid', unchange: true }, 'the gateway: an invalid record, not a table away')
})

t.test('Redis: a field nested 100,000 deep (written by hand) is that user\'s invalid record, naming the user and the field, in list, get and the gateway', async t => {
  const redis = await startRedis(t)
  const cfg = configFile({ redis: { url: redis.url }, users: { redis: {} } })
  const users = async (...args: string[]) => await runCli(['users', ...args, '--config', cfg])
  const n = 100_000
  // over 128 KiB, more than one argument of redis-cli can take
  const writer = new Redis(redis.port, '127.0.0.1')
  t.teardown(() => writer.disconnect())
  await writer.hset('frpgw:user:{alice}', 'token', '"a1"', 'metas', '['.repeat(n) + ']'.repeat(n))
  await writer.hset('frpgw:user:{carol}', 'token', '"c1"', 'proxyTypes', '{"a":'.repeat(n) + '1' + '}'.repeat(n))
  await writer.sadd('frpgw:users', 'alice', 'carol')
  const deep = (name: string, field: string) => `frpgw:user:{${name}} field ${field} nests objects and arrays deeper than 32 levels`
  expect(t, await users('list'), 0, `alice (not a valid record: ${deep('alice', 'metas')})\ncarol (not a valid record: ${deep('carol', 'proxyTypes')})\n`)
  expect(t, await users('get', 'alice'), 1, '', `alice: not a valid record: ${deep('alice', 'metas')} (users set replaces it)\n`)
  const gw = await startGateway(t, { redis: { url: redis.url }, users: { redis: {} }, chain: [{ name: 'users', plugin: 'users', ops: ['Login'] }] })
  t.same((await gw.call('Login', { user: 'alice', metas: { token: 'a1' } })).body, { reject: true, reject_reason: 'frp-plugin-gateway: step users failed: the record of alice is not valid', unchange: true })
  t.match(gw.logs.find(l => l.msg === 'step failed')?.err.message, /^user alice in Redis \(frpgw:user:\{alice\}\) is not a valid record: metas: nests objects and arrays deeper than 32 levels/)
  expect(t, await users('disable', 'alice'), 0, 'alice: disabled\n', '', 'the other fields can still be changed')
})

t.test('Redis: enable and disable say a record refused for an unreadable "enabled" is changed, not unchanged', async t => {
  const redis = await startRedis(t)
  const cfg = configFile({ redis: { url: redis.url }, users: { redis: {} } })
  const users = async (...args: string[]) => await runCli(['users', ...args, '--config', cfg])
  await redisCli(redis.port, 'HSET', 'frpgw:user:{carol}', 'token', '"c1"', 'enabled', 'no')
  await redisCli(redis.port, 'HSET', 'frpgw:user:{dave}', 'token', '"d1"', 'enabled', 'null')
  await redisCli(redis.port, 'SADD', 'frpgw:users', 'carol', 'dave')
  expect(t, await users('list'), 0, 'carol (not a valid record: enabled: Invalid input: expected boolean, received string)\ndave (not a valid record: enabled: Invalid input: expected boolean, received null)\n')
  expect(t, await users('enable', 'carol'), 0, 'carol: enabled\n', '', 'a record the gateway refused is now enabled: a change')
  expect(t, await users('disable', 'dave'), 0, 'dave: disabled\n', '', 'disable, likewise')
  expect(t, await users('list'), 0, 'carol\ndave (disabled)\n')
  expect(t, await users('enable', 'carol'), 0, 'carol: unchanged (already enabled)\n', '', 'then unchanged')
})

t.test('Redis: a name added by hand that the gateway never looks up is listed as such, on one line, and can be deleted', async t => {
  const redis = await startRedis(t)
  const cfg = configFile({ redis: { url: redis.url }, users: { redis: {} } })
  const users = async (...args: string[]) => await runCli(['users', ...args, '--config', cfg])
  for (const name of ['erin', 'frank smith', 'x\ny']) await redisCli(redis.port, 'HSET', `frpgw:user:{${name}}`, 'token', '"t"')
  await redisCli(redis.port, 'SADD', 'frpgw:users', 'erin', 'frank smith', 'x\ny')
  const never = 'not a valid user name: the gateway never looks it up; users delete removes it'
  expect(t, await users('list'), 0, `erin\n"frank smith" (${never})\n"x\\ny" (${never})\n`)
  expect(t, await users('delete', 'frank smith'), 0, 'frank smith: deleted\n', '')
  expect(t, await users('list'), 0, `erin\n"x\\ny" (${never})\n`)
})
