import { z } from 'zod'
import { definePlugin, type Verdict } from '../src/chain.js'
import { compileAt } from '../src/errors.js'
import { checkFields, getIn, OPS, parsePath, sameJson, setIn, type Content } from '../src/protocol.js'
import { compileTemplate, isConstantTemplate, type TemplateContext } from '../src/template.js'

type Edit = (content: Content, ctx: TemplateContext) => Content

const json = z.json().describe('any JSON value; a string with {{...}} is a template')

export default definePlugin({
  description: 'sets, defaults, removes and regex-replaces content fields by dotted path',
  ops: OPS,
  options: z.strictObject({
    set: z.record(z.string(), json).default({}).describe('dotted.path -> value or template'),
    default: z.record(z.string(), json).default({}).describe('dotted.path -> value, set only when absent or null'),
    remove: z.array(z.string()).default([]).describe('dotted paths to remove'),
    replace: z.array(z.strictObject({
      path: z.string(),
      pattern: z.string().describe('JavaScript regular expression, applied to every match'),
      replacement: z.string().describe('replacement text; $1 and $<name> refer to groups')
    })).default([])
  }),
  create (options, deps) {
    const edits: Edit[] = []
    const touched = new Set<string>()
    const pathOf = (where: string, raw: string): string[] => {
      const path = compileAt(where, () => parsePath(raw)) ?? [] // [] stands in for a bad path: other options are still checked
      touched.add(path[0])
      return path
    }
    const valueOf = (where: string, value: unknown): (content: Content, ctx: TemplateContext) => unknown => {
      if (typeof value !== 'string' || isConstantTemplate(value)) return () => value
      return compileAt(where, () => compileTemplate(value, { step: deps.name }))
    }
    for (const [raw, value] of Object.entries(options.set)) {
      const path = pathOf(`set.${raw}`, raw)
      const get = valueOf(`set.${raw}`, value)
      edits.push((c, ctx) => setIn(c, path, get(c, ctx)))
    }
    for (const [raw, value] of Object.entries(options.default)) {
      const path = pathOf(`default.${raw}`, raw)
      const get = valueOf(`default.${raw}`, value)
      edits.push((c, ctx) => getIn(c, path) == null ? setIn(c, path, get(c, ctx)) : c)
    }
    for (const [i, raw] of options.remove.entries()) {
      const path = pathOf(`remove[${i}]`, raw)
      edits.push(c => setIn(c, path, undefined))
    }
    for (const [i, rule] of options.replace.entries()) {
      const path = pathOf(`replace[${i}].path`, rule.path)
      const re = compileAt(`replace[${i}].pattern`, () => new RegExp(rule.pattern, 'g'))
      edits.push(c => {
        const value = getIn(c, path)
        return typeof value === 'string' ? setIn(c, path, value.replace(re, rule.replacement)) : c
      })
    }
    const fields = [...touched]
    return function rewrite (content, ctx): Verdict | undefined {
      let next = content
      for (const edit of edits) next = edit(next, ctx)
      // the chain trusts a step's content to differ: edits that undo each other are no change
      if (next === content || (edits.length > 1 && sameJson(next, content))) return
      const invalid = checkFields(ctx.op, next, fields)
      if (invalid !== null) return { error: new Error(invalid), reject: `frp-plugin-gateway: step ${deps.name} made ${invalid}` }
      return { content: next }
    }
  }
})
