import t from 'tap'
import { compileWhen, whenSchema, type When } from '../src/match.js'
import type { Content, Op } from '../src/protocol.js'

// what compileWhen answers for each [op, content]: null when the condition holds, else the failed condition
const run = (when: When, calls: Array<[Op, Content]>): Array<string | null> => {
  const m = compileWhen(when)
  return calls.map(([op, c]) => m(op, c))
}
const user = (name: string, metas: Record<string, string> | null = null) => ({ user: { user: name, metas } })
const login = (address: string): [Op, Content] => ['Login', { user: 'a', client_address: address }]
const visitor = (address: string): [Op, Content] => ['NewUserConn', { ...user('a'), remote_addr: address }]
const proxy = (fields: Content): [Op, Content] => ['NewProxy', { ...user('a'), ...fields }]

t.test('no condition holds for everything', async t => {
  t.equal(compileWhen(undefined)('Login', {}), null)
  t.equal(compileWhen({})('Ping', {}), null)
})

t.test('users: Login user, other ops user.user', async t => {
  t.same(run({ users: ['alice', 'bob'] }, [
    ['Login', { user: 'alice' }],
    ['Login', { user: 'carol' }],
    ['Login', { user: { user: 'alice' } }],
    ['Ping', user('bob')],
    ['NewProxy', user('carol')],
    ['Ping', { user: 'alice' }],
    ['CloseProxy', {}],
    ['NewWorkConn', user('alice')]
  ]), [null, 'users', 'users', null, 'users', 'users', 'users', null])
})

t.test('proxyTypes', async t => {
  t.same(run({ proxyTypes: ['tcp', 'udp'] }, [
    proxy({ proxy_type: 'tcp' }),
    proxy({ proxy_type: 'http' }),
    proxy({}),
    ['NewUserConn', { proxy_type: 'udp' }],
    ['Login', { user: 'a' }],
    ['Ping', user('a')]
  ]), [null, 'proxyTypes', 'proxyTypes', null, 'proxyTypes', 'proxyTypes'])
})

t.test('proxyNames globs', async t => {
  const names = (patterns: string[], list: string[]) => run({ proxyNames: patterns }, list.map(n => proxy({ proxy_name: n })))
  t.same(names(['alice.*'], ['alice.web', 'alice.', 'bob.web', 'xalice.web', 'alicexweb']),
    [null, null, 'proxyNames', 'proxyNames', 'proxyNames'], '. is literal, * any run')
  t.same(names(['web-?'], ['web-1', 'web-12', 'web-', 'web-a']), [null, 'proxyNames', 'proxyNames', null], '? is one character')
  t.same(names(['*'], ['', 'anything']), [null, null])
  t.same(names(['a+b(c)[d]{2}|^$\\'], ['a+b(c)[d]{2}|^$\\', 'aab(c)[d]{2}|^$\\', 'a+bc[d]dd']),
    [null, 'proxyNames', 'proxyNames'], 'regex specials are literal')
  t.same(names(['x', 'y*'], ['x', 'yes', 'z']), [null, null, 'proxyNames'], 'any glob of the list')
  t.same(names(['admin*', 'a?b'], ['admin\nx', 'admin\u2028', 'a\nb', 'a\u{1F600}b']), [null, null, null, null],
    '* and ? match line breaks and astral characters too')
  t.same(run({ proxyNames: ['*'] }, [['Login', { user: 'a' }], ['Ping', user('a')], proxy({ proxy_name: 7 })]),
    ['proxyNames', 'proxyNames', 'proxyNames'], 'an op without proxy_name never matches, even *')
})

t.test('proxyTypes and proxyNames are false on an op without the field, even when unknown fields carry its name', async t => {
  const stray = { ...user('a'), proxy_type: 'tcp', proxy_name: 'a.web' }
  const ops: Op[] = ['Login', 'Ping', 'NewWorkConn']
  t.same(run({ proxyTypes: ['tcp'] }, [...ops, 'CloseProxy'].map(op => [op as Op, stray])), ['proxyTypes', 'proxyTypes', 'proxyTypes', 'proxyTypes'])
  t.same(run({ proxyNames: ['*'] }, ops.map(op => [op, stray])), ['proxyNames', 'proxyNames', 'proxyNames'])
  t.same(run({ proxyTypes: ['tcp'], proxyNames: ['*'] }, [['NewProxy', stray], ['NewUserConn', stray]]), [null, null], 'the ops that carry them')
})

t.test('metas: exact values of the client metas', async t => {
  t.same(run({ metas: { team: 'blue', plan: 'pro' } }, [
    ['Login', { metas: { team: 'blue', plan: 'pro', x: '1' } }],
    ['Login', { metas: { team: 'blue' } }],
    ['Login', { metas: { team: 'Blue', plan: 'pro' } }],
    ['Login', { metas: null }],
    ['Login', {}],
    ['NewProxy', { ...user('a', { team: 'blue', plan: 'pro' }), metas: {} }],
    ['NewProxy', { ...user('a'), metas: { team: 'blue', plan: 'pro' } }],
    ['Ping', user('a', { team: 'blue', plan: 'pro' })]
  ]), [null, 'metas', 'metas', 'metas', 'metas', null, 'metas', null], 'NewProxy reads user.metas, not the proxy metas')
})

t.test('metas keys named like Object.prototype members are read as own keys only', async t => {
  const when = JSON.parse('{"metas":{"constructor":"x","__proto__":"y"}}') as When
  t.same(run(when, [
    ['Login', { metas: {} }],
    ['Login', { metas: { constructor: 'x' } }],
    ['Login', { metas: JSON.parse('{"constructor":"x","__proto__":"y"}') }],
    ['Login', { metas: JSON.parse('{"constructor":"x","__proto__":"z"}') }]
  ]), ['metas', 'metas', null, 'metas'])
  t.same(run({ metas: { toString: '' } }, [['Login', { metas: {} }]]), ['metas'])
  t.equal(({} as Record<string, unknown>).y, undefined)
})

t.test('a when parsed from config keeps a metas key named __proto__', async t => {
  const when = whenSchema.parse(JSON.parse('{"metas":{"__proto__":"y"}}'))
  t.equal(JSON.stringify(when), '{"metas":{"__proto__":"y"}}')
  t.equal(Object.getPrototypeOf(when.metas), Object.prototype)
  t.same(run(when, [['Login', { metas: {} }], ['Login', { metas: JSON.parse('{"__proto__":"y"}') }]]), ['metas', null])
})

t.test('clientCidrs against Login client_address', async t => {
  const when = { clientCidrs: ['10.0.0.0/8', '192.168.1.7', '2001:db8::/32', '::1'] }
  t.same(run(when, [
    login('10.1.2.3:5000'),
    login('11.0.0.1:5000'),
    login('192.168.1.7:1'),
    login('192.168.1.8:1'),
    login('10.1.2.3'),
    login('[2001:db8::7]:40022'),
    login('[2001:db9::7]:40022'),
    login('2001:db8::1'),
    login('[::1]:7000'),
    login('::ffff:10.9.9.9'),
    login('[::FFFF:10.9.9.9]:80'),
    login('[::ffff:11.9.9.9]:80'),
    login(''),
    login('garbage'),
    ['Login', { user: 'a' }],
    ['NewProxy', { ...user('a'), client_address: '10.1.2.3:5000' }],
    visitor('10.1.2.3:5000')
  ]), [null, 'clientCidrs', null, 'clientCidrs', null, null, 'clientCidrs', null, null, null, null, 'clientCidrs',
    'clientCidrs', 'clientCidrs', 'clientCidrs', 'clientCidrs', 'clientCidrs'])
})

t.test('an IPv4-mapped IPv6 rule matches the IPv4 address', async t => {
  t.same(run({ clientCidrs: ['::ffff:10.0.0.0/104'] }, [login('10.2.3.4:1'), login('11.2.3.4:1'), login('[::ffff:10.2.3.4]:1')]),
    [null, 'clientCidrs', null])
})

t.test('remoteCidrs against NewUserConn remote_addr', async t => {
  t.same(run({ remoteCidrs: ['127.0.0.0/8', '2001:db8::9/128'] }, [
    visitor('127.0.0.1:54738'),
    visitor('128.0.0.1:54738'),
    visitor('[2001:db8::9]:40000'),
    visitor('[2001:db8::a]:40000'),
    visitor('[::ffff:127.0.0.1]:1'),
    login('127.0.0.1:1'),
    proxy({ remote_addr: '127.0.0.1:1' })
  ]), [null, 'remoteCidrs', null, 'remoteCidrs', null, 'remoteCidrs', 'remoteCidrs'])
})

t.test('remotePorts against NewProxy remote_port', async t => {
  const ports = (list: Array<number | string>, calls: Array<[Op, Content]>) => run({ remotePorts: list }, calls)
  t.same(ports([6000, '7000-7999', '8080'], [
    proxy({ remote_port: 6000 }),
    proxy({ remote_port: 6001 }),
    proxy({ remote_port: 7000 }),
    proxy({ remote_port: 7999 }),
    proxy({ remote_port: 8000 }),
    proxy({ remote_port: 8080 }),
    proxy({ remote_port: '6000' }),
    proxy({}),
    ['NewUserConn', { remote_port: 6000 }],
    ['Login', { remote_port: 6000 }]
  ]), [null, 'remotePorts', null, null, 'remotePorts', null, 'remotePorts', 'remotePorts', 'remotePorts', 'remotePorts'])
  t.same(ports([0], [proxy({}), proxy({ remote_port: null }), proxy({ remote_port: 0 }), proxy({ remote_port: 1 })]),
    [null, null, null, 'remotePorts'], 'absent and null remote_port count as 0')
  t.same(ports(['0-1023'], [proxy({}), proxy({ remote_port: 1023 }), proxy({ remote_port: 1024 })]), [null, null, 'remotePorts'])
  t.same(ports(['65535'], [proxy({ remote_port: 65535 })]), [null])
})

t.test('not', async t => {
  t.same(run({ not: { users: ['admin'] } }, [['Login', { user: 'admin' }], ['Login', { user: 'alice' }]]), ['not', null])
  t.same(run({ proxyTypes: ['tcp'], not: { remotePorts: ['6000-6999'] } }, [
    proxy({ proxy_type: 'tcp', remote_port: 6500 }),
    proxy({ proxy_type: 'tcp', remote_port: 7000 }),
    proxy({ proxy_type: 'http', remote_port: 7000 })
  ]), ['not', null, 'proxyTypes'])
  t.same(run({ not: { not: { users: ['a'] } } }, [['Login', { user: 'a' }], ['Login', { user: 'b' }]]), [null, 'not'])
  t.same(run({ not: { proxyTypes: ['tcp'] } }, [['Login', { user: 'a' }]]), [null],
    'a condition on a field the op does not carry is false, so its not holds')
})

t.test('the first failed condition is named, in a fixed order', async t => {
  const all: When = {
    users: ['a'], proxyTypes: ['tcp'], proxyNames: ['a.*'], metas: { k: 'v' }, clientCidrs: ['10.0.0.0/8'],
    remoteCidrs: ['10.0.0.0/8'], remotePorts: [1], not: { users: ['a'] }
  }
  t.same(run(all, [
    ['NewProxy', { user: { user: 'b' } }],
    ['NewProxy', { user: { user: 'a' }, proxy_type: 'udp' }],
    ['NewProxy', { user: { user: 'a' }, proxy_type: 'tcp', proxy_name: 'b.x' }],
    ['NewProxy', { user: { user: 'a' }, proxy_type: 'tcp', proxy_name: 'a.x' }],
    ['NewProxy', { user: { user: 'a', metas: { k: 'v' } }, proxy_type: 'tcp', proxy_name: 'a.x' }]
  ]), ['users', 'proxyTypes', 'proxyNames', 'metas', 'clientCidrs'])
  t.same(run({ remotePorts: [1], not: { users: ['a'] } }, [proxy({ remote_port: 1 })]), ['not'])
})

t.test('bad CIDRs and port ranges throw at compile, naming the value and its key', async t => {
  for (const cidr of ['10.0.0.0/33', '10.0.0.0/', '10.0.0/8', 'example.com', '2001:db8::/129', '10.0.0.0/8/1', '10.0.0.0/x', '',
    '10.0.0.0/1e1', '10.0.0.0/0x8', '10.0.0.0/ 8', '10.0.0.0/8.0', '10.0.0.0/+8']) {
    t.throws(() => compileWhen({ clientCidrs: ['10.0.0.0/8', cidr] }),
      { name: 'OptionError', path: 'clientCidrs[1]', message: `"${cidr}" is not an IPv4 or IPv6 address or CIDR` }, cidr)
  }
  t.throws(() => compileWhen({ not: { remoteCidrs: ['1.2.3.4/-1'] } }),
    { name: 'OptionError', path: 'not.remoteCidrs[0]', message: '"1.2.3.4/-1" is not an IPv4 or IPv6 address or CIDR' })
  for (const range of ['7000-6000', '65536', '1-70000', 'x', '6000-', '-1', -1, 1.5, '']) {
    t.throws(() => compileWhen({ remotePorts: [range] }),
      { name: 'OptionError', path: 'remotePorts[0]', message: `"${range}" is not a port or a "low-high" range within 0-65535` }, String(range))
  }
  t.throws(() => compileWhen({ not: { not: { remotePorts: ['9-8'] } } }),
    { name: 'OptionError', path: 'not.not.remotePorts[0]', message: '"9-8" is not a port or a "low-high" range within 0-65535' })
})

t.test('fields: a value, a list of values, null for absent or null', async t => {
  const enc: When = { fields: { use_encryption: [false, null] } }
  t.same(run(enc, [
    proxy({ use_encryption: true }),
    proxy({ use_encryption: false }),
    proxy({ use_encryption: null }),
    proxy({}),
    proxy({ use_encryption: 'false' }),
    proxy({ use_encryption: 0 })
  ]), ['fields', null, null, null, 'fields', 'fields'], 'false, null and absent match; a string or 0 does not')
  t.same(run({ fields: { use_encryption: false } }, [proxy({ use_encryption: false }), proxy({}), proxy({ use_encryption: null })]),
    [null, 'fields', 'fields'], 'false alone is false only')
  t.same(run({ fields: { use_encryption: null } }, [proxy({}), proxy({ use_encryption: null }), proxy({ use_encryption: false })]),
    [null, null, 'fields'], 'null alone: absent or null, not false')
  t.same(run({ fields: { remote_port: [0, null], proxy_type: 'tcp' } }, [
    proxy({ proxy_type: 'tcp' }),
    proxy({ proxy_type: 'tcp', remote_port: 0 }),
    proxy({ proxy_type: 'tcp', remote_port: 6000 }),
    proxy({ proxy_type: 'udp' })
  ]), [null, null, 'fields', 'fields'], 'every path must match')
})

t.test('fields: nested paths, list elements, whole lists and objects compared as JSON', async t => {
  t.same(run({ fields: { 'user.metas.plan': ['pro', 'team'] } }, [
    proxy({ user: { user: 'a', metas: { plan: 'pro' } } }),
    proxy({ user: { user: 'a', metas: { plan: 'free' } } }),
    proxy({ user: { user: 'a', metas: null } }),
    ['Ping', { user: { metas: { plan: 'team' } } }]
  ]), [null, 'fields', 'fields', null])
  t.same(run({ fields: { custom_domains: [['a.example', 'b.example'], null] } }, [
    proxy({ custom_domains: ['a.example', 'b.example'] }),
    proxy({ custom_domains: ['b.example', 'a.example'] }),
    proxy({ custom_domains: ['a.example'] }),
    proxy({})
  ]), [null, 'fields', 'fields', null], 'a list of lists matches a whole list, in order')
  t.same(run({ fields: { 'custom_domains.0': 'a.example' } }, [
    proxy({ custom_domains: ['a.example', 'x'] }), proxy({ custom_domains: ['x', 'a.example'] })
  ]), [null, 'fields'])
  t.same(run({ fields: { headers: [{ 'X-A': '1', 'X-B': '2' }] } }, [
    proxy({ headers: JSON.parse('{"X-B":"2","X-A":"1"}') }), proxy({ headers: { 'X-A': '1' } })
  ]), [null, 'fields'], 'objects compare by value, not key order')
  t.same(run({ fields: { 'x_future.deep': 1 } }, [proxy({ x_future: { deep: 1 } }), ['Login', { x_future: { deep: 1 } }], proxy({})]),
    [null, null, 'fields'], 'a field frps does not know yet matches in any op')
  const when = JSON.parse('{"fields":{"metas.__x":"1"}}') as When
  t.same(run(when, [['Login', { metas: { __x: '1' } }]]), [null])
})

t.test('fields on ops that do not carry the field are false, null included', async t => {
  t.same(run({ fields: { use_encryption: [false, null] } }, [
    ['Login', { user: 'a' }],
    ['Ping', user('a')],
    ['CloseProxy', { ...user('a'), proxy_name: 'p' }],
    ['NewUserConn', { ...user('a'), proxy_name: 'p' }],
    ['NewWorkConn', user('a')]
  ]), ['fields', 'fields', 'fields', 'fields', 'fields'])
  t.same(run({ fields: { proxy_name: 'a.ssh' } }, [
    ['CloseProxy', { proxy_name: 'a.ssh' }], ['NewUserConn', { proxy_name: 'a.ssh' }], ['Login', { proxy_name: 'a.ssh' }]
  ]), [null, null, 'fields'], 'proxy_name is in CloseProxy and NewUserConn too')
  t.same(run({ fields: { 'user.metas.plan': null } }, [['Login', { user: 'a' }], ['Ping', user('a')]]), ['fields', null],
    "Login's user is a string: it has no metas")
  t.same(run({ fields: { run_id: null } }, [['Login', {}], ['NewWorkConn', {}], ['NewProxy', {}]]), [null, null, 'fields'])
  t.same(run({ not: { fields: { use_encryption: true } } }, [['Login', { user: 'a' }], proxy({ use_encryption: true })]), [null, 'not'])
})

t.test('fields: bad paths and values that can never match are errors naming the path', async t => {
  for (const [fields, path, message] of [
    [{ 'a..b': 1 }, 'fields.a..b', '"a..b" is not a dotted path like "user.metas.team"'],
    [JSON.parse('{"__proto__.x": 1}'), 'fields.__proto__.x', '"__proto__.x" goes through "__proto__": no frp field is named so, and a path must never reach a prototype'],
    [{ 'metas.constructor': 'x' }, 'fields.metas.constructor', '"metas.constructor" goes through "constructor": no frp field is named so, and a path must never reach a prototype'],
    [{ 'x.prototype': 'x' }, 'fields.x.prototype', '"x.prototype" goes through "prototype": no frp field is named so, and a path must never reach a prototype'],
    [{ use_encryption: [] }, 'fields.use_encryption', 'an empty list matches nothing'],
    [{ use_encryption: 'false' }, 'fields.use_encryption', '"false" can never match: use_encryption is a boolean'],
    [{ remote_port: [6000, '6001'] }, 'fields.remote_port', '"6001" can never match: remote_port is a number'],
    [{ custom_domains: ['a.example'] }, 'fields.custom_domains',
      '"a.example" can never match: custom_domains is a list of strings (a list of values matches any of them: match a list with [[...]])'],
    [{ 'proxy_name.x': 'y' }, 'fields.proxy_name.x', '"y" can never match: no op carries this field'],
    [{ USE_ENCRYPTION: [false, null] }, 'fields.USE_ENCRYPTION',
      'USE_ENCRYPTION is no field name, but frps reads it as use_encryption (Go matches keys whatever their case): write use_encryption'],
    [{ 'user.Metas.team': 'x' }, 'fields.user.Metas.team',
      'user.Metas is no field name, but frps reads it as user.metas (Go matches keys whatever their case): write user.metas']
  ] as Array<[Record<string, unknown>, string, string]>) {
    t.throws(() => compileWhen({ fields }), { name: 'OptionError', path, message }, path)
  }
  t.throws(() => compileWhen({ not: { fields: { sk: 1 } } }), { name: 'OptionError', path: 'not.fields.sk', message: '1 can never match: sk is a string' })
  t.equal(typeof compileWhen({ fields: { 'proxy_name.x': null } }), 'function', 'null can always match: absent')
  t.equal(typeof compileWhen({ fields: { 'metas.TEAM': 'x', X_FUTURE: 1 } }), 'function', 'metas keys and unknown fields are taken as written')
})

t.test('a when parsed from config keeps a fields path named __proto__, and refuses it', async t => {
  const when = whenSchema.parse(JSON.parse('{"fields":{"__proto__":1}}'))
  t.equal(JSON.stringify(when), '{"fields":{"__proto__":1}}')
  t.throws(() => compileWhen(when), { name: 'OptionError', path: 'fields.__proto__' })
})

t.test('empty names and globs are config errors with their path', async t => {
  const r = whenSchema.safeParse({ users: ['a', ''], proxyTypes: [''], proxyNames: ['x*', ''], not: { users: [''] } })
  t.notOk(r.success)
  t.same(r.error?.issues.map(i => [i.path.join('.'), i.message]), [
    ['users.1', 'an empty name never matches: frps omits empty values'],
    ['proxyTypes.0', '"" is not a proxy type frps knows: tcp, udp, http, https, stcp, xtcp, sudp, tcpmux'],
    ['proxyNames.1', 'an empty name never matches: frps omits empty values'],
    ['not.users.0', 'an empty name never matches: frps omits empty values']
  ])
})

t.test('empty maps and an empty not are config errors with their path: they check nothing', async t => {
  const r = whenSchema.safeParse({ metas: {}, proxyMetas: {}, fields: {}, not: { fields: {} } })
  t.same(r.error?.issues.map(i => [i.path.join('.'), i.message]), [
    ['metas', 'an empty metas condition holds on every call (under not: on none); give a key or leave it out'],
    ['proxyMetas', 'an empty proxyMetas condition holds on every call (under not: on none); give a key or leave it out'],
    ['fields', 'an empty fields condition holds on every call (under not: on none); give a key or leave it out'],
    ['not.fields', 'an empty fields condition holds on every call (under not: on none); give a key or leave it out']
  ])
  t.throws(() => compileWhen(whenSchema.parse({ users: ['a'], not: {} })),
    { name: 'OptionError', path: 'not', message: 'an empty condition holds on every call, so under not on none: the step would never run' })
  t.throws(() => compileWhen({ not: { not: {} } }), { name: 'OptionError', path: 'not.not' })
  t.same(run(whenSchema.parse({}), [['Login', {}]]), [null], 'an empty when is no condition: always')
})

t.test('proxyNames globs match in time linear in the name: no backtracking on a long hostile name', async t => {
  const hostile = ['*a*a*a*b', '*a*a*a*a*a*a*a*a*a*a*b', '?*?*?*?*?*b', 'a*a*a*a*a*?b', '*aa*aa*aa*aaa*b']
  for (const length of [300, 100_000]) {
    const m = compileWhen({ proxyNames: hostile })
    const c = { ...user('a'), proxy_name: 'a'.repeat(length) }
    const started = performance.now()
    t.equal(m('NewProxy', c), 'proxyNames')
    const ms = performance.now() - started
    t.ok(ms < 100, `${length} characters against ${hostile.length} globs: ${ms.toFixed(2)} ms`)
  }
  t.same(run({ proxyNames: hostile }, [proxy({ proxy_name: 'a'.repeat(5000) + 'b' })]), [null], 'and they still match')
})

t.test('proxyNames globs agree with a regex of .* and . on many names', async t => {
  const globs = ['*', '?', 'a*', '*a', 'a*b', '*a*', 'a?b*', '*?', '**', 'a**b', '*ab*ab', '?*?', 'ab*ba*ab', '*\u{1F600}?', 'x.*', '']
  const names = ['', 'a', 'b', 'ab', 'ba', 'aab', 'abab', 'abba', 'abbaab', 'ababab', 'x.y', 'xay', '\u{1F600}', 'a\u{1F600}', '\u{1F600}\u{1F600}',
    'a\nb', 'ab\u{1F600}b', '\ud800', 'a\udc00b']
  for (const glob of globs) {
    const re = new RegExp(`^${glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, 'su')
    const m = compileWhen({ proxyNames: [glob] })
    for (const name of names) t.equal(m('NewProxy', { proxy_name: name }) === null, re.test(name), `${JSON.stringify(glob)} ~ ${JSON.stringify(name)}`)
  }
})

t.test('proxyMetas: NewProxy its own metas; NewUserConn and CloseProxy the record read before the chain', async t => {
  const record = (metas?: Record<string, string>) => ({ user: 'a', name: 'a.ssh', type: 'tcp', run_id: 'r', registered_at: 0, ...(metas === undefined ? {} : { metas }) })
  const m = compileWhen({ proxyMetas: { visitors: ['all', 'friends'], owner: 'ops' } })
  const own = { visitors: 'friends', owner: 'ops' }
  t.same([
    m('NewProxy', { ...user('a'), metas: own }),
    m('NewProxy', { ...user('a'), metas: { visitors: 'none', owner: 'ops' } }),
    m('NewProxy', { ...user('a') }),
    m('NewProxy', { ...user('a', own) }),
    m('NewUserConn', { ...user('a'), metas: own }),
    m('NewUserConn', { ...user('a') }, { proxy: record(own) }),
    m('CloseProxy', { ...user('a') }, { proxy: record({ visitors: 'all', owner: 'ops' }) }),
    m('NewUserConn', { ...user('a') }, { proxy: record() }),
    m('NewUserConn', { ...user('a') }, { proxy: null }),
    m('NewUserConn', { ...user('a') }, { proxy: 'error' }),
    m('Ping', { ...user('a') }, { proxy: record(own) })
  ], [null, 'proxyMetas', 'proxyMetas', 'proxyMetas', 'proxyMetas', null, null, 'proxyMetas', 'proxyMetas', 'proxyMetas', 'proxyMetas'],
  'the client metas and a stray content field are never the proxy\'s')
  const not = compileWhen({ users: ['a'], not: { not: { not: { proxyMetas: { visitors: 'all' } } } } })
  t.same([
    not('NewUserConn', user('a'), { proxy: null }),
    not('NewUserConn', user('a'), { proxy: record({ visitors: 'all' }) }),
    not('NewUserConn', user('a'), { proxy: 'error' })
  ], [null, 'not', 'proxyMetas'], 'a registry that cannot be read: the whole when does not hold, even under not')
  t.same(whenSchema.safeParse({ proxyMetas: { visitors: [], a: ['x', 1], b: 'y', ['__proto__']: 2 } }).error?.issues.map(i => i.path.join('.')), ['visitors', 'a', '__proto__'].map(k => `proxyMetas.${k}`))
})
