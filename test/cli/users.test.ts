import { copyFileSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { dirname, join } from 'node:path'
import t from 'tap'
import { configFile, runCli, type CliResult } from '../helpers/cli.js'
import { freePort, startRedis } from '../helpers/redis.js'
import { expect, FIXTURES, json, MULTIUSER, PANEL, PANEL_USERS, USERS_USAGE } from './users-commands.js'

// `users ...` as an operator runs it, from dist: usage, import, a file-backed table, configs without a
// table, Redis away. The Redis sub-commands: users-redis.test.ts and users-cluster.test.ts.

t.test('usage errors: one line, then the usage of users; exit 2', async t => {
  const cases: Array<[string[], string]> = [
    [['users'], 'users needs a sub-command: list, get, set, enable, disable, delete, import'],
    [['users', 'frob'], 'unknown users command: frob'],
    [['users', 'get'], 'users get needs NAME'],
    [['users', 'set'], 'users set needs NAME and JSON'],
    [['users', 'set', 'alice'], 'users set needs JSON'],
    [['users', 'get', 'alice', 'bob'], 'unexpected argument: bob'],
    [['users', 'list', 'alice'], 'unexpected argument: alice'],
    [['users', 'list', '--from', 'fp-multiuser'], '--from does not apply to users list'],
    [['users', 'disable', 'alice', '--to-redis'], '--to-redis does not apply to users disable'],
    [['users', 'get', 'alice', '--watch'], '--watch does not apply to users get'],
    [['users', 'import'], 'users import needs FILE'],
    [['users', 'import', MULTIUSER], 'users import needs --from fp-multiuser or --from frps-panel'],
    [['users', 'import', '--from', 'frps-dashboard', MULTIUSER], '--from frps-dashboard: expected fp-multiuser or frps-panel'],
    [['users', 'import', '--from', 'fp-multiuser', MULTIUSER, '--config', 'x.json'], '--config applies to users import with --to-redis only'],
    [['help', 'users', 'frob'], 'unknown users command: frob'],
    [['users', 'frob', '--help'], 'unknown users command: frob']
  ]
  const results = await Promise.all(cases.map(async ([args]) => await runCli(args)))
  for (const [i, [args, line]] of cases.entries()) expect(t, results[i], 2, '', `${line}\n${USERS_USAGE}`, args.join(' '))

  // elsewhere the users options are refused as any option of another command, with the whole usage
  const [check, run] = await Promise.all([runCli(['check', '--from', 'fp-multiuser']), runCli(['run', '--to-redis'])])
  t.equal(check.code, 2)
  t.match(check.stderr, /^--from does not apply to check\nusage: frp-plugin-gateway \[run\]/)
  t.equal(run.code, 2)
  t.match(run.stderr, /^--to-redis does not apply to run\nusage: frp-plugin-gateway \[run\]/)
})

t.test('help users: every sub-command, its options and exit codes', async t => {
  const all = [['help', 'users'], ['users', '--help'], ['users', 'get', '-h'], ['help', 'users', 'import'], ['users', 'set', 'a', '{}', '--help']]
  const [first, ...others] = await Promise.all(all.map(async args => await runCli(args)))
  t.equal(first.code, 0)
  t.equal(first.stderr, '')
  t.ok(first.stdout.startsWith(USERS_USAGE.split('\nsee')[0]), 'the sub-commands\' usage first')
  for (const line of [
    'commands:',
    '  disable  set NAME\'s "enabled": false: their clients are refused from their next call (Redis table)',
    '      --from FORMAT   users import: fp-multiuser (user=token lines) or frps-panel (its frps-tokens.toml)',
    'exit codes: 0 done, 1 bad config, bad file or record, unknown user or Redis not reachable, 2 bad usage or a change asked of a file-backed table'
  ]) t.ok(first.stdout.split('\n').includes(line), line)
  others.forEach((res, i) => expect(t, res, 0, first.stdout, '', all[i + 1].join(' ')))
  const whole = await runCli(['--help'])
  t.ok(whole.stdout.split('\n').includes('  users   list, show, change and import the users of the user table (config "users")'))
})

t.test('import prints a users file, from either format', async t => {
  const [panel, multi] = await Promise.all([
    runCli(['users', 'import', '--from', 'frps-panel', PANEL]),
    runCli(['users', 'import', MULTIUSER, '--from', 'fp-multiuser'])
  ])
  expect(t, panel, 0, json({ $schema: './users.schema.json', users: PANEL_USERS }), '', 'frps-panel')
  expect(t, multi, 0, json({
    $schema: './users.schema.json',
    users: {
      user1: { token: '123', enabled: true },
      user2: { token: 'abc', enabled: true },
      user3: { token: 'with spaces around = and an equals sign', enabled: true }
    }
  }), '', 'fp-multiuser')
})

t.test('import of a tokens file with no users says the table lets nobody in (the plugins let everyone in while theirs was empty)', async t => {
  const empty = { 'frps-panel': configFile('[tokens]\n', 'frps-tokens.toml'), 'fp-multiuser': configFile('', 'tokens') }
  for (const [format, file] of Object.entries(empty)) {
    expect(t, await runCli(['users', 'import', '--from', format, file]), 0, json({ $schema: './users.schema.json', users: {} }),
      `note: ${file} holds no users: the table lets nobody log in (${format} let every client in while it had none)\n`, format)
  }
})

t.test('import: every problem of the source file, by line or TOML path; exit 1', async t => {
  const multi = configFile('alice=1\njust a word\nbad name=2\nalice=3\n', 'tokens')
  const panel = configFile('[tokens.a]\ntoken = ""\nports = [70000]\ncolour = "red"\n[tokens.b]\ntoken = "t"\nenable = "yes"\n', 'frps-tokens.toml')
  const broken = configFile('[tokens.a\n', 'frps-tokens.toml')
  const [m, p, b, missing] = await Promise.all([
    runCli(['users', 'import', '--from', 'fp-multiuser', multi]),
    runCli(['users', 'import', '--from', 'frps-panel', panel]),
    runCli(['users', 'import', '--from', 'frps-panel', broken]),
    runCli(['users', 'import', '--from', 'frps-panel', '/nonexistent/frps-tokens.toml'])
  ])
  expect(t, m, 1, '', [
    `${multi} is not a valid fp-multiuser tokens file:`,
    '  line 2: expected user=token',
    '  line 3: "bad name": expected a user name of 1-64 characters: A-Z, a-z, 0-9, _ . @ - (not first)',
    '  line 4: user "alice" again (first on line 1)',
    ''
  ].join('\n'), 'fp-multiuser')
  expect(t, p, 1, '', [
    `${panel} is not a valid frps-panel tokens file:`,
    '  tokens.a.colour: unknown key',
    '  tokens.a.token: missing or empty token',
    '  tokens.a.ports[0]: "70000" is not a port or a "low-high" range within 0-65535',
    '  tokens.b.enable: Invalid input: expected boolean, received string',
    ''
  ].join('\n'), 'frps-panel')
  t.equal(b.code, 1)
  t.match(b.stderr, new RegExp(`^${broken} is not a valid frps-panel tokens file:\n  line 1: not valid TOML: .+\n$`))
  expect(t, missing, 1, '', "cannot read /nonexistent/frps-tokens.toml: ENOENT: no such file or directory, open '/nonexistent/frps-tokens.toml'\n", 'missing file')
})

t.test('a file-backed table: list and get read it, the writing commands say to edit the file; exit 2', async t => {
  const config = configFile({ users: { file: 'users.json' } })
  const users = join(dirname(config), 'users.json')
  copyFileSync(`${FIXTURES}users.json`, users)
  const writes = [['set', 'dave', '{"token": "d"}'], ['enable', 'carol'], ['disable', 'alice'], ['delete', 'bob']]
  const [list, get, unknown, ...refused] = await Promise.all([
    runCli(['users', 'list', '--config', config]),
    runCli(['users', 'get', 'carol', '-c', config]),
    runCli(['users', 'get', 'dave'], { env: { FRP_GATEWAY_CONFIG: config } }),
    ...writes.map(async args => await runCli(['users', ...args, '--config', config]))
  ])
  expect(t, list, 0, 'alice\nbob\ncarol (disabled)\n', '', 'list')
  // as the file writes it: no defaults added
  expect(t, get, 0, json({ enabled: false, token: 'c' }), '', 'get')
  expect(t, unknown, 1, '', `dave: unknown user (not in ${users})\n`, 'get unknown')
  refused.forEach((res, i) => expect(t, res, 2, '', `users ${writes[i][0]}: the user table of ${config} is the file ${users} (users.file): edit it there, then reload the gateway (SIGHUP; under --watch it reloads by itself)\n`, writes[i].join(' ')))
  t.same(JSON.parse(readFileSync(users, 'utf8')), JSON.parse(readFileSync(`${FIXTURES}users.json`, 'utf8')), 'the file is untouched')

  const expired = configFile({ users: { file: 'u.json' } })
  const brokenUsers = join(dirname(expired), 'u.json')
  copyFileSync(`${FIXTURES}users.json`, brokenUsers)
  const raw = JSON.parse(readFileSync(brokenUsers, 'utf8'))
  raw.users.bob.expires = '2020-01-01T00:00:00Z'
  raw.users.carol.expires = '2020-01-01T00:00:00Z'
  writeFileSync(brokenUsers, JSON.stringify(raw))
  expect(t, await runCli(['users', 'list', '-c', expired]), 0, 'alice\nbob (expired)\ncarol (disabled, expired)\n', '', 'expired')
  raw.users.bob.ports = ['x']
  raw.users.alice.colour = 'red'
  writeFileSync(brokenUsers, JSON.stringify(raw))
  expect(t, await runCli(['users', 'list', '-c', expired]), 1, '', [
    `invalid users file ${brokenUsers} (users.file of ${expired}):`,
    '  users.alice.colour: unknown key',
    '  users.bob.ports[0]: "x" is not a port or a "low-high" range within 0-65535',
    ''
  ].join('\n'), 'broken users file')
})

t.test('configs without a table to work on: exit 1 saying what is missing', async t => {
  const none = configFile({})
  const noRedis = configFile({ users: { redis: {} } })
  const fileTable = configFile({ users: { file: 'users.json' }, redis: { url: 'redis://127.0.0.1:1' } })
  const [list, get, redis, toFile, toNothing] = await Promise.all([
    runCli(['users', 'list', '-c', none]),
    runCli(['users', 'get', 'alice', '-c', none]),
    runCli(['users', 'list', '-c', noRedis]),
    runCli(['users', 'import', '--from', 'frps-panel', PANEL, '--to-redis', '-c', fileTable]),
    runCli(['users', 'import', '--from', 'frps-panel', PANEL, '--to-redis', '-c', none])
  ])
  const noUsers = `${none} has no "users" block: add "users": {"file": "users.json"}, or "users": {"redis": {}} with a "redis" block\n`
  expect(t, list, 1, '', noUsers, 'list')
  expect(t, get, 1, '', noUsers, 'get')
  expect(t, redis, 1, '', `${noRedis}: users.redis needs the top-level "redis" block\n`, 'users.redis without redis')
  expect(t, toFile, 2, '', `--to-redis: the user table of ${fileTable} is the file users.json (users.file), not Redis: run users import without --to-redis and write its output there\n`, '--to-redis, file table')
  expect(t, toNothing, 1, '', `--to-redis: ${none} has no "redis" block to write into\n`, '--to-redis, no redis')
})

t.test('Redis down: exit 1 with one line, promptly', async t => {
  const refused = configFile({ redis: { url: `redis://:hunter2@127.0.0.1:${await freePort()}` }, users: { redis: {} } })
  const redis = await startRedis(t)
  const paused = configFile({ redis: { url: redis.url }, users: { redis: {} } })
  redis.pause(true)
  t.teardown(() => redis.pause(false))
  const cluster = configFile({ redis: { cluster: [`redis://127.0.0.1:${await freePort()}`] }, users: { redis: {} } })
  const timed = async (args: string[]): Promise<CliResult & { ms: number }> => {
    const started = Date.now()
    const res = await runCli(args)
    return { ...res, ms: Date.now() - started }
  }
  const [list, set, badSet, toRedis, stopped, clustered] = await Promise.all([
    timed(['users', 'list', '-c', refused]),
    timed(['users', 'set', 'alice', '{"token": "a"}', '-c', refused]),
    timed(['users', 'set', 'alice', '{"ports": ["x"]}', '-c', refused]),
    timed(['users', 'import', '--from', 'fp-multiuser', MULTIUSER, '--to-redis', '-c', refused]),
    timed(['users', 'disable', 'alice', '-c', paused]),
    timed(['users', 'list', '-c', cluster])
  ])
  const port = /:(\d+)"/.exec(readFileSync(refused, 'utf8'))?.[1]
  // badSet exits before it reaches Redis: what starting the command costs on this machine just now
  const start = badSet.ms
  for (const [what, res] of [['list', list], ['set', set], ['import --to-redis', toRedis]] as const) {
    expect(t, res, 1, '', `redis redis://:***@127.0.0.1:${port} is not reachable: connect ECONNREFUSED 127.0.0.1:${port}\n`, what)
    t.ok(res.ms < start + 4000, `${what}: ${res.ms} ms (a start: ${start} ms)`)
  }
  expect(t, badSet, 1, '', 'alice: not a valid record:\n  ports[0]: "x" is not a port or a "low-high" range within 0-65535\n', 'a bad record is reported first')
  expect(t, stopped, 1, '', `redis ${redis.url} is not reachable: no answer within 3000 ms\n`, 'a Redis that does not answer')
  t.ok(stopped.ms < start + 3000 + 4000, `no answer: ${stopped.ms} ms (a start: ${start} ms)`)
  // not 2 s later, ioredis waiting for the silent Redis to close the socket
  t.ok(stopped.lingerMs < 1500, `the command ends with its line: ${stopped.lingerMs} ms after it (an exit on a loaded machine: up to about a second)`)
  expect(t, clustered, 1, '', `redis cluster ${JSON.parse(readFileSync(cluster, 'utf8')).redis.cluster[0]} is not reachable: no node answered (Failed to refresh slots cache)\n`, 'cluster')
  t.ok(clustered.ms < start + 3000 + 4000, `cluster: ${clustered.ms} ms (a start: ${start} ms)`)
})

t.test('set: a field given twice in the record is a problem, as in a users file, not the last one kept silently', async t => {
  const res = await runCli(['users', 'set', 'alice', '{"token": "a", "token": "b", "metas": {"x": "1", "x": "2"}}', '-c', configFile({ users: { file: 'users.json' } })])
  expect(t, res, 1, '', 'alice: not a valid record:\n  token: given again: JSON would keep only the last\n  metas.x: given again: JSON would keep only the last\n')
})

t.test('a Redis URL whose port is not a Redis (an HTTP server): says so, not ioredis\'s "Please report this."', async t => {
  const server = createServer((_, res) => res.end('hello'))
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  const { port } = server.address() as AddressInfo
  const res = await runCli(['users', 'list', '-c', configFile({ redis: { url: `redis://127.0.0.1:${port}` }, users: { redis: {} } })])
  expect(t, res, 1, '', `redis redis://127.0.0.1:${port} is not reachable: what answers there does not speak the Redis protocol (Protocol error, got "H" as reply type byte): is it the port of a Redis?\n`)
})

t.test('a password in a Redis URL is never shown: one with an @ in it, one in the query', async t => {
  const port = await freePort()
  const urls = [`redis://:hun@ter2@127.0.0.1:${port}`, `redis://admin:hun@ter2@127.0.0.1:${port}/0`, `redis://127.0.0.1:${port}/0?family=4&password=hunter2`]
  const shown = [`redis://:***@127.0.0.1:${port}`, `redis://admin:***@127.0.0.1:${port}/0`, `redis://127.0.0.1:${port}/0?family=4&password=***`]
  const results = await Promise.all(urls.map(async url => await runCli(['users', 'list', '-c', configFile({ redis: { url }, users: { redis: {} } })])))
  results.forEach((res, i) => expect(t, res, 1, '', `redis ${shown[i]} is not reachable: connect ECONNREFUSED 127.0.0.1:${port}\n`, urls[i]))
  const cluster = await runCli(['users', 'list', '-c', configFile({ redis: { cluster: [urls[0]] }, users: { redis: {} } })])
  t.equal(cluster.code, 1)
  t.ok(cluster.stderr.startsWith(`redis cluster ${shown[0]} is not reachable`), cluster.stderr)
  for (const res of [...results, cluster]) t.notOk(res.stderr.includes('ter2'), 'no part of the password')
})
