import { execFile } from 'node:child_process'
import { once } from 'node:events'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { Agent, request } from 'undici'
import { configFile, serveCli, type Served } from './helpers/cli.js'

const chainTagging = (version: string) => ({
  listen: { port: 0 },
  chain: [{ name: 'tag', plugin: 'metas', ops: ['Login'], options: { set: { config: version } } }]
})

interface Sent { sentAt: number, version?: string, error?: string }

/** Keeps `workers` keep-alive callers busy until stop() resolves; records what each call got. */
function stream (url: string, workers = 4) {
  const agent = new Agent({ connections: workers })
  const sent: Sent[] = []
  let running = true
  const loops = Array.from({ length: workers }, async () => {
    while (running) {
      const sentAt = performance.now()
      try {
        const res = await request(`${url}/handler?version=0.1.0&op=Login`, {
          method: 'POST', dispatcher: agent, headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ version: '0.1.0', op: 'Login', content: { user: 'u' } })
        })
        const body = await res.body.json() as { content?: { metas?: { config?: string } } }
        sent.push(res.statusCode === 200 && body.content?.metas?.config !== undefined
          ? { sentAt, version: body.content.metas.config }
          : { sentAt, error: `${res.statusCode} ${JSON.stringify(body)}` })
      } catch (err) {
        sent.push({ sentAt, error: String(err) })
      }
    }
  })
  return {
    sent,
    async stop () {
      running = false
      await Promise.all(loops)
      await agent.close()
    }
  }
}

async function waitForLog (gw: Served, msg: string, timeoutMs = 10_000): Promise<number> {
  const until = Date.now() + timeoutMs
  while (Date.now() < until) {
    if (gw.lines.some(l => l.msg === msg)) return performance.now()
    await new Promise(resolve => setTimeout(resolve, 10))
  }
  throw new Error(`no "${msg}" log line within ${timeoutMs} ms`)
}

const pause = async (ms: number) => await new Promise(resolve => setTimeout(resolve, ms))

t.test('SIGHUP under a steady stream of calls: none fails, calls after the swap follow the new chain', async t => {
  const file = configFile(chainTagging('a'))
  const gw = await serveCli(['--config', file], t)
  const calls = stream(gw.url)
  await pause(300)
  writeFileSync(file, JSON.stringify(chainTagging('b')))
  gw.child.kill('SIGHUP')
  const seen = await waitForLog(gw, 'config reloaded')
  await pause(300)
  await calls.stop()
  t.same(calls.sent.filter(c => c.error !== undefined), [], 'no call failed')
  const after = calls.sent.filter(c => c.sentAt > seen)
  t.ok(after.length > 10, `calls after the swap (${after.length})`)
  t.same([...new Set(after.map(c => c.version))], ['b'], 'calls after the swap follow the new chain')
  t.ok(calls.sent.some(c => c.version === 'a'), 'calls before it followed the old one')
  const metrics = await (await fetch(`${gw.url}/metrics`)).text()
  t.match(metrics, /frp_gateway_config_reloads_total\{result="success"\} 1/)
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
})

t.test('SIGHUP with a broken file: every call keeps the old behaviour, the errors are logged with their paths', async t => {
  const file = configFile(chainTagging('a'))
  const gw = await serveCli(['--config', file], t)
  const calls = stream(gw.url)
  await pause(200)
  writeFileSync(file, JSON.stringify({ listen: { port: 0 }, chain: [{ name: 'tag', plugin: 'metas', options: { set: { x: '{{nope}}' } } }, { name: 'y', plugin: 'nope' }] }))
  gw.child.kill('SIGHUP')
  await waitForLog(gw, 'config reload failed: the previous chain keeps serving')
  writeFileSync(file, '{ not json')
  gw.child.kill('SIGHUP')
  await pause(300)
  await calls.stop()
  t.same(calls.sent.filter(c => c.error !== undefined), [], 'no call failed')
  t.same([...new Set(calls.sent.map(c => c.version))], ['a'], 'every call kept the old chain')
  const failures = gw.lines.filter(l => l.msg === 'config reload failed: the previous chain keeps serving')
  t.equal(failures.length, 2)
  t.same(failures[0].issues.map((i: { path: string }) => i.path), ['chain[0].options.set.x', 'chain[1].plugin'], 'an unknown plugin hides no other error')
  t.match(failures[1].issues[0].message, /not valid JSON/)
  const metrics = await (await fetch(`${gw.url}/metrics`)).text()
  t.match(metrics, /frp_gateway_config_reloads_total\{result="failure"\} 2/)
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
})

t.test('--watch reloads when the file changes', async t => {
  const file = configFile(chainTagging('a'))
  const gw = await serveCli(['--config', file, '--watch'], t)
  writeFileSync(file, JSON.stringify(chainTagging('w')))
  await waitForLog(gw, 'config reloaded')
  const res = await fetch(`${gw.url}/handler?op=Login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"op":"Login","content":{}}' })
  t.same(await res.json(), { reject: false, unchange: false, content: { metas: { config: 'w' } } })
  t.equal(gw.lines.filter(l => l.level === 40).length, 0, 'no warning: listen, admin and log are as they were')
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
})

t.test('a reload that changes listen, admin or log says those changes wait for a restart', async t => {
  const file = configFile(chainTagging('a'))
  const gw = await serveCli(['--config', file], t)
  writeFileSync(file, JSON.stringify({ ...chainTagging('b'), log: { level: 'debug' }, admin: { port: 0 } }))
  gw.child.kill('SIGHUP')
  await waitForLog(gw, 'config reloaded')
  await pause(100)
  t.same(gw.lines.filter(l => l.level === 40).map(l => [l.msg, l.keys]),
    [['the changes of admin, log take effect at a restart: the gateway goes on as it started', ['admin', 'log']]])
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
})

/**
 * A config whose Redis takes the connection and answers nothing, as a stopped one: the gateway waits for it (2 s) while
 * starting. `connected` resolves once it is waited for.
 */
async function waitingForRedis (t: { teardown: (fn: () => unknown) => void }, listenPort = 0): Promise<{ file: string, connected: Promise<void> }> {
  let waiting: () => void = () => {}
  const connected = new Promise<void>(resolve => { waiting = resolve })
  const sockets = new Set<Socket>()
  const silent = createServer(socket => { sockets.add(socket); waiting() })
  silent.listen(0, '127.0.0.1')
  await once(silent, 'listening')
  t.teardown(() => { for (const socket of sockets) socket.destroy(); silent.close() })
  const file = configFile({
    listen: { port: listenPort },
    redis: { url: `redis://127.0.0.1:${(silent.address() as AddressInfo).port}` },
    chain: [{ name: 'limit', plugin: 'rate-limit', ops: ['Login'], options: { limit: 10, window: '1s', onStoreError: 'allow' } }]
  })
  return { file, connected }
}

t.test('SIGHUP while starting (waiting for Redis) does not end the process: the config is reloaded once it serves', async t => {
  const { file, connected } = await waitingForRedis(t)
  const gw = await serveCli(['--config', file], t, 1, child => { void connected.then(() => child.kill('SIGHUP')) })
  await waitForLog(gw, 'config reloaded')
  t.equal(gw.lines.find(l => l.msg === 'config reloaded')?.why, 'SIGHUP')
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
})

t.test('SIGHUP while starting, then the listen port is taken: the start fails with exit 1, the reload keeps nothing open', async t => {
  const taken = createServer()
  taken.listen(0, '127.0.0.1')
  await once(taken, 'listening')
  t.teardown(() => taken.close())
  const { file, connected } = await waitingForRedis(t, (taken.address() as AddressInfo).port)
  const started = serveCli(['--config', file], t, 1, child => { void connected.then(() => child.kill('SIGHUP')) })
  const outcome = await Promise.race([started.then(() => 'listening', (err: Error) => err.message), pause(15_000).then(() => 'still running after 15 s')])
  t.match(outcome, /exited with 1 before listening: cannot start: .* is already in use/)
})

t.test('--watch: one edit is one reload, however many files change in the folder after it', async t => {
  const file = configFile(chainTagging('a'))
  const gw = await serveCli(['--config', file, '--watch'], t)
  const reloads = () => gw.lines.filter(l => l.msg === 'config reloaded').length
  writeFileSync(file, JSON.stringify(chainTagging('b')))
  await waitForLog(gw, 'config reloaded')
  // an editor's swap and backup files, written beside the config
  for (const other of ['.gateway.json.swp', 'gateway.json~']) writeFileSync(join(dirname(file), other), 'x')
  await pause(500)
  writeFileSync(file, JSON.stringify(chainTagging('c')))
  for (let i = 0; i < 500 && reloads() < 2; i++) await pause(10)
  await pause(300)
  t.equal(reloads(), 2, 'the config was reloaded for its two edits only')
  const metrics = await (await fetch(`${gw.url}/metrics`)).text()
  t.match(metrics, /frp_gateway_config_reloads_total\{result="success"\} 2\n/)
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
})

t.test('a reload of a bad file leaves nothing running behind it (prom-client\'s GC observer and event-loop monitor)', async t => {
  // a schema problem (the steps that parse are compiled too, for every problem in one report) and a compile problem
  const file = configFile({ chain: [{ name: 'x', plugin: 'reject', options: { reason: '{{nope}}' } }, { name: 'y', plugin: 'nope' }] })
  // the count of GC observers is Node's own, read as its tests read it (--expose-internals)
  const script = `
    import { createRequire } from 'node:module'
    const { internalBinding } = createRequire(import.meta.url)('internal/test/binding')
    const { observerCounts, constants } = internalBinding('performance')
    const { loadConfig } = await import(${JSON.stringify(new URL('../dist/src/config.js', import.meta.url).href)})
    const observers = () => observerCounts[constants.NODE_PERFORMANCE_ENTRY_TYPE_GC]
    const before = observers()
    for (let i = 0; i < 5; i++) await loadConfig(${JSON.stringify(file)}).catch(() => {})
    process.stdout.write(JSON.stringify({ before, after: observers() }))`
  const { stdout } = await promisify(execFile)(process.execPath, ['--expose-internals', '--no-warnings', '--input-type=module', '-e', script])
  const { before, after } = JSON.parse(stdout)
  t.equal(after, before)
})

t.test('--watch: a folder removed and made again (a deploy replacing it whole) is watched again, and its config loaded', async t => {
  const file = configFile(chainTagging('a'))
  const gw = await serveCli(['--config', file, '--watch'], t)
  rmSync(dirname(file), { recursive: true })
  await waitForLog(gw, 'watched folder removed: --watch resumes when it is back (SIGHUP reloads meanwhile)')
  await pause(300)
  mkdirSync(dirname(file))
  writeFileSync(file, JSON.stringify(chainTagging('b')))
  await waitForLog(gw, 'config reloaded')
  t.same(gw.lines.filter(l => l.msg.startsWith('config reload failed')), [], 'the files deleted with their folder are no failed reload')
  const res = await fetch(`${gw.url}/handler?op=Login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"op":"Login","content":{}}' })
  t.same(await res.json(), { reject: false, unchange: false, content: { metas: { config: 'b' } } }, 'the new config serves')
  // and the folder's changes are seen again
  writeFileSync(file, JSON.stringify(chainTagging('c')))
  for (let i = 0; i < 300 && gw.lines.filter(l => l.msg === 'config reloaded').length < 2; i++) await pause(10)
  const again = await fetch(`${gw.url}/handler?op=Login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"op":"Login","content":{}}' })
  t.same(await again.json(), { reject: false, unchange: false, content: { metas: { config: 'c' } } }, 'an edit after it is seen')
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
})
