import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { ConfigError } from '../../src/errors.js'
import { FileUserSource } from '../../src/users/file-source.js'
import { ROOT } from '../helpers/cli.js'

const fixture = readFileSync(`${ROOT}test/fixtures/users/users.json`, 'utf8')
const folder = (): string => mkdtempSync(join(tmpdir(), 'frpgw-users-'))

const rejection = async (p: Promise<unknown>): Promise<ConfigError> => {
  try {
    await p
  } catch (err) {
    if (err instanceof ConfigError) return err
    throw err
  }
  throw new Error('expected a ConfigError')
}

t.test('opens a file relative to the base folder and answers get(name)', async t => {
  const dir = folder()
  writeFileSync(join(dir, 'users.json'), fixture)
  const source = await FileUserSource.open('users.json', dir)
  t.equal(source.path, join(dir, 'users.json'))
  t.equal(source.size, 3)
  t.same([...source.names()], ['alice', 'bob', 'carol'])
  t.ok(source.get('alice')?.tokenMatches('alice-secret'))
  t.equal(source.get('nobody'), undefined)
  t.equal(source.get('toString'), undefined)
  const absolute = await FileUserSource.open(join(dir, 'users.json'), '/elsewhere')
  t.equal(absolute.size, 3, 'an absolute path ignores the base folder')
})

t.test('a file an editor saved with a byte order mark (Windows Notepad) reads as without one', async t => {
  const dir = folder()
  writeFileSync(join(dir, 'users.json'), `\uFEFF${fixture}`)
  const source = await FileUserSource.open('users.json', dir)
  t.equal(source.size, 3)
  t.ok(source.get('alice')?.tokenMatches('alice-secret'))
})

t.test('a missing, non-JSON or invalid file is a ConfigError naming the file and every problem', async t => {
  const dir = folder()
  const missing = await rejection(FileUserSource.open('nope.json', dir))
  t.same(missing.issues.map(i => i.path), ['(file)'])
  t.match(missing.message, join(dir, 'nope.json'))
  writeFileSync(join(dir, 'bad.json'), '{"users": ')
  t.match((await rejection(FileUserSource.open('bad.json', dir))).issues[0].message, /not valid JSON/)
  writeFileSync(join(dir, 'invalid.json'), JSON.stringify({ users: { alice: { ports: ['x', 6000, 'y'] }, bob: { enabled: 'no' } } }))
  t.same((await rejection(FileUserSource.open('invalid.json', dir))).issues.map(i => i.path),
    ['users.alice.ports[0]', 'users.alice.ports[2]', 'users.bob.enabled'])
})

t.test('a FIFO, a device or a folder is refused at once, never read: a FIFO with no writer held the read (reloads, a stop) for ever', async t => {
  const dir = folder()
  execFileSync('mkfifo', [join(dir, 'fifo.json')])
  symlinkSync('/dev/zero', join(dir, 'zero.json'))
  const problems = await Promise.all(['fifo.json', 'zero.json', '.'].map(async file => (await rejection(FileUserSource.open(file, dir))).issues.map(i => [i.path, i.message.replace(/.*: /, '')])))
  t.same(problems, [[['(file)', 'is a FIFO, not a regular file']], [['(file)', 'is a device, not a regular file']], [['(file)', 'is a folder, not a regular file']]])
})

t.test('a user or a field given twice (a line copied, its name left unchanged) is an error, not the last one silently', async t => {
  const dir = folder()
  writeFileSync(join(dir, 'users.json'), [
    '{"users": {',
    '  "alice": {"token": "a", "ports": ["6000-6099"]},',
    '  "bob": {"token": "b", "ports": [6100], "ports": [6200]},',
    '  "alice": {"token": "c", "ports": "x"}',
    '}}'
  ].join('\n'))
  const err = await rejection(FileUserSource.open('users.json', dir))
  t.same(err.issues, [
    { path: 'users.bob.ports', message: 'given again on line 3 (first on line 3): JSON would keep only the last' },
    { path: 'users.alice', message: 'given again on line 4 (first on line 2): JSON would keep only the last' },
    { path: 'users.alice.ports', message: 'Invalid input: expected array, received string' }
  ], 'with the other problems, in one run')
  writeFileSync(join(dir, 'ok.json'), '{"users": {"a\\"b": {}, "a\\u0022b2": {"comment": "\\"}"}, "x": {"metas": {"k": "1", "K": "2"}}}}')
  t.same((await rejection(FileUserSource.open('ok.json', dir))).issues.map(i => i.path), ['users.a"b', 'users.a"b2'], 'keys read as JSON reads them: only the bad names, nothing given twice')
})

t.test('reload swaps in a good file and keeps the last good table when the new one is broken', async t => {
  const dir = folder()
  const file = join(dir, 'users.json')
  writeFileSync(file, fixture)
  const source = await FileUserSource.open('users.json', dir)
  const before = source.get('alice')

  writeFileSync(file, JSON.stringify({ users: { alice: { token: 'new-secret' }, dave: {} } }))
  await source.reload()
  t.ok(source.get('alice')?.tokenMatches('new-secret'), 'the changed token applies')
  t.notOk(source.get('alice')?.tokenMatches('alice-secret'))
  t.equal(source.get('bob'), undefined, 'a removed user is gone')
  t.not(source.get('alice'), before)
  const good = source.get('alice')

  writeFileSync(file, JSON.stringify({ users: { alice: { token: 'third', ports: ['1-2-3'] }, eve: { maxProxies: -1 } } }))
  const err = await rejection(source.reload())
  t.same(err.issues.map(i => i.path), ['users.alice.ports[0]', 'users.eve.maxProxies'])
  t.equal(err.code, 'FRPGW_ERR_CONFIG')
  t.equal(source.get('alice'), good, 'the last good table keeps serving')
  t.equal(source.get('eve'), undefined)
  t.equal(source.size, 2)

  writeFileSync(file, 'not json')
  await rejection(source.reload())
  t.equal(source.get('alice'), good)
})

t.test('lookup answers the UserTable shape: one frozen found object per user, unknown otherwise', async t => {
  const dir = folder()
  writeFileSync(join(dir, 'users.json'), fixture)
  const source = await FileUserSource.open('users.json', dir)
  const found = source.lookup('alice')
  t.equal(found.status, 'found')
  t.equal(found.status === 'found' && found.record, source.get('alice'))
  t.equal(source.lookup('alice'), found, 'the same object on every call: no allocation per lookup')
  t.same(source.lookup('nobody'), { status: 'unknown' })
  t.same(source.lookup('__proto__'), { status: 'unknown' })
  writeFileSync(join(dir, 'users.json'), JSON.stringify({ users: { dave: {} } }))
  await source.reload()
  t.same(source.lookup('alice'), { status: 'unknown' }, 'a reload replaces the lookups too')
  t.equal(source.lookup('dave').status, 'found')
})
