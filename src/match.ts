import { BlockList, isIP } from 'node:net'
import { z } from 'zod'
import { compileAt } from './errors.js'
import { carries, clientIp, clientMetas, clientUser, own, remoteIp, stringRecord, type Content, type Op } from './protocol.js'

export interface When {
  users?: string[]
  proxyTypes?: string[]
  proxyNames?: string[]
  metas?: Record<string, string>
  clientCidrs?: string[]
  remoteCidrs?: string[]
  remotePorts?: Array<number | string>
  not?: When
}

const list = z.array(z.string()).min(1)
export const whenSchema: z.ZodType<When> = z.lazy(() => z.strictObject({
  users: list.optional().describe('client user names (Login: user; other ops: user.user)'),
  proxyTypes: list.optional().describe('proxy types: tcp, udp, http, https, stcp, xtcp, sudp, tcpmux'),
  proxyNames: list.optional().describe('globs against proxy_name (* and ?); frps prefixes it with "user."'),
  metas: stringRecord().optional().describe('client metas that must have these exact values'),
  clientCidrs: list.optional().describe("CIDRs or addresses against Login's client_address"),
  remoteCidrs: list.optional().describe("CIDRs or addresses against NewUserConn's remote_addr"),
  remotePorts: z.array(z.union([z.number().int(), z.string()])).min(1).optional().describe('ports or "low-high" ranges against NewProxy\'s remote_port'),
  not: whenSchema.optional().describe('a condition that must not hold')
}))

/** Returns null when the condition holds, else the name of the first condition that failed (for trace). */
export type Matcher = (op: Op, content: Content) => string | null

type Check = (op: Op, content: Content) => boolean

function cidrList (cidrs: string[]): (ip: string) => boolean {
  const block = new BlockList()
  for (const cidr of cidrs) {
    const [addr, bits, extra] = cidr.split('/')
    const family = isIP(addr)
    const prefix = bits === undefined ? (family === 6 ? 128 : 32) : /^\d+$/.test(bits) ? Number(bits) : NaN
    if (family === 0 || extra !== undefined || !Number.isInteger(prefix) || prefix < 0 || prefix > (family === 6 ? 128 : 32) || bits === '') {
      throw new Error(`"${cidr}" is not an IPv4 or IPv6 address or CIDR`)
    }
    block.addSubnet(addr, prefix, family === 6 ? 'ipv6' : 'ipv4')
  }
  return ip => {
    const family = isIP(ip)
    if (family === 0) return false
    if (family === 6 && ip.toLowerCase().startsWith('::ffff:') && isIP(ip.slice(7)) === 4) {
      return block.check(ip.slice(7), 'ipv4') || block.check(ip, 'ipv6')
    }
    return block.check(ip, family === 6 ? 'ipv6' : 'ipv4')
  }
}

function portRanges (ports: Array<number | string>): (port: number) => boolean {
  const ranges = ports.map(p => {
    const m = /^(\d+)(?:-(\d+))?$/.exec(String(p))
    const lo = m ? Number(m[1]) : NaN
    const hi = m?.[2] !== undefined ? Number(m[2]) : lo
    if (!(lo >= 0 && hi <= 65535 && lo <= hi)) throw new Error(`"${p}" is not a port or a "low-high" range within 0-65535`)
    return [lo, hi] as const
  })
  return port => ranges.some(([lo, hi]) => port >= lo && port <= hi)
}

function glob (pattern: string): RegExp {
  const body = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')
  // s: * and ? match line breaks too; u: ? is one character, not one UTF-16 unit
  return new RegExp(`^${body}$`, 'su')
}

const inSet = (values: string[]) => {
  const set = new Set(values)
  return (value: unknown) => typeof value === 'string' && set.has(value)
}

/** Compiles a `when` once; every CIDR, glob and range is checked here, not per call (errors: OptionError with the key's path). */
export function compileWhen (when: When | undefined): Matcher {
  if (when === undefined) return () => null
  const checks: Array<[string, Check]> = []
  if (when.users) {
    const has = inSet(when.users)
    checks.push(['users', (op, c) => has(clientUser(op, c))])
  }
  if (when.proxyTypes) {
    const has = inSet(when.proxyTypes)
    checks.push(['proxyTypes', (op, c) => carries(op, 'proxy_type') && has(own(c, 'proxy_type'))])
  }
  if (when.proxyNames) {
    const res = when.proxyNames.map(glob)
    checks.push(['proxyNames', (op, c) => {
      const name = own(c, 'proxy_name')
      return carries(op, 'proxy_name') && typeof name === 'string' && res.some(re => re.test(name))
    }])
  }
  if (when.metas) {
    const wanted = Object.entries(when.metas)
    checks.push(['metas', (op, c) => {
      const metas = clientMetas(op, c)
      return wanted.every(([k, v]) => own(metas, k) === v)
    }])
  }
  if (when.clientCidrs) {
    const inside = compileAt('clientCidrs', () => cidrList(when.clientCidrs as string[]))
    checks.push(['clientCidrs', (op, c) => inside(clientIp(op, c))])
  }
  if (when.remoteCidrs) {
    const inside = compileAt('remoteCidrs', () => cidrList(when.remoteCidrs as string[]))
    checks.push(['remoteCidrs', (op, c) => inside(remoteIp(op, c))])
  }
  if (when.remotePorts) {
    const inside = compileAt('remotePorts', () => portRanges(when.remotePorts as Array<number | string>))
    checks.push(['remotePorts', (op, c) => {
      // frps omits a zero remote_port (frps picks the port): absent and null mean 0
      const port = own(c, 'remote_port') ?? 0
      return op === 'NewProxy' && typeof port === 'number' && inside(port)
    }])
  }
  if (when.not) {
    const inner = compileAt('not', () => compileWhen(when.not))
    checks.push(['not', (op, c) => inner(op, c) !== null])
  }
  return (op, content) => {
    for (const [name, check] of checks) if (!check(op, content)) return name
    return null
  }
}
