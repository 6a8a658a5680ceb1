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
      { name: 'OptionError', path: 'clientCidrs', message: `"${cidr}" is not an IPv4 or IPv6 address or CIDR` }, cidr)
  }
  t.throws(() => compileWhen({ not: { remoteCidrs: ['1.2.3.4/-1'] } }),
    { name: 'OptionError', path: 'not.remoteCidrs', message: '"1.2.3.4/-1" is not an IPv4 or IPv6 address or CIDR' })
  for (const range of ['7000-6000', '65536', '1-70000', 'x', '6000-', '-1', -1, 1.5, '']) {
    t.throws(() => compileWhen({ remotePorts: [range] }),
      { name: 'OptionError', path: 'remotePorts', message: `"${range}" is not a port or a "low-high" range within 0-65535` }, String(range))
  }
  t.throws(() => compileWhen({ not: { not: { remotePorts: ['9-8'] } } }),
    { name: 'OptionError', path: 'not.not.remotePorts', message: '"9-8" is not a port or a "low-high" range within 0-65535' })
})
