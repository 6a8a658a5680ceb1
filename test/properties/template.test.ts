import fc from 'fast-check'
import t from 'tap'
import { hostOf, OPS, type Content, type Op } from '../../src/protocol.js'
import { compileTemplate } from '../../src/template.js'
import { deepFreeze, HOSTILE_KEYS, holds, key, opContent, str } from '../helpers/arbitraries.js'

// The reference: what DESIGN promises a name reads, own properties only (a numeric key indexes an array).
const ownGet = (o: unknown, k: string): unknown => o !== null && typeof o === 'object' && Object.hasOwn(o, k) ? (o as Content)[k] : undefined
const client = (op: Op, c: Content, field: string): unknown => op === 'Login' ? ownGet(c, field) : ownGet(ownGet(c, 'user'), field)
const text = (v: unknown): string => v === undefined || v === null ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v)

type Name = { name: string, read: (op: Op, c: Content) => unknown }
const STEP = 'st'
const REQID = 'r-1'
const plain = (name: string, read: Name['read']): Name => ({ name, read })
const NAMES: Name[] = [
  plain('op', op => op),
  plain('reqid', () => REQID),
  plain('step', () => STEP),
  plain('user', (op, c) => client(op, c, 'user')),
  plain('run_id', (op, c) => client(op, c, 'run_id')),
  plain('client_ip', (op, c) => op === 'Login' ? hostOf(ownGet(c, 'client_address')) : ''),
  plain('remote_ip', (op, c) => op === 'NewUserConn' ? hostOf(ownGet(c, 'remote_addr')) : ''),
  plain('proxy_name', (_, c) => ownGet(c, 'proxy_name')),
  plain('proxy_type', (_, c) => ownGet(c, 'proxy_type'))
]

// keys a template can spell: no braces, no surrounding blanks (a name is trimmed)
const spellable = key.filter(k => k !== '' && !/[{}]/.test(k) && k.trim() === k)
const segment = spellable.filter(k => !k.includes('.'))
const name: fc.Arbitrary<Name> = fc.oneof(
  fc.constantFrom(...NAMES),
  spellable.map(k => plain(`metas.${k}`, (op, c) => ownGet(client(op, c, 'metas'), k))),
  spellable.map(k => plain(`proxy_metas.${k}`, (op, c) => op === 'NewProxy' ? ownGet(ownGet(c, 'metas'), k) : undefined)),
  fc.array(segment, { minLength: 1, maxLength: 4 }).map(path => plain(`content.${path.join('.')}`, (_, c) =>
    path.reduce<unknown>((v, k) => Array.isArray(v) && /^\d+$/.test(k) ? v[Number(k)] : ownGet(v, k), c)))
)
const literal = fc.string({ maxLength: 6 }).filter(s => !s.includes('{'))
const blank = fc.constantFrom('', ' ', '  ')
const template = fc.array(fc.tuple(literal, blank, name, blank), { maxLength: 4 }).chain(parts =>
  literal.map(tail => ({
    source: parts.map(([lit, b1, n, b2]) => `${lit}{{${b1}${n.name}${b2}}}`).join('') + tail,
    expect: (op: Op, c: Content) => parts.map(([lit, , n]) => lit + text(n.read(op, c))).join('') + tail
  })))

t.test('a template of known names renders, for any content of any op, what the names read (own properties only)', async t => {
  await holds(t, 'renders as the reference', fc.property(template, opContent({ wrongTypes: true }), (tpl, [op, c]) => {
    const render = compileTemplate(tpl.source, { step: STEP })
    const before = JSON.stringify(c)
    deepFreeze(c)
    const out = render(c, { op, reqid: REQID })
    return out === tpl.expect(op, c) && render(c, { op, reqid: REQID }) === out && JSON.stringify(c) === before
  }), 300)
})

t.test('inherited names render empty: hostile keys read from content that lacks them', async t => {
  const c = { user: { user: 'u', metas: {} }, metas: {} }
  for (const k of HOSTILE_KEYS) {
    for (const source of [`{{content.${k}}}`, `{{content.user.${k}}}`, `{{metas.${k}}}`, `{{proxy_metas.${k}}}`, `{{content.metas.${k}.${k}}}`]) {
      t.equal(compileTemplate(source, { step: STEP })(c, { op: 'NewProxy', reqid: REQID }), '', source)
    }
  }
})

t.test('any source either fails to compile with a message or renders a string; {{now}} is unix seconds', async t => {
  const source = fc.array(fc.oneof(fc.constantFrom('{{', '}}', ' ', 'now', 'metas.', 'content.', 'proxy_metas.', 'retry_after', 'user', '.'), str), { maxLength: 8 })
    .map(parts => parts.join(''))
  await holds(t, 'compiles or refuses', fc.property(source, opContent({ wrongTypes: true }), (src, [op, c]) => {
    let render
    try {
      render = compileTemplate(src, { step: STEP })
    } catch (err) {
      return err instanceof Error && err.message !== ''
    }
    const out = render(c, { op, reqid: REQID })
    return typeof out === 'string'
  }), 200)
  const from = Math.floor(Date.now() / 1000)
  const now = Number(compileTemplate('{{now}}', { step: STEP })({}, { op: OPS[0], reqid: REQID }))
  t.ok(now >= from && now <= Math.floor(Date.now() / 1000), 'now')
})
