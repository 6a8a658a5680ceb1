import { writeFileSync } from 'node:fs'
import t from 'tap'
import { configFile, serveCli } from './helpers/cli.js'
import { startDownstream, until } from './helpers/downstream.js'
import { frpsRequest, RawConnection, serverHasRead } from './helpers/raw-http.js'

t.test('SIGTERM with calls in flight: each gets its answer, then the process exits 0', async t => {
  // the downstream holds every call until the gateway has taken the signal: they are in flight when it does
  let release = (): void => {}
  const released = new Promise<void>(resolve => { release = resolve })
  const downstream = await startDownstream(t, async () => {
    await released
    return { reject: false, unchange: true }
  })
  // a deadline far above what a loaded machine takes to stop: an exit before it did not wait for it
  const deadlineMs = 9000
  const gw = await serveCli(['--config', configFile({
    listen: { port: 0 },
    deadlineMs,
    chain: [
      { name: 'slow-auth', plugin: 'forward', ops: ['Login'], options: { url: downstream.url, timeoutMs: deadlineMs - 1000 } },
      { name: 'tag', plugin: 'metas', ops: ['Login'], options: { set: { checked: 'yes' } } }
    ]
  })], t)
  const call = async (user: string) => {
    const res = await fetch(`${gw.url}/handler?version=0.1.0&op=Login`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ version: '0.1.0', op: 'Login', content: { user } })
    })
    return { status: res.status, body: await res.json() }
  }
  const inFlight = ['a', 'b', 'c', 'd', 'e'].map(call)
  // every call has reached the downstream (and waits there) before the signal
  t.ok(await until(() => downstream.requests.length === 5, 30_000), 'all five calls reached the downstream')
  t.equal(downstream.requests.length, 5)
  const signalled = performance.now()
  gw.child.kill('SIGTERM')
  t.ok(await until(() => gw.lines.some(l => l.msg === 'stopping: finishing calls in flight'), 30_000), 'the gateway took the signal')
  release()
  const answers = await Promise.all(inFlight)
  t.same(answers, ['a', 'b', 'c', 'd', 'e'].map(user => ({ status: 200, body: { reject: false, unchange: false, content: { user, metas: { checked: 'yes' } } } })))
  t.equal(await gw.exited, 0, 'exit code 0')
  const stopMs = performance.now() - signalled
  t.ok(stopMs < deadlineMs, `it did not wait for the deadline of the whole process (stopped in ${Math.round(stopMs)} ms)`)
  await t.rejects(call('late'), 'no new calls after the signal')
  t.ok(gw.lines.some(l => l.msg === 'stopping: finishing calls in flight'))
  t.ok(gw.lines.some(l => l.msg === 'stopped'))
})

t.test('SIGTERM with its log reader gone (stdout a broken pipe): the process still exits 0', async t => {
  const served = await serveCli(['--config', configFile({ listen: { port: 0 }, drainMs: 0, chain: [] })], t)
  const closed = new Promise(resolve => served.child.stdout?.once('close', resolve))
  served.child.stdout?.destroy()
  await closed
  served.child.kill('SIGTERM')
  const code = await Promise.race([served.exited, new Promise(resolve => setTimeout(() => resolve('still running after 8 s'), 8000))])
  t.equal(code, 0)
})

t.test('SIGTERM while a call is arriving (its headers in two packets): it is answered by the chain, then the connection closes', async t => {
  const gw = await serveCli(['--config', configFile({ listen: { port: 0 }, chain: [{ name: 'tag', plugin: 'metas', ops: ['Login'], options: { set: { checked: 'yes' } } }] })], t)
  const conn = await RawConnection.open(Number(new URL(gw.url).port))
  const request = frpsRequest('{"op":"Login","content":{"user":"a"}}')
  // a connection whose call has begun is not idle: the stop waits for it
  conn.socket.write(request.slice(0, 40))
  // the gateway has accepted the connection and read (so parsed) those bytes before the signal
  t.ok(await until(() => serverHasRead(conn.socket), 30_000), 'the gateway read the first packet')
  gw.child.kill('SIGTERM')
  t.ok(await until(() => gw.lines.some(l => l.msg === 'stopping: finishing calls in flight'), 30_000), 'the gateway took the signal')
  const answer = await conn.request(request.slice(40))
  t.equal(answer.status, 200)
  t.same(JSON.parse(answer.body), { reject: false, unchange: false, content: { user: 'a', metas: { checked: 'yes' } } })
  t.equal(answer.headers.connection, 'close')
  t.equal(await gw.exited, 0)
})

t.test('SIGTERM right after a reload that shortened drainMs: the replaced chain drains for its own drainMs, and the process exits 0', async t => {
  const webhook = await startDownstream(t, async () => await new Promise(() => {}))
  const config = (drainMs: number) => ({
    listen: { port: 0 },
    deadlineMs: 100,
    drainMs,
    chain: [{ name: 'audit', plugin: 'notify', ops: ['Login'], options: { sink: { webhook: { url: webhook.url, timeoutMs: 60000, retries: 0 } } } }]
  })
  const file = configFile(config(6000))
  const gw = await serveCli(['--config', file], t)
  await fetch(`${gw.url}/handler?op=Login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"op":"Login","content":{"user":"a"}}' })
  // the event is out to a webhook that never answers: the old chain's close waits its 6 s for it
  t.ok(await until(() => webhook.requests.length > 0, 30_000), 'the event reached the webhook')
  writeFileSync(file, JSON.stringify(config(0)))
  gw.child.kill('SIGHUP')
  t.ok(await until(() => gw.lines.some(l => l.msg === 'config reloaded'), 30_000), 'the reload is done before the signal')
  const signalled = performance.now()
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
  // the live chain's drainMs is 0: only the replaced chain's 6 s, waiting on its event in flight, holds the stop that long
  const ms = performance.now() - signalled
  t.ok(ms >= 5500, `the stop waited for the replaced chain's drainMs (${Math.round(ms)} ms)`)
  t.ok(gw.lines.some(l => l.msg === 'stopped'))
})
