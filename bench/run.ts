import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'
import { freePort, redisAnswers, redisArgs, waitUntil } from './procs.js'

// npm run bench: every scenario side by side in one run, on this machine, each server in its own process.
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const DIST = fileURLToPath(new URL('../', import.meta.url))
const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '3' },
    rounds: { type: 'string', default: '5' },
    only: { type: 'string' },
    connections: { type: 'string', default: '10' },
    'no-pin': { type: 'boolean', default: false },
    out: { type: 'string', default: join(ROOT, 'bench', 'results.json') }
  }
})
const duration = Number(values.duration)
const rounds = Number(values.rounds)
const connections = Number(values.connections)

// With two cores or more, the server under test gets a core of its own (1) and autocannon, Redis
// and the downstream plugin share another (0): otherwise the load generator, the server and its GC
// threads take turns on the same cores, and a ratio says as much about the scheduler as the server.
const UNDER_TEST = '1'
const BESIDE = '0'
const pinned = !values['no-pin'] && cpus().length >= 2 &&
  spawnSync('taskset', ['-a', '-cp', BESIDE, String(process.pid)], { stdio: 'ignore' }).status === 0

const children: ChildProcess[] = []
process.on('exit', () => { for (const c of children) c.kill('SIGKILL') })

function start (args: string[], cpu: string): ChildProcess {
  const argv = pinned ? ['taskset', '-c', cpu, ...args] : args
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'inherit'] })
  children.push(child)
  return child
}

const answers = async (url: string) => (await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"op":"Ping","content":{}}' })).ok

interface Server { url: string, pid?: number }

async function server (kind: 'baseline' | 'downstream'): Promise<Server> {
  const port = await freePort()
  const child = start([process.execPath, join(DIST, 'bench', 'servers.js'), kind, String(port)], kind === 'baseline' ? UNDER_TEST : BESIDE)
  const url = `http://127.0.0.1:${port}`
  await waitUntil(kind, async () => await answers(`${url}/handler?op=Ping`))
  return { url, pid: child.pid }
}

async function gateway (chain: unknown[], extra: Record<string, unknown> = {}): Promise<Server> {
  const port = await freePort()
  const file = join(mkdtempSync(join(tmpdir(), 'frpgw-bench-')), 'gateway.json')
  writeFileSync(file, JSON.stringify({ listen: { port }, log: { level: 'info' }, chain, ...extra }))
  const child = start([process.execPath, join(DIST, 'src', 'main.js'), '--config', file], UNDER_TEST)
  const url = `http://127.0.0.1:${port}`
  await waitUntil('gateway', async () => (await fetch(`${url}/readyz`)).ok)
  return { url, pid: child.pid }
}

// The server's own CPU time (user + system, all threads) from /proc: what one call costs it,
// whatever the load generator and the machine's drift did to the req/s.
const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100
function cpuSeconds (pid: number | undefined): number {
  if (pid === undefined) return NaN
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS
  } catch {
    return NaN
  }
}

async function redis (): Promise<string> {
  const port = await freePort()
  start(redisArgs(port), BESIDE)
  await waitUntil('redis-server', async () => await redisAnswers(port))
  return `redis://127.0.0.1:${port}`
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

interface Sample { rps: number, p50: number, p99: number, errors: number, cpuUs: number }
interface Row extends Sample { scenario: string, connections: number, ratio: number }

function percentile (sorted: Float64Array, p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

/** autocannon against url; latencies kept in full (autocannon's own histogram rounds to whole ms). */
const warmed = new Set<string>()

async function measure ({ url, pid }: Server, conns: number): Promise<Sample> {
  const opts = { url, connections: conns, pipelining: 1, requests }
  if (!warmed.has(`${url} ${conns}`)) {
    warmed.add(`${url} ${conns}`)
    await new Promise((resolve, reject) => { autocannon({ ...opts, duration: 2 }, err => err ? reject(err) : resolve(null)) })
  }
  const latencies: number[] = []
  const cpuBefore = cpuSeconds(pid)
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon({ ...opts, duration }, (err, res) => err ? reject(err) : resolve(res))
    instance.on('response', (_client, _status, _bytes, responseTime) => { latencies.push(responseTime) })
  })
  const cpuUs = (cpuSeconds(pid) - cpuBefore) * 1e6 / result.requests.total
  const sorted = Float64Array.from(latencies).sort()
  return {
    rps: result.requests.total / duration,
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    errors: result.errors + result.timeouts + result.non2xx,
    cpuUs
  }
}

const NO_LIMIT = { limit: 1, window: '4s', burst: 7_800_000 } // a bucket no bench run empties (near the largest the bounds allow)
const typicalChain = [
  { name: 'deny', plugin: 'reject', ops: ['Login', 'NewProxy'], when: { users: ['eve', 'mallory'] } },
  { name: 'ports', plugin: 'reject', ops: ['NewProxy'], when: { proxyTypes: ['tcp', 'udp'], not: { remotePorts: [0, '1024-65535'] } } },
  { name: 'tag', plugin: 'metas', ops: ['Login'], options: { set: { region: 'eu-1', login_ip: '{{client_ip}}' } } },
  { name: 'server-limit', plugin: 'rewrite', ops: ['NewProxy'], when: { proxyTypes: ['tcp'] }, options: { set: { bandwidth_limit_mode: 'server' } } },
  { name: 'rate', plugin: 'rate-limit', options: { key: '{{op}}:{{user}}', store: 'memory', ...NO_LIMIT } }
]

const DIRECT = 'downstream plugin, called directly'
const FORWARD = 'gateway, forward to that downstream'

interface Scenario extends Server { name: string, connections: number }

async function main (): Promise<void> {
  const scenarios: Scenario[] = []
  // --only keeps the baseline and the scenarios whose name contains it
  const add = (name: string, at: Server, conns = connections): void => {
    if (scenarios.length === 0 || values.only === undefined || name.includes(values.only)) scenarios.push({ name, ...at, connections: conns })
  }
  add('baseline: bare fastify route', await server('baseline'))
  add('gateway, empty chain', await gateway([]))
  add('gateway, typical chain (memory rate-limit)', await gateway(typicalChain))
  const redisUrl = await redis()
  add('gateway, Redis rate-limit', await gateway([{ name: 'rate', plugin: 'rate-limit', options: { key: '{{op}}:{{user}}', ...NO_LIMIT } }], { redis: { url: redisUrl } }))
  const downstream = await server('downstream')
  const forwarding = await gateway([{ name: 'auth', plugin: 'forward', options: { url: `${downstream.url}/handler` } }])
  add(DIRECT, downstream)
  add(FORWARD, forwarding)
  add(DIRECT, downstream, 1)
  add(FORWARD, forwarding, 1)

  // This machine's speed drifts by tens of percent within a minute: the baseline runs again between
  // every two scenarios, each ratio is taken against the mean of the baselines around it, and the
  // median over the rounds is reported.
  const [base, ...others] = scenarios
  const samples = scenarios.map(() => [] as Array<Sample & { ratio: number }>)
  const log = (round: number, sc: Scenario, sample: Sample): void => {
    process.stderr.write(`round ${round + 1}: ${sc.name} (${sc.connections}): ${Math.round(sample.rps)} req/s, p50 ${sample.p50.toFixed(3)} ms, ${sample.cpuUs.toFixed(1)} us CPU/call\n`)
  }
  for (let round = 0; round < rounds; round++) {
    let before = await measure(base, base.connections)
    samples[0].push({ ...before, ratio: 1 })
    log(round, base, before)
    for (const [i, sc] of others.entries()) {
      const sample = await measure(sc, sc.connections)
      const after = await measure(base, base.connections)
      samples[i + 1].push({ ...sample, ratio: sample.rps / ((before.rps + after.rps) / 2) })
      log(round, sc, sample)
      before = after
    }
  }
  const rows: Row[] = scenarios.map((sc, i) => ({
    scenario: sc.name,
    connections: sc.connections,
    rps: Math.round(median(samples[i].map(s => s.rps))),
    p50: median(samples[i].map(s => s.p50)),
    p99: median(samples[i].map(s => s.p99)),
    ratio: median(samples[i].map(s => s.ratio)),
    cpuUs: median(samples[i].map(s => s.cpuUs)),
    errors: samples[i].reduce((n, s) => n + s.errors, 0)
  }))
  const machine = `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, Node.js ${process.version}; ${pinned
    ? `servers under test on cpu ${UNDER_TEST}, autocannon, Redis and the downstream on cpu ${BESIDE}`
    : 'not pinned: every process on every cpu'}`
  const at = (name: string): number => scenarios.findIndex(sc => sc.name === name && sc.connections === 1)
  const direct = at(DIRECT)
  const forward = at(FORWARD)
  const forwardAddedMs = direct >= 0 && forward >= 0 ? median(samples[forward].map((s, r) => s.p50 - samples[direct][r].p50)) : undefined
  const table = [
    `machine: ${machine}; medians of ${rounds} rounds of ${duration} s per scenario, the baseline measured again between every two`,
    '',
    '| scenario | conns | req/s | p50 ms | p99 ms | ratio to baseline | server CPU us/call |',
    '|---|---:|---:|---:|---:|---:|---:|',
    ...rows.map(r => `| ${r.scenario} | ${r.connections} | ${r.rps} | ${r.p50.toFixed(3)} | ${r.p99.toFixed(3)} | ${r.ratio.toFixed(2)} | ${r.cpuUs.toFixed(1)} |`),
    '',
    forwardAddedMs !== undefined ? `forward: p50 added over calling the downstream directly (1 connection): ${forwardAddedMs.toFixed(3)} ms` : ''
  ].join('\n')
  process.stdout.write(`${table}\n`)
  writeFileSync(values.out, `${JSON.stringify({ machine, duration, rounds, connections, rows, forwardAddedMs, samples }, null, 2)}\n`)
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
