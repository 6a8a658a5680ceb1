import { isDeepStrictEqual } from 'node:util'
import fc from 'fast-check'
import t from 'tap'
import { isObject, sameJson } from '../../src/protocol.js'
import { holds, json, object } from '../helpers/arbitraries.js'

const reordered = (value: unknown): unknown => Array.isArray(value)
  ? value.map(reordered)
  : isObject(value) ? object(Object.entries(value).reverse().map(([k, v]) => [k, reordered(v)])) : value

t.test('sameJson is JSON equality whatever the key order (the no-change test of steps and the chain)', async t => {
  await holds(t, 'sameJson', fc.property(json, json, (a, b) =>
    sameJson(a, b) === isDeepStrictEqual(a, b) && sameJson(a, reordered(a)) && sameJson(reordered(b), b) === sameJson(b, b)), 500)
})
