import { z } from 'zod'
import { definePlugin } from '../src/chain.js'
import { OPS } from '../src/protocol.js'
import { compileAt } from '../src/errors.js'
import { compileTemplate } from '../src/template.js'

export default definePlugin({
  description: 'rejects every call its `when` lets through (with `when` and `not`: the access-control list)',
  ops: OPS,
  options: z.strictObject({
    reason: z.string().default('rejected by {{step}}').describe('template shown to frpc')
  }),
  create (options, deps) {
    const reason = compileAt('reason', () => compileTemplate(options.reason, { step: deps.name }))
    const { masked } = reason
    return function reject (content, ctx) {
      return masked === undefined ? { reject: reason(content, ctx) } : { reject: reason(content, ctx), loggedReason: masked(content, ctx) }
    }
  }
})
