import { readFileSync } from 'node:fs'
import t from 'tap'
import { fromFpMultiuser, fromFrpsPanel } from '../../src/users/import.js'
import { compileUsers } from '../../src/users/record.js'
import { ROOT } from '../helpers/cli.js'
import { issuesOf } from '../helpers/issues.js'

const fixture = (name: string): string => readFileSync(`${ROOT}test/fixtures/users/${name}`, 'utf8')

t.test('fp-multiuser: user=token lines, split at the first =, trimmed; comments and blank lines skipped', async t => {
  const file = fromFpMultiuser(fixture('fp-multiuser-tokens'))
  t.same(file, {
    users: {
      user1: { token: '123', enabled: true },
      user2: { token: 'abc', enabled: true },
      user3: { token: 'with spaces around = and an equals sign', enabled: true }
    }
  })
  t.same(fromFpMultiuser('\uFEFFa=1\r\nb=2\r\n'), { users: { a: { token: '1', enabled: true }, b: { token: '2', enabled: true } } }, 'BOM and CRLF')
  t.same(fromFpMultiuser(''), { users: {} })
  t.ok(compileUsers(file).get('user1')?.tokenMatches('123'))
})

t.test('fp-multiuser: every bad line is named', async t => {
  const issues = issuesOf(() => fromFpMultiuser('a=1\njust a word\nbad name=2\na=3\nc=\n=4\n'))
  t.same(issues.map(i => i.path), ['line 2', 'line 3', 'line 4', 'line 5', 'line 6'])
  t.match(issues[0].message, /expected user=token/)
  t.match(issues[2].message, /user "a" again \(first on line 1\)/)
  t.match(issues[3].message, /empty token for "c"/)
  t.match(issuesOf(() => fromFpMultiuser(`a=${'x'.repeat(1025)}`))[0], { path: 'line 1', message: /1024/ })
})

t.test('frps-panel: [tokens.NAME] tables keep their meaning', async t => {
  const file = fromFrpsPanel(fixture('frps-tokens.toml'))
  t.same(file.users, {
    user1: {
      token: 'token1',
      enabled: true,
      comment: 'user1 with token1',
      ports: [8080, '10000-10200'],
      domains: ['web01.domain.com', 'web02.domain.com'],
      subdomains: ['web01', 'web02']
    },
    user2: {
      token: 'token2',
      enabled: false,
      comment: 'user2 with token2',
      ports: [9080],
      domains: ['web11.domain.com', 'web12.domain.com'],
      subdomains: ['web11', 'web12']
    },
    any: { token: 'token3', enabled: true },
    none: { token: 'token4', enabled: true, ports: [] }
  })
  const users = compileUsers(file)
  t.ok(users.get('any')?.portAllowed(12345), '[""] means any port')
  t.notOk(users.get('none')?.portAllowed(12345), '[] means no port')
  t.ok(users.get('user1')?.portAllowed(10100))
  t.notOk(users.get('user1')?.portAllowed(9080))
  t.ok(users.get('user1')?.domainAllowed('web01.domain.com'))
  t.notOk(users.get('user1')?.domainAllowed('web03.domain.com'))
})

t.test('frps-panel: port strings are normalised, empty entries dropped', async t => {
  const file = fromFrpsPanel('[tokens.a]\ntoken = "t"\nports = ["", " 8080 ", "6000 - 6010", 7000]\n')
  t.same(file.users.a.ports, [8080, '6000-6010', 7000])
})

t.test('frps-panel: every problem is named by its table and key', async t => {
  const toml = [
    '[tokens.a]', 'user = "b"', 'token = "t"', 'ports = [70000, "x", true]', 'enable = "yes"',
    '[tokens.c]', 'token = ""', 'colour = "red"',
    '[tokens."bad name"]', 'token = "t"',
    '[tokens.d]', 'token = "t"', 'enable = true', 'status = false',
    '[other]', 'x = 1'
  ].join('\n')
  const issues = issuesOf(() => fromFrpsPanel(toml))
  t.same(issues.map(i => i.path).sort(), [
    'other', 'tokens.a.enable', 'tokens.a.ports[0]', 'tokens.a.ports[1]', 'tokens.a.ports[2]', 'tokens.a.user', 'tokens.bad name',
    'tokens.c.colour', 'tokens.c.token', 'tokens.d.status'
  ], 'every problem in one run, the record\'s with the table\'s own')
  t.equal(issues.filter(i => i.path === 'tokens.c.token').length, 1, 'an empty token said once')
  // entries dropped or refused before the record check: it still names each entry where the file has it
  const shifted = issuesOf(() => fromFrpsPanel(`[tokens.a]\ntoken = "t"\nports = ["", true, 70000]\nsubdomains = ["", "ok", "${'x'.repeat(254)}"]\n`))
  t.same(shifted.map(i => i.path).sort(), ['tokens.a.ports[1]', 'tokens.a.ports[2]', 'tokens.a.subdomains[2]'])
  const old = issuesOf(() => fromFrpsPanel('[tokens.a]\ntoken = "t"\nstatus = "yes"\n'))
  t.same(old.map(i => i.path), ['tokens.a.status'], 'the pre-2.0 key is named as the file has it')
})

t.test('frps-panel: a TOML syntax error names its line', async t => {
  const issues = issuesOf(() => fromFrpsPanel('[tokens.a]\ntoken = "t"\nports = [1,\n'))
  t.equal(issues.length, 1)
  t.match(issues[0], { path: /^line \d+$/, message: /not valid TOML/ })
  t.same(fromFrpsPanel(''), { users: {} })
})
