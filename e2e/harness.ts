import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import net, { type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'

import { killOnExit } from '../bench/procs.js'
import type { ProxyRecord } from '../src/registry/store.js'
import { freePort } from '../test/helpers/redis.js'

export { freePort }
export const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const MAIN = join(ROOT, 'dist/src/main.js')
export const TOKEN = 'e2e-token'

/** What one scenario starts; everything is stopped by close(), in reverse order. */
export class Scope {
  readonly dir = mkdtempSync(join(tmpdir(), 'frpgw-e2e-'))
  readonly #cleanups: Array<() => unknown> = []
  defer (fn: () => unknown): void { this.#cleanups.push(fn) }
  file (name: string, text: string): string {
    const path = join(this.dir, name)
    writeFileSync(path, text)
    return path
  }

  async close (): Promise<void> {
    for (const fn of this.#cleanups.reverse()) await Promise.resolve().then(fn).catch(() => {})
    rmSync(this.dir, { recursive: true, force: true })
  }
}

// last resort when the run is interrupted: no frps, frpc or gateway outlives it
const live = new Set<ChildProcess>()
killOnExit(() => { for (const child of live) child.kill('SIGKILL') })

// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;]*m/g

/** A child process whose output (stdout and stderr, colours stripped) is kept line by line. */
export class Proc {
  readonly lines: string[] = []
  readonly child: ChildProcess
  readonly exited: Promise<number | null>
  #waiters = new Set<() => void>()

  constructor (scope: Scope, readonly label: string, command: string, args: string[]) {
    this.child = spawn(command, args, { cwd: scope.dir, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } })
    live.add(this.child)
    this.exited = new Promise(resolve => this.child.on('exit', code => { live.delete(this.child); this.#wake(); resolve(code) }))
    let rest = ''
    const onData = (chunk: Buffer): void => {
      const parts = (rest + chunk.toString('utf8').replace(ANSI, '')).split('\n')
      rest = parts.pop() ?? ''
      this.lines.push(...parts)
      this.#wake()
    }
    this.child.stdout?.on('data', onData)
    this.child.stderr?.on('data', onData)
    scope.defer(() => this.stop())
  }

  #wake (): void { for (const fn of this.#waiters) fn() }

  get running (): boolean { return this.child.exitCode === null && this.child.signalCode === null }

  /** The first line matching, waiting up to timeoutMs; undefined if none came (or the process exited first). */
  async waitLine (pattern: RegExp, timeoutMs = 10_000, from = 0): Promise<string | undefined> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const found = this.lines.slice(from).find(line => pattern.test(line))
      if (found !== undefined) return found
      if (Date.now() >= deadline || !this.running) return undefined
      await new Promise<void>(resolve => {
        const wake = (): void => { clearTimeout(timer); this.#waiters.delete(wake); resolve() }
        const timer = setTimeout(wake, Math.max(0, deadline - Date.now()))
        this.#waiters.add(wake)
      })
    }
  }

  tail (n = 8): string { return this.lines.filter(Boolean).slice(-n).map(line => `      | ${this.label}: ${line}`).join('\n') }

  async stop (): Promise<void> {
    if (!this.running) return
    this.child.kill('SIGTERM')
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 3000)
    await this.exited
    clearTimeout(timer)
  }
}

/** Resolves once something listens on 127.0.0.1:port; throws with the process's last lines if it exits or times out first. */
export async function waitPort (port: number, proc: Proc, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const open = await new Promise<boolean>(resolve => {
      const socket = net.connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true) })
      socket.on('error', () => resolve(false))
    })
    if (open) return
    if (!proc.running) throw new Error(`${proc.label} exited before listening on ${port}:\n${proc.tail()}`)
    if (Date.now() > deadline) throw new Error(`${proc.label} did not listen on ${port} within ${timeoutMs} ms:\n${proc.tail()}`)
    await sleep(50)
  }
}

// ---- the gateway ----

export interface Gateway {
  proc: Proc
  port: number
  path: string
  addr: string
  /** the folder of the config file, where its users file is */
  dir: string
  /** the ops frps must send it, as `check` prints them for the config */
  ops: string[]
  /** where /metrics and /proxies are served: the admin listener when the config has one */
  adminUrl: string
  /** SIGHUP, then the line the gateway logged for it: `config reloaded` or `config reload failed...` (undefined: none in 15 s) */
  reload: () => Promise<string | undefined>
  /** the value of one series of /metrics (its labels as given, in any order; none: the one without labels), undefined when absent */
  metric: (name: string, labels?: Record<string, string>) => Promise<number | undefined>
  /** GET /proxies, or /proxies/USER: the registry as the admin view shows it */
  proxies: (user?: string) => Promise<ProxyView[]>
}

/** One record of the admin view (GET /proxies): the registry's, its time in ISO 8601 */
export type ProxyView = Omit<ProxyRecord, 'registered_at'> & { registered_at: string }

async function getJson (url: string): Promise<any> {
  const res = await fetch(url)
  if (res.status !== 200) throw new Error(`GET ${url}: HTTP ${res.status} ${await res.text()}`)
  return await res.json()
}

/** The value of the series `name` with exactly `labels` in Prometheus text. */
export function seriesValue (text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (match === null || match[1] !== name) continue
    const found = Object.fromEntries([...(match[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map(m => [m[1], m[2]]))
    const keys = Object.keys(labels)
    if (keys.length === Object.keys(found).length && keys.every(k => found[k] === labels[k])) return Number(match[3])
  }
  return undefined
}

/**
 * Starts the built CLI (dist/src/main.js) on a temporary copy of the config whose listen (and admin) ports are free ones,
 * with `files` (name: text) written beside it first: the users file a `users.file` names.
 */
export async function startGateway (scope: Scope, config: Record<string, any>, files: Record<string, string> = {}): Promise<Gateway> {
  const port = await freePort()
  const listen = { ...(config.listen ?? {}), host: '127.0.0.1', port }
  const admin = config.admin !== undefined ? { ...config.admin, host: '127.0.0.1', port: await freePort() } : undefined
  for (const [name, text] of Object.entries(files)) {
    if (name !== basename(name)) throw new Error(`${name}: a file beside the config is a plain file name here`)
    scope.file(name, text)
  }
  const file = scope.file('gateway.json', JSON.stringify({ ...config, listen, admin }, null, 2))
  const ops = await checkedOps(file)
  const proc = new Proc(scope, 'gateway', process.execPath, [MAIN, '--config', file])
  await waitPort(port, proc)
  if (admin !== undefined) await waitPort(admin.port, proc)
  const reload = async (): Promise<string | undefined> => {
    const from = proc.lines.length
    proc.child.kill('SIGHUP')
    return await proc.waitLine(/"msg":"config reload/, 15_000, from)
  }
  const adminUrl = `http://127.0.0.1:${admin?.port ?? port}`
  const metric = async (name: string, labels?: Record<string, string>): Promise<number | undefined> => {
    const res = await fetch(`${adminUrl}/metrics`)
    return seriesValue(await res.text(), name, labels)
  }
  const proxies = async (user?: string): Promise<ProxyView[]> =>
    (await getJson(`${adminUrl}/proxies${user !== undefined ? `/${encodeURIComponent(user)}` : ''}`)).proxies
  return { proc, port, path: listen.path ?? '/handler', addr: `127.0.0.1:${port}`, dir: scope.dir, ops, adminUrl, reload, metric, proxies }
}

/** The ops of check's last line (`frps.toml:   ops = [...]`): frps is configured with the gateway's own word for them. */
async function checkedOps (file: string): Promise<string[]> {
  const { stdout } = await promisify(execFile)(process.execPath, [MAIN, 'check', '--config', file])
  const ops = /^frps\.toml: +ops = (\[[^\]]*\])/m.exec(stdout)
  if (ops === null && !stdout.includes('(no op needs the gateway)')) throw new Error(`check printed no ops line:\n${stdout}`)
  return ops === null ? [] : JSON.parse(ops[1]) as string[]
}

// ---- frp ----

export interface FrpVersion { dir: string, version: string, ini: boolean }

export async function detectFrp (dir: string): Promise<FrpVersion> {
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn(join(dir, 'frps'), ['-v'])
    let text = ''
    child.stdout.on('data', d => { text += String(d) })
    child.on('error', reject)
    child.on('close', () => resolve(text.trim()))
  })
  const match = /^v?(\d+)\.(\d+)\.(\d+)/.exec(out)
  if (match === null) throw new Error(`${join(dir, 'frps')} -v printed ${JSON.stringify(out)}, not a version`)
  const [major, minor] = [Number(match[1]), Number(match[2])]
  // frp 0.52 moved to TOML (INI still read, but deprecated)
  return { dir, version: `${match[1]}.${match[2]}.${match[3]}`, ini: major === 0 && minor < 52 }
}

export interface PluginRef { name: string, addr: string, path: string, ops: string[] }

// frps's dashboard (webServer) login
const DASHBOARD = { user: 'admin', password: 'e2e' }

export interface Frps { proc: Proc, bindPort: number, vhostHTTPPort: number, webPort: number, subdomainHost: string }

/**
 * frps on free ports, calling the plugins in the order given (INI: frps's own, random, order); its dashboard
 * on `webPort` when given (a gateway started before it reads it).
 */
export async function startFrps (scope: Scope, frp: FrpVersion, plugins: PluginRef[], webPort?: number): Promise<Frps> {
  const [bindPort, vhostHTTPPort] = [await freePort(), await freePort()]
  webPort ??= await freePort()
  const subdomainHost = 'frps.test'
  const text = frp.ini
    ? [
        '[common]', 'bind_addr = 127.0.0.1', `bind_port = ${bindPort}`, `vhost_http_port = ${vhostHTTPPort}`,
        `subdomain_host = ${subdomainHost}`, `token = ${TOKEN}`,
        'dashboard_addr = 127.0.0.1', `dashboard_port = ${webPort}`, `dashboard_user = ${DASHBOARD.user}`, `dashboard_pwd = ${DASHBOARD.password}`,
        ...plugins.flatMap(p => ['', `[plugin.${p.name}]`, `addr = ${p.addr}`, `path = ${p.path}`, `ops = ${p.ops.join(',')}`])
      ].join('\n')
    : [
        'bindAddr = "127.0.0.1"', `bindPort = ${bindPort}`, `vhostHTTPPort = ${vhostHTTPPort}`,
        `subDomainHost = "${subdomainHost}"`, `auth.token = "${TOKEN}"`,
        'webServer.addr = "127.0.0.1"', `webServer.port = ${webPort}`, `webServer.user = "${DASHBOARD.user}"`, `webServer.password = "${DASHBOARD.password}"`,
        ...plugins.flatMap(p => ['', '[[httpPlugins]]', `name = "${p.name}"`, `addr = "${p.addr}"`, `path = "${p.path}"`,
          `ops = [${p.ops.map(op => `"${op}"`).join(', ')}]`])
      ].join('\n')
  const file = scope.file(frp.ini ? 'frps.ini' : 'frps.toml', text + '\n')
  const proc = new Proc(scope, 'frps', join(frp.dir, 'frps'), ['-c', file])
  await waitPort(bindPort, proc)
  return { proc, bindPort, vhostHTTPPort, webPort, subdomainHost }
}

/** frps's dashboard on webPort, as the gateway's `registry.frpsApi` reads it */
export const frpsApi = (webPort: number): { url: string, user: string, password: string } => ({ url: `http://127.0.0.1:${webPort}`, ...DASHBOARD })

/** The proxies frps's own dashboard API lists as online, by type: what is really open. */
export async function onlineProxies (frps: Frps, type: string): Promise<string[]> {
  const res = await fetch(`http://127.0.0.1:${frps.webPort}/api/proxy/${type}`, { headers: { authorization: `Basic ${Buffer.from(`${DASHBOARD.user}:${DASHBOARD.password}`).toString('base64')}` } })
  const body = await res.json() as { proxies?: Array<{ name: string, status: string }> | null }
  return (body.proxies ?? []).filter(p => p.status === 'online').map(p => p.name).sort()
}

export interface ProxySpec {
  name: string
  type: 'tcp' | 'http' | 'stcp'
  localPort: number
  /** stcp: the secret a visitor presents */
  sk?: string
  remotePort?: number
  encryption?: boolean
  compression?: boolean
  customDomains?: string[]
  subdomain?: string
  metas?: Record<string, string>
}

export interface ClientSpec {
  user?: string
  metas?: Record<string, string>
  proxies?: ProxySpec[]
  /** stcp visitors: a local port that reaches the client's own user's proxy `serverName` */
  visitors?: Array<{ name: string, serverName: string, sk: string, bindPort: number, encryption?: boolean }>
  /** false: frpc retries a refused login (default here: true, frpc exits) */
  loginFailExit?: boolean
  /** seconds between heartbeats (frpc >= 0.58 sends none unless set): each one is a Ping to frps's plugins */
  heartbeatInterval?: number
  /** where frpc connects instead of frps's bindPort (a relay in between) */
  serverPort?: number
}

const tomlValue = (v: unknown): string => Array.isArray(v) ? `[${v.map(tomlValue).join(', ')}]` : typeof v === 'string' ? JSON.stringify(v) : String(v)

function clientConfig (frp: FrpVersion, frps: Frps, spec: ClientSpec): string {
  const proxies = spec.proxies ?? []
  if (frp.ini) {
    const lines = ['[common]', 'server_addr = 127.0.0.1', `server_port = ${spec.serverPort ?? frps.bindPort}`, `token = ${TOKEN}`, `login_fail_exit = ${spec.loginFailExit ?? true}`]
    if (spec.user !== undefined) lines.push(`user = ${spec.user}`)
    if (spec.heartbeatInterval !== undefined) lines.push(`heartbeat_interval = ${spec.heartbeatInterval}`)
    for (const [k, v] of Object.entries(spec.metas ?? {})) lines.push(`meta_${k} = ${v}`)
    for (const p of proxies) {
      lines.push('', `[${p.name}]`, `type = ${p.type}`, 'local_ip = 127.0.0.1', `local_port = ${p.localPort}`)
      if (p.remotePort !== undefined) lines.push(`remote_port = ${p.remotePort}`)
      if (p.encryption !== undefined) lines.push(`use_encryption = ${p.encryption}`)
      if (p.compression !== undefined) lines.push(`use_compression = ${p.compression}`)
      if (p.customDomains !== undefined) lines.push(`custom_domains = ${p.customDomains.join(',')}`)
      if (p.subdomain !== undefined) lines.push(`subdomain = ${p.subdomain}`)
      if (p.sk !== undefined) lines.push(`sk = ${p.sk}`)
      for (const [k, v] of Object.entries(p.metas ?? {})) lines.push(`meta_${k} = ${v}`)
    }
    for (const v of spec.visitors ?? []) {
      lines.push('', `[${v.name}]`, 'type = stcp', 'role = visitor', `server_name = ${v.serverName}`, `sk = ${v.sk}`,
        'bind_addr = 127.0.0.1', `bind_port = ${v.bindPort}`)
      if (v.encryption !== undefined) lines.push(`use_encryption = ${v.encryption}`)
    }
    return lines.join('\n') + '\n'
  }
  const lines = ['serverAddr = "127.0.0.1"', `serverPort = ${spec.serverPort ?? frps.bindPort}`, `auth.token = "${TOKEN}"`, `loginFailExit = ${spec.loginFailExit ?? true}`]
  if (spec.user !== undefined) lines.push(`user = ${tomlValue(spec.user)}`)
  if (spec.heartbeatInterval !== undefined) lines.push(`transport.heartbeatInterval = ${spec.heartbeatInterval}`)
  for (const [k, v] of Object.entries(spec.metas ?? {})) lines.push(`metadatas.${k} = ${tomlValue(v)}`)
  for (const p of proxies) {
    lines.push('', '[[proxies]]', `name = ${tomlValue(p.name)}`, `type = "${p.type}"`, 'localIP = "127.0.0.1"', `localPort = ${p.localPort}`)
    if (p.remotePort !== undefined) lines.push(`remotePort = ${p.remotePort}`)
    if (p.encryption !== undefined) lines.push(`transport.useEncryption = ${p.encryption}`)
    if (p.compression !== undefined) lines.push(`transport.useCompression = ${p.compression}`)
    if (p.customDomains !== undefined) lines.push(`customDomains = ${tomlValue(p.customDomains)}`)
    if (p.subdomain !== undefined) lines.push(`subdomain = ${tomlValue(p.subdomain)}`)
    if (p.sk !== undefined) lines.push(`secretKey = ${tomlValue(p.sk)}`)
    for (const [k, v] of Object.entries(p.metas ?? {})) lines.push(`metadatas.${k} = ${tomlValue(v)}`)
  }
  for (const v of spec.visitors ?? []) {
    lines.push('', '[[visitors]]', `name = ${tomlValue(v.name)}`, 'type = "stcp"', `serverName = ${tomlValue(v.serverName)}`,
      `secretKey = ${tomlValue(v.sk)}`, 'bindAddr = "127.0.0.1"', `bindPort = ${v.bindPort}`)
    if (v.encryption !== undefined) lines.push(`transport.useEncryption = ${v.encryption}`)
  }
  return lines.join('\n') + '\n'
}

let clients = 0

export class Frpc extends Proc {
  constructor (scope: Scope, frp: FrpVersion, frps: Frps, readonly spec: ClientSpec) {
    const n = ++clients
    const file = scope.file(`frpc-${n}.${frp.ini ? 'ini' : 'toml'}`, clientConfig(frp, frps, spec))
    super(scope, `frpc#${n}${spec.user !== undefined ? `(${spec.user})` : ''}`, join(frp.dir, 'frpc'), ['-c', file])
  }

  /** frps names a proxy `user.name` when the client has a user */
  proxyName (name: string): string { return this.spec.user !== undefined ? `${this.spec.user}.${name}` : name }

  /** 'ok', or the reason frpc printed for a refused login ('exited' / 'timeout' when it printed neither) */
  async login (timeoutMs = 10_000): Promise<string> {
    const line = await this.waitLine(/login to (the )?server (success|failed)|connect to server error/, timeoutMs)
    if (line === undefined) return this.running ? 'timeout' : 'exited'
    if (/login to (the )?server success/.test(line)) return 'ok'
    return /(?:failed|error): (.*?)(?:\. With loginFailExit.*)?$/.exec(line)?.[1] ?? line
  }

  /** 'ok' for `start proxy success`, else the reason of `start error` ('timeout' when neither came) */
  async proxy (name: string, timeoutMs = 10_000): Promise<string> {
    const tag = `[${this.proxyName(name)}]`
    const line = await this.waitLine(new RegExp(`${escapeRegExp(tag)} (start proxy success|start error: )`), timeoutMs)
    if (line === undefined) return 'timeout'
    return line.includes('start proxy success') ? 'ok' : line.slice(line.indexOf('start error: ') + 'start error: '.length)
  }
}

export const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')

// ---- local services and visitors ----

export interface Echo {
  port: number
  /** connections accepted so far */
  connections: () => number
  /** how the bytes a visitor sent arrived at the service (on a connection after the first `since`): 'intact' or what arrived instead */
  arrived: (sent: Buffer, since: number) => string
}

/**
 * A TCP echo service on 127.0.0.1 that keeps what each connection received. An echo alone cannot show a stream
 * that only frps encrypts: the ciphertext it echoes is decrypted again on the way back.
 */
export async function startEcho (scope: Scope): Promise<Echo> {
  const sockets = new Set<net.Socket>()
  const received: Buffer[][] = []
  const server = net.createServer(socket => {
    const chunks: Buffer[] = []
    received.push(chunks)
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    socket.on('data', (chunk: Buffer) => { chunks.push(chunk); socket.write(chunk) })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  scope.defer(() => { for (const s of sockets) s.destroy(); server.close() })
  const arrived = (sent: Buffer, since: number): string => {
    const data = received.slice(since).map(chunks => Buffer.concat(chunks))
    if (data.some(d => d.equals(sent))) return 'intact'
    const longest = data.reduce((a, b) => b.length > a.length ? b : a, Buffer.alloc(0))
    return `the local service received ${longest.length} bytes for the ${sent.length} sent, ` +
      `${differing(sent, longest)} of the first ${Math.min(sent.length, longest.length)} differing`
  }
  return { port: (server.address() as AddressInfo).port, connections: () => received.length, arrived }
}

export interface Relay {
  port: number
  /**
   * Closes the client's side of every connection and keeps the server's side open, as a network that drops a
   * client's connection without a word to the server: frpc logs in again while frps still holds its old session.
   */
  cutClients: () => void
}

/** A TCP relay on 127.0.0.1 to `target`. */
export async function startRelay (scope: Scope, target: number): Promise<Relay> {
  const pairs = new Set<[net.Socket, net.Socket]>()
  const server = net.createServer(client => {
    const upstream = net.connect(target, '127.0.0.1')
    const pair: [net.Socket, net.Socket] = [client, upstream]
    pairs.add(pair)
    for (const socket of pair) socket.on('error', () => {})
    client.pipe(upstream)
    upstream.pipe(client)
    client.on('close', () => { if (pairs.has(pair)) upstream.destroy() })
    upstream.on('close', () => { pairs.delete(pair); client.destroy() })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const kept: net.Socket[] = []
  scope.defer(() => { for (const [a, b] of pairs) { a.destroy(); b.destroy() } for (const s of kept) s.destroy(); server.close() })
  const cutClients = (): void => {
    for (const pair of pairs) {
      const [client, upstream] = pair
      pairs.delete(pair)
      upstream.unpipe(client)
      client.unpipe(upstream)
      upstream.pause()
      kept.push(upstream)
      client.destroy()
    }
  }
  return { port: (server.address() as AddressInfo).port, cutClients }
}

/** An HTTP service on 127.0.0.1 answering every GET with `body` (a random page, so a page is known to have come from it). */
export async function startWeb (scope: Scope): Promise<{ port: number, body: string, requests: http.IncomingHttpHeaders[] }> {
  const body = `<html><body>e2e page ${randomBytes(12).toString('hex')}</body></html>\n`.repeat(40)
  const requests: http.IncomingHttpHeaders[] = []
  const server = http.createServer((req, res) => {
    requests.push(req.headers)
    res.writeHead(200, { 'content-type': 'text/html' }).end(body)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  scope.defer(() => { server.closeAllConnections(); server.close() })
  return { port: (server.address() as AddressInfo).port, body, requests }
}

/**
 * What a visitor of a tcp proxy got back for random bytes sent to the echo service: 'intact' (back unchanged,
 * and received unchanged by the service) or what went wrong.
 */
export async function echoThrough (port: number, echo?: Echo, size = 64 * 1024, timeoutMs = 5000): Promise<string> {
  const sent = randomBytes(size)
  const since = echo?.connections() ?? 0
  return await new Promise<string>(resolve => {
    const chunks: Buffer[] = []
    let got = 0
    const socket = net.connect(port, '127.0.0.1')
    const finish = (why: string): void => {
      clearTimeout(timer)
      socket.destroy()
      const received = Buffer.concat(chunks)
      if (why === 'complete') {
        const back = received.subarray(0, size).equals(sent) ? 'intact' : `${differing(sent, received)} of ${size} bytes back differ`
        const there = echo?.arrived(sent, since) ?? 'intact'
        resolve(back === 'intact' && there === 'intact' ? 'intact' : `${back === 'intact' ? 'the same bytes back' : back}; ${there}`)
      } else {
        resolve(`${why} after ${got} of ${size} bytes${got > 0 ? ` (${differing(sent, received)} of them differ)` : ''}`)
      }
    }
    const timer = setTimeout(() => finish('timed out'), timeoutMs)
    socket.on('connect', () => socket.write(sent))
    socket.on('data', (chunk: Buffer) => { chunks.push(chunk); got += chunk.length; if (got >= size) finish('complete') })
    socket.on('error', err => finish(`error ${(err as NodeJS.ErrnoException).code ?? err.message}`))
    socket.on('close', () => finish('closed'))
  })
}

function differing (a: Buffer, b: Buffer): number {
  let n = 0
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) n++
  return n
}

/** GET / through frps's vhost port with a Host header: the status and body a browser would see. */
export async function getThrough (port: number, host: string, timeoutMs = 5000): Promise<{ status: number, body: string }> {
  return await new Promise(resolve => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', headers: { host }, timeout: timeoutMs, agent: false }, res => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', d => { body += String(d) })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      res.on('error', err => resolve({ status: -1, body: err.message }))
    })
    req.on('timeout', () => req.destroy(new Error('timed out')))
    req.on('error', err => resolve({ status: -1, body: err.message }))
  })
}

// ---- downstream plugins (what `forward` recipes call) ----

export interface Call { op: string, content: Record<string, any>, headers: http.IncomingHttpHeaders, url: string }
export type Answer = (call: Call) => Record<string, unknown>

export interface Plugin { url: string, addr: string, calls: Call[], answer: Answer, close: () => void }

/** A real frps server plugin on 127.0.0.1 that records every call and answers with `answer` (default: unchanged). */
export async function startPlugin (scope: Scope, path = '/handler', tls?: { cert: string, key: string }): Promise<Plugin> {
  const calls: Call[] = []
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    let text = ''
    req.setEncoding('utf8')
    req.on('data', d => { text += String(d) })
    req.on('end', () => {
      let call: Call
      try {
        const body = JSON.parse(text)
        call = { op: body.op, content: body.content, headers: req.headers, url: req.url ?? '' }
      } catch {
        res.writeHead(400).end()
        return
      }
      calls.push(call)
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(plugin.answer(call)))
    })
  }
  const server = tls !== undefined ? https.createServer(tls, onRequest) : http.createServer(onRequest)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const close = (): void => { server.closeAllConnections(); server.close() }
  scope.defer(close)
  const origin = `${tls !== undefined ? 'https' : 'http'}://127.0.0.1:${(server.address() as AddressInfo).port}`
  const plugin: Plugin = { url: origin + path, addr: origin.replace('http://', ''), calls, answer: () => ({ reject: false, unchange: true }), close }
  return plugin
}


// ---- chat webhooks (what `notify` recipes post to) ----

export interface Receiver { url: string, posts: Array<Record<string, any>> }

/** A webhook receiver on 127.0.0.1 that records every JSON body POSTed to it and answers 200 (as Slack's `ok`). */
export async function startReceiver (scope: Scope, path = '/'): Promise<Receiver> {
  const posts: Array<Record<string, any>> = []
  const server = http.createServer((req, res) => {
    let text = ''
    req.setEncoding('utf8')
    req.on('data', d => { text += String(d) })
    req.on('end', () => {
      try {
        posts.push(JSON.parse(text))
      } catch {
        res.writeHead(400).end()
        return
      }
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok')
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  scope.defer(() => { server.closeAllConnections(); server.close() })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}${path}`, posts }
}
