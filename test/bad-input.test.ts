import type { Socket } from 'node:net'
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib'
import t, { type Test } from 'tap'
import type { z } from 'zod'
import { contentSchemas, MAX_CONTENT_DEPTH, OPS, type Op } from '../src/protocol.js'
import { assertNoPollution, startGateway, type TestGateway } from './helpers/gateway.js'
import { frpsRequest, rawExchange } from './helpers/raw-http.js'

// Every class of bad input on the RPC route: each case asserts the exact status and code (or the
// 200 reject naming the field), that it is counted once, and that the gateway is still healthy and
// unpolluted after it.

const CHAIN = [
  { name: 'no-eve', plugin: 'reject', ops: ['Login'], when: { users: ['eve'] } },
  // every allowed Login and NewProxy is modified, so the whole content is serialized into the answer
  { name: 'tag', plugin: 'metas', ops: ['Login', 'NewProxy'], options: { set: { tagged: 'yes' } } }
]
const LIMIT = 64 * 1024
const INVALID = { op: 'invalid', outcome: 'error' }

async function gateway (t: Test, listen = false): Promise<TestGateway & { port: number }> {
  const gw = await startGateway(t, { listen: { bodyLimitBytes: LIMIT }, deadlineMs: 1000, chain: CHAIN })
  if (listen) await gw.app.listen({ host: '127.0.0.1', port: 0 })
  return { ...gw, port: listen ? (gw.app.server.address() as { port: number }).port : 0 }
}

/** The process still answers health and a good call, and no prototype gained a key. */
async function assertHealthy (t: Test, gw: TestGateway, name: string): Promise<void> {
  t.equal((await gw.app.inject({ method: 'GET', url: '/healthz' })).statusCode, 200, `${name}: /healthz`)
  const good = await gw.call('Login', { user: 'alice' })
  t.equal(good.raw, '{"reject":false,"unchange":false,"content":{"user":"alice","metas":{"tagged":"yes"}}}', `${name}: a good call`)
  assertNoPollution(t, ['polluted', 'isAdmin'])
}

const counts = async (gw: TestGateway): Promise<number[]> => await Promise.all(
  [INVALID, ...OPS.flatMap(op => ['allow', 'modify', 'reject', 'error'].map(outcome => ({ op, outcome })))]
    .map(async labels => await gw.metric('frp_gateway_requests_total', labels) ?? 0))

/** JSON text of objects and arrays nested `depth` deep (as text: JSON.stringify itself overflows the stack on such). */
const nest = (depth: number): string => {
  let open = ''
  let close = ''
  for (let i = 0; i < depth; i++) {
    open += i % 2 === 0 ? '{"a":' : '['
    close = (i % 2 === 0 ? '}' : ']') + close
  }
  return `${open}1${close}`
}
/** An frps body; `content` is JSON text when a string. */
const envelope = (op: string, content: unknown, extra = ''): string =>
  `{"version":"0.1.0",${extra}"op":${JSON.stringify(op)},"content":${typeof content === 'string' ? content : JSON.stringify(content)}}`
const bomb = gzipSync(`{"op":"Login","content":{"user":"a","x":"${' '.repeat(8 * LIMIT)}"}}`)

interface BodyCase {
  name: string
  body: string | Buffer
  /** beside content-type application/json (null: none) */
  headers?: Record<string, string | null>
  url?: string
  method?: 'GET' | 'PUT' | 'DELETE' | 'PATCH' | 'OPTIONS' | 'POST'
  status: number
  /** the FRPGW_ERR_ code of a 4xx */
  code?: string
  /** a 200 answer: exactly this body, or a reject whose reason matches */
  answer?: string
  reject?: RegExp
  message?: RegExp
}

const LOGIN_URL = '/handler?version=0.1.0&op=Login'
const gzipped = gzipSync(envelope('Login', { user: 'alice' }))
const ALICE = '{"reject":false,"unchange":false,"content":{"user":"alice","metas":{"tagged":"yes"}}}'

const BODY_CASES: BodyCase[] = [
  // not JSON
  { name: 'not JSON', body: 'hello', status: 400, code: 'FRPGW_ERR_INVALID_JSON' },
  { name: 'truncated JSON', body: '{"op":"Login","content":{"user":"a"', status: 400, code: 'FRPGW_ERR_INVALID_JSON' },
  { name: 'empty body', body: '', status: 400, code: 'FRPGW_ERR_INVALID_JSON' },
  { name: 'JSON with a trailing comma', body: '{"op":"Login","content":{},}', status: 400, code: 'FRPGW_ERR_INVALID_JSON' },
  { name: 'invalid UTF-8', body: Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), status: 400, code: 'FRPGW_ERR_INVALID_JSON' },
  // not an object, or no op or content
  ...['null', '[]', '"Login"', '42', 'true'].map(body => ({ name: `body ${body}`, body, status: 400, code: 'FRPGW_ERR_BAD_ENVELOPE' })),
  { name: 'op a number', body: '{"op":1,"content":{}}', status: 400, code: 'FRPGW_ERR_BAD_ENVELOPE' },
  { name: 'no op', body: '{"content":{}}', status: 400, code: 'FRPGW_ERR_BAD_ENVELOPE' },
  { name: 'no content', body: '{"op":"Login"}', status: 400, code: 'FRPGW_ERR_BAD_ENVELOPE' },
  ...['null', '[]', '"x"', '7'].map(content => ({ name: `content ${content}`, body: `{"op":"Login","content":${content}}`, status: 400, code: 'FRPGW_ERR_BAD_ENVELOPE' })),
  // unknown ops and mismatches
  ...['Logout', 'login', '__proto__', 'constructor', 'toString', ''].map(op => ({
    name: `unknown op ${JSON.stringify(op)}`, body: envelope(op, {}), url: `/handler?op=${encodeURIComponent(op)}`, status: 400, code: 'FRPGW_ERR_UNKNOWN_OP'
  })),
  { name: 'op differs from the query', body: envelope('Ping', {}), status: 400, code: 'FRPGW_ERR_OP_MISMATCH' },
  { name: 'op twice in the query', body: envelope('Login', {}), url: '/handler?op=Login&op=Login', status: 400, code: 'FRPGW_ERR_OP_MISMATCH' },
  // duplicate keys: the last one wins, as in frps's Go decoder
  { name: 'duplicate content key', body: '{"op":"Login","content":{"user":"alice","user":"eve"}}', status: 200, answer: '{"reject":true,"reject_reason":"rejected by no-eve","unchange":true}' },
  { name: 'duplicate op', body: '{"op":"Ping","op":"Login","content":{"user":"alice"}}', status: 200, answer: ALICE },
  // content types
  ...['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/json-patch+json', 'application/jsonx', 'text/json'].map(type => ({
    name: `content-type ${type}`, body: envelope('Login', { user: 'alice' }), headers: { 'content-type': type }, status: 415, code: 'FRPGW_ERR_UNSUPPORTED_MEDIA_TYPE'
  })),
  { name: 'no content-type', body: envelope('Login', { user: 'alice' }), headers: { 'content-type': null }, status: 415, code: 'FRPGW_ERR_UNSUPPORTED_MEDIA_TYPE' },
  { name: 'content-type with charset', body: envelope('Login', { user: 'alice' }), headers: { 'content-type': 'application/json; charset=utf-8' }, status: 200, answer: ALICE },
  { name: 'content-type with charset "UTF8"', body: envelope('Login', { user: 'alice' }), headers: { 'content-type': 'application/json;charset="UTF8"' }, status: 200, answer: ALICE },
  // the body would be read as UTF-8 all the same
  ...['utf-16', 'latin1', 'x'].map(charset => ({
    name: `content-type with charset ${charset}`, body: envelope('Login', { user: 'alice' }), headers: { 'content-type': `application/json; charset=${charset}` }, status: 415, code: 'FRPGW_ERR_UNSUPPORTED_MEDIA_TYPE'
  })),
  // content encodings
  { name: 'gzip', body: gzipped, headers: { 'content-encoding': 'gzip' }, status: 200, answer: ALICE },
  { name: 'x-gzip', body: gzipped, headers: { 'content-encoding': 'x-gzip' }, status: 200, answer: ALICE },
  { name: 'GZIP in capitals', body: gzipped, headers: { 'content-encoding': 'GZIP' }, status: 200, answer: ALICE },
  { name: 'deflate', body: deflateSync(envelope('Login', { user: 'alice' })), headers: { 'content-encoding': 'deflate' }, status: 200, answer: ALICE },
  { name: 'br', body: brotliCompressSync(envelope('Login', { user: 'alice' })), headers: { 'content-encoding': 'br' }, status: 200, answer: ALICE },
  { name: 'identity', body: envelope('Login', { user: 'alice' }), headers: { 'content-encoding': 'identity' }, status: 200, answer: ALICE },
  { name: 'plain JSON labelled gzip', body: envelope('Login', { user: 'alice' }), headers: { 'content-encoding': 'gzip' }, status: 400, code: 'FRPGW_ERR_BAD_ENCODING', message: /gzip: incorrect header check/ },
  { name: 'plain JSON labelled br', body: envelope('Login', { user: 'alice' }), headers: { 'content-encoding': 'br' }, status: 400, code: 'FRPGW_ERR_BAD_ENCODING' },
  { name: 'truncated gzip', body: gzipped.subarray(0, gzipped.length - 8), headers: { 'content-encoding': 'gzip' }, status: 400, code: 'FRPGW_ERR_BAD_ENCODING', message: /unexpected end of file/ },
  { name: 'gzip of something not JSON', body: gzipSync('hello'), headers: { 'content-encoding': 'gzip' }, status: 400, code: 'FRPGW_ERR_INVALID_JSON' },
  { name: 'gzip bomb', body: bomb, headers: { 'content-encoding': 'gzip' }, status: 413, code: 'FRPGW_ERR_BODY_TOO_LARGE' },
  { name: 'unknown encoding', body: envelope('Login', { user: 'alice' }), headers: { 'content-encoding': 'compress' }, status: 415, code: 'FRPGW_ERR_UNSUPPORTED_ENCODING', message: /"compress"/ },
  { name: 'two encodings', body: gzipSync(gzipped), headers: { 'content-encoding': 'gzip, gzip' }, status: 415, code: 'FRPGW_ERR_UNSUPPORTED_ENCODING' },
  { name: 'encoding named __proto__', body: envelope('Login', { user: 'alice' }), headers: { 'content-encoding': '__proto__' }, status: 415, code: 'FRPGW_ERR_UNSUPPORTED_ENCODING' },
  // deep nesting
  { name: 'unknown field nested 5000 deep', body: envelope('Login', `{"user":"alice","future":${nest(5000)}}`), status: 400, code: 'FRPGW_ERR_TOO_DEEP', message: /^content\.future nests objects and arrays deeper than 32 levels$/ },
  { name: 'unknown field nested 5000 deep in a call allowed unchanged (logged with its content at debug)', body: envelope('Ping', `{"user":{"user":"a"},"future":${nest(5000)}}`), url: '/handler?op=Ping', status: 400, code: 'FRPGW_ERR_TOO_DEEP' },
  { name: 'unknown field under user nested 5000 deep', body: envelope('NewProxy', `{"user":{"user":"a","x":${nest(5000)}}}`), url: '/handler?op=NewProxy', status: 400, code: 'FRPGW_ERR_TOO_DEEP', message: /^content\.user\.x / },
  { name: 'unknown field under client_spec nested deep', body: envelope('Login', `{"client_spec":{"x":${nest(40)}}}`), status: 400, code: 'FRPGW_ERR_TOO_DEEP', message: /^content\.client_spec\.x / },
  { name: `content nested exactly ${MAX_CONTENT_DEPTH} deep`, body: envelope('Login', `{"user":"alice","deep":${nest(MAX_CONTENT_DEPTH - 1)}}`), status: 200, answer: `{"reject":false,"unchange":false,"content":{"user":"alice","deep":${nest(MAX_CONTENT_DEPTH - 1)},"metas":{"tagged":"yes"}}}` },
  { name: `content nested ${MAX_CONTENT_DEPTH + 1} deep`, body: envelope('Login', `{"user":"alice","deep":${nest(MAX_CONTENT_DEPTH)}}`), status: 400, code: 'FRPGW_ERR_TOO_DEEP' },
  { name: 'a long unknown key is cut in the message', body: envelope('Login', `{"${'k'.repeat(5000)}":${nest(100)}}`), status: 400, code: 'FRPGW_ERR_TOO_DEEP', message: /^content\.k{64}\.\.\. nests/ },
  { name: 'a field of the wrong type before an unknown field nested deep', body: envelope('Login', `{"hostname":5,"future":${nest(5000)}}`), status: 400, code: 'FRPGW_ERR_TOO_DEEP', message: /^content\.future / },
  { name: 'a field of the wrong type before a user nested deep', body: envelope('NewProxy', `{"proxy_name":5,"user":{"user":"a","x":${nest(5000)}}}`), url: '/handler?op=NewProxy', status: 400, code: 'FRPGW_ERR_TOO_DEEP', message: /^content\.user\.x / },
  { name: 'a known field holding deep nesting', body: envelope('Login', `{"hostname":${nest(5000)}}`), status: 200, reject: /^invalid Login content: content\.hostname: Invalid input: expected string/ },
  { name: 'a meta holding deep nesting', body: envelope('Login', `{"metas":{"m":${nest(5000)}}}`), status: 200, reject: /^invalid Login content: content\.metas\.m: Invalid input: expected string/ },
  { name: 'an envelope key beside content nested deep (never read)', body: envelope('Login', { user: 'alice' }, `"extra":${nest(5000)},`), status: 200, answer: ALICE },
  // prototype keys at every level
  { name: '__proto__ in the envelope', body: envelope('Login', { user: 'alice' }, '"__proto__":{"polluted":"yes"},'), status: 200, answer: ALICE },
  { name: 'constructor.prototype in the envelope', body: envelope('Login', { user: 'alice' }, '"constructor":{"prototype":{"polluted":"yes"}},'), status: 200, answer: ALICE },
  ...['__proto__', 'constructor', 'prototype'].flatMap(key => [
    { name: `content.${key}`, body: `{"op":"Login","content":{"user":"alice","${key}":{"polluted":"yes","isAdmin":true}}}`, status: 200, answer: `{"reject":false,"unchange":false,"content":{"user":"alice","${key}":{"polluted":"yes","isAdmin":true},"metas":{"tagged":"yes"}}}` },
    { name: `content.user.${key} (NewProxy)`, url: '/handler?op=NewProxy', body: `{"op":"NewProxy","content":{"user":{"user":"a","${key}":{"polluted":"yes"}},"proxy_name":"p"}}`, status: 200, answer: `{"reject":false,"unchange":false,"content":{"user":{"user":"a","${key}":{"polluted":"yes"}},"proxy_name":"p","metas":{"tagged":"yes"}}}` },
    { name: `content.client_spec.${key}`, body: `{"op":"Login","content":{"client_spec":{"${key}":{"polluted":"yes"}}}}`, status: 200, answer: `{"reject":false,"unchange":false,"content":{"client_spec":{"${key}":{"polluted":"yes"}},"metas":{"tagged":"yes"}}}` },
    { name: `content.metas.${key} a string`, body: `{"op":"Login","content":{"metas":{"${key}":"x"}}}`, status: 200, answer: `{"reject":false,"unchange":false,"content":{"metas":{"${key}":"x","tagged":"yes"}}}` },
    { name: `content.metas.${key} an object`, body: `{"op":"Login","content":{"metas":{"${key}":{"polluted":"yes"}}}}`, status: 200, reject: new RegExp(`^invalid Login content: content\\.metas\\.${key}: Invalid input: expected string, received object$`) },
    { name: `content.future.a.${key} nested`, body: `{"op":"Login","content":{"future":{"a":{"${key}":{"${key}":{"polluted":"yes"}}}}}}`, status: 200, answer: `{"reject":false,"unchange":false,"content":{"future":{"a":{"${key}":{"${key}":{"polluted":"yes"}}}},"metas":{"tagged":"yes"}}}` }
  ]),
  // huge strings and maps (under the body limit)
  { name: 'a 60 KiB string', body: envelope('Login', { user: 'alice', hostname: 'h'.repeat(60 * 1024) }), status: 200, answer: `{"reject":false,"unchange":false,"content":{"user":"alice","hostname":"${'h'.repeat(60 * 1024)}","metas":{"tagged":"yes"}}}` },
  { name: 'metas with 5000 keys', body: envelope('Login', { metas: Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`k${i}`, 'v'])) }), status: 200 },
  { name: 'content with 5000 unknown keys', body: envelope('Login', Object.fromEntries(Array.from({ length: 5000 }, (_, i) => [`k${i}`, i]))), status: 200 },
  { name: 'an unknown array of 20000 items', body: envelope('Login', { list: Array.from({ length: 20000 }, () => 0) }), status: 200 },
  // oversize
  { name: 'one byte over the body limit', body: envelope('Login', { hostname: 'h'.repeat(LIMIT) }).slice(0, LIMIT + 1), status: 413, code: 'FRPGW_ERR_BODY_TOO_LARGE' },
  // wrong methods and paths
  ...(['GET', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'] as const).map(method => ({ name: `${method} on the RPC path`, method, body: '', url: LOGIN_URL, status: 405, code: 'FRPGW_ERR_METHOD_NOT_ALLOWED' })),
  ...(['GET', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'] as const).map(method => ({ name: `${method} on the RPC path with a %-escape (POST there is the RPC)`, method, body: '', url: '/h%61ndler?op=Login', status: 405, code: 'FRPGW_ERR_METHOD_NOT_ALLOWED' })),
  ...['/handler/', '/Handler', '/handlerx', '/', '/metrics/x', '//handler'].map(url => ({ name: `POST ${url}`, url, body: envelope('Login', {}), status: 404, code: 'FRPGW_ERR_NOT_FOUND' })),
  // no route: answered before the body is read, whatever the body
  { name: 'POST /nope with a body that is not JSON', url: '/nope', body: 'hello', status: 404, code: 'FRPGW_ERR_NOT_FOUND' },
  { name: 'POST /healthz with a body over the body limit', url: '/healthz', body: 'h'.repeat(LIMIT + 1), status: 404, code: 'FRPGW_ERR_NOT_FOUND' },
  { name: 'a malformed %-escape in the path', url: '/handler%zz?op=Login', body: envelope('Login', {}), status: 400, code: 'FRPGW_ERR_BAD_REQUEST' }
]

t.test('bad bodies, envelopes, types, encodings, depths and keys: exact status and code, counted once', async t => {
  const gw = await gateway(t)
  for (const c of BODY_CASES) {
    const before = await counts(gw)
    const res = await gw.app.inject({
      method: c.method ?? 'POST',
      url: c.url ?? LOGIN_URL,
      headers: Object.fromEntries(Object.entries({ 'content-type': 'application/json', ...c.headers }).filter(([, v]) => v !== null)) as Record<string, string>,
      ...(c.method === undefined || c.method === 'POST' ? { payload: c.body } : {})
    })
    t.equal(res.statusCode, c.status, `${c.name}: status`)
    const after = await counts(gw)
    t.equal(after.reduce((a, b) => a + b) - before.reduce((a, b) => a + b), 1, `${c.name}: counted once`)
    if (c.code !== undefined) {
      t.same(Object.keys(res.json()), ['error'], `${c.name}: the error shape`)
      t.equal(res.json().error.code, c.code, `${c.name}: code`)
      if (c.message !== undefined) t.match(res.json().error.message, c.message, `${c.name}: message`)
      if (c.status === 405) t.equal(res.headers.allow, 'POST', `${c.name}: Allow`)
      t.equal(after[0] - before[0], 1, `${c.name}: counted as op="invalid"`)
      t.equal(gw.logs.at(-1)?.code, c.code, `${c.name}: logged`)
    } else {
      t.equal(after[0], before[0], `${c.name}: not invalid`)
      if (c.answer !== undefined) t.equal(res.body, c.answer, `${c.name}: answer`)
      if (c.reject !== undefined) t.match(res.json().reject_reason, c.reject, `${c.name}: reject reason`)
      if (c.answer === undefined && c.reject === undefined) t.equal(res.json().reject, false, `${c.name}: allowed`)
    }
    await assertHealthy(t, gw, c.name)
  }
})

type Kind = 'string' | 'int' | 'bool' | 'strList' | 'strMap' | { [field: string]: Kind }

/** The field table of protocol.ts, read back from the content schemas. */
function kindOf (schema: z.ZodType): Kind {
  let s = schema as unknown as { def: { type: string, innerType?: unknown, shape?: Record<string, z.ZodType> } }
  while (s.def.type === 'optional' || s.def.type === 'nullable') s = s.def.innerType as typeof s
  switch (s.def.type) {
    case 'string': return 'string'
    case 'number': return 'int'
    case 'boolean': return 'bool'
    case 'array': return 'strList'
    case 'unknown': return 'strMap'
    case 'object': return Object.fromEntries(Object.entries(s.def.shape ?? {}).map(([k, v]) => [k, kindOf(v)]))
    default: throw new Error(`no test values for a ${s.def.type} field`)
  }
}

/** Values of every JSON type but the field's, each with the path the reject must name (relative to the field). */
function wrongValues (kind: Kind): Array<[unknown, string]> {
  const all: Array<[unknown, string]> = [['x', ''], [7, ''], [true, ''], [[], ''], [{}, '']]
  const not = (type: (v: unknown) => boolean): Array<[unknown, string]> => all.filter(([v]) => !type(v))
  switch (kind) {
    case 'string': return not(v => typeof v === 'string')
    case 'int': return [...not(v => typeof v === 'number'), [1.5, ''], [2 ** 53, '']]
    case 'bool': return [...not(v => typeof v === 'boolean'), ['true', '']]
    case 'strList': return [...not(Array.isArray), [['a', 1], '[1]']]
    case 'strMap': return [...not(v => typeof v === 'object' && !Array.isArray(v)), [{ a: 'b', c: 1 }, '.c']]
    default: return [
      ...not(v => typeof v === 'object' && !Array.isArray(v)),
      ...Object.entries(kind).flatMap(([key, k]) => wrongValues(k).map(([v, at]): [unknown, string] => [{ [key]: v }, `.${key}${at}`]))
    ]
  }
}

t.test('every field of every op with a value of each wrong JSON type: a 200 reject naming the field (CloseProxy: allow, whose answer frps ignores, and a log line naming it)', async t => {
  const gw = await gateway(t)
  let cases = 0
  for (const op of OPS) {
    const fields = kindOf(contentSchemas[op]) as Record<string, Kind>
    t.ok(Object.keys(fields).length >= 2, `${op}: the field table is read`)
    for (const [field, kind] of Object.entries(fields)) {
      for (const [value, at] of wrongValues(kind)) {
        const res = await gw.call(op, { [field]: value })
        const path = `content.${field}${at}`.replace(/[.[\]]/g, c => `\\${c}`)
        t.equal(res.status, 200, `${op} ${field} = ${JSON.stringify(value)}`)
        const named = new RegExp(`^invalid ${op as Op} content: ${path}: `)
        if (op === 'CloseProxy') {
          t.equal(res.raw, '{"reject":false,"unchange":true}', `${op} ${field} = ${JSON.stringify(value)}: allow`)
          t.match(gw.logs.at(-1), { op, outcome: 'error', reason: named }, `${op} ${field} = ${JSON.stringify(value)}: logged`)
        } else {
          t.match(res.body.reject_reason, named, `${op} ${field} = ${JSON.stringify(value)}`)
        }
        cases++
      }
    }
    await assertHealthy(t, gw, op)
  }
  const errors = await Promise.all(OPS.map(async op => await gw.metric('frp_gateway_requests_total', { op, outcome: 'error' }) ?? 0))
  t.equal(errors.reduce((a, b) => a + b), cases, 'every case counted once as its op\'s error')
  t.ok(cases > 150, `${cases} cases`)
})

interface RawCase {
  name: string
  send: (socket: Socket) => void
  status: number
  code: string
  /** the Allow header of a 405 on the RPC path */
  allow?: string
}
const write = (data: string | Buffer) => (socket: Socket) => { socket.write(data) }
const head = (lines: string): string => `POST /handler?op=Login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n${lines}\r\n`

const RAW_CASES: RawCase[] = [
  { name: 'chunked and Content-Length', send: write(head('Content-Length: 2\r\nTransfer-Encoding: chunked\r\n') + '2\r\n{}\r\n0\r\n\r\n'), status: 400, code: 'FRPGW_ERR_BAD_REQUEST' },
  { name: 'two Content-Lengths', send: write(head('Content-Length: 2\r\nContent-Length: 3\r\n') + '{}'), status: 400, code: 'FRPGW_ERR_BAD_REQUEST' },
  { name: 'a control byte in a header name', send: write(head('X-A\x01b: 1\r\nContent-Length: 2\r\n') + '{}'), status: 400, code: 'FRPGW_ERR_BAD_REQUEST' },
  { name: 'a control byte in a header value', send: write(head('X-A: a\x01b\r\nContent-Length: 2\r\n') + '{}'), status: 400, code: 'FRPGW_ERR_BAD_REQUEST' },
  { name: 'a bare LF in a header', send: write('POST /handler HTTP/1.1\r\nHost: x\nX-A: 1\r\nContent-Length: 0\r\n\r\n'), status: 400, code: 'FRPGW_ERR_BAD_REQUEST' },
  { name: 'a request line over 16 KiB', send: write(`POST /handler?op=Login&x=${'a'.repeat(17 * 1024)} HTTP/1.1\r\nHost: x\r\n\r\n`), status: 431, code: 'FRPGW_ERR_HEADERS_TOO_LARGE' },
  { name: 'a header over 16 KiB', send: write(head(`X-Big: ${'a'.repeat(17 * 1024)}\r\nContent-Length: 2\r\n`) + '{}'), status: 431, code: 'FRPGW_ERR_HEADERS_TOO_LARGE' },
  { name: 'an invalid method', send: write('P@ST /handler HTTP/1.1\r\nHost: x\r\n\r\n'), status: 400, code: 'FRPGW_ERR_BAD_REQUEST' },
  { name: 'an unknown HTTP version', send: write('POST /handler HTTP/9.9\r\nHost: x\r\n\r\n'), status: 400, code: 'FRPGW_ERR_BAD_REQUEST' },
  { name: 'a space in the URL', send: write('POST /handler x HTTP/1.1\r\nHost: x\r\n\r\n'), status: 400, code: 'FRPGW_ERR_BAD_REQUEST' },
  { name: 'a TLS hello on the plain port', send: write(Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03])), status: 400, code: 'FRPGW_ERR_BAD_REQUEST' },
  { name: 'an HTTP/2 preface', send: write('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), status: 400, code: 'FRPGW_ERR_BAD_REQUEST' },
  { name: 'a bad chunk size', send: write(head('Transfer-Encoding: chunked\r\n') + 'zz\r\n{}\r\n0\r\n\r\n'), status: 400, code: 'FRPGW_ERR_BAD_REQUEST' },
  { name: 'CONNECT', send: write('CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n'), status: 405, code: 'FRPGW_ERR_METHOD_NOT_ALLOWED' },
  { name: 'CONNECT on the RPC path', send: write('CONNECT /handler HTTP/1.1\r\nHost: x\r\n\r\n'), status: 405, code: 'FRPGW_ERR_METHOD_NOT_ALLOWED', allow: 'POST' },
  { name: 'a Content-Length of 10 MiB', send: write(head(`Content-Length: ${10 * 1024 * 1024}\r\n`) + '{"op":'), status: 413, code: 'FRPGW_ERR_BODY_TOO_LARGE' },
  { name: 'a body shorter than Content-Length, then the end', send: s => { s.end(head('Content-Length: 50\r\n') + '{}') }, status: 400, code: 'FRPGW_ERR_BAD_REQUEST' },
  { name: 'a body that comes one byte at a time', send: s => { s.write(head('Content-Length: 100\r\n')); const drip = setInterval(() => { if (s.destroyed) clearInterval(drip); else s.write(' ') }, 100) }, status: 408, code: 'FRPGW_ERR_REQUEST_TIMEOUT' },
  { name: 'headers and then nothing', send: write(head('Content-Length: 2\r\n')), status: 408, code: 'FRPGW_ERR_REQUEST_TIMEOUT' },
  { name: 'half the headers', send: write('POST /handler?op=Login HTTP/1.1\r\nHost: 127.0.0.1\r\n'), status: 408, code: 'FRPGW_ERR_REQUEST_TIMEOUT' },
  { name: 'an Expect other than 100-continue (Node would answer a bare 417)', send: write(head('Expect: foo\r\nContent-Length: 2\r\n') + '{}'), status: 400, code: 'FRPGW_ERR_BAD_REQUEST' },
  { name: 'TRACE on the RPC path with a %-escape', send: write('TRACE /h%61ndler HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), status: 405, code: 'FRPGW_ERR_METHOD_NOT_ALLOWED', allow: 'POST' },
  { name: 'QUERY without a Content-Type', send: write('QUERY /handler HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), status: 405, code: 'FRPGW_ERR_METHOD_NOT_ALLOWED', allow: 'POST' },
  { name: 'no Host header (frps always sends it; it is no reason to refuse a call)', send: write('POST /handler?op=Login HTTP/1.1\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}'), status: 400, code: 'FRPGW_ERR_BAD_ENVELOPE' }
]

t.test('malformed HTTP on a listening gateway: the error shape, a code, a metric and a log line; the connection closed', async t => {
  const gw = await gateway(t, true)
  for (const c of RAW_CASES) {
    const before = await gw.metric('frp_gateway_requests_total', INVALID) ?? 0
    const logged = gw.logs.length
    const res = await rawExchange(gw.port, c.send)
    t.equal(res.status, c.status, `${c.name}: status`)
    t.equal(res.headers['content-type'], 'application/json; charset=utf-8', `${c.name}: JSON`)
    t.equal(res.headers.allow, c.allow, `${c.name}: Allow`)
    t.same(JSON.parse(res.body).error.code, c.code, `${c.name}: code`)
    t.type(JSON.parse(res.body).error.message, 'string', `${c.name}: message`)
    t.equal(await gw.metric('frp_gateway_requests_total', INVALID), before + 1, `${c.name}: counted once as op="invalid"`)
    t.same(gw.logs.slice(logged).map(l => [l.msg, l.code]), [['bad request', c.code]], `${c.name}: one log line`)
    t.not(res.closedAfterMs, undefined, `${c.name}: the connection is closed`)
    await assertHealthy(t, gw, c.name)
  }
  const good = await rawExchange(gw.port, write(frpsRequest(envelope('Login', { user: 'alice' }), { headers: 'Connection: close\r\n' })))
  t.equal(good.body, ALICE, 'a good call over a raw socket')
})

t.test('a refusal of a request whose headers came is logged with its reqid, whichever part of the server refused it', async t => {
  const gw = await gateway(t, true)
  const reqid = (id: string, rest: string): string => `X-Frp-Reqid: ${id}\r\n${rest}`
  const cases: Array<[string, (socket: Socket) => void]> = [
    ['r-expect', write(head(reqid('r-expect', 'Expect: foo\r\nContent-Length: 2\r\n')) + '{}')],
    ['r-connect', write(`CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n${reqid('r-connect', '')}\r\n`)],
    ['r-timeout', write(head(reqid('r-timeout', 'Content-Length: 2\r\n')))],
    ['r-short', s => { s.end(head(reqid('r-short', 'Content-Length: 50\r\n')) + '{}') }],
    ['r-chunk', write(head(reqid('r-chunk', 'Transfer-Encoding: chunked\r\n')) + 'zz\r\n{}\r\n0\r\n\r\n')],
    ['r-entity', write(head(reqid('r-entity', 'Content-Length: 2\r\n')) + '{"')]
  ]
  for (const [id, send] of cases) {
    const logged = gw.logs.length
    const res = await rawExchange(gw.port, send)
    t.ok(res.status >= 400, `${id}: refused with ${res.status}`)
    t.same(gw.logs.slice(logged).map(l => [l.msg, l.reqid]), [['bad request', id]], `${id}: one line, with the reqid`)
  }
})
