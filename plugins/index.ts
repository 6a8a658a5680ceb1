import type { PluginDef } from '../src/chain.js'
import forward from './forward.js'
import metas from './metas.js'
import notify from './notify.js'
import ports from './ports.js'
import quota from './quota.js'
import rateLimit from './rate-limit.js'
import reject from './reject.js'
import rewrite from './rewrite.js'
import users from './users.js'

/** The only registry of built-in plugins: name -> options schema and factory. */
export const plugins = {
  reject,
  metas,
  rewrite,
  'rate-limit': rateLimit,
  forward,
  users,
  ports,
  quota,
  notify
} satisfies Record<string, PluginDef>

export type PluginName = keyof typeof plugins
