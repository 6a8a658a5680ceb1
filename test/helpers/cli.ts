import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

// npm test builds first (pretest): the CLI is tested as users run it, from dist.
export const MAIN = fileURLToPath(new URL('../../dist/src/main.js', import.meta.url))
export const ROOT = fileURLToPath(new URL('../../', import.meta.url))

// tap's NODE_OPTIONS would load its coverage hooks into every child and slow each start by seconds
function childEnv (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = { ...process.env, ...extra }
  delete env.NODE_OPTIONS
  return env
}

/** `lingerMs`: from the last output to the exit */
export interface CliResult { code: number | null, stdout: string, stderr: string, lingerMs: number }

/** `spawned` is given the child at once. */
export async function runCli (args: string[], opts: { stdin?: string, env?: NodeJS.ProcessEnv, cwd?: string, spawned?: (child: ChildProcess) => void } = {}): Promise<CliResult> {
  const child = spawn(process.execPath, [MAIN, ...args], { cwd: opts.cwd ?? ROOT, env: childEnv(opts.env) })
  opts.spawned?.(child)
  let stdout = ''
  let stderr = ''
  let lastOutput = Date.now()
  // decoded as streams: a character split between two chunks stays one
  child.stdout.setEncoding('utf8')
  child.stderr.setEncoding('utf8')
  child.stdout.on('data', d => { stdout += String(d); lastOutput = Date.now() })
  child.stderr.on('data', d => { stderr += String(d); lastOutput = Date.now() })
  child.stdin.end(opts.stdin ?? '')
  const code = await new Promise<number | null>(resolve => child.on('close', resolve))
  return { code, stdout, stderr, lingerMs: Date.now() - lastOutput }
}

/** Writes a config object to a temporary file and answers its path. */
export function configFile (config: unknown, name = 'gateway.json'): string {
  const file = join(mkdtempSync(join(tmpdir(), 'frpgw-')), name)
  writeFileSync(file, typeof config === 'string' ? config : JSON.stringify(config, null, 2))
  return file
}

export interface Served {
  child: ChildProcess
  /** the RPC listener's origin (its path is the config's listen.path) */
  url: string
  /** the origin of every listener, in the order they came up (the RPC one first, then admin) */
  urls: string[]
  lines: Array<Record<string, any>>
  exited: Promise<number | null>
}

/**
 * Starts the gateway as a child process and resolves once its listeners are up (ports are read from its start-up lines);
 * `spawned` is given the child at once, to signal it while it starts.
 */
export async function serveCli (args: string[], t: { teardown: (fn: () => unknown) => void }, listeners = 1, spawned?: (child: ChildProcess) => void): Promise<Served> {
  const child = spawn(process.execPath, [MAIN, ...args], { cwd: ROOT, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
  spawned?.(child)
  const exited = new Promise<number | null>(resolve => child.on('exit', code => resolve(code)))
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const lines: Array<Record<string, any>> = []
  let buffer = ''
  let stderr = ''
  child.stdout.setEncoding('utf8')
  child.stderr.setEncoding('utf8')
  child.stderr.on('data', d => { stderr += String(d) })
  const urls: string[] = []
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', d => {
      buffer += String(d)
      let nl
      while ((nl = buffer.indexOf('\n')) !== -1) {
        const line = JSON.parse(buffer.slice(0, nl))
        buffer = buffer.slice(nl + 1)
        lines.push(line)
        if (typeof line.listener === 'string' && urls.push(new URL(line.url).origin) === listeners) resolve()
      }
    })
    void exited.then(code => reject(new Error(`gateway exited with ${String(code)} before listening: ${stderr}`)))
  })
  return { child, url: urls[0], urls, lines, exited }
}
