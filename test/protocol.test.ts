import t from 'tap'
import {
  ALLOW_UNCHANGED, answerModified, answerReject, checkContent, effectiveOp, getIn, hostOf, isOp, OPS, parsePath,
  sameJson, setIn, stringRecord, type Content, type Op
} from '../src/protocol.js'
import { loadSamples } from './helpers/fixtures.js'

const fixture = (file: string) => loadSamples(file).map(s => ({ op: s.body.op as Op, content: s.body.content as Content }))
const FILES = { 'frps-0.33.0-requests.jsonl': 10, 'frps-0.41.0-requests.jsonl': 10, 'frps-current-shapes.jsonl': 13 }

t.test('checkContent accepts every recorded body', async t => {
  for (const [file, count] of Object.entries(FILES)) {
    const bodies = fixture(file)
    t.equal(bodies.length, count, `${file} has ${count} bodies`)
    for (const { op, content } of bodies) {
      t.equal(checkContent(effectiveOp(op, content), content), null, `${file} ${op}`)
      t.equal(checkContent(op, content), null, `${file} ${op} as labelled`)
    }
  }
  const ops = new Set(Object.keys(FILES).flatMap(f => fixture(f).map(b => b.op)))
  t.same([...ops].sort(), [...OPS].sort(), 'the fixtures cover all six ops')
})

t.test('checkContent names the path of a wrong type', async t => {
  t.equal(checkContent('NewProxy', { user: { user: 'a', metas: { team: 1 } } }),
    'invalid NewProxy content: content.user.metas.team: Invalid input: expected string, received number')
  t.equal(checkContent('NewProxy', { remote_port: 'x' }),
    'invalid NewProxy content: content.remote_port: Invalid input: expected number, received string')
  t.equal(checkContent('NewProxy', { remote_port: 1.5 }),
    'invalid NewProxy content: content.remote_port: Invalid input: expected int, received number')
  t.equal(checkContent('NewProxy', { locations: ['/', 2] }),
    'invalid NewProxy content: content.locations[1]: Invalid input: expected string, received number')
  t.equal(checkContent('Login', { client_spec: { always_auth_pass: 'true' } }),
    'invalid Login content: content.client_spec.always_auth_pass: Invalid input: expected boolean, received string')
  t.equal(checkContent('Login', { metas: ['a'] }),
    'invalid Login content: content.metas: Invalid input: expected record, received array')
  t.equal(checkContent('Ping', { user: 'alice' }),
    'invalid Ping content: content.user: Invalid input: expected object, received string')
  t.equal(checkContent('NewUserConn', { remote_addr: 5 }),
    'invalid NewUserConn content: content.remote_addr: Invalid input: expected string, received number')
  t.equal(checkContent('NewProxy', { custom_domains: ['a', , 'b'] }),
    'invalid NewProxy content: content.custom_domains[1]: Invalid input: expected string, received undefined', 'a hole (sent as null)')
  for (const bad of [null, [], 'x', 3]) t.equal(checkContent('Login', bad), 'content must be a JSON object', JSON.stringify(bad))
})

t.test('checkContent: absent, present and null are all accepted; unknown fields pass', async t => {
  t.equal(checkContent('NewProxy', {}), null)
  t.equal(checkContent('NewProxy', { metas: null, custom_domains: null, remote_port: null, user: null }), null)
  t.equal(checkContent('NewProxy', { metas: {}, custom_domains: [], remote_port: 0, user: { user: '', metas: null } }), null)
  t.equal(checkContent('Login', { client_spec: null, pool_count: null, future_field: { any: [1, 'x'] } }), null)
  t.equal(checkContent('CloseProxy', { user: { user: 'a', extra: 1 }, added_in_0_99: true }), null)
})

t.test('checkContent does not touch the content', async t => {
  const content = JSON.parse('{"proxy_name":"p","zz":1,"metas":{"b":"1","a":"2"}}')
  const before = JSON.stringify(content)
  t.equal(checkContent('NewProxy', content), null)
  t.equal(JSON.stringify(content), before)
})

t.test('stringRecord keeps a __proto__ key as a plain key and checks every value', async t => {
  const schema = stringRecord()
  const parsed = schema.parse(JSON.parse('{"__proto__":"x","constructor":"y","a":"b"}'))
  t.equal(JSON.stringify(parsed), '{"__proto__":"x","constructor":"y","a":"b"}')
  t.equal(Object.getPrototypeOf(parsed), Object.prototype)
  t.same(Object.keys(parsed), ['__proto__', 'constructor', 'a'])
  const issues = (raw: string) => schema.safeParse(JSON.parse(raw)).error?.issues.map(i => [i.path.join('.'), i.message])
  t.same(issues('{"__proto__":1,"a":"ok","b":null}'), [
    ['__proto__', 'Invalid input: expected string, received number'],
    ['b', 'Invalid input: expected string, received null']
  ])
  t.same(issues('"x"'), [['', 'Invalid input: expected record, received string']])
  t.same(issues('[]'), [['', 'Invalid input: expected record, received array']])
  t.equal(issues('{}'), undefined)
})

t.test('sameJson', async t => {
  t.ok(sameJson({ a: 1, b: { c: [1, { d: 2, e: 3 }] } }, { b: { c: [1, { e: 3, d: 2 }] }, a: 1 }), 'key order ignored')
  t.notOk(sameJson({ a: 1 }, { a: 1, b: 2 }))
  t.notOk(sameJson({ a: 1, b: 2 }, { a: 1, c: 2 }))
  t.notOk(sameJson([1, 2], [2, 1]), 'array order counts')
  t.notOk(sameJson([1], { 0: 1 }))
  t.notOk(sameJson({ 0: 1 }, [1]))
  t.notOk(sameJson(null, {}))
  t.notOk(sameJson(1, '1'))
  t.notOk(sameJson({ a: null }, {}))
  t.ok(sameJson(null, null))
  t.ok(sameJson('x', 'x'))
  t.notOk(sameJson({ constructor: 1 }, {}), 'an own key is not read from the prototype')
})

t.test('setIn', async t => {
  const root = { a: { b: { c: 1 }, keep: { k: 1 } }, other: { o: 1 } }

  t.test('copies only the touched path', async t => {
    const out = setIn(root, ['a', 'b', 'c'], 2)
    t.same(out, { a: { b: { c: 2 }, keep: { k: 1 } }, other: { o: 1 } })
    t.same(root, { a: { b: { c: 1 }, keep: { k: 1 } }, other: { o: 1 } }, 'input untouched')
    t.not(out, root)
    t.not(out.a, root.a)
    t.equal((out.a as Content).keep, root.a.keep, 'sibling shared')
    t.equal(out.other, root.other, 'untouched branch shared')
  })

  t.test('returns the same object when the value is equal', async t => {
    t.equal(setIn(root, ['a', 'b', 'c'], 1), root)
    t.equal(setIn(root, ['a', 'keep'], { k: 1 }), root, 'deep-equal object')
    t.equal(setIn(root, ['a', 'missing'], undefined), root, 'removing an absent key')
    t.equal(setIn(root, ['x', 'y'], undefined), root, 'removing below an absent object')
  })

  t.test('creates missing objects and replaces non-objects', async t => {
    t.same(setIn({}, ['x', 'y'], 'v'), { x: { y: 'v' } })
    t.same(setIn({ x: 'str' }, ['x', 'y'], 'v'), { x: { y: 'v' } })
    t.same(setIn({ x: null }, ['x', 'y'], 'v'), { x: { y: 'v' } })
  })

  t.test('removes with undefined', async t => {
    const out = setIn(root, ['a', 'b', 'c'], undefined)
    t.same(out, { a: { b: {}, keep: { k: 1 } }, other: { o: 1 } })
    t.notOk(Object.hasOwn((out.a as Content).b as Content, 'c'))
    t.same(setIn({ a: 1, b: 2 }, ['a'], undefined), { b: 2 })
    t.same(setIn({ a: null }, ['a'], undefined), {}, 'a present null is removed')
  })

  t.test('array elements by index', async t => {
    const list = { locations: ['/a', '/b'], k: 1 }
    t.same(setIn(list, ['locations', '1'], '/c'), { locations: ['/a', '/c'], k: 1 })
    t.same(list.locations, ['/a', '/b'], 'input array untouched')
    t.equal(setIn(list, ['locations', '0'], '/a'), list, 'equal element')
    t.same(setIn(list, ['locations', '0'], undefined), { locations: ['/b'], k: 1 }, 'removal takes the element out')
    t.equal(setIn(list, ['locations', '5'], undefined), list, 'removing past the end')
    t.same(setIn(list, ['locations', '2'], '/c'), { locations: ['/a', '/b', '/c'], k: 1 }, 'append at the end')
    t.same(setIn(list, ['locations', 'x'], 1), { locations: { x: 1 }, k: 1 }, 'a name is no index: an object replaces the list')
    const objects = { x: [{ a: 0, b: 1 }, { a: 2, b: 3 }] }
    t.same(setIn(objects, ['x', '01', 'a'], 9), { x: [{ a: 0, b: 1 }, { a: 9, b: 3 }] }, '"01" is element 1, as getIn reads it: its other keys kept')
    t.same(setIn(objects, ['x', '01'], undefined), { x: [{ a: 0, b: 1 }] }, 'and is removed as element 1')
    t.equal(setIn(objects, ['x', '01', 'a'], 2), objects, 'an equal value through "01" is no change')
  })

  t.test('never pollutes a prototype', async t => {
    const protoKeys = Object.getOwnPropertyNames(Object.prototype).sort()
    for (const path of [['__proto__', 'polluted'], ['constructor', 'prototype', 'polluted'], ['prototype', 'polluted'],
      ['a', '__proto__', 'polluted'], ['__proto__']]) {
      const out = setIn({ a: {} }, path, 'yes')
      t.equal(({} as Record<string, unknown>).polluted, undefined, path.join('.'))
      t.equal(Object.getPrototypeOf(out), Object.prototype, `${path.join('.')}: result keeps its prototype`)
      t.equal(getIn(out, path), 'yes', `${path.join('.')}: readable as a plain key`)
    }
    const out = setIn({}, ['__proto__', 'polluted'], 'yes')
    t.equal(JSON.stringify(out), '{"__proto__":{"polluted":"yes"}}')
    t.same(Object.getOwnPropertyNames(Object.prototype).sort(), protoKeys, 'Object.prototype unchanged')
  })

  t.test('through an own __proto__ key that came from JSON', async t => {
    const src = JSON.parse('{"__proto__":{"x":"1"},"a":1}') as Content
    const out = setIn(src, ['__proto__', 'x'], '2')
    t.equal(JSON.stringify(out), '{"__proto__":{"x":"2"},"a":1}')
    t.equal(JSON.stringify(src), '{"__proto__":{"x":"1"},"a":1}')
    t.equal(JSON.stringify(setIn(src, ['__proto__'], undefined)), '{"a":1}')
    t.equal(({} as Record<string, unknown>).x, undefined)
  })
})

t.test('getIn and parsePath', async t => {
  const c = { user: { metas: { team: 'blue' } }, locations: ['/a', '/b'] }
  t.equal(getIn(c, ['user', 'metas', 'team']), 'blue')
  t.equal(getIn(c, ['locations', '1']), '/b')
  t.equal(getIn(c, ['user', 'nope', 'x']), undefined)
  t.equal(getIn(c, ['constructor']), undefined)
  t.equal(getIn(c, ['user', 'toString']), undefined)
  t.same(parsePath('user.metas.team'), ['user', 'metas', 'team'])
  for (const bad of ['', 'a.', '.a', 'a..b']) {
    t.throws(() => parsePath(bad), { message: `"${bad}" is not a dotted path like "user.metas.team"` })
  }
  for (const [bad, name] of [['__proto__', '__proto__'], ['a.constructor', 'constructor'], ['a.prototype.b', 'prototype']]) {
    t.throws(() => parsePath(bad), { message: `"${bad}" goes through "${name}": no frp field is named so, and a path must never reach a prototype` })
  }
  t.same(parsePath('metas.toString'), ['metas', 'toString'], 'other Object.prototype names are plain keys')
})

t.test('hostOf', async t => {
  const cases: Array<[unknown, string]> = [
    ['127.0.0.1:50312', '127.0.0.1'],
    ['203.0.113.7', '203.0.113.7'],
    ['[2001:db8::7]:40022', '2001:db8::7'],
    ['[2001:db8::7]', '2001:db8::7'],
    ['2001:db8::7', '2001:db8::7'],
    ['::ffff:10.0.0.1', '::ffff:10.0.0.1'],
    ['[::ffff:10.0.0.1]:80', '::ffff:10.0.0.1'],
    ['', ''],
    ['[2001:db8::7', ''],
    ['not an address', 'not an address'],
    ['host:80', 'host'],
    [undefined, ''],
    [null, ''],
    [1234, '']
  ]
  for (const [addr, host] of cases) t.equal(hostOf(addr), host, JSON.stringify(addr))
})

t.test('effectiveOp and isOp', async t => {
  t.equal(effectiveOp('Ping', { run_id: 'abc' }), 'NewWorkConn')
  t.equal(effectiveOp('Ping', { run_id: '' }), 'NewWorkConn', 'present but empty still marks it')
  t.equal(effectiveOp('Ping', { user: { run_id: 'abc' } }), 'Ping')
  t.equal(effectiveOp('Login', { run_id: 'abc' }), 'Login')
  t.equal(effectiveOp('NewWorkConn', { run_id: 'abc' }), 'NewWorkConn')
  t.ok(isOp('CloseProxy'))
  t.notOk(isOp('closeproxy'))
  t.notOk(isOp('constructor'))
  t.notOk(isOp(undefined))
})

t.test('answer builders emit JSON booleans', async t => {
  t.equal(ALLOW_UNCHANGED, '{"reject":false,"unchange":true}')
  t.same(JSON.parse(ALLOW_UNCHANGED), { reject: false, unchange: true })
  t.equal(answerReject('no "way"\n'), '{"reject":true,"reject_reason":"no \\"way\\"\\n","unchange":true}')
  t.same(JSON.parse(answerReject('x')), { reject: true, reject_reason: 'x', unchange: true })
  t.equal(answerModified({ user: 'a', n: 1, b: false }), '{"reject":false,"unchange":false,"content":{"user":"a","n":1,"b":false}}')
  const proto = JSON.parse('{"__proto__":{"a":"1"}}') as Content
  t.equal(answerModified(proto), '{"reject":false,"unchange":false,"content":{"__proto__":{"a":"1"}}}')
})
