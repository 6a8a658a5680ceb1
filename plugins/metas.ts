import { z } from 'zod'
import { definePlugin } from '../src/chain.js'
import { compileAt } from '../src/errors.js'
import { copy, getIn, OPS, own, put, setIn, stringRecord, type Op } from '../src/protocol.js'
import { compileTemplate, type Template } from '../src/template.js'

const templates = stringRecord()

const LOGIN = ['metas']
const PROXY = ['metas']
const USER = ['user', 'metas']

/** Where the metas live: Login carries the client's own; NewProxy has its proxy's; every op has user.metas. */
function metasPath (scope: 'auto' | 'user' | 'proxy', op: Op): string[] | undefined {
  if (op === 'Login') return scope === 'proxy' ? undefined : LOGIN
  if (op === 'NewProxy' && scope !== 'user') return PROXY
  return scope === 'proxy' ? undefined : USER
}

export default definePlugin({
  description: 'sets, defaults and removes metas (frps passes Login metas on to every later op of the client)',
  ops: OPS,
  options: z.strictObject({
    set: templates.default({}).describe('metas to set: key -> template'),
    default: templates.default({}).describe('metas to set only when absent: key -> template'),
    remove: z.array(z.string()).default([]).describe('metas keys to remove'),
    scope: z.enum(['auto', 'user', 'proxy']).default('auto')
      .describe('auto: Login metas, NewProxy proxy metas, user.metas elsewhere; user: the client metas; proxy: NewProxy metas only')
  }),
  create (options, deps) {
    const compile = (group: 'set' | 'default', values: Record<string, string>): Array<[string, Template]> =>
      Object.entries(values).map(([key, value]) => [key, compileAt(`${group}.${key}`, () => compileTemplate(value, { step: deps.name }))])
    const sets = compile('set', options.set)
    const defaults = compile('default', options.default)
    const { remove, scope } = options
    // remove runs last: a value set for a key it removes never reaches frps
    remove.forEach((key, i) => {
      const setBy = (['set', 'default'] as const).filter(group => Object.hasOwn(options[group], key)).map(group => `options.${group}.${key}`)
      if (setBy.length > 0) compileAt(`remove[${i}]`, () => { throw new Error(`"${key}" is removed here and set by ${setBy.join(' and ')}: remove runs last, so that value is never sent; keep one of them`) })
    })
    // set runs on every call: a default of the same key never applies
    for (const key of Object.keys(options.default)) {
      if (Object.hasOwn(options.set, key)) compileAt(`default.${key}`, () => { throw new Error(`"${key}" is set by options.set.${key} on every call, so this default never applies; keep one of them`) })
    }
    if (scope === 'proxy' && !deps.ops.includes('NewProxy')) {
      compileAt('scope', () => { throw new Error(`scope proxy acts on NewProxy only, and the step's ops (${deps.ops.join(', ')}) have none: it would never change anything`) })
    }
    return function metas (content, ctx) {
      const path = metasPath(scope, ctx.op)
      if (path === undefined) return
      const current = getIn(content, path)
      let next: Record<string, unknown> | undefined
      for (const [key, template] of sets) {
        const value = template(content, ctx)
        if (own(current, key) !== value) put(next ??= copy(current), key, value)
      }
      for (const [key, template] of defaults) {
        if (own(next ?? current, key) == null) put(next ??= copy(current), key, template(content, ctx))
      }
      for (const key of remove) {
        if (own(next ?? current, key) !== undefined) delete (next ??= copy(current))[key]
      }
      if (next === undefined) return
      return { content: setIn(content, path, next) }
    }
  }
})
