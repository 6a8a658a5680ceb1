import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { accessSync, constants, existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
import { freePort, killOnExit, redisAnswers, redisArgs, redisScripts, requirePrograms, scriptArgs, usageError, waitUntil } from './procs.js'
import { proxyCalls, USER_COUNT, userCalls, writeUsersFile, type BenchCalls, type BenchRequest } from './users.js'

// npm run bench: every scenario side by side in one run, on this machine, each server in its own process.
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const DIST = fileURLToPath(new URL('../', import.meta.url))
const USAGE = 'run.js [--duration SECONDS] [--rounds N] [--connections N] [--only NAME]... [--no-pin] [--out FILE]'
const values = scriptArgs(USAGE, {
  duration: { type: 'string', default: '3' },
  rounds: { type: 'string', default: '5' },
  only: { type: 'string', multiple: true },
  connections: { type: 'string', default: '10' },
  'no-pin': { type: 'boolean', default: false },
  out: { type: 'string', default: join(ROOT, 'bench', 'results.json') }
}, v => Number.isFinite(Number(v.duration)) && Number(v.duration) > 0 && [v.rounds, v.connections].every(n => Number.isInteger(Number(n)) && Number(n) >= 1))
// the results are written after minutes of measuring: a path that cannot take them is said before
try {
  if (!existsSync(values.out)) accessSync(dirname(values.out), constants.W_OK)
  else if (statSync(values.out).isDirectory()) throw new Error('a folder')
  else accessSync(values.out, constants.W_OK)
} catch (err) {
  usageError(USAGE, `--out ${values.out}: cannot be written (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
}
requirePrograms('npm run bench', ['redis-server', 'redis-cli'])
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
killOnExit(() => { for (const c of children) c.kill('SIGKILL') })

function start (args: string[], cpu: string): ChildProcess {
  const argv = pinned ? ['taskset', '-c', cpu, ...args] : args
  const child = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'inherit'] })
  children.push(child)
  return child
}

const answers = async (url: string) => (await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"op":"Ping","content":{}}' })).ok

/** pids: every process that serves a call, whose CPU time the call costs; redis: the port of the Redis it asks */
interface Server { url: string, pids: Array<number | undefined>, redis?: number }

/** a bench/SCRIPT.js server: SCRIPT KIND PORT ARGS... */
async function benchServer (script: string, kind: string, args: string[], cpu: string): Promise<Server> {
  const port = await freePort()
  const child = start([process.execPath, join(DIST, 'bench', script), kind, String(port), ...args], cpu)
  const url = `http://127.0.0.1:${port}`
  await waitUntil(kind, async () => await answers(`${url}/handler?op=Ping`))
  return { url, pids: [child.pid] }
}

const server = async (kind: 'baseline' | 'downstream' | 'receiver'): Promise<Server> => await benchServer('servers.js', kind, [], kind === 'baseline' ? UNDER_TEST : BESIDE)

const tmp = mkdtempSync(join(tmpdir(), 'frpgw-bench-'))

async function gateway (chain: unknown[], extra: Record<string, unknown> = {}): Promise<Server> {
  const port = await freePort()
  const file = join(mkdtempSync(join(tmp, 'gateway-')), 'gateway.json')
  writeFileSync(file, JSON.stringify({ listen: { port }, log: { level: 'info' }, chain, ...extra }))
  const child = start([process.execPath, ...(process.env.BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean), join(DIST, 'src', 'main.js'), '--config', file], UNDER_TEST)
  const url = `http://127.0.0.1:${port}`
  await waitUntil('gateway', async () => (await fetch(`${url}/readyz`)).ok)
  return { url, pids: [child.pid] }
}

// The server's own CPU time (user + system, all threads) from /proc: what one call costs it,
// whatever the load generator and the machine's drift did to the req/s.
const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100
function cpuSeconds (pids: Array<number | undefined>): number {
  return pids.reduce<number>((sum, pid) => {
    if (pid === undefined) return NaN
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
      return sum + (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS
    } catch {
      return NaN
    }
  }, 0)
}

async function redis (): Promise<number> {
  const port = await freePort()
  start(redisArgs(port), BESIDE)
  await waitUntil('redis-server', async () => await redisAnswers(port))
  return port
}

// Realistic frps bodies: a Login and a NewProxy recorded from frps 0.41.
const samples = readFileSync(join(ROOT, 'test', 'fixtures', 'frps-0.41.0-requests.jsonl'), 'utf8').trim().split('\n').map(l => JSON.parse(l))
const login = samples.find(s => s.body.op === 'Login')
const newProxy = samples.find(s => s.body.op === 'NewProxy' && s.body.content.proxy_type === 'tcp')
const recorded: BenchCalls = {
  requests: [login, newProxy].map(s => ({
    method: 'POST' as const,
    path: `/handler?${s.query as string}`,
    headers: s.headers as Record<string, string>,
    body: JSON.stringify(s.body)
  }))
}
const { file: usersFile, users } = writeUsersFile(tmp)
const perUser = userCalls(users, login, newProxy)
const perProxy = proxyCalls(users, newProxy)

/** scripts: the Lua scripts sent to Redis per call (every gateway call of a Redis scenario asks one or more; the gateway batches them) */
interface Sample { rps: number, p50: number, p99: number, errors: number, cpuUs: number, scripts?: number }
interface Row extends Sample { scenario: string, connections: number, ratio: number }

function percentile (sorted: Float64Array, p: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

/**
 * A chain that rejects the bench's calls would be measured answering rejects, one that checks nothing
 * would be measured doing nothing: each scenario's first calls must pass, and its refused call be refused.
 */
async function checkAnswers (url: string, { requests, refused, remotePorts }: BenchCalls): Promise<void> {
  const answer = async (r: BenchRequest): Promise<{ reject?: boolean, unchange?: boolean, content?: Record<string, unknown> }> => {
    const res = await fetch(`${url}${r.path}`, { method: 'POST', headers: r.headers, body: r.body })
    const body = await res.json() as { reject?: boolean }
    if (!res.ok) throw new Error(`${url} answered a bench call ${res.status}: ${JSON.stringify(body)}`)
    return body
  }
  for (const [i, r] of requests.slice(0, 4).entries()) {
    const a = await answer(r)
    if (a.reject === true) throw new Error(`${url} rejected a bench call: ${r.body}`)
    const port = (a.unchange === false ? a.content : JSON.parse(r.body).content)?.remote_port
    if (remotePorts !== undefined && port !== remotePorts[i]) throw new Error(`${url} answered remote port ${String(port)}, not ${remotePorts[i]}, to ${r.body}`)
  }
  if (refused !== undefined && (await answer(refused)).reject !== true) throw new Error(`${url} did not reject ${refused.body}`)
}

/** autocannon against url; latencies kept in full (autocannon's own histogram rounds to whole ms). */
const warmed = new Set<string>()

async function measure ({ url, pids, calls, check, redis }: Scenario, conns: number): Promise<Sample> {
  const opts = { url, connections: conns, pipelining: 1, requests: calls.requests }
  if (!warmed.has(`${url} ${conns}`)) {
    warmed.add(`${url} ${conns}`)
    await checkAnswers(url, calls)
    await check?.()
    await new Promise((resolve, reject) => { autocannon({ ...opts, duration: 2 }, err => err ? reject(err) : resolve(null)) })
  }
  const latencies: number[] = []
  const cpuBefore = cpuSeconds(pids)
  const scriptsBefore = redis === undefined ? 0 : redisScripts(redis)
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon({ ...opts, duration }, (err, res) => err ? reject(err) : resolve(res))
    instance.on('response', (_client, _status, _bytes, responseTime) => { latencies.push(responseTime) })
  })
  const cpuUs = (cpuSeconds(pids) - cpuBefore) * 1e6 / result.requests.total
  const scripts = redis === undefined ? undefined : (redisScripts(redis) - scriptsBefore) / result.requests.total
  const sorted = Float64Array.from(latencies).sort()
  return {
    rps: result.requests.total / duration,
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    errors: result.errors + result.timeouts + result.non2xx,
    cpuUs,
    scripts
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

// "three policies": the users check, a memory rate limit and a metas step, as frps's three plugins
// in series and as one gateway. The metas plugin lists Login only, as its gateway step does.
const usersFileBlock = { users: { file: usersFile } }
const threeSteps = [
  { name: 'users', plugin: 'users', ops: ['Login', 'NewProxy'] },
  { name: 'rate', plugin: 'rate-limit', options: { key: '{{op}}:{{user}}', store: 'memory', ...NO_LIMIT } },
  { name: 'tag', plugin: 'metas', ops: ['Login'], options: { set: { region: 'eu-1', login_ip: '{{client_ip}}' } } }
]
const BOTH = 'Login,NewProxy'
// NewProxy calls only: users checks the token and the port range, quota (each user's maxProxies,
// 1) reserves, then ports (sticky) assigns, and the registry records the proxy after the answer;
// the reservations, ports and records asked in one turn of the event loop go to Redis as one script
const registryChain = [
  threeSteps[0],
  { name: 'quota', plugin: 'quota', options: { fromUsers: true } },
  { name: 'ports', plugin: 'ports', options: { mode: 'sticky' } }
]
// The policies are what is under test: the three plugins share the cpu the one gateway has to itself,
// and the frps stand-in runs beside them, on the load side with autocannon.
const plugin = async (kind: string, ...args: string[]): Promise<Server> => await benchServer('series.js', kind, args, UNDER_TEST)
/** the CPU a call costs is the caller's and its plugins' */
async function caller (plugins: Array<[ops: string, at: Server]>): Promise<Server> {
  const at = await benchServer('series.js', 'caller', [String(connections), ...plugins.map(([ops, p]) => `${ops}@${p.url}/handler`)], BESIDE)
  return { url: at.url, pids: [...at.pids, ...plugins.flatMap(([, p]) => p.pids)] }
}

const TYPICAL = 'gateway, typical chain (memory rate-limit)'
const NOTIFY = 'gateway, typical chain + notify to a webhook'
const DIRECT = 'downstream plugin, called directly'
const FORWARD = 'gateway, forward to that downstream'
const SERIES = 'three policies: frps-like caller -> 3 plugins in series'
const ONE_PLUGIN = 'three policies: frps-like caller -> 1 plugin (users)'
const USERS_DIRECT = 'three policies: users plugin, called directly'
const ONE_GATEWAY = 'three policies: one gateway (users, rate-limit, metas)'
const CALLER_GATEWAY = 'three policies: frps-like caller -> that one gateway'

interface Scenario extends Server { name: string, connections: number, calls: BenchCalls, check?: () => Promise<void> }
interface Kept {
  conns?: number
  calls?: BenchCalls
  /** after checkAnswers, before the first measure: throws when the scenario would measure less than it claims */
  check?: () => Promise<void>
  /** how the caller costs what it costs: run only when --only names it */
  detail?: boolean
}

/** started once, when a kept scenario first needs it */
const lazily = <T>(make: () => Promise<T>): () => Promise<T> => {
  let made: Promise<T> | undefined
  return async () => await (made ??= make())
}

async function main (): Promise<void> {
  const scenarios: Scenario[] = []
  const planned: Array<{ name: string, at: () => Promise<Server>, kept: Kept }> = []
  const add = (name: string, at: () => Promise<Server>, kept: Kept = {}): void => { planned.push({ name, at, kept }) }
  add('baseline: bare fastify route', async () => await server('baseline'))
  add('gateway, empty chain', async () => await gateway([]))
  add(TYPICAL, async () => await gateway(typicalChain))
  // every call of every op sent, one POST each, to a receiver on the load side: what the step costs the gateway
  const receiver = lazily(async () => await server('receiver'))
  add(NOTIFY, async () => await gateway([...typicalChain, { name: 'notify', plugin: 'notify', options: { sink: { webhook: { url: `${(await receiver()).url}/hook` } } } }]), {
    // one event for each call checkAnswers made
    check: async () => {
      const url = `${(await receiver()).url}/received`
      await waitUntil('notify events at the webhook receiver', async () => Number(await (await fetch(url)).text()) >= Math.min(4, recorded.requests.length))
    }
  })
  const redisPort = lazily(redis)
  /** a gateway with the bench's Redis */
  const withRedis = async (chain: unknown[], extra: Record<string, unknown> = {}): Promise<Server> => {
    const port = await redisPort()
    return { ...await gateway(chain, { ...extra, redis: { url: `redis://127.0.0.1:${port}` } }), redis: port }
  }
  add('gateway, Redis rate-limit', async () => await withRedis([{ name: 'rate', plugin: 'rate-limit', options: { key: '{{op}}:{{user}}', ...NO_LIMIT } }]))
  const downstream = lazily(async () => await server('downstream'))
  const forwarding = lazily(async () => await gateway([{ name: 'auth', plugin: 'forward', options: { url: `${(await downstream()).url}/handler` } }]))
  add(DIRECT, downstream)
  add(FORWARD, forwarding)
  add(DIRECT, downstream, { conns: 1 })
  add(FORWARD, forwarding, { conns: 1 })
  add(`gateway, users chain (file table of ${USER_COUNT.toLocaleString('en')} users)`,
    async () => await gateway([threeSteps[0]], usersFileBlock), { calls: perUser })
  add('gateway, users + quota + ports (registry in Redis)', async () => await withRedis(registryChain, {
    ...usersFileBlock, registry: { store: 'redis' }
  }), { calls: perProxy })
  // the same chain with nothing to wait for: what the steps, the modified answers and the records cost without Redis
  add('gateway, users + quota + ports (registry in memory)', async () => await gateway(registryChain, {
    ...usersFileBlock, registry: { store: 'memory' }
  }), { calls: perProxy, detail: true })

  const usersPlugin = lazily(async () => await plugin('users', usersFile))
  const oneGateway = lazily(async () => await gateway(threeSteps, usersFileBlock))
  const series = lazily(async () => await caller([[BOTH, await usersPlugin()], [BOTH, await plugin('rate')], ['Login', await plugin('metas')]]))
  const callerGateway = lazily(async () => await caller([[BOTH, await oneGateway()]]))
  for (const conns of [connections, 1]) {
    add(SERIES, series, { conns, calls: perUser })
    add(ONE_GATEWAY, oneGateway, { conns, calls: perUser })
    add(CALLER_GATEWAY, callerGateway, { conns, calls: perUser, detail: true })
  }
  add(ONE_PLUGIN, async () => await caller([[BOTH, await usersPlugin()]]), { conns: 1, calls: perUser, detail: true })
  add(USERS_DIRECT, usersPlugin, { conns: 1, calls: perUser, detail: true })

  // a misspelt --only would measure the baseline alone
  const unmatched = values.only?.find(part => !planned.some(p => p.name.includes(part)))
  if (unmatched !== undefined) usageError(USAGE, `--only ${unmatched}: no scenario's name contains it`)
  // --only (repeatable) keeps the baseline and the scenarios whose name contains one; only their servers are started
  for (const [i, { name, at, kept: { conns = connections, calls = recorded, detail = false, check } }] of planned.entries()) {
    const kept = i === 0 || (values.only === undefined ? !detail : values.only.some(part => name.includes(part)))
    if (kept) scenarios.push({ name, ...await at(), connections: conns, calls, check })
  }

  // This machine's speed drifts by tens of percent within a minute: the baseline runs again between
  // every two scenarios, each ratio is taken against the mean of the baselines around it, and the
  // median over the rounds is reported.
  const [base, ...others] = scenarios
  const samples = scenarios.map(() => [] as Array<Sample & { ratio: number }>)
  const log = (round: number, sc: Scenario, sample: Sample): void => {
    process.stderr.write(`round ${round + 1}: ${sc.name} (${sc.connections}): ${Math.round(sample.rps)} req/s, p50 ${sample.p50.toFixed(3)} ms, ${sample.cpuUs.toFixed(1)} us CPU/call${sample.scripts === undefined ? '' : `, ${sample.scripts.toFixed(2)} Redis scripts/call`}\n`)
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
    scripts: sc.redis === undefined ? undefined : median(samples[i].map(s => s.scripts as number)),
    errors: samples[i].reduce((n, s) => n + s.errors, 0)
  }))
  const machine = `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, Node.js ${process.version}; ${pinned
    ? `servers under test on cpu ${UNDER_TEST}, autocannon, Redis, the downstream, the frps-like caller and the webhook receiver on cpu ${BESIDE}`
    : 'not pinned: every process on every cpu'}`
  // a median over the rounds of one figure taken from scenarios measured in the same round
  const perRound = (needs: Array<[name: string, conns: number]>, f: (...s: Sample[]) => number): number | undefined => {
    const at = needs.map(([name, conns]) => scenarios.findIndex(sc => sc.name === name && sc.connections === conns))
    return at.some(i => i < 0) ? undefined : median(samples[0].map((_, r) => f(...at.map(i => samples[i][r]))))
  }
  const addedMs = (a: Sample, b: Sample): number => a.p50 - b.p50
  const p50Ratio = (a: Sample, b: Sample): number => a.p50 / b.p50
  const conns = (n: number): string => n === 1 ? '1 connection' : `${n} connections`
  const forwardAddedMs = perRound([[FORWARD, 1], [DIRECT, 1]], addedMs)
  const comparisons = Object.fromEntries(Object.entries({
    'notify overhead: req/s of the typical chain + notify / req/s of the typical chain': perRound([[NOTIFY, connections], [TYPICAL, connections]], (n, t) => n.rps / t.rps),
    'notify overhead: CPU per call of the typical chain + notify / CPU per call of the typical chain': perRound([[NOTIFY, connections], [TYPICAL, connections]], (n, t) => n.cpuUs / t.cpuUs),
    'forward: p50 added over calling the downstream directly (1 connection), ms': forwardAddedMs,
    ...Object.fromEntries([connections, 1].flatMap(n => [
      [`three policies: p50 of 3 plugins in series / p50 of one gateway (${conns(n)})`, perRound([[SERIES, n], [ONE_GATEWAY, n]], p50Ratio)],
      [`three policies: p50 of 3 plugins in series / p50 of the caller -> that one gateway (${conns(n)})`, perRound([[SERIES, n], [CALLER_GATEWAY, n]], p50Ratio)]
    ])),
    'three policies: the caller\'s own cost, p50 through it to the users plugin minus calling that plugin directly (1 connection), ms':
      perRound([[ONE_PLUGIN, 1], [USERS_DIRECT, 1]], addedMs),
    'three policies: p50 of 3 plugins in series less the caller\'s own cost / p50 of one gateway (1 connection)':
      perRound([[SERIES, 1], [ONE_PLUGIN, 1], [USERS_DIRECT, 1], [ONE_GATEWAY, 1]], (series, one, direct, gw) => (series.p50 - (one.p50 - direct.p50)) / gw.p50)
  }).filter(([, v]) => v !== undefined))
  const table = [
    `machine: ${machine}; medians of ${rounds} rounds of ${duration} s per scenario, the baseline measured again between every two`,
    '',
    '| scenario | conns | req/s | p50 ms | p99 ms | ratio to baseline | server CPU us/call | Redis scripts/call |',
    '|---|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map(r => `| ${r.scenario} | ${r.connections} | ${r.rps} | ${r.p50.toFixed(3)} | ${r.p99.toFixed(3)} | ${r.ratio.toFixed(2)} | ${r.cpuUs.toFixed(1)} | ${r.scripts?.toFixed(2) ?? ''} |`),
    '',
    ...Object.entries(comparisons).map(([what, v]) => `${what}: ${(v as number).toFixed(3)}`)
  ].join('\n')
  process.stdout.write(`${table}\n`)
  writeFileSync(values.out, `${JSON.stringify({ machine, duration, rounds, connections, rows, forwardAddedMs, comparisons, samples }, null, 2)}\n`)
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
