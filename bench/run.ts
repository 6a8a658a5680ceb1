import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'

// npm run bench: every scenario side by side in one run, on this machine, each server in its own process.
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const DIST = fileURLToPath(new URL('../', import.meta.url))
const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '5' },
    connections: { type: 'string', default: '10' },
    out: { type: 'string', default: join(ROOT, 'bench', 'results.json') }
  }
})
const duration = Number(values.duration)
const connections = Number(values.connections)

const children: ChildProcess[] = []
process.on('exit', () => { for (const c of children) c.kill('SIGKILL') })

async function freePort (): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await new Promise(resolve => server.once('listening', resolve))
  const { port } = server.address() as { port: number }
  await new Promise(resolve => server.close(resolve))
  return port
}

async function waitUntil (what: string, ok: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await ok().catch(() => false)) return
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  throw new Error(`${what} did not come up`)
}

function start (args: string[]): ChildProcess {
  const child = spawn(args[0], args.slice(1), { stdio: ['ignore', 'ignore', 'inherit'] })
  children.push(child)
  return child
}

const answers = async (url: string) => (await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"op":"Ping","content":{}}' })).ok

async function server (kind: 'baseline' | 'downstream'): Promise<string> {
  const port = await freePort()
  start([process.execPath, join(DIST, 'bench', 'servers.js'), kind, String(port)])
  const url = `http://127.0.0.1:${port}`
  await waitUntil(kind, async () => await answers(`${url}/handler?op=Ping`))
  return url
}

async function gateway (chain: unknown[], extra: Record<string, unknown> = {}): Promise<{ url: string, child: ChildProcess }> {
  const port = await freePort()
  const file = join(mkdtempSync(join(tmpdir(), 'frpgw-bench-')), 'gateway.json')
  writeFileSync(file, JSON.stringify({ listen: { port }, log: { level: 'info' }, chain, ...extra }))
  const child = start([process.execPath, join(DIST, 'src', 'main.js'), '--config', file])
  const url = `http://127.0.0.1:${port}`
  await waitUntil('gateway', async () => (await fetch(`${url}/readyz`)).ok)
  return { url, child }
}

async function redis (): Promise<string> {
  const port = await freePort()
  start(['redis-server', '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'])
  const url = `redis://127.0.0.1:${port}`
  await waitUntil('redis-server', async () => await new Promise<boolean>(resolve => {
    spawn('redis-cli', ['-p', String(port), 'ping']).on('close', code => resolve(code === 0))
  }))
  return url
}

// Realistic frps bodies: a Login and a NewProxy recorded from frps 0.41.
const samples = readFileSync(join(ROOT, 'test', 'fixtures', 'frps-0.41.0-requests.jsonl'), 'utf8').trim().split('\n').map(l => JSON.parse(l))
const login = samples.find(s => s.body.op === 'Login')
const newProxy = samples.find(s => s.body.op === 'NewProxy' && s.body.content.proxy_type === 'tcp')
const requests = [login, newProxy].map(s => ({
  method: 'POST' as const,
  path: `/handler?${s.query as string}`,
  headers: s.headers as Record<string, string>,
  body: JSON.stringify(s.body)
}))

interface Row { scenario: string, connections: number, rps: number, p50: number, p99: number, ratio?: number, errors: number }

function percentile (sorted: Float64Array, p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]
}

/** autocannon against url; latencies kept in full (autocannon's own histogram rounds to whole ms). */
async function measure (scenario: string, url: string, conns = connections): Promise<Row> {
  const opts = { url, connections: conns, pipelining: 1, requests }
  await new Promise((resolve, reject) => { autocannon({ ...opts, duration: 1 }, err => err ? reject(err) : resolve(null)) })
  const latencies: number[] = []
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon({ ...opts, duration }, (err, res) => err ? reject(err) : resolve(res))
    instance.on('response', (_client, _status, _bytes, responseTime) => { latencies.push(responseTime) })
  })
  const sorted = Float64Array.from(latencies).sort()
  const row = {
    scenario,
    connections: conns,
    rps: Math.round(result.requests.total / duration),
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    errors: result.errors + result.timeouts + result.non2xx
  }
  process.stderr.write(`${scenario}: ${row.rps} req/s, p50 ${row.p50.toFixed(3)} ms, p99 ${row.p99.toFixed(3)} ms${row.errors > 0 ? `, ${row.errors} errors` : ''}\n`)
  return row
}

const NO_LIMIT = { limit: 1_000_000_000, window: '1s' }
const typicalChain = [
  { name: 'deny', plugin: 'reject', ops: ['Login', 'NewProxy'], when: { users: ['eve', 'mallory'] } },
  { name: 'ports', plugin: 'reject', ops: ['NewProxy'], when: { proxyTypes: ['tcp', 'udp'], not: { remotePorts: [0, '1024-65535'] } } },
  { name: 'tag', plugin: 'metas', ops: ['Login'], options: { set: { region: 'eu-1', login_ip: '{{client_ip}}' } } },
  { name: 'encrypt', plugin: 'rewrite', ops: ['NewProxy'], when: { proxyTypes: ['tcp'] }, options: { set: { use_encryption: true } } },
  { name: 'rate', plugin: 'rate-limit', options: { key: '{{op}}:{{user}}', store: 'memory', ...NO_LIMIT } }
]

async function main (): Promise<void> {
  const rows: Row[] = []
  const baseline = await measure('baseline: bare fastify route', await server('baseline'))
  rows.push(baseline)
  rows.push(await measure('gateway, empty chain', (await gateway([])).url))
  rows.push(await measure('gateway, typical chain (memory rate-limit)', (await gateway(typicalChain)).url))
  const redisUrl = await redis()
  rows.push(await measure('gateway, Redis rate-limit', (await gateway([{ name: 'rate', plugin: 'rate-limit', options: { key: '{{op}}:{{user}}', ...NO_LIMIT } }], { redis: { url: redisUrl } })).url))
  const downstream = await server('downstream')
  const forwarding = (await gateway([{ name: 'auth', plugin: 'forward', options: { url: `${downstream}/handler` } }])).url
  rows.push(await measure('downstream plugin, called directly', downstream))
  rows.push(await measure('gateway, forward to that downstream', forwarding))
  const direct1 = await measure('downstream plugin, called directly', downstream, 1)
  const forward1 = await measure('gateway, forward to that downstream', forwarding, 1)
  rows.push(direct1, forward1)
  for (const row of rows) row.ratio = row.rps / baseline.rps

  const machine = `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, Node.js ${process.version}`
  const forwardAddedMs = forward1.p50 - direct1.p50
  const table = [
    `machine: ${machine}; ${duration} s per scenario after 1 s of warm-up`,
    '',
    '| scenario | conns | req/s | p50 ms | p99 ms | ratio to baseline |',
    '|---|---:|---:|---:|---:|---:|',
    ...rows.map(r => `| ${r.scenario} | ${r.connections} | ${r.rps} | ${r.p50.toFixed(3)} | ${r.p99.toFixed(3)} | ${(r.ratio ?? 0).toFixed(2)} |`),
    '',
    `forward: p50 added over calling the downstream directly (1 connection): ${forwardAddedMs.toFixed(3)} ms`
  ].join('\n')
  process.stdout.write(`${table}\n`)
  writeFileSync(values.out, `${JSON.stringify({ machine, duration, connections, rows, forwardAddedMs }, null, 2)}\n`)
  const failed = rows.filter(r => r.errors > 0)
  if (failed.length > 0) {
    process.stderr.write(`errors in: ${failed.map(r => r.scenario).join(', ')}\n`)
    process.exitCode = 1
  }
}

main().catch(err => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`)
  process.exitCode = 1
}).finally(() => { for (const c of children) c.kill('SIGTERM') })
