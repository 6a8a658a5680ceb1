import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { Ajv2020 } from 'ajv/dist/2020.js'
import t from 'tap'
import { compileUser, compileUsers, parseUserRecord, parseUsersFile, userRecordSchema, usersJsonSchema } from '../../src/users/record.js'
import { ROOT } from '../helpers/cli.js'
import { issuesOf } from '../helpers/issues.js'

const paths = (fn: () => unknown): string[] => issuesOf(fn).map(i => i.path).sort()
const record = (r: unknown) => userRecordSchema.parse(r)

t.test('the fixture users file parses, with enabled defaulting to true', async t => {
  const file = parseUsersFile(JSON.parse(readFileSync(`${ROOT}test/fixtures/users/users.json`, 'utf8')))
  t.same(Object.keys(file.users), ['alice', 'bob', 'carol'])
  t.equal(file.users.alice.enabled, true)
  t.equal(file.users.carol.enabled, false)
  t.same(file.users.alice.metas, { team: 'red' })
})

t.test('every problem of the file in one run, each with its JSON path', async t => {
  const raw = {
    users: {
      alice: {
        ports: [6000, '7000-6000', 'x', 65536, 1.5],
        clientCidrs: ['10.0.0.0/8', '1.2.3.4/33', 'nope'],
        proxyTypes: ['tcp', 'ftp'],
        bandwidthLimit: '10GB',
        maxProxies: -1,
        expires: '2026-01-01',
        extra: true
      },
      bob: { token: 'a', tokenSha256: 'a'.repeat(64), tokenSha: 1 },
      carol: { tokenSha256: 'xyz', proxyNames: [''], metas: { k: 1 } },
      'bad name': {},
      '-dash': {}
    },
    more: 1
  }
  t.same(paths(() => parseUsersFile(raw)), [
    'more',
    'users.-dash',
    'users.alice.bandwidthLimit',
    'users.alice.clientCidrs[1]',
    'users.alice.clientCidrs[2]',
    'users.alice.expires',
    'users.alice.extra',
    'users.alice.maxProxies',
    'users.alice.ports[1]',
    'users.alice.ports[2]',
    'users.alice.ports[3]',
    'users.alice.ports[4]',
    'users.alice.proxyTypes[1]',
    'users.bad name',
    'users.bob.tokenSha',
    'users.bob.tokenSha256',
    'users.carol.metas.k',
    'users.carol.proxyNames[0]',
    'users.carol.tokenSha256'
  ])
  const messages = Object.fromEntries(issuesOf(() => parseUsersFile(raw)).map(i => [i.path, i.message]))
  t.match(messages['users.alice.ports[1]'], /"7000-6000" is not a port or a "low-high" range within 0-65535/)
  t.match(messages['users.alice.clientCidrs[1]'], /"1.2.3.4\/33" is not an IPv4 or IPv6 address or CIDR/)
  t.match(messages['users.bob.tokenSha256'], /token or tokenSha256, not both/)
  t.match(messages['users.bad name'], /user name of 1-64 characters/)
  t.match(messages['users.alice.extra'], /unknown key/)
})

t.test('ports never hold port 0 (a remote_port of 0 asks frps to pick one), in a users file and in a record from Redis', async t => {
  const zero = (entry: string) => `"${entry}" includes port 0, which asks frps to pick a port: ranges start at 1`
  t.same(issuesOf(() => parseUsersFile({ users: { alice: { ports: [0, '0-10', 6000, '00-5', '0'] } } })), [
    { path: 'users.alice.ports[0]', message: zero('0') },
    { path: 'users.alice.ports[1]', message: zero('0-10') },
    { path: 'users.alice.ports[3]', message: zero('00-5') },
    { path: 'users.alice.ports[4]', message: zero('0') }
  ])
  t.throws(() => parseUserRecord('alice', { ports: ['0-10'] }), { message: `ports[0]: ${zero('0-10')}` })
  t.equal(parseUserRecord('alice', { ports: [1, '1-10', 65535] }).portsText, '1, 1-10, 65535', 'from 1 on')
  const validate = new Ajv2020({ strict: true }).compile(usersJsonSchema() as object)
  t.notOk(validate({ users: { alice: { ports: [0] } } }), 'the JSON Schema says so too')
  t.notOk(validate({ users: { alice: { ports: ['0-10'] } } }))
  t.ok(validate({ users: { alice: { ports: [1, '1-10', '0010'] } } }))
})

t.test('a proxyTypes entry nested 100,000 deep is named, not quoted (quoting it overflowed the stack)', async t => {
  const deep = JSON.parse('['.repeat(100_000) + ']'.repeat(100_000))
  t.same(issuesOf(() => parseUsersFile({ users: { alice: { proxyTypes: ['tcp', deep] } } })),
    [{ path: 'users.alice.proxyTypes[1]', message: 'an array is not a proxy type frps knows: tcp, udp, http, https, stcp, xtcp, sudp, tcpmux' }])
})

t.test('a __proto__ user is an error, and a metas __proto__ key stays a plain key', async t => {
  t.same(paths(() => parseUsersFile(JSON.parse('{"users": {"__proto__": {"token": "x"}}}'))), ['users.__proto__'])
  const file = parseUsersFile(JSON.parse('{"users": {"a": {"metas": {"__proto__": "v"}}}}'))
  t.ok(Object.hasOwn(file.users.a.metas as object, '__proto__'))
  t.equal(({} as Record<string, unknown>).v, undefined)
})

t.test('user names: length and characters are bounded', async t => {
  t.same(paths(() => parseUsersFile({ users: { ['a'.repeat(65)]: {}, ['b'.repeat(64)]: {}, 'x y': {}, 'é': {}, 'a.b@c_d-e': {} } })),
    ['users.' + 'a'.repeat(65), 'users.x y', 'users.é'])
})

t.test('bandwidthLimit is a positive number and KB or MB, as frp writes it', async t => {
  for (const ok of ['10MB', '1KB', '0.5MB', '100KB']) t.equal(record({ bandwidthLimit: ok }).bandwidthLimit, ok)
  for (const bad of ['0MB', '0.0KB', '10', '10 MB', '10mb', '10GB', 'MB', '-1MB']) {
    t.notOk(userRecordSchema.safeParse({ bandwidthLimit: bad }).success, bad)
  }
})

t.test('compiled checks: absent fields hold, empty lists allow nothing', async t => {
  const open = compileUser('o', record({}))
  t.ok(open.portAllowed(1) && open.cidrAllowed('1.2.3.4') && open.nameAllowed('x') && open.domainAllowed('a.b') &&
    open.subdomainAllowed('s') && open.typeAllowed('xtcp') && !open.expired(Date.now()))
  t.equal(open.hasToken, false)
  t.equal(open.tokenMatches(''), false, 'no token never matches')
  t.equal(open.portsText, undefined)
  const closed = compileUser('c', record({ ports: [], domains: [], subdomains: [], proxyNames: [], proxyTypes: [], clientCidrs: [] }))
  t.notOk(closed.portAllowed(6000) || closed.portAllowed(0) || closed.domainAllowed('a.b') || closed.subdomainAllowed('s') ||
    closed.nameAllowed('x') || closed.typeAllowed('tcp') || closed.cidrAllowed('10.0.0.1'))
})

t.test('compiled checks match what the record says', async t => {
  const users = compileUsers(parseUsersFile(JSON.parse(readFileSync(`${ROOT}test/fixtures/users/users.json`, 'utf8'))))
  const alice = users.get('alice')!
  t.ok(alice.tokenMatches('alice-secret'))
  t.notOk(alice.tokenMatches('alice-secreT'))
  t.notOk(alice.tokenMatches(''))
  t.ok(alice.portAllowed(6000) && alice.portAllowed(6099))
  t.notOk(alice.portAllowed(6100) || alice.portAllowed(5999))
  t.equal(alice.portsText, '6000-6099')
  t.ok(alice.cidrAllowed('10.1.2.3') && alice.cidrAllowed('::ffff:10.1.2.3') && alice.cidrAllowed('2001:db8::1'))
  t.notOk(alice.cidrAllowed('11.0.0.1') || alice.cidrAllowed('not-an-ip'))
  t.ok(alice.nameAllowed('web-1') && alice.nameAllowed('ssh'))
  t.notOk(alice.nameAllowed('ssh2') || alice.nameAllowed('alice.web-1'))
  t.ok(alice.domainAllowed('x.alice.example.com'))
  t.notOk(alice.domainAllowed('alice.example.com') || alice.domainAllowed('x.bob.example.com'))
  t.ok(alice.subdomainAllowed('alice-web'))
  t.notOk(alice.subdomainAllowed('bob-web'))
  // frps 0.64 routes Host web.example.com to a proxy of WEB.Example.COM: a host name in any case is the same one
  t.ok(alice.domainAllowed('X.Alice.Example.COM') && alice.subdomainAllowed('Alice-Web'))
  t.notOk(alice.domainAllowed('X.BOB.example.com') || alice.subdomainAllowed('BOB-web'))
  t.ok(alice.typeAllowed('http'))
  t.notOk(alice.typeAllowed('udp'))

  const bob = users.get('bob')!
  t.ok(bob.hasToken)
  t.ok(bob.tokenMatches('bob-secret'), 'a hashed token matches its plaintext')
  t.notOk(bob.tokenMatches(createHash('sha256').update('bob-secret').digest('hex')), 'the hash itself is not the secret')
  t.ok(bob.portAllowed(7000) && bob.portAllowed(6150))
  t.notOk(bob.portAllowed(7001))
  t.equal(bob.portsText, '6100-6199, 7000')
  t.notOk(bob.expired(Date.parse('2029-12-31T23:59:59Z')))
  t.ok(bob.expired(Date.parse('2030-01-01T00:00:00Z')))

  t.equal(users.get('carol')!.enabled, false)
  t.equal(users.get('constructor'), undefined, 'a name on Object.prototype is no user')
})

t.test('expires needs a zone and a real date', async t => {
  t.ok(userRecordSchema.safeParse({ expires: '2027-01-31T00:00:00+02:00' }).success)
  t.ok(userRecordSchema.safeParse({ expires: '2027-01-31T00:00Z' }).success)
  t.ok(userRecordSchema.safeParse({ expires: '2028-02-29T00:00:00Z' }).success, 'a leap day')
  // Date.parse would roll these over to the next month
  for (const bad of ['2027-01-31', '2027-01-31T00:00:00', '2027-13-01T00:00:00Z', 'tomorrow', '2027-04-31T00:00:00Z', '2027-02-29T00:00:00Z', '2027-02-30T00:00:00+02:00']) {
    t.notOk(userRecordSchema.safeParse({ expires: bad }).success, bad)
  }
  const u = compileUser('x', record({ expires: '2027-01-31T00:00:00+02:00' }))
  t.notOk(u.expired(Date.parse('2027-01-30T21:59:59Z')))
  t.ok(u.expired(Date.parse('2027-01-30T22:00:00Z')))
})

t.test('a secret that is not a string never matches', async t => {
  const u = compileUser('x', record({ token: 'undefined' }))
  t.notOk(u.tokenMatches(undefined))
  t.notOk(u.tokenMatches(null))
  t.ok(u.tokenMatches('undefined'))
})
