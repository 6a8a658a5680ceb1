import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createServer } from 'node:net'
import { parseArgs, type ParseArgsConfig } from 'node:util'

// Child processes and ports for `npm run bench` and `npm run soak`.

/**
 * Ports this process was handed already: the kernel may hand out a port just closed again, so two
 * asked one after another could be one (frps's bind and dashboard ports were, in an e2e run).
 */
const handedOut = new Set<number>()

/** A port free on 127.0.0.1 now, and not one this process was handed before. */
export async function freePort (): Promise<number> {
  for (let i = 0; i < 1000; i++) {
    const server = createServer().listen(0, '127.0.0.1')
    await once(server, 'listening')
    const { port } = server.address() as { port: number }
    server.close()
    await once(server, 'close')
    if (!handedOut.has(port)) {
      handedOut.add(port)
      return port
    }
  }
  throw new Error('no free port this process was not handed before, in 1000 tries')
}

export async function waitUntil (what: string, ok: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await ok().catch(() => false)) return
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  throw new Error(`${what} did not come up`)
}

export const redisArgs = (port: number): string[] =>
  ['redis-server', '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']

export const redisAnswers = async (port: number): Promise<boolean> => await new Promise<boolean>(resolve => {
  spawn('redis-cli', ['-p', String(port), 'ping']).on('close', code => resolve(code === 0))
})

/**
 * Kills what `kill` names when this script ends, also by a signal (Ctrl-C, `timeout`): a bench
 * or soak stopped midway leaves no gateway or redis-server running on.
 */
export function killOnExit (kill: () => void): void {
  process.on('exit', kill)
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]] as const) {
    process.once(signal, () => process.exit(code))
  }
}

/** The Lua scripts (EVALSHA, EVAL) a Redis has run: what the gateway asked of it, whatever the scripts do inside. */
export function redisScripts (port: number): number {
  const stats = spawnSync('redis-cli', ['-p', String(port), 'info', 'commandstats'], { encoding: 'utf8' }).stdout
  return [...stats.matchAll(/^cmdstat_eval(?:sha)?:calls=(\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0)
}

/** A redis-server on one port that can be stopped and started again (the soak's outages). */
export class RedisProcess {
  child: ChildProcess | undefined
  constructor (readonly port: number) {}

  async start (): Promise<void> {
    const [cmd, ...args] = redisArgs(this.port)
    this.child = spawn(cmd, args, { stdio: 'ignore' })
    await waitUntil('redis-server', async () => await redisAnswers(this.port))
  }

  /** SIGSTOP (true) or SIGCONT (false): a Redis that holds its connections and answers nothing */
  pause (paused: boolean): void {
    this.child?.kill(paused ? 'SIGSTOP' : 'SIGCONT')
  }

  async stop (): Promise<void> {
    const child = this.child
    this.child = undefined
    if (child === undefined || child.exitCode !== null) return
    const exited = once(child, 'exit')
    child.kill('SIGCONT')
    child.kill('SIGTERM')
    await exited
  }
}

/** Exits 1 with one line when a program the bench or the soak runs is not on the PATH (spawn's ENOENT came as a stack, later). */
export function requirePrograms (script: string, programs: readonly string[]): void {
  const missing = programs.filter(program => spawnSync(program, ['--version']).error !== undefined)
  if (missing.length === 0) return
  process.stderr.write(`${script} needs ${missing.join(' and ')} on the PATH (Debian: apt-get install redis-server)\n`)
  process.exit(1)
}

/** why on one line, then the usage, exit 2 */
export function usageError (usage: string, why: string): never {
  process.stderr.write(`${why}\nusage: ${usage}\n`)
  process.exit(2)
}

/** The options of a bench script, or its usage on stderr and exit 2: a mistyped option is no stack trace. */
export function scriptArgs<T extends ParseArgsConfig['options']> (usage: string, options: T, valid: (values: ReturnType<typeof parseArgs<{ options: T }>>['values']) => boolean): ReturnType<typeof parseArgs<{ options: T }>>['values'] {
  const fail = (why: string): never => usageError(usage, why)
  try {
    const { values } = parseArgs({ options })
    if (!valid(values)) fail('an option is out of range')
    return values
  } catch (err) {
    return fail((err as Error).message)
  }
}
