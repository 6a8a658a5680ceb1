import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { compileOnly, loadConfig, parseConfig } from '../../src/config.js'
import { createLogger } from '../../src/log.js'
import { createMetrics } from '../../src/metrics.js'
import { createRuntime } from '../../src/runtime.js'
import { runCli } from '../helpers/cli.js'
import { issuesOf, issuesOfAsync } from '../helpers/issues.js'

const folder = (): string => mkdtempSync(join(tmpdir(), 'frpgw-users-block-'))
const deps = (baseDir: string) => ({ metrics: createMetrics(), log: createLogger({ level: 'silent', redact: [] }), open: false, baseDir })

t.test('the users block: a file or Redis, with cacheMs defaulting to 2000', async t => {
  t.same(parseConfig({ users: { file: 'users.json' } }).users, { file: 'users.json' })
  t.same(parseConfig({ users: { redis: {} }, redis: { url: 'redis://127.0.0.1:1' } }).users, { redis: { cacheMs: 2000 } })
  t.same(issuesOf(() => parseConfig({ users: { file: '' } })).map(i => i.path), ['users.file'])
  t.same(issuesOf(() => parseConfig({ users: { redis: { cacheMs: -1 } } })).map(i => i.path), ['users.redis.cacheMs'])
  t.match(issuesOf(() => parseConfig({ users: { file: 'a', redis: {} } }))[0].message, 'expected {"file": "users.json"} or {"redis": {}}')
})

t.test('a relative users file is read from the config file\'s folder, and its problems are config problems', async t => {
  const dir = folder()
  const config = join(dir, 'gateway.json')
  writeFileSync(config, JSON.stringify({ users: { file: 'users.json' }, chain: [{ name: 'u', plugin: 'users', ops: ['Login'] }] }))
  writeFileSync(join(dir, 'users.json'), JSON.stringify({ users: { alice: { token: 's' } } }))
  // the folder comes from the config's path, as check and a reload take it (the process runs elsewhere: the repository)
  t.not(process.cwd(), dir)
  const runtime = await createRuntime(await loadConfig(config), compileOnly(config), config)
  const log = createLogger({ level: 'silent', redact: [] })
  const login = (user: string) => runtime.call('Login', { user, metas: { token: 's' } }, performance.now(), 'r', log).result
  t.same(await login('alice'), { outcome: 'allow' }, 'alice, of users.json beside the config')
  t.match(await login('bob'), { outcome: 'reject' }, 'bob is not in it')
  await runtime.close()

  writeFileSync(join(dir, 'users.json'), JSON.stringify({ users: { alice: { ports: ['x'] }, 'bad name': {} } }))
  t.same((await issuesOfAsync(async () => await createRuntime(await loadConfig(config), deps(dir), config))).map(i => `${i.path}: ${i.message}`), [
    'users.file users.json: users.alice.ports[0]: "x" is not a port or a "low-high" range within 0-65535',
    'users.file users.json: users.bad name: expected a user name of 1-64 characters: A-Z, a-z, 0-9, _ . @ - (not first)'
  ], 'every problem, each under the file it is in')
})

t.test('a users table in Redis needs the redis block', async t => {
  const dir = folder()
  const issues = await issuesOfAsync(async () => await createRuntime(parseConfig({ users: { redis: {} } }), deps(dir)))
  t.same(issues, [{ path: 'users.redis', message: 'a user table in Redis needs the top-level "redis" block' }])
})

t.test('check reports a missing users file with the config\'s own problems, in one run', async t => {
  const dir = folder()
  const config = join(dir, 'gateway.json')
  writeFileSync(config, JSON.stringify({ users: { file: 'nope.json' }, deadlineMs: 0 }))
  const result = await runCli(['check', '--config', config])
  t.equal(result.code, 1)
  t.match(result.stderr, /deadlineMs: /)
  t.match(result.stderr, /users\.file: nope\.json: cannot read: ENOENT/)
})
