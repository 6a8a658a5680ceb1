import fc from 'fast-check'
import type { Test } from 'tap'
import { contentSchemas, OPS, type Content, type Op } from '../../src/protocol.js'

/** Keys that reach a prototype, shadow an inherited name or mean something to JSON or arrays. */
export const HOSTILE_KEYS = ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', 'toJSON', 'length'] as const

/** A content field's type, read from the op's zod schema (src/protocol.ts), so the arbitraries follow the field table. */
export type FieldType = 'string' | 'int' | 'boolean' | 'strings' | 'strMap' | { [field: string]: FieldType }

function typeOf (schema: any): FieldType {
  const def = schema.def
  switch (def.type) {
    case 'optional': case 'nullable': return typeOf(schema.unwrap())
    case 'string': return 'string'
    case 'number': return 'int'
    case 'boolean': return 'boolean'
    case 'array': return 'strings'
    case 'unknown': return 'strMap'
    case 'object': return Object.fromEntries(Object.entries(schema.shape).map(([k, v]) => [k, typeOf(v)]))
  }
  throw new Error(`no arbitrary for a content field of zod type ${String(def.type)}`)
}

export const FIELDS = Object.fromEntries(OPS.map(op => [op, typeOf(contentSchemas[op])])) as Record<Op, Record<string, FieldType>>
const ALL_FIELDS = [...new Set(OPS.flatMap(op => Object.keys(FIELDS[op])))]
const FIELD_TYPE = new Map(OPS.flatMap(op => Object.entries(FIELDS[op])))

/** Values content and conditions share, so that conditions match now and then. */
export const POOL = ['alice', 'bob', '', 'tcp', 'http', 'alice.web', 'bob.ssh', 'eu', 'x', ...HOSTILE_KEYS]

const LONG = ['x'.repeat(70_000), 'a\u2028'.repeat(5000), '\u{1F600}\0'.repeat(3000)]
/** Any string, with the ones that break logs and parsers more often than chance gives them. */
export const str: fc.Arbitrary<string> = fc.oneof(
  { arbitrary: fc.constantFrom(...POOL), weight: 4 },
  { arbitrary: fc.string({ maxLength: 12 }), weight: 2 },
  { arbitrary: fc.string({ unit: 'binary', maxLength: 12 }), weight: 1 },
  { arbitrary: fc.constantFrom('\u2028', '\u2029', '\0', '\u0085', 'a\u2028b\0c', '{{user}}', '$&$1$$', '"\\', ...LONG), weight: 1 }
)
/** An object key: hostile names, field names of any op, indices and anything else. */
export const key: fc.Arbitrary<string> = fc.oneof(
  { arbitrary: fc.constantFrom(...HOSTILE_KEYS), weight: 3 },
  { arbitrary: fc.constantFrom(...ALL_FIELDS), weight: 2 },
  { arbitrary: fc.constantFrom('0', '1', '5', 'a', 'b', 'x'), weight: 2 },
  { arbitrary: fc.string({ maxLength: 6 }), weight: 1 }
)
const int = fc.oneof(fc.integer({ min: 0, max: 65535 }), fc.constantFrom(0, -1, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER))
const num = fc.oneof(int, fc.double({ noNaN: true, noDefaultInfinity: true }), fc.constantFrom(1e300, 2 ** 53 + 2, 0.5))

/** Own data keys only, as JSON.parse makes them (a `__proto__` key included). */
export const object = (entries: ReadonlyArray<readonly [string, unknown]>): Content => Object.fromEntries(entries)

/** Any JSON value: hostile keys at every level, nested a few levels (and now and then a hundred). */
export const json: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: fc.letrec<{ value: unknown }>(tie => ({
    value: fc.oneof({ depthSize: 'small', withCrossShrink: true },
      fc.constant(null), fc.boolean(), num, str,
      fc.array(tie('value'), { maxLength: 4 }),
      fc.array(fc.tuple(key, tie('value')), { maxLength: 4 }).map(object))
  })).value, weight: 9 },
  { arbitrary: fc.tuple(fc.integer({ min: 20, max: 120 }), key, json0()).map(([depth, k, leaf]) => nest(depth, k, leaf)), weight: 1 }
)
function json0 (): fc.Arbitrary<unknown> { return fc.oneof(fc.constant(null), str, num) }
function nest (depth: number, k: string, leaf: unknown): unknown {
  let value = leaf
  for (let i = 0; i < depth; i++) value = i % 3 === 0 ? [value] : object([[k, value]])
  return value
}

const addr = fc.oneof(
  fc.tuple(fc.ipV4(), int).map(([ip, port]) => `${ip}:${port}`),
  fc.tuple(fc.ipV6(), int).map(([ip, port]) => `[${ip}]:${port}`),
  fc.ipV4(), fc.ipV6(), str
)

export interface ContentOptions {
  /** also fields of the wrong type (content a step sees has passed the op's schema; `when` and templates must not care) */
  wrongTypes?: boolean
}

/** A valid value of one field type. */
export function valueOf (type: FieldType, name = '', opts: ContentOptions = {}): fc.Arbitrary<unknown> {
  if (name === 'client_address' || name === 'remote_addr') return addr
  if (type === 'string') return str
  if (type === 'int') return int
  if (type === 'boolean') return fc.boolean()
  if (type === 'strings') return fc.array(str, { maxLength: 4 })
  if (type === 'strMap') return fc.array(fc.tuple(key, str), { maxLength: 4 }).map(object)
  return objectOf(type, opts)
}

/** Absent, null, a value of its type (or, with wrongTypes, any JSON). */
const fieldForms = (type: FieldType, name: string, opts: ContentOptions): fc.Arbitrary<unknown> => fc.oneof(
  { arbitrary: fc.constant(ABSENT), weight: 2 },
  { arbitrary: fc.constant(null), weight: 1 },
  { arbitrary: valueOf(type, name, opts), weight: 5 },
  { arbitrary: opts.wrongTypes === true ? json : valueOf(type, name, opts), weight: 1 }
)
const ABSENT = Symbol('absent')

/** An object of known fields in any form, plus unknown fields: other ops' fields, hostile keys, deep values. */
function objectOf (fields: Record<string, FieldType>, opts: ContentOptions): fc.Arbitrary<Content> {
  const known = Object.entries(fields).map(([name, type]) => fieldForms(type, name, opts).map(v => [name, v] as const))
  const foreign = ALL_FIELDS.filter(name => !Object.hasOwn(fields, name))
  const extra = fc.oneof(
    fc.tuple(fc.constantFrom(...foreign), fc.boolean(), json).chain(([name, typed, v]) =>
      typed ? valueOf(FIELD_TYPE.get(name) as FieldType, name).map(tv => [name, tv] as const) : fc.constant([name, v] as const)),
    fc.tuple(key.filter(k => !Object.hasOwn(fields, k)), json)
  )
  return fc.tuple(fc.tuple(...known), fc.array(extra, { maxLength: 3 }))
    .map(([entries, extras]) => object([...entries.filter(([, v]) => v !== ABSENT), ...extras]))
}

/** Content of one op as JSON.parse hands it over (the same value after a JSON round trip: no -0, own keys only). */
export const content = (op: Op, opts: ContentOptions = {}): fc.Arbitrary<Content> =>
  objectOf(FIELDS[op], opts).map(c => JSON.parse(JSON.stringify(c)) as Content)

/** An op and content of it. */
export const opContent = (opts: ContentOptions = {}): fc.Arbitrary<[Op, Content]> =>
  fc.constantFrom(...OPS).chain(op => content(op, opts).map(c => [op, c] as [Op, Content]))

/** How deeply a JSON value nests (a scalar is 0). */
export const depthOf = (value: unknown): number => value !== null && typeof value === 'object'
  ? 1 + Math.max(0, ...Object.values(value).map(depthOf))
  : 0
/** Deep enough to need care, well under any bound the gateway sets on nesting (issue 10, defect 5). */
export const HTTP_DEPTH = 20

/** Freezes a value and everything in it: a write to it then throws (test files are strict-mode modules). */
export function deepFreeze<T> (value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const v of Object.values(value)) deepFreeze(v)
    Object.freeze(value)
  }
  return value
}

const OBJECT_KEYS = Object.getOwnPropertyNames(Object.prototype).join()
const ARRAY_KEYS = Object.getOwnPropertyNames(Array.prototype).join()

/** Null when no prototype changed and every object in value is a plain object or array; else what is wrong. */
export function pollution (value?: unknown): string | null {
  if (Object.getOwnPropertyNames(Object.prototype).join() !== OBJECT_KEYS) return 'Object.prototype gained or lost a key'
  if (Object.getOwnPropertyNames(Array.prototype).join() !== ARRAY_KEYS) return 'Array.prototype gained or lost a key'
  if (Object.prototype.constructor !== Object || Object.getPrototypeOf(Object.prototype) !== null) return 'Object.prototype changed'
  const walk = (v: unknown, at: string): string | null => {
    if (v === null || typeof v !== 'object') return null
    const proto = Object.getPrototypeOf(v)
    if (proto !== (Array.isArray(v) ? Array.prototype : Object.prototype)) return `${at} has another prototype`
    for (const [k, item] of Object.entries(v)) {
      const bad = walk(item, `${at}.${k}`)
      if (bad !== null) return bad
    }
    return null
  }
  return walk(value, 'value')
}

/**
 * Checks a property and asserts it held, with fast-check's report (seed, path, counterexample) on failure.
 * FC_PROPERTY, FC_SEED and FC_PATH replay a reported failure (the line `replay:` of the report gives them).
 */
export async function holds (t: Test, name: string, property: fc.IProperty<any> | fc.IAsyncProperty<any>, numRuns: number): Promise<void> {
  const replay = process.env.FC_PROPERTY === undefined || process.env.FC_PROPERTY === name
  const seed = replay && process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : undefined
  const path = replay ? process.env.FC_PATH : undefined
  const details = await fc.check(property as fc.IAsyncProperty<any>, { numRuns, seed, path, endOnFailure: path !== undefined })
  // escaped to ASCII: a raw U+2028 or NUL of a counterexample in an assertion's name breaks the TAP stream (the failure vanished)
  const report = (fc.defaultReportMessage(details) ?? '').replace(/[^\n\x20-\x7e]/g, c => `\\u{${c.codePointAt(0)?.toString(16) ?? ''}}`)
  t.ok(!details.failed, details.failed ? `${name}\n${report}\nreplay: FC_PROPERTY='${name}' FC_SEED=${details.seed} FC_PATH=${details.counterexamplePath ?? ''}` : name)
}
