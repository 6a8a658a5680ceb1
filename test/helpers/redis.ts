import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { freePort } from '../../bench/procs.js'
import type { TestCerts } from './tls.js'

export { freePort }

interface Teardown { teardown(fn: () => unknown): void }

export interface RedisServer {
  port: number
  url: string
  /** SIGTERM (SIGKILL after 3 s) and wait for exit */
  stop(): Promise<void>
  /** restart on the same port and wait until it answers PING */
  start(): Promise<void>
  /** SIGSTOP (true) or SIGCONT (false): connections stay open and nothing is answered */
  pause(paused: boolean): void
  /** redis-cli against it, with its credentials */
  cli(...args: string[]): Promise<string>
}

/** Credentials a server requires: requirepass (user undefined) or an ACL user (the default user then off). */
export interface ServerAuth { user?: string; password: string }

/** What a client needs to reach a server: its credentials, and with tls the only port is TLS (certificates of makeCerts). */
export interface ServerAccess { auth?: ServerAuth; tls?: TestCerts }

export interface RedisClusterHandle {
  nodes: { host: string; port: number }[]
  /** the node processes, in the order of nodes */
  servers: RedisServer[]
  urls: string[]
  stop(): Promise<void>
}

// last resort if a test process exits without running its teardowns
const live = new Set<ChildProcess>()
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL')
})

export function redisCli(port: number, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 60_000 }, (err, stdout) =>
      err ? reject(err) : resolve(stdout))
  })
}

export async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check().catch(() => false)) return
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

class RedisProcess implements RedisServer {
  readonly url: string
  #child: ChildProcess | undefined

  constructor(readonly port: number, private readonly argv: string[], private readonly access: ServerAccess) {
    const { auth, tls } = access
    this.url = `redis${tls === undefined ? '' : 's'}://${auth === undefined ? '' : `${auth.user ?? ''}:${auth.password}@`}127.0.0.1:${port}`
  }

  cli(...args: string[]): Promise<string> {
    const { auth, tls } = this.access
    return redisCli(this.port, ...cliAuth(auth), ...(tls === undefined ? [] : ['--tls', '--cacert', tls.caFile]), ...args)
  }

  async start(): Promise<void> {
    if (this.#child) throw new Error(`redis-server on ${this.port} is already running`)
    const child = spawn('redis-server', this.argv, { stdio: 'ignore' })
    this.#child = child
    live.add(child)
    child.once('exit', () => live.delete(child))
    await once(child, 'spawn')
    const ended = (): boolean => child.exitCode !== null || child.signalCode !== null
    // its own process_id: another server on the port (which this one then failed to bind) would answer PING too
    await waitFor(`redis-server on ${this.port}`, async () => ended() || (await this.cli('INFO', 'server')).includes(`process_id:${child.pid}\r`))
    if (ended()) {
      this.#child = undefined
      throw new ExitedEarly(`redis-server on ${this.port} exited with ${child.exitCode ?? child.signalCode} before answering`)
    }
  }

  pause(paused: boolean): void {
    this.#child?.kill(paused ? 'SIGSTOP' : 'SIGCONT')
  }

  async stop(): Promise<void> {
    const child = this.#child
    this.#child = undefined
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const exited = once(child, 'exit')
    child.kill('SIGCONT')
    child.kill('SIGTERM')
    const killer = setTimeout(() => child.kill('SIGKILL'), 3000)
    await exited
    clearTimeout(killer)
  }
}

/** redis-cli's arguments for a server started with credentials */
const cliAuth = (auth?: ServerAuth): string[] =>
  auth === undefined ? [] : [...(auth.user === undefined ? [] : ['--user', auth.user]), '-a', auth.password, '--no-auth-warning']

/** The config lines (or redis-server arguments, one word each) that make a server require auth. */
const authLines = (auth?: ServerAuth): string[][] => {
  if (auth === undefined) return []
  if (auth.user === undefined) return [['requirepass', auth.password]]
  return [['user', 'default', 'off'], ['user', auth.user, 'on', `>${auth.password}`, '~*', '&*', '+@all']]
}

/**
 * redis-server arguments that make `port` TLS only; after the others, since the last --port wins. Its
 * outgoing connections (a Sentinel's to the master) are TLS too.
 */
const tlsArgs = (port: number, tls?: TestCerts): string[] => {
  if (tls === undefined) return []
  const dir = dirname(tls.caFile)
  return ['--port', '0', '--tls-port', String(port), '--tls-cert-file', join(dir, 'server.pem'), '--tls-key-file', join(dir, 'server.key'),
    '--tls-ca-cert-file', tls.caFile, '--tls-auth-clients', 'no', '--tls-replication', 'yes']
}

/** redis-server ended before it answered: most often the port, free a moment before, was taken meanwhile (by another test's outgoing connection) */
class ExitedEarly extends Error {}

async function launch(t: Teardown | undefined, argv: (port: number, dir: string) => Promise<string[]>, access: ServerAccess = {}): Promise<RedisServer> {
  const dir = await mkdtemp(join(tmpdir(), 'frpgw-redis-'))
  const tried: RedisProcess[] = []
  t?.teardown(async () => {
    for (const server of tried) await server.stop()
    await rm(dir, { recursive: true, force: true })
  })
  for (let attempt = 1; ; attempt++) {
    const port = await freePort()
    const server = new RedisProcess(port, [...await argv(port, dir), ...tlsArgs(port, access.tls)], access)
    tried.push(server)
    try {
      await server.start()
      return server
    } catch (err) {
      if (!(err instanceof ExitedEarly) || attempt === 3) throw err
    }
  }
}

const serverArgv = (port: number, dir: string, ...extra: string[]): string[] =>
  ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...extra]

/** With auth, it requires that password (requirepass), or that ACL user with the default user off. */
export function startRedis(t?: Teardown, access: ServerAccess = {}): Promise<RedisServer> {
  return launch(t, async (port, dir) => serverArgv(port, dir, ...authLines(access.auth).flatMap(([key, ...values]) => [`--${key}`, ...values])), access)
}

export interface SentinelOptions {
  /** fail over that soon after the master stops answering */
  downAfterMs?: number
  /** what the Sentinel gives the master (sentinel auth-user, auth-pass) */
  masterAuth?: ServerAuth
  /** what the Sentinel requires of its own clients */
  auth?: ServerAuth
  /** TLS only, to its clients and to the master */
  tls?: TestCerts
}

/** A Sentinel with quorum 1 that monitors `master` under `name`. */
export function startSentinel(t: Teardown | undefined, master: RedisServer, name: string, { downAfterMs, masterAuth, auth, tls }: SentinelOptions = {}): Promise<RedisServer> {
  return launch(t, async (port, dir) => {
    const conf = join(dir, 'sentinel.conf')
    const lines = [['sentinel', 'monitor', name, '127.0.0.1', String(master.port), '1'], ...authLines(auth)]
    if (downAfterMs !== undefined) lines.push(['sentinel', 'down-after-milliseconds', name, String(downAfterMs)], ['sentinel', 'failover-timeout', name, String(downAfterMs * 4)])
    if (masterAuth?.user !== undefined) lines.push(['sentinel', 'auth-user', name, masterAuth.user])
    if (masterAuth !== undefined) lines.push(['sentinel', 'auth-pass', name, masterAuth.password])
    await writeFile(conf, lines.map(line => `${line.join(' ')}\n`).join(''))
    return [conf, '--sentinel', '--port', String(port), '--bind', '127.0.0.1', '--dir', dir]
  }, { auth, tls })
}

/** 3 masters, no replicas; resolves once every node reports cluster_state:ok. With a password, every node requires it (urls carry it). */
export async function startRedisCluster(t?: Teardown, { password }: { password?: string } = {}): Promise<RedisClusterHandle> {
  const servers: RedisServer[] = []
  const secured = password === undefined ? [] : ['--requirepass', password, '--masterauth', password]
  for (let i = 0; i < 3; i++) {
    // explicit bus port: the default port + 10000 can be past 65535 for an ephemeral port
    servers.push(await launch(t, async (port, dir) =>
      serverArgv(port, dir, '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-port', String(await freePort()), ...secured), { auth: password === undefined ? undefined : { password } }))
  }
  const nodes = servers.map(s => ({ host: '127.0.0.1', port: s.port }))
  await servers[0].cli('--cluster', 'create', ...nodes.map(n => `${n.host}:${n.port}`), '--cluster-replicas', '0', '--cluster-yes')
  for (const s of servers) {
    await waitFor(`cluster_state:ok on ${s.port}`, async () => (await s.cli('CLUSTER', 'INFO')).includes('cluster_state:ok'), 30_000)
  }
  return { nodes, servers, urls: servers.map(s => s.url), stop: async () => { await Promise.all(servers.map(s => s.stop())) } }
}
