import safeRegex from 'safe-regex2'
import { z } from 'zod'
import { definePlugin, type Verdict } from '../src/chain.js'
import { compileAt } from '../src/errors.js'
import {
  AGREED_FIELDS, AGREED_OP, carries, checkFields, foldedPath, getIn, goFold, jsonRecord, nestsDeeper, OPS, parsePath, pathTarget, sameJson, setIn, type Content
} from '../src/protocol.js'
import { compileTemplate, isConstantTemplate, type TemplateContext } from '../src/template.js'

type Edit = (content: Content, ctx: TemplateContext) => Content
type Use = 'set' | 'default' | 'remove' | 'replace'
// a path and a value each at most this deep keep what a step writes well inside the content depth bound
const MAX_VALUE_DEPTH = 8

/** The highest list index `set` and `default` take: past a list's end they fill the gap with null, sent whole to frps. */
const MAX_SET_INDEX = 1023

/** The longest string a `replace` pattern runs on: frpc controls the content, and a regex run cannot be interrupted. */
export const MAX_REPLACE_INPUT = 1024

/** A value that makes the step fail (the call is rejected naming the step), thrown out of an edit. */
class EditError extends Error {}

export default definePlugin({
  description: 'sets, defaults, removes and regex-replaces content fields by dotted path',
  ops: OPS,
  options: z.strictObject({
    set: jsonRecord().default({}).describe('dotted.path -> value or template'),
    default: jsonRecord().default({}).describe('dotted.path -> value, set only when absent or null'),
    remove: z.array(z.string()).default([]).describe('dotted paths to remove'),
    replace: z.array(z.strictObject({
      path: z.string(),
      pattern: z.string().describe(`JavaScript regular expression, applied to every match (of a value up to ${MAX_REPLACE_INPUT} characters)`),
      replacement: z.string().describe('replacement text; $1 and $<name> refer to groups')
    })).default([])
  }),
  create (options, deps) {
    const edits: Edit[] = []
    const touched = new Set<string>()
    // every path must be one the step's ops can hold, and none may change what frpc must agree on
    // `value`: what set or default writes there, which the field must be able to take
    const pathOf = (where: string, raw: string, use: Use, value?: unknown): string[] => compileAt(where, () => {
      const path = parsePath(raw)
      if (path.length > MAX_VALUE_DEPTH) throw new Error(`${raw} has more than ${MAX_VALUE_DEPTH} parts (frps content is 3 deep)`)
      const index = path.find(key => /^\d+$/.test(key) && Number(key) > MAX_SET_INDEX)
      if (index !== undefined && (use === 'set' || use === 'default')) {
        throw new Error(`${raw}: ${index} is over ${MAX_SET_INDEX}: setting an element past a list's end fills the gap with null, ` +
          'and the answer to frps would carry them all')
      }
      // frps reads USE_ENCRYPTION as use_encryption
      const why = AGREED_FIELDS.get(goFold(path[0]))
      if (why !== undefined && deps.ops.includes(AGREED_OP)) {
        throw new Error(`${path[0]} cannot be rewritten: frpc and frps must agree on it and frpc would never learn of the change ` +
          `(${why}); reject instead, with when.fields`)
      }
      // frps keeps its session's user whatever a plugin answers; the registry and quotas would count under the rewritten one
      if (path[0] === 'user' && (path.length === 1 || path[1] === 'user' || path[1] === 'run_id') && deps.ops.some(op => op !== 'Login')) {
        throw new Error(`${raw} cannot be rewritten outside Login: frps keeps the user and run_id of the client's session, and ` +
          'quotas and the registry would count the proxy under another user than its CloseProxy; give the step ops: ["Login"] to rename a user')
      }
      for (const op of deps.ops) {
        const folded = foldedPath(op, path)
        if (folded !== undefined) throw new Error(folded)
        const { field, inList } = pathTarget(op, path)
        if (inList && (use === 'set' || use === 'default')) {
          throw new Error(`${raw} is an element of a list in ${op} content: where the list is absent or null the result would be ` +
            `an object {"${path[path.length - 1]}": ...}, which frps refuses; set the whole list`)
        }
        if (use === 'replace' && field !== undefined && field.kind !== 'a string') {
          throw new Error(`${raw} is ${field.kind} in ${op} content: replace applies to strings`)
        }
        // a value the field cannot take would fail every call that reaches the step: said by check instead
        const template = typeof value === 'string' && !isConstantTemplate(value)
        if ((use === 'set' || use === 'default') && field !== undefined && !field.ok(template ? '' : value)) {
          throw new Error(`${path.join('.')} is ${field.kind} in ${op} content: ${template ? 'a template renders a string, which' : `${JSON.stringify(value)}`} ` +
            'would fail every call the step runs on')
        }
      }
      // a field of other ops only (remote_port on Login): Go decodes the answer into the op's own struct and drops it
      if (!deps.ops.some(op => carries(op, path))) {
        const owners = OPS.filter(op => carries(op, path))
        throw new Error(`${path[0]} is a field of ${owners.join(', ')} content only: the step runs on ${deps.ops.join(', ')}, ` +
          'where frps would ignore it; set the step\'s ops')
      }
      touched.add(path[0])
      return path
    }) ?? [] // [] stands in for a bad path: the other options are still checked
    const valueOf = (where: string, value: unknown): (content: Content, ctx: TemplateContext) => unknown => {
      if (nestsDeeper(value, MAX_VALUE_DEPTH)) {
        return compileAt(where, () => { throw new Error(`the value nests deeper than ${MAX_VALUE_DEPTH} levels (frps content is 3 deep)`) })
      }
      if (typeof value !== 'string' || isConstantTemplate(value)) return () => value
      return compileAt(where, () => compileTemplate(value, { step: deps.name }))
    }
    for (const [raw, value] of Object.entries(options.set)) {
      const path = pathOf(`set.${raw}`, raw, 'set', value)
      const get = valueOf(`set.${raw}`, value)
      edits.push((c, ctx) => setIn(c, path, get(c, ctx)))
    }
    for (const [raw, value] of Object.entries(options.default)) {
      const path = pathOf(`default.${raw}`, raw, 'default', value)
      const get = valueOf(`default.${raw}`, value)
      edits.push((c, ctx) => getIn(c, path) == null ? setIn(c, path, get(c, ctx)) : c)
    }
    for (const [i, raw] of options.remove.entries()) {
      const path = pathOf(`remove[${i}]`, raw, 'remove')
      edits.push(c => setIn(c, path, undefined))
    }
    for (const [i, rule] of options.replace.entries()) {
      const path = pathOf(`replace[${i}].path`, rule.path, 'replace')
      const re = compileAt(`replace[${i}].pattern`, () => {
        const re = new RegExp(rule.pattern, 'g')
        if (!safeRegex(re)) {
          throw new Error('unsafe pattern: nested quantifiers (like (a+)+) or a large repetition can take exponential time ' +
            'on a value frpc sends; simplify it')
        }
        return re
      })
      edits.push(c => {
        const value = getIn(c, path)
        if (typeof value !== 'string') return c
        if (value.length > MAX_REPLACE_INPUT) {
          throw new EditError(`${rule.path} is ${value.length} characters long: replace runs on at most ${MAX_REPLACE_INPUT}`)
        }
        return setIn(c, path, value.replace(re, rule.replacement))
      })
    }
    const fields = [...touched]
    return function rewrite (content, ctx): Verdict | undefined {
      let next = content
      try {
        for (const edit of edits) next = edit(next, ctx)
      } catch (err) {
        if (!(err instanceof EditError)) throw err
        return { error: err, reject: `frp-plugin-gateway: step ${deps.name} failed: ${err.message}` }
      }
      // the chain trusts a step's content to differ: edits that undo each other are no change
      if (next === content || (edits.length > 1 && sameJson(next, content))) return
      const invalid = checkFields(ctx.op, next, fields)
      if (invalid !== null) return { error: new Error(invalid), reject: `frp-plugin-gateway: step ${deps.name} made ${invalid}` }
      return { content: next }
    }
  }
})
