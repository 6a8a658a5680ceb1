import fc from 'fast-check'
import t from 'tap'
import { anyGlob, compileWhen, type When } from '../../src/match.js'
import { OPS, type Op } from '../../src/protocol.js'
import { deepFreeze, holds, key, object, opContent, POOL, str } from '../helpers/arbitraries.js'

// Which ops carry the field each condition reads (the field table of src/protocol.ts, DESIGN "when").
const CARRIERS: Record<string, readonly Op[]> = {
  proxyTypes: ['NewProxy', 'NewUserConn'],
  proxyNames: ['NewProxy', 'CloseProxy', 'NewUserConn'],
  clientCidrs: ['Login'],
  remoteCidrs: ['NewUserConn'],
  remotePorts: ['NewProxy']
}

const values = fc.array(fc.oneof({ arbitrary: fc.constantFrom(...POOL), weight: 4 }, { arbitrary: str, weight: 1 }), { minLength: 1, maxLength: 3 })
const glob = fc.array(fc.oneof(fc.constantFrom('*', '?', '.', 'alice', 'web', '\u2028', '['), fc.constantFrom(...POOL)), { minLength: 1, maxLength: 4 })
  .map(parts => parts.join(''))
const cidr = fc.oneof(
  fc.tuple(fc.ipV4(), fc.option(fc.integer({ min: 0, max: 32 }))).map(([ip, bits]) => bits === null ? ip : `${ip}/${bits}`),
  fc.tuple(fc.ipV6(), fc.option(fc.integer({ min: 0, max: 128 }))).map(([ip, bits]) => bits === null ? ip : `${ip}/${bits}`)
)
const port = fc.integer({ min: 0, max: 65535 })
const ports = fc.array(fc.oneof(port, port.map(String), fc.tuple(port, port).map(([a, b]) => `${Math.min(a, b)}-${Math.max(a, b)}`)), { minLength: 1, maxLength: 3 })

const conditions = {
  users: values,
  proxyTypes: values,
  proxyNames: fc.array(glob, { minLength: 1, maxLength: 3 }),
  metas: fc.array(fc.tuple(key, fc.constantFrom(...POOL)), { maxLength: 2 }).map(object) as fc.Arbitrary<Record<string, string>>,
  clientCidrs: fc.array(cidr, { minLength: 1, maxLength: 3 }),
  remoteCidrs: fc.array(cidr, { minLength: 1, maxLength: 3 }),
  remotePorts: ports
}
const when: fc.Arbitrary<When> = fc.letrec<{ when: When }>(tie => ({
  when: fc.record({ ...conditions, not: fc.oneof({ depthSize: 'small' }, fc.constant(undefined), tie('when')) }, { requiredKeys: [] })
    .map(w => JSON.parse(JSON.stringify(w)) as When)
})).when

t.test('when never throws, is deterministic, does not touch the content, and answers null or a condition it has', async t => {
  await holds(t, 'total and pure', fc.property(when, opContent({ wrongTypes: true }), (w, [op, c]) => {
    const match = compileWhen(w)
    const before = JSON.stringify(c)
    deepFreeze(c)
    const first = match(op, c)
    return (first === null || Object.hasOwn(w, first)) && match(op, c) === first && JSON.stringify(c) === before
  }), 300)
})

t.test('not is the negation', async t => {
  await holds(t, 'not', fc.property(when, opContent({ wrongTypes: true }), (w, [op, c]) =>
    (compileWhen({ not: w })(op, c) === null) === (compileWhen(w)(op, c) !== null) &&
    (compileWhen({ not: { not: w } })(op, c) === null) === (compileWhen(w)(op, c) === null)), 300)
})

t.test('all given conditions must hold: a when holds exactly when each of its conditions alone holds', async t => {
  await holds(t, 'conjunction', fc.property(when, opContent({ wrongTypes: true }), (w, [op, c]) => {
    const alone = Object.entries(w).filter(([, v]) => v !== undefined).every(([k, v]) => compileWhen({ [k]: v })(op, c) === null)
    return (compileWhen(w)(op, c) === null) === alone
  }), 300)
})

t.test('a condition on a field the op does not carry is false, whatever unknown fields the content has', async t => {
  const cases = fc.constantFrom(...Object.keys(CARRIERS)).chain(cond => fc.tuple(
    fc.constant(cond),
    (conditions as Record<string, fc.Arbitrary<unknown>>)[cond],
    fc.constantFrom(...OPS.filter(op => !CARRIERS[cond].includes(op)))
  ))
  await holds(t, 'not carried', fc.property(cases, opContent({ wrongTypes: true }), ([cond, value, op], [, c]) =>
    compileWhen({ [cond]: value })(op, c) === cond), 300)
  // the same for what frps of any version would put there
  for (const [cond, value, field, fieldValue] of [
    ['proxyTypes', ['tcp'], 'proxy_type', 'tcp'], ['proxyNames', ['*'], 'proxy_name', 'a'],
    ['clientCidrs', ['0.0.0.0/0'], 'client_address', '1.2.3.4:5'], ['remoteCidrs', ['0.0.0.0/0'], 'remote_addr', '1.2.3.4:5'],
    ['remotePorts', ['0-65535'], 'remote_port', 1]
  ] as const) {
    for (const op of OPS.filter(op => !CARRIERS[cond].includes(op))) {
      t.equal(compileWhen({ [cond]: value })(op, { [field]: fieldValue }), cond, `${cond} on ${op} with ${field}`)
    }
  }
})

t.test('a list of globs matches a name exactly when a regular expression of one of them does (* any run, ? one character)', async t => {
  const regex = (g: string): RegExp => new RegExp(`^${[...g].map(c => c === '*' ? '[\\s\\S]*' : c === '?' ? '[\\s\\S]' : c.replace(/[\\^$.|+(){}[\]]/g, '\\$&')).join('')}$`, 'u')
  const name = fc.array(fc.constantFrom('a', 'b', '.', 'web', 'alice', '\u{1F600}', 'x.example.com'), { maxLength: 5 }).map(parts => parts.join(''))
  const pattern = fc.array(fc.constantFrom('*', '?', 'a', 'b', '.', 'web', '\u{1F600}', '.example.com'), { minLength: 1, maxLength: 4 }).map(parts => parts.join(''))
  fc.assert(fc.property(fc.array(pattern, { maxLength: 6 }), fc.array(name, { minLength: 1, maxLength: 6 }), (globs, names) => {
    const matches = anyGlob(globs)
    for (const n of names) {
      if (matches(n) !== globs.some(g => regex(g).test(n))) throw new Error(`${JSON.stringify(globs)} on ${JSON.stringify(n)}`)
    }
  }), { numRuns: 2000 })
  t.pass('2000 lists of globs agree with their regular expressions')
})
