import { isDeepStrictEqual } from 'node:util'
import fc from 'fast-check'
import t from 'tap'
import { mergePatch } from '../../plugins/forward.js'
import { AGREED_FIELDS, checkContent, effectiveOp, isObject, type Content, type Op } from '../../src/protocol.js'
import { content as contentOf, deepFreeze, depthOf, FIELDS, HTTP_DEPTH, holds, json, key, object, opContent, pollution, valueOf } from '../helpers/arbitraries.js'
import { startDownstream } from '../helpers/downstream.js'
import { assertNoPollution, startGateway } from '../helpers/gateway.js'

// Fields frpc and frps must agree on: a forward answer that changes one is an invalid_response (issue 10),
// so the answers below keep them as they came. One list, to follow frp's source.
const AGREED = [...AGREED_FIELDS.keys()]

/** RFC 7396 section 2, as written there; objects it builds keep every key (a `__proto__` one too) as a plain key. */
function reference (target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return patch
  const result = new Map(isObject(target) ? Object.entries(target) : [])
  for (const [name, value] of Object.entries(patch)) {
    if (value === null) result.delete(name)
    else result.set(name, reference(result.get(name), value))
  }
  return object([...result])
}

const shuffled = (value: unknown, seed: number): unknown => {
  if (Array.isArray(value)) return value.map(v => shuffled(v, seed))
  if (!isObject(value)) return value
  const entries = Object.entries(value).map(([k, v], i) => [k, shuffled(v, seed), (i * 7919 + seed) % 101] as const)
  return object(entries.sort((a, b) => a[2] - b[2]).map(([k, v]) => [k, v]))
}
const withoutNulls = (value: unknown): unknown => isObject(value)
  ? object(Object.entries(value).filter(([, v]) => v !== null).map(([k, v]) => [k, withoutNulls(v)]))
  : value
const hasNull = (value: unknown): boolean => value === null || (typeof value === 'object' && Object.values(value as object).some(hasNull))

/** A merge patch for a value: some of its keys removed (null), replaced or patched deeper, new keys (hostile ones too) added. */
function patchFor (target: unknown, depth = 0): fc.Arbitrary<unknown> {
  const fresh = fc.array(fc.tuple(key, fc.oneof(json, fc.constant(null))), { maxLength: 2 })
  if (!isObject(target) || depth > 3) return fc.oneof(json, fresh.map(object))
  const edits = Object.keys(target).map(k => fc.oneof(
    { arbitrary: fc.constant(undefined), weight: 3 },
    { arbitrary: fc.constant(null), weight: 1 },
    { arbitrary: json, weight: 1 },
    { arbitrary: patchFor(target[k], depth + 1), weight: 2 }
  ).map(v => [k, v] as const))
  return fc.tuple(fc.tuple(...edits), fresh, fc.nat(100)).map(([kept, added, seed]) =>
    shuffled(object([...kept.filter(([, v]) => v !== undefined), ...added]), seed))
}

/** Patches that may carry a field's typed value at the top, so that more results are valid content. */
const typedPatch = (c: Content): fc.Arbitrary<unknown> => fc.tuple(patchFor(c), fc.constantFrom(...Object.keys(FIELDS.NewProxy)))
  .chain(([p, field]) => valueOf(FIELDS.NewProxy[field], field).map(v => isObject(p) ? object([...Object.entries(p), [field, v]]) : p))

/** A patch whose result is valid content of the op: typed values or null for its fields, anything for unknown keys. */
const validPatch = (op: Op): fc.Arbitrary<unknown> => fc.tuple(
  fc.array(fc.constantFrom(...Object.keys(FIELDS[op])).chain(f => fc.oneof(fc.constant(null), valueOf(FIELDS[op][f], f)).map(v => [f, v] as const)), { maxLength: 3 }),
  fc.array(fc.tuple(key.filter(k => !Object.hasOwn(FIELDS[op], k)), json), { maxLength: 2 })
).map(([fields, extra]) => object([...fields, ...extra]))

t.test('mergePatch is RFC 7396: equal to the reference, inputs untouched, no prototype changed', async t => {
  const pair = fc.oneof(
    fc.tuple(json, json),
    opContent({ wrongTypes: true }).chain(([, c]) => fc.tuple(fc.constant(c), fc.oneof(patchFor(c), typedPatch(c))))
  )
  await holds(t, 'merge patch', fc.property(pair, ([target, patch]) => {
    const expected = reference(target, patch)
    const before = JSON.stringify([target, patch])
    deepFreeze([target, patch])
    const merged = mergePatch(target, patch)
    return isDeepStrictEqual(merged, expected) && JSON.stringify([target, patch]) === before && pollution(merged) === null
  }), 300)
  await holds(t, 'itself as a patch is no change', fc.property(opContent({ wrongTypes: true }), fc.nat(100), ([, c], seed) => {
    fc.pre(!hasNull(c))
    return isDeepStrictEqual(mergePatch(c, shuffled(c, seed)), c)
  }), 100)
  assertNoPollution(t)
})

/** Sets the agreed fields of an answer's content as they are in the content sent (absent stays absent). */
function keepAgreed (sent: Content, answer: unknown, patch: boolean): unknown {
  if (!isObject(answer)) return answer
  const entries = Object.entries(answer).filter(([k]) => !AGREED.includes(k))
  if (!patch) for (const k of AGREED) if (Object.hasOwn(sent, k)) entries.push([k, sent[k]])
  return object(entries)
}

/** Outside Login frps keeps the user and run_id it sent (absent is ''): put back under `user`, or its whole `user` where the answer has none. */
function keepSession (op: Op, sent: Content, next: Content): Content {
  const ids = (c: Content): string[] => ['user', 'run_id'].map(k => isObject(c.user) && typeof c.user[k] === 'string' ? c.user[k] : '')
  if (op === 'Login' || isDeepStrictEqual(ids(sent), ids(next))) return next
  const { user, ...rest } = next
  if (!isObject(user)) return sent.user === undefined ? rest : { ...rest, user: sent.user }
  const kept: Content = { ...user }
  for (const k of ['user', 'run_id']) {
    if (isObject(sent.user) && Object.hasOwn(sent.user, k)) kept[k] = sent.user[k]
    else delete kept[k]
  }
  return { ...rest, user: kept }
}

for (const merge of ['replace', 'patch'] as const) {
  t.test(`forward merge ${merge} through a real downstream: a valid result, no change, or an invalid_response`, async t => {
    let answer: unknown = {}
    const downstream = await startDownstream(t, () => JSON.stringify(answer))
    const gw = await startGateway(t, { chain: [{ name: 'fw', plugin: 'forward', options: { url: downstream.url, merge } }] }, { level: 'silent' })
    const invalidCount = async (): Promise<number> => await gw.metric('frp_gateway_forward_requests_total', { step: 'fw', result: 'invalid_response' }) ?? 0
    const returned = (op: Op, sent: Content): fc.Arbitrary<unknown> => fc.oneof(
      // the content itself (in patch mode without its nulls, which would remove those fields)
      { arbitrary: fc.nat(100).map(seed => shuffled(merge === 'patch' ? withoutNulls(sent) : sent, seed)), weight: 2 },
      { arbitrary: merge === 'patch' ? fc.oneof(patchFor(sent), typedPatch(sent), validPatch(effectiveOp(op, sent))) : fc.constantFrom(...Object.keys(FIELDS)).chain(op => contentOf(op as never)), weight: 4 },
      { arbitrary: json, weight: 1 }
    ).map(c => keepAgreed(sent, c, merge === 'patch'))
    const calls = opContent().filter(([op, c]) => checkContent(effectiveOp(op, c), c) === null && depthOf(c) <= HTTP_DEPTH)
      .chain(([op, c]) => fc.tuple(fc.constant(op), fc.constant(c), returned(op, c).filter(r => depthOf(r) <= HTTP_DEPTH)))
    const outcomes = { unchanged: 0, modified: 0, invalid: 0 }
    await holds(t, merge, fc.asyncProperty(calls, async ([op, sent, returnedContent]) => {
      answer = { reject: false, unchange: false, content: returnedContent }
      const invalidBefore = await invalidCount()
      const r = await gw.call(op, sent)
      const invalidAfter = await invalidCount()
      if (r.status !== 200 || pollution(r.body) !== null || pollution() !== null) return false
      const eop = effectiveOp(op, sent)
      const answered = returnedContent == null ? sent : merge === 'patch' ? reference(sent, returnedContent) : returnedContent
      const invalid = !isObject(answered) || checkContent(eop, answered) !== null
      const next = invalid ? answered : keepSession(eop, sent, answered as Content)
      if (invalidAfter - invalidBefore !== (invalid ? 1 : 0)) throw new Error(`invalid_response counted ${invalidAfter - invalidBefore} times`)
      if (eop === 'CloseProxy') return r.raw === '{"reject":false,"unchange":true}'
      if (invalid) {
        outcomes.invalid++
        return r.raw === '{"reject":true,"reject_reason":"frp-plugin-gateway: step fw failed","unchange":true}'
      }
      if (isDeepStrictEqual(next, sent)) {
        outcomes.unchanged++
        return r.raw === '{"reject":false,"unchange":true}'
      }
      outcomes.modified++
      return r.body.reject === false && r.body.unchange === false && isDeepStrictEqual(r.body.content, next)
    }), 60)
    t.ok(outcomes.unchanged > 0 && outcomes.modified > 0 && outcomes.invalid > 0, `outcomes reached: ${JSON.stringify(outcomes)}`)
    assertNoPollution(t)
  })
}
