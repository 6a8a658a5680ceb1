import { once } from 'node:events'
import { readFileSync, writeFileSync } from 'node:fs'
import net, { type AddressInfo } from 'node:net'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

import { plugins } from '../plugins/index.js'
import { compileUsers, parseUsersFile, type CompiledUser } from '../src/users/record.js'

import { redisCli, startRedis } from '../test/helpers/redis.js'
import { makeCerts, type TestCerts } from '../test/helpers/tls.js'
import {
  echoThrough, freePort, Frpc, frpsApi, getThrough, onlineProxies, startEcho, startFrps, startGateway, startPlugin, startReceiver, startRelay, startWeb, waitPort,
  escapeRegExp, type ClientSpec, type Echo, type ProxySpec, type Frps, type FrpVersion, type Gateway, type Plugin, type Proc, type ProxyView, type Receiver, type Scope
} from './harness.js'
import type { Recipe, Step } from './recipes.js'

export interface Ctx {
  frp: FrpVersion
  scope: Scope
  /** records one check; `procs` are the processes whose last log lines explain a failure */
  check: (what: string, ok: boolean, detail?: string, procs?: Proc[]) => boolean
  /** a check this frp version cannot run, said by name */
  notRun: (what: string, why: string) => void
  say: (text: string) => void
}

/** Content fields frps sends only from some version on (../shared/frp-protocol.md): checks on them need that version. */
const SINCE: Record<string, string> = { client_address: '0.39.0' }

const older = (a: string, b: string): boolean => {
  const [x, y] = [a.split('.').map(Number), b.split('.').map(Number)]
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return x[i] < y[i]
  return false
}

/** false (said by name) when this frps does not send `field`, which `what` depends on */
function sends (ctx: Ctx, field: string, what: string): boolean {
  if (!older(ctx.frp.version, SINCE[field])) return true
  ctx.notRun(what, `frps sends Login ${field} from ${SINCE[field]} on`)
  return false
}

const ALL_OPS = ['Login', 'NewProxy', 'CloseProxy', 'Ping', 'NewWorkConn', 'NewUserConn']

interface Env { gateway: Gateway, frps: Frps, recorder: Plugin, client: (spec: ClientSpec) => Frpc, procs: Proc[] }

/**
 * The gateway serving `config`, frps calling it for the ops its chain uses, then a recording plugin
 * for NewProxy (what frps really sends after the gateway's Login answer: the metas it set).
 */
async function setUp (ctx: Ctx, config: Record<string, any>, files: Record<string, string> = {}): Promise<Env> {
  // a registry reading frps's dashboard: frps's comes up on a port chosen now
  const webPort = config.registry?.frpsApi !== undefined ? await freePort() : undefined
  if (webPort !== undefined) {
    const api = frpsApi(webPort)
    if (config.registry.frpsApi.url !== api.url) ctx.say(`registry.frpsApi ${config.registry.frpsApi.url as string} replaced by this frps's dashboard at ${api.url}`)
    config = { ...config, registry: { ...config.registry, frpsApi: api } }
  }
  const gateway = await startGateway(ctx.scope, config, files)
  const recorder = await startPlugin(ctx.scope)
  const frps = await startFrps(ctx.scope, ctx.frp, [
    { name: 'gateway', addr: gateway.addr, path: gateway.path, ops: gateway.ops },
    { name: 'recorder', addr: recorder.addr, path: '/handler', ops: ['NewProxy'] }
  ], webPort)
  const procs: Proc[] = [gateway.proc, frps.proc]
  const env: Env = {
    gateway,
    frps,
    recorder,
    procs,
    client: spec => {
      const c = new Frpc(ctx.scope, ctx.frp, frps, spec)
      procs.push(c)
      return c
    }
  }
  return env
}

const isFree = async (port: number): Promise<boolean> => await new Promise<boolean>(resolve => {
  const server = net.createServer()
  server.once('error', () => resolve(false))
  server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)))
})

/** A free port in one of the ranges (tried in order) for which `ok` holds, for rules that only allow some ports. */
async function freePortAmong (ranges: Array<[number, number]>, ok: (port: number) => boolean = () => true): Promise<number> {
  for (const [lo, hi] of ranges) {
    for (let i = 0; i < Math.min(200, 4 * (hi - lo + 1)); i++) {
      const port = lo + Math.floor(Math.random() * (hi - lo + 1))
      if (ok(port) && await isFree(port)) return port
    }
  }
  throw new Error(`no free port in ${ranges.map(([lo, hi]) => lo === hi ? lo : `${lo}-${hi}`).join(', ')}`)
}

const freePortIn = async (lo: number, hi: number): Promise<number> => await freePortAmong([[lo, hi]])

/** Renders the few template names a scenario can know in advance ({{user}}, {{client_ip}}, {{proxy_name}}, ...). */
const render = (template: string, values: Record<string, string>): string =>
  template.replace(/\{\{\s*([\w.]+)\s*\}\}/g, (whole, name: string) => values[name] ?? whole)

const quote = (s: string): string => JSON.stringify(s)

/** Checks a proxy the way a visitor sees it: started and carrying bytes intact, or refused with a reason; never garbage. */
async function tcpIntactOrRefused (ctx: Ctx, env: Env, c: Frpc, name: string, remotePort: number, echo: Echo): Promise<void> {
  const started = await c.proxy(name)
  if (started !== 'ok') {
    ctx.check(`tcp proxy ${c.proxyName(name)} is refused with a reason`, started !== 'timeout', `frpc: ${started}`, env.procs)
    return
  }
  const got = await echoThrough(remotePort, echo)
  ctx.check(`tcp proxy ${c.proxyName(name)} (started) carries random bytes intact`, got === 'intact', `visitor got: ${got}`, env.procs)
}

async function tcpIntact (ctx: Ctx, env: Env, c: Frpc, name: string, remotePort: number, echo: Echo): Promise<void> {
  const started = await c.proxy(name)
  if (!ctx.check(`frpc logs \`[${c.proxyName(name)}] start proxy success\``, started === 'ok', `frpc: ${started}`, env.procs)) return
  const got = await echoThrough(remotePort, echo)
  ctx.check(`a visitor of ${c.proxyName(name)} (port ${remotePort}) gets 64 KiB of random bytes back intact, and the local service got them intact`, got === 'intact', `visitor got: ${got}`, env.procs)
}

function refused (ctx: Ctx, env: Env, what: string, got: string, expected: string | RegExp): void {
  const ok = typeof expected === 'string' ? got === expected : expected.test(got)
  ctx.check(`${what}: frpc logs ${typeof expected === 'string' ? quote(expected) : String(expected)}`, ok, `frpc: ${got}`, env.procs)
}

async function pageIntact (ctx: Ctx, env: Env, host: string, body: string): Promise<void> {
  const got = await getThrough(env.frps.vhostHTTPPort, host)
  ctx.check(`GET http://${host}/ through frps's vhost port serves the local page intact`, got.status === 200 && got.body === body,
    `status ${got.status}, ${got.body === body ? 'same body' : `body ${quote(got.body.slice(0, 120))}`}`, env.procs)
}

/**
 * Starts clients one after another until one is refused (each stops after its login); answers how many got
 * in and the refusal.
 */
async function loginUntilRefused (env: Env, user: string, max: number): Promise<{ ok: number, refusal?: string }> {
  let ok = 0
  for (let i = 0; i < max; i++) {
    const c = env.client({ user })
    const result = await c.login()
    await c.stop()
    if (result !== 'ok') return { ok, refusal: result }
    ok++
  }
  return { ok }
}

// ---- the example config ----

/** config/gateway.example.json (or $E2E_EXAMPLE) as it is, with its listen port replaced by a free one. */
export async function exampleScenario (ctx: Ctx, file: string): Promise<void> {
  const config = JSON.parse(readFileSync(file, 'utf8'))
  const chain = config.chain as Step[]
  const env = await setUp(ctx, config)
  const echo = await startEcho(ctx.scope)
  const web = await startWeb(ctx.scope)
  let logins = 0

  for (const user of ['admin', 'root']) {
    const rule = chain.find(s => s.plugin === 'reject' && (s.when?.users as string[] | undefined)?.includes(user))
    logins++
    refused(ctx, env, `login as ${user}`, await env.client({ user }).login(),
      rule !== undefined ? render(rule.options?.reason ?? '', { user }) : /./)
  }

  const [plainPort, securePort, outsidePort] = [await freePortIn(6000, 7000), await freePortIn(6000, 7000), await freePortIn(7001, 7999)]
  const alice = env.client({
    user: 'alice',
    proxies: [
      { name: 'plain', type: 'tcp', localPort: echo.port, remotePort: plainPort },
      { name: 'secure', type: 'tcp', localPort: echo.port, remotePort: securePort, encryption: true },
      { name: 'outside', type: 'tcp', localPort: echo.port, remotePort: outsidePort, encryption: true },
      { name: 'web', type: 'http', localPort: web.port, customDomains: ['web.e2e.test'] },
      { name: 'splain', type: 'stcp', localPort: echo.port, sk: 'e2e-sk' },
      { name: 'ssecure', type: 'stcp', localPort: echo.port, sk: 'e2e-sk', encryption: true }
    ]
  })
  logins++
  if (!ctx.check('alice logs in', await alice.login() === 'ok', undefined, env.procs)) return

  // the fixed example refuses a tcp proxy that does not ask for encryption; today's sets it on frps's side only
  const plain = await alice.proxy('plain')
  const needEncryption = chain.find(s => s.plugin === 'reject' && s.ops?.includes('NewProxy') && /encrypt/i.test(s.options?.reason ?? ''))
  if (plain === 'ok') {
    const got = await echoThrough(plainPort, echo)
    ctx.check('tcp proxy alice.plain without encryption is refused, not served', false,
      `frpc: start proxy success; a visitor sending 64 KiB of random bytes got: ${got}`, env.procs)
  } else {
    refused(ctx, env, 'tcp proxy alice.plain without encryption', plain,
      needEncryption !== undefined ? render(needEncryption.options.reason, { proxy_name: 'alice.plain' }) : /encrypt/i)
  }
  await tcpIntact(ctx, env, alice, 'secure', securePort, echo)
  refused(ctx, env, `tcp proxy alice.outside on port ${outsidePort}`, await alice.proxy('outside'),
    new RegExp(`\\b${outsidePort}\\b.*outside 6000-7000`))

  // stcp: the visitor is another frpc of the same user, its local port reaching the proxy through frps
  const [plainVisitor, secureVisitor] = [await freePort(), await freePort()]
  const visitor = env.client({
    user: 'alice',
    visitors: [
      { name: 'v-plain', serverName: 'splain', sk: 'e2e-sk', bindPort: plainVisitor },
      { name: 'v-secure', serverName: 'ssecure', sk: 'e2e-sk', bindPort: secureVisitor, encryption: true }
    ]
  })
  logins++
  ctx.check('a visitor frpc of alice logs in', await visitor.login() === 'ok', undefined, env.procs)
  const splain = await alice.proxy('splain')
  if (needEncryption?.when?.proxyTypes?.includes('stcp') === true) {
    refused(ctx, env, 'stcp proxy alice.splain without encryption', splain, render(needEncryption.options.reason, { proxy_name: 'alice.splain' }))
  } else if (splain === 'ok') {
    await waitPort(plainVisitor, visitor)
    const got = await echoThrough(plainVisitor, echo)
    ctx.check('stcp proxy alice.splain (started) carries bytes intact to a visitor', got === 'intact', `visitor got: ${got}`, env.procs)
  } else {
    refused(ctx, env, 'stcp proxy alice.splain without encryption', splain, /encrypt/i)
  }
  if (ctx.check('frpc logs `[alice.ssecure] start proxy success`', await alice.proxy('ssecure') === 'ok', undefined, env.procs)) {
    await waitPort(secureVisitor, visitor)
    const got = await echoThrough(secureVisitor, echo)
    ctx.check('an stcp visitor (useEncryption) of alice.ssecure gets 64 KiB of random bytes back intact, and the local service got them intact',
      got === 'intact', `visitor got: ${got}`, env.procs)
  }

  const online = await onlineProxies(env.frps, 'tcp')
  ctx.check(`frps's dashboard lists exactly the tcp proxies frpc says started (${plain === 'ok' ? 'alice.plain, ' : ''}alice.secure)`,
    online.join() === (plain === 'ok' ? ['alice.plain', 'alice.secure'] : ['alice.secure']).join(), `frps lists ${JSON.stringify(online)}`)

  // metas set at Login reach later ops: the recording plugin behind the gateway sees them in NewProxy
  if (ctx.check('http proxy alice.web starts', await alice.proxy('web') === 'ok', undefined, env.procs)) {
    await pageIntact(ctx, env, 'web.e2e.test', web.body)
    const seen = env.recorder.calls.find(c => c.content.proxy_name === 'alice.web')?.content.user?.metas ?? {}
    for (const step of chain.filter(s => s.plugin === 'metas' && s.ops?.includes('Login'))) {
      for (const [key, template] of Object.entries(step.options?.set ?? {}) as Array<[string, string]>) {
        const expected = render(template, { client_ip: '127.0.0.1', user: 'alice' })
        const what = `NewProxy of alice.web carries user.metas.${key} = ${quote(expected)} (set by ${step.name} at Login)`
        if (template.includes('client_ip') && !sends(ctx, 'client_address', what)) continue
        ctx.check(what, seen[key] === expected, `frps sent user.metas ${JSON.stringify(seen)}`, env.procs)
      }
    }
  }

  // the login rate: every client here comes from 127.0.0.1, one bucket
  const rate = chain.find(s => s.plugin === 'rate-limit' && s.ops?.includes('Login'))
  if (rate !== undefined) {
    const burst = Number(rate.options.burst ?? rate.options.limit)
    const result = await loginUntilRefused(env, 'bob', burst + 3)
    ctx.check(`logins from 127.0.0.1 beyond the burst of ${burst} are refused by ${rate.name}`,
      result.refusal !== undefined && /rate limit/.test(result.refusal) && logins + result.ok >= burst && logins + result.ok <= burst + 1,
      `${logins + result.ok} logins took a token (${logins} earlier in this scenario, refused ones included), then frpc: ${result.refusal ?? 'none refused'}`, env.procs)
  }
}

// ---- README recipes ----

interface Local { steps: Step[], plugins: Map<string, Plugin>, receivers: Map<string, Receiver> }

/**
 * Points every forward step at a local downstream plugin (https with a CA made now when the URL is https), and every
 * notify webhook at a local receiver, saying so.
 */
async function localize (ctx: Ctx, steps: Step[]): Promise<Local> {
  const plugins = new Map<string, Plugin>()
  const receivers = new Map<string, Receiver>()
  let certs: TestCerts | undefined
  const out: Step[] = []
  for (const step of steps) {
    const webhook = step.plugin === 'notify' ? step.options?.sink?.webhook : undefined
    if (webhook !== undefined) {
      const receiver = await startReceiver(ctx.scope, new URL(webhook.url).pathname)
      receivers.set(step.name, receiver)
      ctx.say(`${step.name}: webhook ${webhook.url as string} replaced by a local receiver at ${receiver.url}`)
      out.push({ ...step, options: { ...step.options, sink: { webhook: { ...webhook, url: receiver.url } } } })
      continue
    }
    if (step.plugin !== 'forward') { out.push(step); continue }
    const url = new URL(step.options.url)
    const tls = url.protocol === 'https:'
    if (tls) certs ??= await makeCerts({ teardown: fn => ctx.scope.defer(fn) })
    const plugin = await startPlugin(ctx.scope, url.pathname, tls ? certs : undefined)
    plugins.set(step.name, plugin)
    const options = { ...step.options, url: plugin.url + url.search }
    if (tls) options.tls = { ...(step.options.tls ?? {}), ca: certs?.caFile }
    ctx.say(`${step.name}: ${step.options.url} replaced by a local downstream plugin at ${options.url}${tls ? ' (its CA as tls.ca)' : ''}`)
    out.push({ ...step, options })
  }
  return { steps: out, plugins, receivers }
}

const parseWindow = (window: string | number): number =>
  typeof window === 'number' ? window : Number(window.slice(0, -1)) * { s: 1000, m: 60_000, h: 3_600_000 }[window.slice(-1) as 's' | 'm' | 'h']

const saw = (plugin: Plugin | undefined, op: string): number => plugin?.calls.filter(c => c.op === op).length ?? 0

type RecipeScenario = (ctx: Ctx, recipe: Recipe) => Promise<void>

/** The client settings behind the content fields a `when.fields` rule can ask for. */
const FIELD_SETTING: Record<string, 'encryption' | 'compression'> = { use_encryption: 'encryption', use_compression: 'compression' }

/**
 * A NewProxy reject whose `when.fields` asks about use_encryption / use_compression: a proxy of each listed type
 * whose settings match is refused with the rendered reason; the same proxy with the settings flipped serves
 * intact (bytes through tcp, a page through http).
 */
export const fieldsReject: RecipeScenario = async (ctx, recipe) => {
  const step = recipe.steps[0]
  const fields = Object.entries(step.when?.fields ?? {}) as Array<[string, unknown]>
  const unknown = fields.filter(([path]) => FIELD_SETTING[path] === undefined).map(([path]) => path)
  if (!ctx.check(`the rule asks only about ${Object.keys(FIELD_SETTING).join(', ')}`, fields.length > 0 && unknown.length === 0, `fields ${JSON.stringify(unknown)}`)) return
  const matching: Partial<Record<'encryption' | 'compression', boolean>> = {}
  const other: Partial<Record<'encryption' | 'compression', boolean>> = {}
  for (const [path, value] of fields) {
    const values = Array.isArray(value) ? value : [value]
    // absent (null) or false ask for a client that leaves the setting off; true for one that turns it on
    const on = values.includes(true)
    matching[FIELD_SETTING[path]] = on ? true : undefined
    other[FIELD_SETTING[path]] = !on
  }
  const said = (settings: typeof matching): string => fields.map(([path]) => `${FIELD_SETTING[path]} ${settings[FIELD_SETTING[path]] === true ? 'on' : 'off'}`).join(', ')
  const env = await setUp(ctx, { chain: recipe.steps })
  const echo = await startEcho(ctx.scope)
  const web = await startWeb(ctx.scope)
  const types = ((step.when?.proxyTypes as string[] | undefined) ?? ['tcp', 'http']).filter(type => type === 'tcp' || type === 'http')
  const proxies: ProxySpec[] = []
  for (const type of types) {
    for (const [kind, settings] of [['match', matching], ['other', other]] as const) {
      const base = type === 'tcp'
        ? { type: 'tcp' as const, localPort: echo.port, remotePort: await freePort() }
        : { type: 'http' as const, localPort: web.port, customDomains: [`${kind}.e2e.test`] }
      proxies.push({ name: `${type}-${kind}`, ...base, ...settings })
    }
  }
  const c = env.client({ user: 'alice', proxies })
  if (!ctx.check('alice logs in', await c.login() === 'ok', undefined, env.procs)) return
  for (const p of proxies) {
    if (p.name.endsWith('-match')) {
      refused(ctx, env, `${p.type} proxy ${c.proxyName(p.name)} (${said(matching)})`, await c.proxy(p.name), render(step.options?.reason ?? '', { proxy_name: c.proxyName(p.name), proxy_type: p.type }))
    } else if (p.type === 'tcp') {
      await tcpIntact(ctx, env, c, p.name, p.remotePort as number, echo)
    } else if (ctx.check(`http proxy ${c.proxyName(p.name)} (${said(other)}) starts`, await c.proxy(p.name) === 'ok', undefined, env.procs)) {
      await pageIntact(ctx, env, 'other.e2e.test', web.body)
    }
  }
}

const rangesOf = (ports: Array<number | string>): Array<[number, number]> =>
  ports.map(p => String(p).split('-').map(Number)).map(([lo, hi]) => [lo, hi ?? lo])

/**
 * A client of `user` that sends no heartbeat while the scenario runs (frpc >= 0.58 sends none by default; 0.41 its first
 * after 30 s), with one tcp proxy on another free port among the user's: started and carrying bytes.
 */
async function quietClient (ctx: Ctx, env: Env, user: CompiledUser, metas: Record<string, string>, taken: number, echo: Echo): Promise<{ client: Frpc, port: number } | undefined> {
  const port = await freePortAmong(user.record.ports !== undefined ? rangesOf(user.record.ports) : [[20000, 29999]], p => p !== taken)
  const client = env.client({ user: user.name, metas, proxies: [{ name: 'quiet', type: 'tcp', localPort: echo.port, remotePort: port }] })
  if (!ctx.check(`a second client of ${user.name}, with no heartbeat meanwhile, logs in`, await client.login() === 'ok', undefined, env.procs)) return
  await tcpIntact(ctx, env, client, 'quiet', port, echo)
  return { client, port }
}

/**
 * A `users` step over the README's users file (written beside the config), with the real frps and frpc: the first
 * enabled user with a token logs in with it (frpc's `metadatas.token`, INI `meta_token`), gets the record's metas and
 * a proxy inside their ports carrying bytes; a wrong token and a port outside are refused with the step's reasons;
 * every other user with a token gets in too, a disabled one is refused; and when the step runs on Ping, the first user
 * disabled while connected (the users file rewritten, SIGHUP) is cut off at their next heartbeat. A Login rate-limit
 * step before it still refuses logins per address.
 */
export const usersScenario: RecipeScenario = async (ctx, recipe) => {
  const step = recipe.steps.find(s => s.plugin === 'users')
  const fileName = recipe.config?.users?.file as string | undefined
  if (!ctx.check('the recipe is a whole config with a users step and a users file beside it', step !== undefined && fileName !== undefined && recipe.files[fileName] !== undefined)) return
  const ops = (step?.ops as string[] | undefined) ?? ALL_OPS
  const table = compileUsers(parseUsersFile(JSON.parse(recipe.files[fileName as string]), fileName))
  const tokenMeta = (step?.options?.tokenMeta as string | undefined) ?? 'token'
  const withToken = [...table.values()].filter(u => u.enabled && u.record.token !== undefined)
  const [first, ...others] = withToken
  if (!ctx.check('the users file has an enabled user with a plaintext token to log in as', first !== undefined, `users ${JSON.stringify([...table.keys()])}`)) return
  const metasOf = (user: typeof first, token = user.record.token as string): Record<string, string> => ({ [tokenMeta]: token })

  const env = await setUp(ctx, recipe.config as Record<string, any>, recipe.files)
  const echo = await startEcho(ctx.scope)
  const inside = await freePortAmong(first.record.ports !== undefined ? rangesOf(first.record.ports) : [[20000, 29999]])
  // outside: preferably a port another user of the table may use (bob's, for alice)
  const outside = first.portsText !== undefined
    ? await freePortAmong([...others.flatMap(u => rangesOf(u.record.ports ?? [])), [20000, 29999]], port => !first.portAllowed(port))
    : undefined
  const revoke = ops.includes('Ping')
  const proxies: ProxySpec[] = [{ name: 'ssh', type: 'tcp', localPort: echo.port, remotePort: inside }]
  if (outside !== undefined && ops.includes('NewProxy')) proxies.push({ name: 'other', type: 'tcp', localPort: echo.port, remotePort: outside })
  const a = env.client({ user: first.name, metas: metasOf(first), proxies, heartbeatInterval: revoke ? 1 : undefined })
  const secret = ctx.frp.ini ? `meta_${tokenMeta}` : `metadatas.${tokenMeta}`
  if (!ctx.check(`${first.name} logs in with the token in frpc's ${secret}`, await a.login() === 'ok', undefined, env.procs)) return
  await tcpIntact(ctx, env, a, 'ssh', inside, echo)
  if (outside !== undefined && ops.includes('NewProxy')) {
    refused(ctx, env, `tcp proxy ${a.proxyName('other')} on port ${outside}`, await a.proxy('other'), `remote port ${outside} is outside ${first.name}'s ports ${first.portsText as string}`)
  }
  const metas = env.recorder.calls.find(call => call.content.proxy_name === a.proxyName('ssh'))?.content.user?.metas ?? {}
  const expected = first.record.metas ?? {}
  if (Object.keys(expected).length > 0) ctx.check(`NewProxy of ${a.proxyName('ssh')} carries the record's metas ${JSON.stringify(expected)} (set at Login)`,
    Object.entries(expected).every(([k, v]) => metas[k] === v), `frps sent user.metas ${JSON.stringify(metas)}`, env.procs)

  refused(ctx, env, `login as ${first.name} with a wrong token`, await env.client({ user: first.name, metas: metasOf(first, `${first.record.token as string}-wrong`) }).login(),
    `token does not match for ${first.name}`)
  for (const user of others.slice(0, 1)) {
    const port = await freePortAmong(user.record.ports !== undefined ? rangesOf(user.record.ports) : [[20000, 29999]])
    const c = env.client({ user: user.name, metas: metasOf(user), proxies: [{ name: 'ssh', type: 'tcp', localPort: echo.port, remotePort: port }] })
    if (ctx.check(`${user.name} logs in with their own token`, await c.login() === 'ok', undefined, env.procs)) await tcpIntact(ctx, env, c, 'ssh', port, echo)
    await c.stop()
  }
  const disabled = [...table.values()].find(u => !u.enabled && u.record.token !== undefined)
  if (disabled !== undefined) {
    refused(ctx, env, `login as ${disabled.name} (enabled: false) with the right token`, await env.client({ user: disabled.name, metas: metasOf(disabled) }).login(), `user ${disabled.name} is disabled`)
  }

  if (revoke) {
    // a second client of the same user that sends no heartbeat: nothing cuts it off, but its visitors are refused
    const quiet = ops.includes('NewUserConn') ? await quietClient(ctx, env, first, metasOf(first), inside, echo) : undefined
    // the users file rewritten with the user disabled, and SIGHUP: their client is cut off at its next heartbeat (1 s here)
    const users = JSON.parse(recipe.files[fileName as string])
    users.users[first.name].enabled = false
    writeFileSync(join(env.gateway.dir, fileName as string), JSON.stringify(users, null, 2))
    const [from, frpsFrom] = [a.lines.length, env.frps.proc.lines.length]
    const since = Date.now()
    const reloaded = await env.gateway.reload()
    ctx.check(`${fileName as string} rewritten with ${first.name} disabled, SIGHUP: the gateway logs \`config reloaded\``, /"msg":"config reloaded"/.test(reloaded ?? ''), reloaded, env.procs)
    const reason = `user ${first.name} is disabled`
    const ping = await env.frps.proc.waitLine(new RegExp(`received invalid ping: ${escapeRegExp(reason)}`), 20_000, frpsFrom)
    ctx.check(`frps refuses ${first.name}'s next heartbeat: frps logs ${quote(`received invalid ping: ${reason}`)}`, ping !== undefined,
      ping ?? 'no such line within 20 s', env.procs)
    // frpc 0.64 logs frps's Pong error; 0.41 may too, or (with a short heartbeat) only see its control connection closed and the reason when it logs in again
    const line = await a.waitLine(new RegExp(escapeRegExp(reason)), 20_000, from)
    const seconds = ((Date.now() - since) / 1000).toFixed(1)
    ctx.check(`${first.name}'s frpc (heartbeat every 1 s) is cut off and logs ${quote(reason)}`, line !== undefined,
      line !== undefined ? `after ${seconds} s: ${line}` : 'no such line within 20 s', env.procs)
    if (line !== undefined) ctx.say(`${seconds} s after SIGHUP, frpc logged: ${line.replace(/^.*?\] (?=\[)/, '')}`)
    await sleep(500)
    const got = await echoThrough(inside, echo, 1024, 3000)
    const online = await onlineProxies(env.frps, 'tcp')
    const left = quiet !== undefined ? [quiet.client.proxyName('quiet')] : []
    ctx.check(`then ${a.proxyName('ssh')} is closed: nothing listens on port ${inside}, frps's dashboard lists ${left.length > 0 ? `only ${left.join()}` : 'no tcp proxy'} online`,
      /ECONNREFUSED/.test(got) && online.join() === left.join(), `a visitor got: ${got}; frps lists ${JSON.stringify(online)}`, env.procs)
    await a.stop()
    if (quiet !== undefined) {
      const refusedVisitor = await echoThrough(quiet.port, echo, 1024, 3000)
      const rejected = await env.frps.proc.waitLine(new RegExp(`\\[${escapeRegExp(quiet.client.proxyName('quiet'))}\\] the user conn .* was rejected, err: ?${escapeRegExp(reason)}`), 5000, frpsFrom)
      ctx.check(`${first.name}'s client with no heartbeat stays logged in, but a visitor of ${quiet.client.proxyName('quiet')} is refused (NewUserConn): closed, frps logs the reason`,
        /^(closed|error \w+) after 0 /.test(refusedVisitor) && rejected !== undefined && quiet.client.running,
        `a visitor got: ${refusedVisitor}; frps: ${rejected ?? 'no rejected user conn line'}`, env.procs)
      await quiet.client.stop()
    }
  }

  const rate = recipe.steps.find(s => s.plugin === 'rate-limit' && s.ops?.includes('Login'))
  if (rate !== undefined && others[0] !== undefined) {
    // the bucket is per address: every client here is 127.0.0.1, refused logins and reconnects included
    const burst = Number(rate.options.burst ?? rate.options.limit)
    let ok = 0
    let refusal: string | undefined
    for (let i = 0; i <= burst && refusal === undefined; i++) {
      const c = env.client({ user: others[0].name, metas: metasOf(others[0]) })
      const result = await c.login()
      await c.stop()
      if (result === 'ok') ok++
      else refusal = result
    }
    const template = (rate.options.reason as string | undefined) ?? 'rate limit exceeded by {{step}}: retry in {{retry_after}}s'
    const reason = new RegExp(`^${escapeRegExp(render(template, { step: rate.name, user: others[0].name, client_ip: '127.0.0.1', retry_after: '\0' })).replace('\0', '\\d+')}$`)
    ctx.check(`${rate.name} still counts logins per address before the users step: within ${burst + 1} more right-token logins of ${others[0].name}, one is refused by it`,
      refusal !== undefined && reason.test(refusal), `${ok} got in, then frpc: ${refusal ?? 'none refused'}`, env.procs)
  }
}

// ---- the registry ----

/** Polls until `done` holds or timeoutMs pass; answers whether it held. */
async function eventually (done: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await done()) return true
    if (Date.now() > deadline) return false
    await sleep(200)
  }
}

/** The records (of one user, or all) once there are `count` (a record is written just after frps's answer), or as they are after 10 s. */
async function recordsOf (gateway: Gateway, count: number, user?: string): Promise<ProxyView[]> {
  let records: ProxyView[] = []
  await eventually(async () => (records = await gateway.proxies(user)).length === count, 10_000)
  return records
}

const proxyNames = (records: ProxyView[]): string => JSON.stringify(records.map(r => r.name))
const inSeconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`

/** The visitor rule of the registry scenario: frps sends no proxy metas with NewUserConn, the registry has them. */
const VISITORS: Step = {
  name: 'visitors',
  plugin: 'reject',
  ops: ['NewUserConn'],
  when: { not: { proxyMetas: { visitors: ['all', 'friends'] } } },
  options: { reason: '{{proxy_name}} takes no visitors (visitors="{{proxy_metas.visitors}}")' }
}

/**
 * The registry, frps's dashboard read every 2 s, and one step: a visitor rule on NewUserConn (proxyMetas). A tcp proxy
 * that frps could not open (its port taken) is recorded when the gateway allows it, then removed by reconciliation;
 * the proxies frps opened stay, as the admin view and the metrics show; visitors of a proxy whose metas allow them
 * get through, others are refused; a stopping frpc's CloseProxy calls remove the rest; a frpc that reconnects keeps
 * its record; a proxy a sticky ports step put on a port another program holds starts on the next port at its next try.
 */
export async function registryScenario (ctx: Ctx): Promise<void> {
  const every = 2000
  // erin's proxies only: a sticky ports step whose first port another program listens on
  const [erinLo, erinHi] = await freeBlock(2)
  const squatter = net.createServer().listen(erinLo, '127.0.0.1')
  await once(squatter, 'listening')
  ctx.scope.defer(() => squatter.close())
  const erinPorts: Step = { name: 'ports', plugin: 'ports', ops: ['NewProxy'], when: { users: ['erin'] }, options: { mode: 'sticky', range: [`${erinLo}-${erinHi}`] } }
  const env = await setUp(ctx, { admin: {}, registry: { frpsApi: { url: 'http://127.0.0.1:7500' }, reconcileEvery: `${every / 1000}s` }, chain: [VISITORS, erinPorts] })
  const echo = await startEcho(ctx.scope)
  const web = await startWeb(ctx.scope)
  // something else listens on the port of alice.taken: frps fails to open it after the gateway allowed it
  const blocker = net.createServer().listen(0, '127.0.0.1')
  await once(blocker, 'listening')
  ctx.scope.defer(() => blocker.close())
  const [okPort, closedPort, takenPort] = [await freePort(), await freePort(), (blocker.address() as AddressInfo).port]
  ctx.check('GET /proxies answers an empty registry before any client', (await env.gateway.proxies()).length === 0)
  const c = env.client({
    user: 'alice',
    proxies: [
      { name: 'ok', type: 'tcp', localPort: echo.port, remotePort: okPort, metas: { visitors: 'all' } },
      { name: 'closed', type: 'tcp', localPort: echo.port, remotePort: closedPort },
      { name: 'taken', type: 'tcp', localPort: echo.port, remotePort: takenPort },
      { name: 'web', type: 'http', localPort: web.port, customDomains: ['registry.e2e.test'] }
    ]
  })
  if (!ctx.check('alice logs in', await c.login() === 'ok', undefined, env.procs)) return
  const started = await Promise.all(['ok', 'closed', 'web'].map(async p => await c.proxy(p)))
  ctx.check('alice.ok, alice.closed (tcp) and alice.web (http) start', started.every(r => r === 'ok'), `frpc: ${JSON.stringify(started)}`, env.procs)
  refused(ctx, env, `tcp proxy alice.taken on port ${takenPort}, where something else listens`, await c.proxy('taken'), 'port unavailable')
  // read at once: reconciliation removes alice.taken once it is older than one interval
  const view = await recordsOf(env.gateway, 4)

  const online = await onlineProxies(env.frps, 'tcp')
  ctx.check('frps\'s dashboard lists alice.closed and alice.ok online, not alice.taken', online.join() === 'alice.closed,alice.ok', `frps lists ${JSON.stringify(online)}`)
  const ok = view.find(r => r.name === 'alice.ok')
  const runId = ok?.run_id ?? ''
  ctx.check(`GET /proxies has alice.ok: user alice, type tcp, remote_port ${okPort}, metas {"visitors":"all"}, frpc's run_id, registered_at in ISO 8601`,
    ok !== undefined && ok.user === 'alice' && ok.type === 'tcp' && ok.remote_port === okPort && JSON.stringify(ok.metas) === '{"visitors":"all"}' &&
      /^[0-9a-f]{16}$/.test(runId) && !Number.isNaN(Date.parse(ok.registered_at)) && ok.registered_at === new Date(ok.registered_at).toISOString(),
    `GET /proxies: ${JSON.stringify(view)}`, env.procs)
  const www = view.find(r => r.name === 'alice.web')
  ctx.check('and alice.web: type http, custom_domains ["registry.e2e.test"], no remote_port, the same run_id',
    www !== undefined && www.type === 'http' && JSON.stringify(www.custom_domains) === '["registry.e2e.test"]' && www.remote_port === undefined && www.run_id === runId,
    `alice.web: ${JSON.stringify(www)}`)
  const taken = view.find(r => r.name === 'alice.taken')
  const since = Date.parse(taken?.registered_at ?? '')
  ctx.check(`the gateway allowed alice.taken, so it is recorded (remote_port ${takenPort}) although frps never opened it`,
    taken !== undefined && taken.remote_port === takenPort && taken.run_id === runId, `read ${inSeconds(Date.now() - since)} after it was recorded; GET /proxies: ${proxyNames(view)}`, env.procs)

  // visitors: frps's NewUserConn carries no proxy metas; the rule reads them from the registry
  const okVisitor = await echoThrough(okPort, echo)
  ctx.check(`a visitor of alice.ok (metas visitors = "all", from the registry) gets 64 KiB of random bytes back intact`, okVisitor === 'intact', `visitor got: ${okVisitor}`, env.procs)
  if (ctx.check('alice.web (http: no NewUserConn per request) serves its page', started[2] === 'ok', undefined, env.procs)) await pageIntact(ctx, env, 'registry.e2e.test', web.body)
  const frpsFrom = env.frps.proc.lines.length
  const closedVisitor = await echoThrough(closedPort, echo, 1024, 3000)
  const reason = render(VISITORS.options.reason, { proxy_name: 'alice.closed', 'proxy_metas.visitors': '' })
  const rejected = await env.frps.proc.waitLine(new RegExp(`\\[alice\\.closed\\] the user conn .* was rejected, err: ?${escapeRegExp(reason)}`), 5000, frpsFrom)
  ctx.check(`a visitor of alice.closed (no metas) is refused by ${VISITORS.name}: closed, frps logs ${quote(reason)}`,
    /^(closed|error \w+) after 0 /.test(closedVisitor) && rejected !== undefined, `a visitor got: ${closedVisitor}; frps: ${rejected ?? 'no rejected user conn line'}`, env.procs)

  // reconciliation removes alice.taken once it is older than one interval and frps does not list it online
  const gone = await eventually(async () => !(await env.gateway.proxies()).some(r => r.name === 'alice.taken'), 10 * every + 10_000)
  const after = await env.gateway.proxies()
  ctx.check(`reconciliation (every ${every / 1000} s) removes alice.taken; alice.closed, alice.ok and alice.web stay`,
    gone && proxyNames(after) === '["alice.closed","alice.ok","alice.web"]', `${gone ? 'gone' : 'still there'} ${inSeconds(Date.now() - since)} after it was recorded; GET /proxies: ${proxyNames(after)}`, env.procs)
  if (gone) ctx.say(`alice.taken gone from GET /proxies ${inSeconds(Date.now() - since)} after it was recorded`)
  const [proxies, reconciled, removed] = [await env.gateway.metric('frp_gateway_registry_proxies'),
    await env.gateway.metric('frp_gateway_registry_reconcile_total', { result: 'ok' }), await env.gateway.metric('frp_gateway_registry_reconcile_removed_total')]
  ctx.check('metrics: frp_gateway_registry_proxies 3, frp_gateway_registry_reconcile_total{result="ok"} at least 1, frp_gateway_registry_reconcile_removed_total 1',
    proxies === 3 && (reconciled ?? 0) >= 1 && removed === 1, `proxies ${proxies}, reconciles ok ${reconciled}, removed ${removed}`)
  const mine = await env.gateway.proxies('alice')
  const bobs = await env.gateway.proxies('bob')
  ctx.check('GET /proxies/alice lists the same three, GET /proxies/bob none', proxyNames(mine) === proxyNames(after) && bobs.length === 0, `alice ${proxyNames(mine)}, bob ${proxyNames(bobs)}`)

  // a stopping frpc: frps sends a CloseProxy for each of its proxies, and they remove the rest
  const closes = async (): Promise<number> => (await env.gateway.metric('frp_gateway_requests_total', { op: 'CloseProxy', outcome: 'allow' })) ?? 0
  const before = await closes()
  await c.stop()
  const emptied = await eventually(async () => (await env.gateway.proxies()).length === 0, 20_000)
  const [closed, removedAfter] = [await closes() - before, await env.gateway.metric('frp_gateway_registry_reconcile_removed_total')]
  // a reconciliation that reads frps's list between frps closing the proxies and their CloseProxy reaching the gateway may
  // take one first (a few ms of a 2 s period): the CloseProxy calls must still come, and the registry be empty
  ctx.check('alice\'s frpc stops: its CloseProxy calls (one per open proxy) empty the registry',
    emptied && closed >= 3,
    `${emptied ? 'empty' : `GET /proxies: ${proxyNames(await env.gateway.proxies())}`}; ${closed} CloseProxy calls; removed by reconciliation ${removedAfter} (was ${removed})`, env.procs)

  // a connection lost on frpc's side only: frpc logs in again with its run_id while frps still holds the old session,
  // which frps then closes, sending its CloseProxy calls (same run_id) as the new session's NewProxy calls come
  const relay = await startRelay(ctx.scope, env.frps.bindPort)
  const bobPort = await freePort()
  const b = env.client({ user: 'bob', serverPort: relay.port, proxies: [{ name: 'echo', type: 'tcp', localPort: echo.port, remotePort: bobPort, metas: { visitors: 'friends' } }] })
  if (!ctx.check('bob logs in through a relay and starts bob.echo', await b.login() === 'ok' && await b.proxy('echo') === 'ok', undefined, env.procs)) return
  const [first] = await recordsOf(env.gateway, 1, 'bob')
  const [from, closesBefore] = [b.lines.length, await closes()]
  relay.cutClients()
  const again = await b.waitLine(/\[bob\.echo\] start proxy success/, 30_000, from)
  // generous: a CloseProxy of the old session has arrived and been written by then
  await eventually(async () => await closes() > closesBefore, 10_000)
  await sleep(1000)
  const [records, listed, got] = [await env.gateway.proxies('bob'), await onlineProxies(env.frps, 'tcp'), await echoThrough(bobPort, echo)]
  const record = records[0]
  const replaced = env.frps.proc.lines.find(line => /replaced by client \[/i.test(line))
  ctx.check('the relay drops bob\'s connection: his frpc logs in again with the same run_id, frps logs that it replaced the old session, closing it (a CloseProxy of bob.echo), ' +
    'and opens bob.echo again; GET /proxies/bob has one record of it, of the new session (same run_id, registered later), and it carries bytes',
  again !== undefined && replaced?.includes(`[${record?.run_id ?? '-'}]`) === true && await closes() > closesBefore && records.length === 1 && record.run_id === first?.run_id &&
      Date.parse(record.registered_at) > Date.parse(first.registered_at) && listed.includes('bob.echo') && got === 'intact',
  `frpc: ${again ?? 'no second start'}; frps: ${replaced ?? 'no "replaced by client" line'}; ${await closes() - closesBefore} CloseProxy; before ${JSON.stringify(first)}, now ${JSON.stringify(records)}; frps lists ${JSON.stringify(listed)}; visitor got: ${got}`, env.procs)

  // a second frpc with the same user and proxy name: the gateway allows and records its NewProxy, frps refuses it and says
  // nothing; NewUserConn names the open proxy's client (its run_id), so the refused proxy's metas admit no visitor of it
  const [shutPort, otherPort] = [await freePort(), await freePort()]
  const d1 = env.client({ user: 'dora', proxies: [{ name: 'shut', type: 'tcp', localPort: echo.port, remotePort: shutPort }] })
  if (!ctx.check('dora\'s first frpc starts dora.shut (no metas)', await d1.login() === 'ok' && await d1.proxy('shut') === 'ok', undefined, env.procs)) return
  const [open] = await recordsOf(env.gateway, 1, 'dora')
  const d2 = env.client({ user: 'dora', proxies: [{ name: 'shut', type: 'tcp', localPort: echo.port, remotePort: otherPort, metas: { visitors: 'all' } }] })
  if (!ctx.check('dora\'s second frpc logs in', await d2.login() === 'ok', undefined, env.procs)) return
  refused(ctx, env, 'its dora.shut (metas visitors = "all")', await d2.proxy('shut'), /already exists|already in use/)
  let shown: ProxyView[] = []
  await eventually(async () => (shown = await env.gateway.proxies('dora')).some(r => r.run_id !== open?.run_id), 10_000)
  const dupFrom = env.frps.proc.lines.length
  const dupVisitor = await echoThrough(shutPort, echo, 1024, 3000)
  const dupReason = render(VISITORS.options.reason, { proxy_name: 'dora.shut', 'proxy_metas.visitors': '' })
  const dupRejected = await env.frps.proc.waitLine(new RegExp(`\\[dora\\.shut\\] the user conn .* was rejected, err: ?${escapeRegExp(dupReason)}`), 5000, dupFrom)
  ctx.check('GET /proxies/dora then shows the refused proxy (the second run_id, its port and metas), and a visitor of the open dora.shut is still refused: ' +
    `closed, frps logs ${quote(dupReason)}`,
  shown.length === 1 && shown[0].run_id !== open?.run_id && shown[0].remote_port === otherPort && JSON.stringify(shown[0].metas) === '{"visitors":"all"}' && /^(closed|error \w+) after 0 /.test(dupVisitor) && dupRejected !== undefined,
  `GET /proxies/dora: ${JSON.stringify(shown)}; a visitor got: ${dupVisitor}; frps: ${dupRejected ?? 'no rejected user conn line'}`, env.procs)

  // the sticky ports step hands erin.p the first port of its range, where another program listens: frps refuses it and
  // lists it nowhere, so reconciliation takes that port from it, and frpc's next try (30 s later) gets the next one
  const e = env.client({ user: 'erin', proxies: [{ name: 'p', type: 'tcp', localPort: echo.port, metas: { visitors: 'all' } }] })
  if (!ctx.check('erin logs in', await e.login() === 'ok', undefined, env.procs)) return
  const triedAt = Date.now()
  refused(ctx, env, `erin.p, handed ${erinLo} by the sticky ports step, where another program listens`, await e.proxy('p'), 'port unavailable')
  const retried = await e.waitLine(/\[erin\.p\] start proxy success/, 45_000)
  const erins = await recordsOf(env.gateway, 1, 'erin')
  const erinVisitor = retried !== undefined ? await echoThrough(erinHi, echo) : 'not started'
  ctx.check(`reconciliation sees frps never opened erin.p on ${erinLo}: frpc's next try starts it on ${erinHi}, recorded there, and it carries bytes`,
    retried !== undefined && erins[0]?.remote_port === erinHi && erinVisitor === 'intact',
    `frpc: ${retried ?? `no start in ${inSeconds(Date.now() - triedAt)}: ${e.lines.filter(l => l.includes('erin.p')).slice(-2).join(' | ')}`}; GET /proxies/erin: ${JSON.stringify(erins)}; a visitor got: ${erinVisitor}`, env.procs)
  if (retried !== undefined) ctx.say(`erin.p started on ${erinHi} ${inSeconds(Date.now() - triedAt)} after it was refused on ${erinLo}`)
}

/** Consecutive free ports on loopback: a user's range that nothing else on this machine holds now. */
async function freeBlock (size: number): Promise<[number, number]> {
  for (let i = 0; i < 200; i++) {
    // below 32768, where Linux starts handing out ephemeral ports: an outgoing connection cannot take one meanwhile
    const lo = 20000 + Math.floor(Math.random() * (10000 - size))
    let free = true
    for (let p = lo; p < lo + size && free; p++) free = await isFree(p)
    if (free) return [lo, lo + size - 1]
  }
  throw new Error(`no ${size} consecutive free ports in 20000-29999`)
}

const sizeOf = (ports: Array<number | string>): number => rangesOf(ports).reduce((n, [lo, hi]) => n + hi - lo + 1, 0)

/**
 * The registry section's recipe: a users table, a quota from it and sticky ports from each user's `ports`, the
 * registry in Redis. The first user with a token and a maxProxies starts one proxy more than that: the last is
 * refused with the quota's reason; the others get distinct ports of the user's range and carry bytes. Their records
 * are under the documented keys; when the frpc stops, its CloseProxy calls empty the registry and the ports stay held;
 * another proxy of the user gets another port meanwhile; a new frpc with the same proxies gets the same ports back.
 */
const registryRecipe: RecipeScenario = async (ctx, recipe) => {
  const config = recipe.config ?? {}
  const fileName = config.users?.file as string | undefined
  const quotaStep = recipe.steps.find(s => s.plugin === 'quota')
  const portsStep = recipe.steps.find(s => s.plugin === 'ports')
  if (!ctx.check('the recipe is a whole config with a registry, a users file, a quota step and a ports step in sticky mode',
    config.registry !== undefined && fileName !== undefined && recipe.files[fileName] !== undefined && quotaStep !== undefined && portsStep?.options?.mode === 'sticky')) return
  const quota = plugins.quota.options.parse(quotaStep?.options ?? {})
  const file = JSON.parse(recipe.files[fileName as string])
  // each user's ports: a free block of the same size on this machine (other runs may hold the README's)
  for (const [name, record] of Object.entries(file.users) as Array<[string, { ports?: Array<number | string> }]>) {
    if (record.ports === undefined || record.ports.length === 0) continue
    const [lo, hi] = await freeBlock(sizeOf(record.ports))
    ctx.say(`${name}'s ports ${record.ports.join(', ')} replaced by ${lo}-${hi}, free here`)
    record.ports = [`${lo}-${hi}`]
  }
  const table = compileUsers(parseUsersFile(file, fileName as string))
  const user = [...table.values()].find(u => u.enabled && u.record.token !== undefined && u.record.maxProxies !== undefined && u.record.ports !== undefined)
  if (!ctx.check('the users file has an enabled user with a token, maxProxies and ports', user !== undefined, `users ${JSON.stringify([...table.keys()])}`)) return
  const { name, record } = user as CompiledUser
  const max = record.maxProxies as number
  const inRange = (port: number | undefined): boolean => port !== undefined && (user as CompiledUser).portAllowed(port)

  const redis = await startRedis({ teardown: fn => ctx.scope.defer(fn) })
  ctx.say(`redis ${config.redis?.url as string} replaced by a redis-server of its own at ${redis.url}`)
  const env = await setUp(ctx, { ...config, redis: { ...config.redis, url: redis.url } }, { [fileName as string]: JSON.stringify(file, null, 2) })
  const echo = await startEcho(ctx.scope)
  const metas = { token: record.token as string }
  const wanted = Array.from({ length: max + 1 }, (_, i) => `p${i + 1}`)
  const spec = (proxies: string[]): ClientSpec => ({ user: name, metas, proxies: proxies.map(p => ({ name: p, type: 'tcp' as const, localPort: echo.port })) })
  const a = env.client(spec(wanted))
  if (!ctx.check(`${name} logs in with the token`, await a.login() === 'ok', undefined, env.procs)) return
  const results = await Promise.all(wanted.map(async p => await a.proxy(p, 20_000)))
  const started = wanted.filter((_, i) => results[i] === 'ok')
  const refusals = results.filter(r => r !== 'ok')
  const reason = render(quota.reason, { user: name, count: String(max), limit: String(max), which: 'maxProxies', counted: max === 1 ? 'proxy' : 'proxies' })
  ctx.check(`of ${max + 1} tcp proxies of ${name} (maxProxies ${max} in the users file), ${max} start and one is refused: frpc logs ${quote(reason)}`,
    started.length === max && refusals.length === 1 && refusals[0] === reason, `started ${JSON.stringify(started)}, refused: ${JSON.stringify(refusals)}`, env.procs)

  const view = await recordsOf(env.gateway, started.length, name)
  const held = Object.fromEntries(view.map(r => [r.name, r.remote_port]))
  const ports = started.map(p => held[a.proxyName(p)])
  const told = started.map(p => env.recorder.calls.find(c => c.content.proxy_name === a.proxyName(p))?.content.remote_port)
  ctx.check(`GET /proxies/${name} lists the ${max} started, each with its own port of ${name}'s ${(user as CompiledUser).portsText as string}, the port frps was told`,
    view.length === max && ports.every(inRange) && new Set(ports).size === max && told.join() === ports.join(),
    `GET /proxies/${name}: ${JSON.stringify(view.map(r => [r.name, r.remote_port]))}; frps was told ${JSON.stringify(told)}`, env.procs)
  if (started.length === 0 || !inRange(ports[0])) return
  const got = await echoThrough(ports[0] as number, echo)
  ctx.check(`a visitor of ${a.proxyName(started[0])} on its assigned port ${ports[0] as number} gets 64 KiB of random bytes back intact`, got === 'intact', `visitor got: ${got}`, env.procs)

  const prefix = (config.redis?.keyPrefix as string | undefined) ?? 'frpgw:'
  const keys = (await redisCli(redis.port, 'KEYS', '*')).trim().split('\n').filter(Boolean)
  const documented = [`${prefix}reg:{${name}}:proxies`, `${prefix}reg:users`, `${prefix}ports:{ports}`, `${prefix}ports:{ports}:owners`]
  ctx.check(`the registry is in Redis under ${documented.join(', ')}`, documented.every(k => keys.includes(k)), `keys ${JSON.stringify(keys.sort())}`)

  // the frpc stops: its CloseProxy calls empty the registry, the ports stay held for the user and proxy name
  await a.stop()
  const emptied = await eventually(async () => (await env.gateway.proxies(name)).length === 0, 20_000)
  const hash = (await redisCli(redis.port, 'HGETALL', `${prefix}ports:{ports}`)).trim().split('\n')
  const holds = new Map<number, { user: string, name: string, heldUntil?: number }>()
  for (let i = 0; i + 1 < hash.length; i += 2) holds.set(Number(hash[i]), JSON.parse(hash[i + 1]))
  const week = Date.now() + 6 * 86_400_000
  ctx.check(`${name}'s frpc stops: the registry is empty, and ${prefix}ports:{ports} holds each port for its proxy for releaseAfter (${String(portsStep?.options?.releaseAfter ?? '7d')})`,
    emptied && started.every((p, i) => holds.get(ports[i] as number)?.name === a.proxyName(p) && (holds.get(ports[i] as number)?.heldUntil ?? 0) > week),
    `${emptied ? 'empty' : 'not empty'}; ${prefix}ports:{ports}: ${JSON.stringify([...holds])}`, env.procs)

  // meanwhile another proxy of the same user gets another port
  const other = env.client(spec(['other']))
  const otherStarted = await other.login() === 'ok' && await other.proxy('other') === 'ok'
  const otherPort = (await recordsOf(env.gateway, 1, name)).find(r => r.name === other.proxyName('other'))?.remote_port
  ctx.check(`meanwhile ${other.proxyName('other')} starts on a port of the range that none of the held ones is`,
    otherStarted && inRange(otherPort) && !ports.includes(otherPort), `port ${String(otherPort)}, held ${JSON.stringify(ports)}`, env.procs)
  await other.stop()
  await eventually(async () => (await env.gateway.proxies(name)).length === 0, 20_000)

  // a new frpc (a new run_id) with the same proxies: the same ports
  const again = env.client(spec(started))
  if (!ctx.check(`${name} logs in again with a new frpc`, await again.login() === 'ok', undefined, env.procs)) return
  const restarted = await Promise.all(started.map(async p => await again.proxy(p, 20_000)))
  const after = Object.fromEntries((await recordsOf(env.gateway, started.length, name)).map(r => [r.name, r.remote_port]))
  const portsAfter = started.map(p => after[again.proxyName(p)])
  ctx.check(`sticky: after the restart each proxy starts on the port it had (${ports.join(', ')})`,
    restarted.every(r => r === 'ok') && portsAfter.join() === ports.join(), `frpc: ${JSON.stringify(restarted)}; ports now ${JSON.stringify(portsAfter)}`, env.procs)
  const back = await echoThrough(ports[0] as number, echo)
  ctx.check(`a visitor of ${again.proxyName(started[0])} on port ${ports[0] as number} again gets its bytes back intact`, back === 'intact', `visitor got: ${back}`, env.procs)
}

/** The posts of a receiver once there are `count`, or as they are after 10 s (a notify step sends after the answer). */
async function postsOf (receiver: Receiver | undefined, count: number): Promise<Array<Record<string, any>>> {
  await eventually(async () => (receiver?.posts.length ?? 0) >= count, 10_000)
  return receiver?.posts ?? []
}

/**
 * The chat recipe: a login posts the login step's message with the user; logins past the throttle's limit post
 * nothing more for that user (counted as throttled), another user's still does; a tcp proxy on a port the reject
 * step refuses posts the reject step's message with decided_by and the reason; an allowed proxy posts nothing.
 */
const chatScenario: RecipeScenario = async (ctx, recipe) => {
  const local = await localize(ctx, recipe.steps)
  const notifying = (outcome: string): Step | undefined => local.steps.find(s => s.plugin === 'notify' && (s.options.outcomes as string[]).includes(outcome))
  const [reject, login, refusals] = [local.steps.find(s => s.plugin === 'reject'), notifying('allow'), notifying('reject')]
  if (!ctx.check('the recipe has a reject step, a notify step on allowed logins and one on rejects', reject !== undefined && login !== undefined && refusals !== undefined) ||
    reject === undefined || login === undefined || refusals === undefined) return
  const [loginChat, rejectChat] = [local.receivers.get(login.name), local.receivers.get(refusals.name)]
  const env = await setUp(ctx, { chain: local.steps })
  const echo = await startEcho(ctx.scope)
  const [port, low] = [await freePort(), 22]
  const c = env.client({
    user: 'alice',
    proxies: [{ name: 'echo', type: 'tcp', localPort: echo.port, remotePort: port }, { name: 'ssh', type: 'tcp', localPort: echo.port, remotePort: low }]
  })
  if (!ctx.check('alice logs in', await c.login() === 'ok', undefined, env.procs)) return
  const welcome = render(login.options.template.text, { user: 'alice', client_ip: '127.0.0.1', held_back: '0' })
  const first = await postsOf(loginChat, 1)
  ctx.check(`${login.name}'s webhook gets ${quote(welcome)}`, first.length === 1 && first[0].text === welcome, `posts ${JSON.stringify(first)}`, env.procs)

  await tcpIntact(ctx, env, c, 'echo', port, echo)
  const reason = render(reject.options.reason, { proxy_name: 'alice.ssh' })
  refused(ctx, env, `tcp proxy alice.ssh on port ${low}`, await c.proxy('ssh'), reason)
  const said = render(refusals.options.template.text, { op: 'NewProxy', user: 'alice', proxy_name: 'alice.ssh', decided_by: reject.name, reason })
  const refused_ = await postsOf(rejectChat, 1)
  ctx.check(`${refusals.name}'s webhook gets ${quote(said)} (decided_by and the reason), and nothing for the allowed login and proxy`,
    refused_.length === 1 && refused_[0].text === said, `posts ${JSON.stringify(refused_)}`, env.procs)

  const { limit } = login.options.throttle
  const more = await loginUntilRefused(env, 'alice', Number(limit))
  const bob = await env.client({ user: 'bob' }).login()
  const posts = await postsOf(loginChat, Number(limit) + 1)
  await sleep(1000)
  const byUser = (user: string): number => posts.filter(p => String(p.text).includes(` ${user} logged in`)).length
  const throttled = await env.gateway.metric('frp_gateway_notify_events_total', { step: login.name, result: 'throttled' })
  ctx.check(`throttle: of ${Number(limit) + 1} logins of alice, ${limit} are posted and 1 is counted as throttled; bob's login is posted`,
    more.ok === Number(limit) && bob === 'ok' && byUser('alice') === Number(limit) && byUser('bob') === 1 && throttled === 1 && rejectChat?.posts.length === 1,
    `alice ${byUser('alice')}, bob ${byUser('bob')} posted, throttled ${String(throttled)}; posts ${JSON.stringify(posts.map(p => p.text))}`, env.procs)
}

/** The events of a Redis Stream as the audit recipe writes them: the field `event` of each entry, parsed. */
async function streamEvents (port: number, stream: string): Promise<Array<Record<string, string>>> {
  const lines = (await redisCli(port, 'XRANGE', stream, '-', '+')).split('\n')
  return lines.map((line, i) => line === 'event' ? JSON.parse(lines[i + 1]) : undefined).filter(e => e !== undefined)
}

/**
 * The audit recipe: after a login and a proxy start, the stream in the run's own Redis holds a Login and a NewProxy
 * event with outcome allow (and, once frpc stops, a CloseProxy one); XREAD as the README shows it reads them.
 */
const auditScenario: RecipeScenario = async (ctx, recipe) => {
  const step = recipe.steps[0]
  const stream = step.options.sink.redisStream.stream as string
  const redis = await startRedis({ teardown: fn => ctx.scope.defer(fn) })
  ctx.say(`redis ${recipe.config?.redis?.url as string} replaced by a redis-server of its own at ${redis.url}`)
  const env = await setUp(ctx, { ...recipe.config, redis: { ...recipe.config?.redis, url: redis.url } })
  const echo = await startEcho(ctx.scope)
  const port = await freePort()
  const c = env.client({ user: 'alice', proxies: [{ name: 'echo', type: 'tcp', localPort: echo.port, remotePort: port }] })
  if (!ctx.check('alice logs in', await c.login() === 'ok', undefined, env.procs)) return
  await tcpIntact(ctx, env, c, 'echo', port, echo)
  const has = (events: Array<Record<string, string>>, op: string): boolean => events.some(e =>
    e.op === op && e.outcome === 'allow' && e.user === 'alice' && e.decided_by === '' && /^\d{4}-\d\d-\d\dT/.test(e.time) && (op === 'Login' || e.proxy_name === 'alice.echo'))
  let events: Array<Record<string, string>> = []
  await eventually(async () => has(events = await streamEvents(redis.port, stream), 'NewProxy'), 10_000)
  const shown = await redisCli(redis.port, '--no-raw', 'XREAD', 'COUNT', '10', 'STREAMS', stream, '0')
  ctx.check(`XREAD COUNT 10 STREAMS ${stream} 0 shows a Login of alice and a NewProxy of alice.echo, outcome allow, decided_by empty`,
    has(events, 'Login') && has(events, 'NewProxy') && shown.includes('"event"') && shown.includes('\\"op\\":\\"NewProxy\\"'), shown, env.procs)
  await c.stop()
  const closed = await eventually(async () => has(events = await streamEvents(redis.port, stream), 'CloseProxy'), 15_000)
  ctx.check('frpc stops: a CloseProxy event of alice.echo follows, outcome allow', closed, JSON.stringify(events.map(e => `${e.op} ${e.outcome}`)), env.procs)
  // the README's durable consumer: a group reads every event once, then nothing new until the gateway adds more
  await redisCli(redis.port, 'XGROUP', 'CREATE', stream, 'archiver', '0', 'MKSTREAM')
  const read = async (): Promise<number> => (await redisCli(redis.port, 'XREADGROUP', 'GROUP', 'archiver', 'archiver-1', 'COUNT', '100', 'STREAMS', stream, '>'))
    .split('\n').filter(line => line === 'event').length
  const [once, again] = [await read(), await read()]
  const pending = async (): Promise<number> => Number((await redisCli(redis.port, 'XPENDING', stream, 'archiver')).split('\n')[0])
  const before = await pending()
  const ids = (await redisCli(redis.port, 'XRANGE', stream, '-', '+')).split('\n').filter(line => /^\d+-\d+$/.test(line))
  await redisCli(redis.port, 'XACK', stream, 'archiver', ...ids)
  const after = await pending()
  ctx.check(`a consumer group (XGROUP CREATE, XREADGROUP ... '>') reads the ${events.length} events once, then none; they are pending until XACK`,
    once === events.length && again === 0 && before === events.length && after === 0, `read ${once}, then ${again}; pending ${before}, after XACK ${after}`)
}

/** One scenario per README recipe name: a recipe without one fails the run. */
export const recipeScenarios: Record<string, RecipeScenario> = {
  // the configuration reference: a whole config (Redis, admin listener, forward)
  'login-rate+region+need-encryption+auth': async (ctx, recipe) => {
    const redis = await startRedis({ teardown: fn => ctx.scope.defer(fn) })
    ctx.say(`redis ${recipe.config?.redis?.url} replaced by a redis-server of its own at ${redis.url}`)
    const local = await localize(ctx, recipe.steps)
    const config = { ...recipe.config, redis: { url: redis.url }, chain: local.steps }
    const env = await setUp(ctx, config)
    const echo = await startEcho(ctx.scope)
    const [plainPort, securePort] = [await freePort(), await freePort()]
    const c = env.client({
      user: 'alice',
      proxies: [
        { name: 'plain', type: 'tcp', localPort: echo.port, remotePort: plainPort },
        { name: 'secure', type: 'tcp', localPort: echo.port, remotePort: securePort, encryption: true }
      ]
    })
    if (!ctx.check('alice logs in', await c.login() === 'ok', undefined, env.procs)) return
    await tcpIntact(ctx, env, c, 'secure', securePort, echo)
    await tcpIntactOrRefused(ctx, env, c, 'plain', plainPort, echo)
    const auth = local.plugins.get('auth')
    // a proxy refused by an earlier step (need-encryption) never reaches auth
    ctx.check('the auth plugin got Login and the NewProxy of alice.secure', saw(auth, 'Login') >= 1 && (auth?.calls ?? []).some(call => call.op === 'NewProxy' && call.content.proxy_name === 'alice.secure'),
      `Login ${saw(auth, 'Login')}, NewProxy ${saw(auth, 'NewProxy')}`)
    const metas = env.recorder.calls.find(call => call.content.proxy_name === 'alice.secure')?.content.user?.metas
    ctx.check('NewProxy carries user.metas.region = "eu-1" and login_ip = "127.0.0.1" (set by region at Login)',
      metas?.region === 'eu-1' && metas?.login_ip === '127.0.0.1', `frps sent user.metas ${JSON.stringify(metas)}`)
    const rate = local.steps.find(s => s.plugin === 'rate-limit' && s.ops?.includes('Login'))
    if (rate !== undefined) {
      const burst = Number(rate.options.burst ?? rate.options.limit)
      const result = await loginUntilRefused(env, 'bob', burst + 2)
      const keys = (await redisCli(redis.port, 'KEYS', '*')).trim().split('\n').filter(Boolean)
      ctx.check(`${rate.name} in Redis: ${burst} logins from 127.0.0.1 take a token (alice's included), the next is refused; the bucket is a key in that Redis`,
        1 + result.ok === burst && /rate limit exceeded by login-rate/.test(result.refusal ?? '') && keys.length > 0,
        `${1 + result.ok} logins in, then frpc: ${result.refusal ?? 'none refused'}; Redis keys ${JSON.stringify(keys)}`, env.procs)
    }
  },

  'office-only': async (ctx, recipe) => {
    if (!sends(ctx, 'client_address', 'logins refused by address')) return
    const env = await setUp(ctx, { chain: recipe.steps })
    const step = recipe.steps[0]
    refused(ctx, env, 'login from 127.0.0.1', await env.client({ user: 'alice' }).login(),
      render(step.options.reason, { client_ip: '127.0.0.1' }))
    // the same step with loopback added to the office: the refusal came from the address
    const office = { ...step, when: { not: { clientCidrs: [...step.when.not.clientCidrs, '127.0.0.0/8'] } } }
    const env2 = await setUp(ctx, { chain: [office] })
    ctx.check('with 127.0.0.0/8 added to clientCidrs, the same login gets in', await env2.client({ user: 'alice' }).login() === 'ok', undefined, env2.procs)
  },

  tag: async (ctx, recipe) => {
    const loginIp = sends(ctx, 'client_address', 'user.metas.login_ip = "127.0.0.1" (from {{client_ip}})')
    const env = await setUp(ctx, { chain: recipe.steps })
    const web = await startWeb(ctx.scope)
    const c = env.client({ user: 'alice', metas: { debug: '1', team: 'ops' }, proxies: [{ name: 'web', type: 'http', localPort: web.port, customDomains: ['tag.e2e.test'] }] })
    if (!ctx.check('alice (metas debug=1, team=ops) logs in and starts an http proxy', await c.login() === 'ok' && await c.proxy('web') === 'ok', undefined, env.procs)) return
    await pageIntact(ctx, env, 'tag.e2e.test', web.body)
    const metas = env.recorder.calls.find(call => call.content.proxy_name === 'alice.web')?.content.user?.metas ?? {}
    ctx.check('NewProxy carries user.metas region = "eu-1", login_ip = "127.0.0.1", team kept, debug removed',
      metas.region === 'eu-1' && (metas.login_ip === '127.0.0.1' || !loginIp) && metas.team === 'ops' && !('debug' in metas), `frps sent user.metas ${JSON.stringify(metas)}`)
  },

  'http-names': async (ctx, recipe) => {
    const env = await setUp(ctx, { chain: recipe.steps })
    const web = await startWeb(ctx.scope)
    const c = env.client({ user: 'alice', proxies: [{ name: 'web', type: 'http', localPort: web.port, subdomain: 'my_app' }] })
    if (!ctx.check('alice logs in', await c.login() === 'ok', undefined, env.procs)) return
    const started = await c.proxy('web')
    if (!ctx.check('http proxy alice.web (subdomain my_app) starts', started === 'ok', `frpc: ${started}`, env.procs)) return
    await pageIntact(ctx, env, `my-app.${env.frps.subdomainHost}`, web.body)
    const header = web.requests.at(-1)?.['x-frp-proxy']
    ctx.check('the local service got X-Frp-Proxy = alice.web (set by frps from the rewritten headers)', header === 'alice.web', `x-frp-proxy ${String(header)}`)
  },

  // the forward option example: https with a CA, a header, retries and a breaker
  auth: async (ctx, recipe) => {
    const local = await localize(ctx, recipe.steps)
    const auth = local.plugins.get('auth') as Plugin
    auth.answer = call => call.op === 'Login' && call.content.user === 'mallory' ? { reject: true, reject_reason: 'mallory is not welcome' } : { reject: false, unchange: true }
    const env = await setUp(ctx, { chain: local.steps })
    const echo = await startEcho(ctx.scope)
    refused(ctx, env, 'login as mallory (the plugin rejects)', await env.client({ user: 'mallory' }).login(), 'mallory is not welcome')
    const port = await freePort()
    const c = env.client({ user: 'alice', proxies: [{ name: 'echo', type: 'tcp', localPort: echo.port, remotePort: port }] })
    if (!ctx.check('alice logs in (the plugin allows)', await c.login() === 'ok', undefined, env.procs)) return
    await tcpIntact(ctx, env, c, 'echo', port, echo)
    const headers = recipe.steps[0].options.headers ?? {}
    const sent = auth.calls.every(call => Object.entries(headers).every(([k, v]) => call.headers[k.toLowerCase()] === v) && /^[0-9a-f]{16}$/.test(String(call.headers['x-frp-reqid'])))
    ctx.check(`the plugin got Login and NewProxy over https, each with the recipe's headers and frps's X-Frp-Reqid`,
      saw(auth, 'Login') === 2 && saw(auth, 'NewProxy') === 1 && sent, `Login ${saw(auth, 'Login')}, NewProxy ${saw(auth, 'NewProxy')}, headers ${sent ? 'as set' : 'missing'}`)
    // onError reject (the default): with the plugin gone, frpc sees the step named, not frps's generic error
    auth.close()
    refused(ctx, env, 'login with the plugin down', await env.client({ user: 'carol' }).login(), `frp-plugin-gateway: step ${recipe.steps[0].name} failed`)
  },

  // moving [[httpPlugins]] behind the gateway: the port manager moves the proxy to another port
  'auth+port-manager': async (ctx, recipe) => {
    const local = await localize(ctx, recipe.steps)
    const movedTo = await freePort()
    const ports = local.plugins.get('port-manager') as Plugin
    ports.answer = (call): Record<string, unknown> => ({ reject: false, unchange: false, content: { ...call.content, remote_port: movedTo } })
    const env = await setUp(ctx, { chain: local.steps })
    const echo = await startEcho(ctx.scope)
    const asked = await freePort()
    const c = env.client({ user: 'alice', proxies: [{ name: 'echo', type: 'tcp', localPort: echo.port, remotePort: asked }] })
    if (!ctx.check('alice logs in through auth', await c.login() === 'ok' && saw(local.plugins.get('auth'), 'Login') === 1, undefined, env.procs)) return
    ctx.say(`port-manager answers remote_port ${movedTo} for the ${asked} frpc asked`)
    await tcpIntact(ctx, env, c, 'echo', movedTo, echo)
    const atAsked = await echoThrough(asked, undefined, 16, 2000)
    ctx.check(`nothing listens on the port frpc asked (${asked})`, /ECONNREFUSED/.test(atAsked), `a visitor there got: ${atAsked}`)
  },

  'logins-per-ip': async (ctx, recipe) => {
    const env = await setUp(ctx, { chain: recipe.steps })
    const { burst, limit, window } = recipe.steps[0].options
    const expected = Number(burst ?? limit)
    const started = Date.now()
    const result = await loginUntilRefused(env, 'alice', expected + 3)
    const reason = /rate limit exceeded by logins-per-ip: retry in \d+s/
    ctx.check(`${expected} logins from 127.0.0.1 get in, the next is refused with the rate-limit reason`,
      result.ok >= expected && result.ok <= expected + 1 && reason.test(result.refusal ?? ''),
      `${result.ok} got in, then frpc: ${result.refusal ?? 'none refused'}`, env.procs)
    // frpc with loginFailExit = false logs in again and again: refused while the bucket is empty, in once it refills
    const interval = parseWindow(window) / Number(limit)
    const retrying = env.client({ user: 'alice', loginFailExit: false })
    const inAgain = await retrying.waitLine(/login to (the )?server success/, interval + 20_000)
    const refusals = retrying.lines.filter(line => reason.test(line)).length
    const after = Date.now() - started
    ctx.check(`a frpc that retries (loginFailExit = false) is refused, retries, and gets in once a token is back (${interval / 1000} s)`,
      refusals >= 1 && inAgain !== undefined && after >= interval - 1000,
      `${refusals} refusal lines logged, ${inAgain !== undefined ? `in after ${(after / 1000).toFixed(1)} s` : 'never in'}`, env.procs)
  },

  'proxies-per-user': async (ctx, recipe) => {
    const env = await setUp(ctx, { chain: recipe.steps })
    const web = await startWeb(ctx.scope)
    const burst = Number(recipe.steps[0].options.burst ?? recipe.steps[0].options.limit)
    const names = Array.from({ length: burst + 2 }, (_, i) => `p${i}`)
    const c = env.client({ user: 'alice', proxies: names.map(name => ({ name, type: 'http' as const, localPort: web.port, customDomains: [`${name}.e2e.test`] })) })
    if (!ctx.check('alice logs in', await c.login() === 'ok', undefined, env.procs)) return
    const results = await Promise.all(names.map(async name => await c.proxy(name, 20_000)))
    const ok = results.filter(r => r === 'ok').length
    const refusals = results.filter(r => r !== 'ok')
    ctx.check(`of ${names.length} proxies of one client, ${burst} start and the rest are refused with the recipe's reason`,
      ok === burst && refusals.length === 2 && refusals.every(r => /^too many new proxies for alice: retry in \d+s$/.test(r)),
      `${ok} started, refused: ${JSON.stringify([...new Set(refusals)])}`, env.procs)
  },

  // the users section: one users step and a login rate limit; the migrations from fp-multiuser and frps-panel
  'login-rate+users': usersScenario,
  users: usersScenario,

  // the registry section: users, quota from the users file, sticky ports, the registry in Redis
  'users+quota+ports': registryRecipe,

  // the notify section: a chat webhook on logins and refusals, an audit log in a Redis Stream
  'low-ports+login-chat+reject-chat': chatScenario,
  audit: auditScenario,

  'visitors-per-ip': async (ctx, recipe) => {
    const env = await setUp(ctx, { chain: recipe.steps })
    const echo = await startEcho(ctx.scope)
    const port = await freePort()
    const c = env.client({ user: 'alice', proxies: [{ name: 'echo', type: 'tcp', localPort: echo.port, remotePort: port }] })
    if (!ctx.check('alice starts a tcp proxy', await c.login() === 'ok' && await c.proxy('echo') === 'ok', undefined, env.procs)) return
    const limit = Number(recipe.steps[0].options.burst ?? recipe.steps[0].options.limit)
    const started = Date.now()
    const results = await Promise.all(Array.from({ length: limit + 10 }, async () => await echoThrough(port, echo, 1024, 8000)))
    const seconds = (Date.now() - started) / 1000
    const intact = results.filter(r => r === 'intact').length
    // the bucket refills limit per window while the connections are made
    const refill = Math.ceil(seconds * limit / 10)
    ctx.check(`of ${limit + 10} visitor connections at once, ${limit} (plus ${refill} refilled in ${seconds.toFixed(1)} s) carry bytes and the rest are closed`,
      intact >= limit && intact <= limit + refill && results.filter(r => r !== 'intact').every(r => /^(closed|error \w+) after 0 /.test(r)),
      `${intact} intact; others: ${JSON.stringify([...new Set(results.filter(r => r !== 'intact'))])}`, env.procs)
  }
}
