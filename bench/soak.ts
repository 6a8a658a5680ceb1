import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { Agent, request } from 'undici'
import { DOWNSTREAM_FAULTS, faultChain, faultWindows, seededRandom, startFaultyDownstream, type FaultWindow } from './faults.js'
import { freePort, killOnExit, RedisProcess, requirePrograms, scriptArgs, waitUntil } from './procs.js'

// npm run soak: a bounded run of mixed frps calls at a high rate through faultChain(), against the
// gateway as a child process, while both downstream plugins and Redis fail at random moments.
// Fails (exit 1) when a call goes unanswered, an answer is not 200, the gateway's counters do not add
// up to the calls sent, or the gateway's RSS grows past the bound.
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const values = scriptArgs('soak.js [--duration SECONDS (>= 10)] [--connections N] [--seed N]', {
  duration: { type: 'string', default: '60' },
  connections: { type: 'string', default: '32' },
  seed: { type: 'string' }
}, v => Number.isFinite(Number(v.duration)) && Number(v.duration) >= 10 && Number.isInteger(Number(v.connections)) && Number(v.connections) >= 1 &&
  (v.seed === undefined || Number.isInteger(Number(v.seed))))
requirePrograms('npm run soak', ['redis-server', 'redis-cli'])
const durationMs = Number(values.duration) * 1000
const connections = Number(values.connections)
const seed = values.seed !== undefined ? Number(values.seed) : Math.floor(Math.random() * 2 ** 32)

const DEADLINE_MS = 1000
const AUTH_TIMEOUT_MS = 250
// a call without an answer this long after it was sent counts as unanswered
const CLIENT_TIMEOUT_MS = DEADLINE_MS + 2000
// RSS is taken after the warm-up (JIT, pools and buffers grown to their working size); past it, growth
// beyond this bound over the run is a leak
const WARMUP_MS = 5000
const RSS_GROWTH_BOUND = 64 * 1024 * 1024

const samples = ['frps-0.33.0-requests.jsonl', 'frps-0.41.0-requests.jsonl', 'frps-current-shapes.jsonl']
  .flatMap(name => readFileSync(join(ROOT, 'test', 'fixtures', name), 'utf8').split('\n').filter(l => l.trim() !== ''))
  .map(line => {
    const s = JSON.parse(line) as { query: string, body: { op: string } }
    return { path: `/handler?${s.query}`, op: s.body.op, body: JSON.stringify(s.body) }
  })

function rssBytes (pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m !== null ? Number(m[1]) * 1024 : NaN
}
const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`

async function main (): Promise<number> {
  const random = seededRandom(seed)
  process.stdout.write(`soak: ${durationMs / 1000} s, ${connections} connections, seed ${seed} (--seed ${seed} replays the fault schedule)\n`)
  const redis = new RedisProcess(await freePort())
  const running: { gateway?: ChildProcess } = {}
  killOnExit(() => { running.gateway?.kill('SIGKILL'); redis.child?.kill('SIGKILL') })
  await redis.start()
  const auth = await startFaultyDownstream(AUTH_TIMEOUT_MS * 1.5)
  const audit = await startFaultyDownstream(DEADLINE_MS * 1.5)
  const port = await freePort()
  const file = join(mkdtempSync(join(tmpdir(), 'frpgw-soak-')), 'gateway.json')
  writeFileSync(file, JSON.stringify({
    listen: { port },
    redis: { url: `redis://127.0.0.1:${redis.port}` },
    deadlineMs: DEADLINE_MS,
    registry: {},
    chain: [
      ...faultChain({ authUrl: auth.url, auditUrl: audit.url, authTimeoutMs: AUTH_TIMEOUT_MS, resetAfterMs: 500 }),
      // the work at commit too: records, reservations and ports in Redis, events to a receiver that fails as audit does
      { name: 'quota', plugin: 'quota', options: { maxProxies: 50 } },
      { name: 'ports', plugin: 'ports', options: { range: ['20000-20999'] } },
      { name: 'events', plugin: 'notify', options: { sink: { webhook: { url: `${audit.url}/events`, timeoutMs: 1000 } }, queue: 1000 } }
    ]
  }))
  const gateway = spawn(process.execPath, [join(ROOT, 'dist', 'src', 'main.js'), '--config', file], { stdio: ['ignore', 'ignore', 'inherit'] })
  running.gateway = gateway
  const url = `http://127.0.0.1:${port}`
  const agent = new Agent({ connections, headersTimeout: CLIENT_TIMEOUT_MS, bodyTimeout: CLIENT_TIMEOUT_MS })
  const status = async (path: string): Promise<number> => {
    const res = await request(`${url}${path}`, { dispatcher: agent })
    await res.body.dump()
    return res.statusCode
  }
  try {
    await waitUntil('gateway', async () => await status('/readyz') === 200)
    const pid = gateway.pid as number
    const rss = { start: rssBytes(pid), warm: NaN, end: NaN, max: 0 }

    // faults: every downstream fault on each plugin over and over; every 10 s or so Redis is stopped
    // (connections refused) or paused (connections held, no answer)
    const plan = {
      auth: faultWindows(random, DOWNSTREAM_FAULTS, durationMs, [300, 1500], [500, 3000]),
      audit: faultWindows(random, DOWNSTREAM_FAULTS, durationMs, [300, 1500], [500, 3000]),
      redis: faultWindows(random, ['stop', 'pause'] as const, durationMs - 3000, [500, 2000], [5000, 10_000])
    }
    const started = performance.now()
    const timers: NodeJS.Timeout[] = []
    for (const [down, windows] of [[auth, plan.auth], [audit, plan.audit]] as const) {
      for (const w of windows) {
        timers.push(setTimeout(() => { down.fault = w.kind }, w.from), setTimeout(() => { down.fault = undefined }, w.to))
      }
    }
    const outages = (async (windows: Array<FaultWindow<'stop' | 'pause'>>) => {
      for (const w of windows) {
        await sleep(started + w.from - performance.now())
        if (w.kind === 'pause') redis.pause(true)
        else await redis.stop()
        await sleep(started + w.to - performance.now())
        if (w.kind === 'pause') redis.pause(false)
        else await redis.start()
      }
    })(plan.redis)
    const sampler = setInterval(() => {
      const now = rssBytes(pid)
      rss.max = Math.max(rss.max, now)
      if (Number.isNaN(rss.warm) && performance.now() - started >= WARMUP_MS) rss.warm = now
    }, 500)

    // closed loop: each connection sends its next call once the last one is answered
    const latencies: number[] = []
    const kinds = new Map<string, number>()
    const tally = (kind: string): void => { kinds.set(kind, (kinds.get(kind) ?? 0) + 1) }
    let sent = 0
    let unanswered = 0
    const worker = async (): Promise<void> => {
      while (performance.now() - started < durationMs) {
        const sample = samples[Math.floor(random() * samples.length)]
        const t0 = performance.now()
        sent++
        try {
          const res = await request(`${url}${sample.path}`, {
            method: 'POST', dispatcher: agent, headers: { 'content-type': 'application/json' }, body: sample.body
          })
          const answer = await res.body.json() as { reject?: boolean, unchange?: boolean, reject_reason?: string }
          latencies.push(performance.now() - t0)
          if (res.statusCode !== 200) tally(`status ${res.statusCode}`)
          else if (answer.reject === true) tally(`reject: ${answer.reject_reason ?? ''}`)
          else tally(answer.unchange === false ? 'modify' : 'allow')
        } catch (err) {
          unanswered++
          tally(`unanswered: ${(err as { code?: string }).code ?? (err as Error).message}`)
        }
      }
    }
    await Promise.all(Array.from({ length: connections }, worker))
    const elapsed = performance.now() - started
    for (const timer of timers) clearTimeout(timer)
    auth.fault = audit.fault = undefined
    await outages
    clearInterval(sampler)
    // the work after answers (records retried for up to about 5 s, notify events backing off) holds memory
    // for a while after the last fault: the lowest RSS of the next 10 s is what stays
    rss.end = Infinity
    for (let i = 0; i < 20; i++) {
      await sleep(500)
      rss.end = Math.min(rss.end, rssBytes(pid))
    }

    // the gateway's own count of calls, and its health once the faults are over
    const metrics = await (await request(`${url}/metrics`, { dispatcher: agent })).body.text()
    const counted = [...metrics.matchAll(/^frp_gateway_requests_total\{[^}]*\} (\S+)$/gm)].reduce((n, m) => n + Number(m[1]), 0)
    await waitUntil('readyz after the run', async () => await status('/readyz') === 200)
    const healthz = await status('/healthz')

    const sorted = Float64Array.from(latencies).sort()
    const at = (p: number): string => sorted.length > 0 ? sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))].toFixed(1) : '-'
    const growth = rss.end - rss.warm
    const lines = [
      `calls: ${sent} in ${(elapsed / 1000).toFixed(1)} s (${Math.round(sent / elapsed * 1000)}/s), counted by the gateway: ${counted}`,
      `faults: ${plan.auth.length} on auth, ${plan.audit.length} on audit, Redis ${plan.redis.length === 0
        ? 'never stopped or paused (the first outage comes 5 to 10 s in, and ends 3 s before the run at the latest)'
        : plan.redis.map(w => `${w.kind === 'stop' ? 'stopped' : 'paused'} for ${w.to - w.from} ms`).join(', ')}`,
      `latency ms: p50 ${at(0.5)}, p99 ${at(0.99)}, max ${at(1)}`,
      'answers:',
      ...[...kinds].sort((a, b) => b[1] - a[1]).map(([kind, n]) => `  ${String(n).padStart(8)}  ${kind}`),
      `gateway RSS: start ${mib(rss.start)}, after ${WARMUP_MS / 1000} s ${mib(rss.warm)}, max ${mib(rss.max)}, end (lowest of 10 s after) ${mib(rss.end)} ` +
        `(growth after warm-up ${mib(growth)}, bound ${mib(RSS_GROWTH_BOUND)})`,
      `after: /healthz ${healthz}, /readyz 200`
    ]
    process.stdout.write(`${lines.join('\n')}\n`)
    const failures = [
      unanswered > 0 ? `${unanswered} calls unanswered` : '',
      [...kinds.keys()].some(k => k.startsWith('status')) ? 'answers other than 200' : '',
      counted !== sent ? `the gateway counted ${counted} calls, ${sent} were sent` : '',
      !(growth <= RSS_GROWTH_BOUND) ? `RSS grew by ${mib(growth)} after the warm-up` : '',
      healthz !== 200 ? '/healthz is not 200' : '',
      gateway.exitCode !== null ? `the gateway exited with ${gateway.exitCode}` : ''
    ].filter(Boolean)
    if (failures.length > 0) process.stdout.write(`FAILED: ${failures.join('; ')}\n`)
    return failures.length > 0 ? 1 : 0
  } finally {
    gateway.kill('SIGTERM')
    await agent.close()
    await Promise.all([auth.close(), audit.close(), redis.stop()])
  }
}

main().then(code => { process.exitCode = code }, (err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`)
  process.exitCode = 1
})
