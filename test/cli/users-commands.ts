import { randomUUID } from 'node:crypto'
import type { Test } from 'tap'
import { configFile, ROOT, runCli, type CliResult } from '../helpers/cli.js'

// What the users-*.test.ts files share: the fixtures, the usage, and the Redis sub-commands run
// against any Redis block (standalone, Cluster).

export const FIXTURES = `${ROOT}test/fixtures/users/`
export const PANEL = `${FIXTURES}frps-tokens.toml`
export const MULTIUSER = `${FIXTURES}fp-multiuser-tokens`

export const USERS_USAGE = [
  'usage: frp-plugin-gateway users list [--config FILE]',
  '       frp-plugin-gateway users get NAME [--config FILE]',
  '       frp-plugin-gateway users set NAME JSON [--config FILE]',
  '       frp-plugin-gateway users enable NAME [--config FILE]',
  '       frp-plugin-gateway users disable NAME [--config FILE]',
  '       frp-plugin-gateway users delete NAME [--config FILE]',
  '       frp-plugin-gateway users import --from fp-multiuser|frps-panel FILE [--to-redis [--config FILE]]',
  'see frp-plugin-gateway help users',
  ''
].join('\n')

export const PANEL_USERS = {
  user1: {
    token: 'token1',
    enabled: true,
    ports: [8080, '10000-10200'],
    domains: ['web01.domain.com', 'web02.domain.com'],
    subdomains: ['web01', 'web02'],
    comment: 'user1 with token1'
  },
  user2: {
    token: 'token2',
    enabled: false,
    ports: [9080],
    domains: ['web11.domain.com', 'web12.domain.com'],
    subdomains: ['web11', 'web12'],
    comment: 'user2 with token2'
  },
  any: { token: 'token3', enabled: true },
  none: { token: 'token4', enabled: true, ports: [] }
}

export const json = (value: unknown): string => `${JSON.stringify(value, null, 2)}\n`

export function expect (t: Test, res: CliResult, code: number, stdout: string, stderr = '', what = ''): void {
  t.equal(res.code, code, `${what} exit code`)
  t.equal(res.stdout, stdout, `${what} stdout`)
  t.equal(res.stderr, stderr, `${what} stderr`)
}

/** Every Redis sub-command, in the order an operator would use them, on the Redis block given; `cli` runs redis-cli. */
export async function redisCommands (t: Test, redis: Record<string, unknown>, cli: (...args: string[]) => Promise<string[]>): Promise<void> {
  const keyPrefix = `frpgw:test:${randomUUID()}:`
  const config = configFile({ redis: { ...redis, keyPrefix }, users: { redis: {} } })
  const users = async (...args: string[]): Promise<CliResult> => await runCli(['users', ...args, '--config', config])
  // each start of the CLI costs about a second on a loaded machine: whatever does not depend on another runs at once
  const all = async (...runs: string[][]): Promise<CliResult[]> => await Promise.all(runs.map(async args => await users(...args)))
  const unknown = (name: string): string => `${name}: unknown user (no ${keyPrefix}user:{${name}} in Redis)\n`
  const SHA = '9f03ef1533a68d2f506f81ef463c1183a82a6bd40e45613f36e6fe1889cf1b99'

  expect(t, await users('import', '--from', 'frps-panel', PANEL, '--to-redis'), 0,
    'user1: created\nuser2: created\nany: created\nnone: created\n4 users: 4 created, 0 replaced\n', '', 'import --to-redis')
  const [get1, get2, none, list] = await all(['get', 'user1'], ['get', 'user2'], ['get', 'none'], ['list'])
  expect(t, get1, 0, json(PANEL_USERS.user1), '', 'get user1')
  expect(t, get2, 0, json(PANEL_USERS.user2), '', 'get user2')
  expect(t, none, 0, json(PANEL_USERS.none), '', 'get none: its ports [] kept')
  expect(t, list, 0, 'any\nnone\nuser1\nuser2 (disabled)\n', '', 'list')

  expect(t, await users('import', '--from', 'fp-multiuser', MULTIUSER, '--to-redis'), 0,
    'user1: replaced\nuser2: replaced\nuser3: created\n3 users: 1 created, 2 replaced\n', '', 'import again')

  const record = { token: 'alice-secret', ports: ['6000-6099'], metas: { team: 'red' } }
  // the refused sets of alice run with the good one: a refused record is never written
  const [replaced, disabled, created, ...bad] = await all(
    ['get', 'user2'], ['disable', 'user1'], ['set', 'alice', JSON.stringify(record)],
    ['set', 'alice', '{"ports": [70000, "x"], "enabled": "no", "colour": "red"}'],
    ['set', 'alice', '{"token": '],
    ['set', 'alice', '["token"]'],
    ['set', 'alice', '{}'],
    ['set', 'bad name', '{"token": "t"}'],
    ['get', 'nobody'], ['enable', 'nobody'], ['disable', 'nobody'], ['delete', 'nobody']
  )
  expect(t, replaced, 0, json({ token: 'abc', enabled: true }), '', 'the whole record replaced by the import')
  expect(t, disabled, 0, 'user1: disabled\n', '', 'disable')
  expect(t, created, 0, 'alice: created\n', '', 'set')
  expect(t, bad[0], 1, '', [
    'alice: not a valid record:',
    '  enabled: Invalid input: expected boolean, received string',
    '  ports[0]: "70000" is not a port or a "low-high" range within 0-65535',
    '  ports[1]: "x" is not a port or a "low-high" range within 0-65535',
    '  colour: unknown key',
    ''
  ].join('\n'), 'a bad record')
  t.equal(bad[1].code, 1)
  t.match(bad[1].stderr, /^alice: the record is not valid JSON: .+\n$/, 'not JSON')
  expect(t, bad[2], 1, '', 'alice: not a valid record:\n  (top level): Invalid input: expected object, received array\n', 'not an object')
  expect(t, bad[3], 1, '', 'alice: Redis keeps no empty record: give at least one field, e.g. {"enabled": true}\n', 'empty')
  expect(t, bad[4], 1, '', '"bad name": expected a user name of 1-64 characters: A-Z, a-z, 0-9, _ . @ - (not first)\n', 'bad name')
  for (const [i, what] of ['get', 'enable', 'disable', 'delete'].entries()) expect(t, bad[5 + i], 1, '', unknown('nobody'), `${what} unknown`)

  const [again, got, deleted] = await all(['disable', 'user1'], ['get', 'alice'], ['delete', 'user3'])
  expect(t, deleted, 0, 'user3: deleted\n', '', 'delete')
  expect(t, again, 0, 'user1: unchanged (already disabled)\n', '', 'disable again')
  expect(t, got, 0, json(record), '', 'get after set: only the good record was written')
  const [enabled, set] = await all(['enable', 'user1'], ['set', 'alice', `{"tokenSha256": "${SHA}"}`])
  expect(t, enabled, 0, 'user1: enabled\n', '', 'enable')
  expect(t, set, 0, 'alice: replaced\n', '', 'set again')
  const [unchanged, whole] = await all(['enable', 'user1'], ['get', 'alice'])
  expect(t, unchanged, 0, 'user1: unchanged (already enabled)\n', '', 'enable again')
  expect(t, whole, 0, json({ tokenSha256: SHA }), '', 'set replaces the whole record')
  t.same(await cli('HGETALL', `${keyPrefix}user:{user1}`), ['token', '"123"', 'enabled', 'true'], 'enable and disable leave the rest of the record')

  // a record changed by hand that no longer validates: list says so, get shows it and exits 1
  await cli('HSET', `${keyPrefix}user:{user2}`, 'ports', '["x"]', 'expires', '"2020-01-01T00:00:00Z"')
  const [invalid, shown] = await all(['list'], ['get', 'user2'])
  expect(t, invalid, 0, [
    'alice', 'any', 'none', 'user1', 'user2 (not a valid record: ports[0]: "x" is not a port or a "low-high" range within 0-65535)', ''
  ].join('\n'), '', 'list with a bad record')
  expect(t, shown, 1, json({ token: 'abc', enabled: true, ports: ['x'], expires: '2020-01-01T00:00:00Z' }),
    'user2: not a valid record:\n  ports[0]: "x" is not a port or a "low-high" range within 0-65535\n', 'get a bad record')

  await cli('HDEL', `${keyPrefix}user:{user2}`, 'ports')
  const [gone, last] = await all(['delete', 'user3'], ['list'])
  expect(t, gone, 1, '', unknown('user3'), 'delete again')
  expect(t, last, 0, 'alice\nany\nnone\nuser1\nuser2 (expired)\n', '', 'list at the end')
  t.same((await cli('SMEMBERS', `${keyPrefix}users`)).sort(), ['alice', 'any', 'none', 'user1', 'user2'], 'the index follows')
}

/** redis-cli's reply, one entry a line. */
export const lines = (text: string): string[] => text.split('\n').filter(line => line !== '')
