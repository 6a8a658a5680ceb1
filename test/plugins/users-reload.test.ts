import { mkdirSync, mkdtempSync, renameSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { serveCli, type Served } from '../helpers/cli.js'

/** A config and its users file side by side, the users file named relative to the config's folder. */
function files (users: unknown): { config: string, users: string } {
  const dir = mkdtempSync(join(tmpdir(), 'frpgw-users-'))
  const config = join(dir, 'gateway.json')
  writeFileSync(config, JSON.stringify({ listen: { port: 0 }, users: { file: 'users.json' }, chain: [{ name: 'users', plugin: 'users', ops: ['Login'] }] }))
  writeFileSync(join(dir, 'users.json'), JSON.stringify({ users }))
  return { config, users: join(dir, 'users.json') }
}

async function login (gw: Served, user: string, token: string): Promise<unknown> {
  const res = await fetch(`${gw.url}/handler?version=0.1.0&op=Login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ version: '0.1.0', op: 'Login', content: { user, metas: { token } } })
  })
  return await res.json()
}

async function waitForLog (gw: Served, msg: string, count = 1, timeoutMs = 10_000): Promise<Record<string, any>> {
  const until = Date.now() + timeoutMs
  while (Date.now() < until) {
    const lines = gw.lines.filter(l => l.msg === msg)
    if (lines.length >= count) return lines[count - 1]
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  throw new Error(`no "${msg}" log line within ${timeoutMs} ms`)
}

const metric = async (gw: Served, series: string): Promise<string | undefined> =>
  (await (await fetch(`${gw.url}/metrics`)).text()).split('\n').find(line => line.startsWith(series))

const ALLOW = { reject: false, unchange: true }

t.test('SIGHUP: a changed users file applies; a broken one keeps the last good table, counted and logged with every error', async t => {
  const paths = files({ alice: { token: 'a1' } })
  const gw = await serveCli(['--config', paths.config], t)
  t.same(await login(gw, 'bob', 'b1'), { reject: true, reject_reason: 'unknown user bob', unchange: true })

  writeFileSync(paths.users, JSON.stringify({ users: { alice: { token: 'a2' }, bob: { token: 'b1' } } }))
  gw.child.kill('SIGHUP')
  await waitForLog(gw, 'config reloaded')
  t.same(await login(gw, 'bob', 'b1'), ALLOW, 'a new user')
  t.same(await login(gw, 'alice', 'a1'), { reject: true, reject_reason: 'token does not match for alice', unchange: true }, 'a changed token')

  writeFileSync(paths.users, JSON.stringify({ users: { alice: { token: 'a3', ports: [70000] }, 'bad name!': {}, bob: { enabled: 'no' } } }))
  gw.child.kill('SIGHUP')
  const failed = await waitForLog(gw, 'config reload failed: the previous chain keeps serving')
  t.same(failed.issues.map((i: { path: string }) => i.path), [
    'users.file users.json: users.alice.ports[0]',
    'users.file users.json: users.bad name!',
    'users.file users.json: users.bob.enabled'
  ], 'the file\'s problems only: the step that reads the table adds none')
  t.match(failed.issues[0].message, '70000')
  t.same(await login(gw, 'bob', 'b1'), ALLOW, 'the last good table keeps serving')
  t.same(await login(gw, 'alice', 'a3'), { reject: true, reject_reason: 'token does not match for alice', unchange: true })

  writeFileSync(paths.users, '{ "users": ')
  gw.child.kill('SIGHUP')
  const notJson = await waitForLog(gw, 'config reload failed: the previous chain keeps serving', 2)
  t.match(notJson.issues[0], { path: 'users.file', message: /^users\.json: .*not valid JSON/ })
  t.equal(await metric(gw, 'frp_gateway_config_reloads_total{result="failure"}'), 'frp_gateway_config_reloads_total{result="failure"} 2')
  t.equal(await metric(gw, 'frp_gateway_config_reloads_total{result="success"}'), 'frp_gateway_config_reloads_total{result="success"} 1')
  t.same(await login(gw, 'alice', 'a2'), ALLOW)
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
})

t.test('--watch: a change of the users file alone reloads', async t => {
  const paths = files({ alice: { token: 'a1' } })
  const gw = await serveCli(['--config', paths.config, '--watch'], t)
  t.same(await login(gw, 'alice', 'a1'), ALLOW)
  writeFileSync(paths.users, JSON.stringify({ users: { alice: { token: 'a1', enabled: false } } }))
  const reloaded = await waitForLog(gw, 'config reloaded')
  t.equal(reloaded.why, 'users file changed')
  t.same(await login(gw, 'alice', 'a1'), { reject: true, reject_reason: 'user alice is disabled', unchange: true })
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
})

t.test('--watch: a users file swapped as a Kubernetes ConfigMap volume swaps it (a link renamed elsewhere in the folder) reloads', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'frpgw-cm-'))
  mkdirSync(join(dir, '..v1'))
  writeFileSync(join(dir, '..v1', 'users.json'), JSON.stringify({ users: { alice: { token: 'a1' } } }))
  symlinkSync('..v1', join(dir, '..data'))
  symlinkSync('..data/users.json', join(dir, 'users.json'))
  const config = join(dir, 'gateway.json')
  writeFileSync(config, JSON.stringify({ listen: { port: 0 }, users: { file: 'users.json' }, chain: [{ name: 'users', plugin: 'users', ops: ['Login'] }] }))
  const gw = await serveCli(['--config', config, '--watch'], t)
  t.same(await login(gw, 'alice', 'a1'), ALLOW)
  mkdirSync(join(dir, '..v2'))
  writeFileSync(join(dir, '..v2', 'users.json'), JSON.stringify({ users: { alice: { token: 'a1', enabled: false } } }))
  symlinkSync('..v2', join(dir, '..data_tmp'))
  renameSync(join(dir, '..data_tmp'), join(dir, '..data'))
  const reloaded = await waitForLog(gw, 'config reloaded')
  t.equal(reloaded.why, 'users file changed')
  t.same(await login(gw, 'alice', 'a1'), { reject: true, reject_reason: 'user alice is disabled', unchange: true })
  gw.child.kill('SIGTERM')
  t.equal(await gw.exited, 0)
})
