import { once } from 'node:events'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { MemoryRegistry } from '../../src/registry/memory.js'
import { onlineProxies, reconcile } from '../../src/registry/reconcile.js'

// frps's dashboard API as frps 0.64.0 answers it (recorded: a tcp proxy online, one closed, none of the other types)
const TCP = {
  proxies: [
    { name: 'alice.p1', conf: { name: 'alice.p1', type: 'tcp', remotePort: 16001 }, clientVersion: '0.64.0', curConns: 0, lastStartTime: '11-26 13:47:41', lastCloseTime: '', status: 'online' },
    { name: 'bob.p1', conf: null, curConns: 0, lastStartTime: '11-26 13:47:41', lastCloseTime: '11-26 13:47:43', status: 'offline' }
  ]
}

async function fakeFrps (t: Test, answer: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string, paths: string[] }> {
  const paths: string[] = []
  const server = createServer((req, res) => { paths.push(req.url ?? ''); answer(req, res) })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, paths }
}

const json = (res: ServerResponse, status: number, body: unknown): void => {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body))
}

t.test('reads every proxy type with basic auth and keeps the names listed online', async t => {
  let auth: string | undefined
  const frps = await fakeFrps(t, (req, res) => {
    auth = req.headers.authorization
    json(res, 200, req.url === '/api/proxy/tcp' ? TCP : req.url === '/api/proxy/http' ? { proxies: null } : { proxies: [] })
  })
  const online = await onlineProxies({ url: frps.url, user: 'admin', password: 'pw' })
  t.same([...online], ['alice.p1'])
  t.equal(auth, `Basic ${Buffer.from('admin:pw').toString('base64')}`)
  t.same(frps.paths.sort(), ['http', 'https', 'stcp', 'sudp', 'tcp', 'tcpmux', 'udp', 'xtcp'].map(type => `/api/proxy/${type}`))
})

t.test('the remote port of each tcp/udp proxy online, as frps 0.64 (remotePort) and 0.41 (remote_port) list it', async t => {
  const frps = await fakeFrps(t, (req, res) => json(res, 200, req.url === '/api/proxy/tcp'
    ? TCP
    : req.url === '/api/proxy/udp'
      ? { proxies: [{ name: 'old.u', conf: { name: 'old.u', type: 'udp', metas: null, local_port: 0, remote_port: 16005 }, status: 'online' }] }
      : { proxies: [{ name: 'alice.web', conf: { name: 'alice.web', type: 'http', customDomains: ['a.example.com'] }, status: 'online' }] }))
  const online = await onlineProxies({ url: frps.url }, ['tcp', 'udp', 'http'])
  t.same([...online].sort(), ['alice.p1', 'alice.web', 'old.u'])
  t.same(new Map([...online.ports].sort()), new Map([[16001, 'alice.p1'], [16005, 'old.u']]), 'tcp and udp only')
})

t.test('reconcile holds the ports frps lists open that the registry does not know (it started empty): a port step does not hand them out', async t => {
  const store = new MemoryRegistry()
  const frps = await fakeFrps(t, (req, res) => json(res, 200, req.url === '/api/proxy/tcp' ? TCP : { proxies: [] }))
  t.same(await reconcile(store, await onlineProxies({ url: frps.url }), 60_000), { removed: 0, refused: 0, failed: [] })
  t.equal((await store.portOwner(16001))?.name, 'alice.p1', 'alice.p1\'s port, open at frps')
  t.equal(await store.assignPort({ user: 'fred', name: 'fred.x', ranges: [[16001, 16002]], holdMs: 60_000 }), 16002)
})

t.test('a record frps never listed online has its port refused: the proxy\'s next try gets another; one listed once keeps its port for its name after it vanishes', async t => {
  const store = new MemoryRegistry()
  let listed = true
  const frps = await fakeFrps(t, (req, res) => json(res, 200, req.url === '/api/proxy/tcp' && listed ? TCP : { proxies: [] }))
  const at = Date.now() - 120_000
  for (const [user, name, port] of [['alice', 'alice.p1', 16001], ['fred', 'fred.x', 16002]] as const) {
    t.equal(await store.assignPort({ user, name, ranges: [[port, 16003]], holdMs: 86_400_000 }), port)
    await store.register({ user, name, type: 'tcp', run_id: user, remote_port: port, registered_at: at })
  }
  // fred.x: frps refused it (another program listens on 16002), so it is not listed
  t.same(await reconcile(store, await onlineProxies({ url: frps.url }), 60_000), { removed: 1, refused: 1, failed: [] })
  t.equal((await store.portOwner(16002))?.refused, true, 'fred.x\'s port is held for no one')
  t.equal(await store.assignPort({ user: 'fred', name: 'fred.x', ranges: [[16002, 16003]], holdMs: 86_400_000 }), 16003, 'fred.x retries on the next port')
  t.ok((await store.get('alice', 'alice.p1'))?.confirmed_at, 'alice.p1, listed online, is confirmed')
  // frps restarted: alice.p1 is gone without a CloseProxy, and comes back on its port
  listed = false
  t.same(await reconcile(store, await onlineProxies({ url: frps.url }), 60_000), { removed: 1, refused: 0, failed: [] })
  t.equal((await store.portOwner(16001))?.name, 'alice.p1', 'held for alice.p1')
  t.equal(await store.assignPort({ user: 'alice', name: 'alice.p1', ranges: [[16001, 16003]], holdMs: 86_400_000 }), 16001)
})

t.test('a refused proxy frpc tries again every 30 s, its record never older than an interval of 1m, is judged from its first try', async t => {
  const store = new MemoryRegistry()
  const t0 = Date.now() - 200_000
  const tryAt = async (at: number): Promise<void> => { await store.register({ user: 'fred', name: 'fred.x', type: 'tcp', run_id: 'f', remote_port: 16002, registered_at: at }) }
  t.equal(await store.assignPort({ user: 'fred', name: 'fred.x', ranges: [[16002, 16003]], holdMs: 86_400_000 }), 16002)
  await tryAt(t0)
  await tryAt(t0 + 30_000)
  t.same(await reconcile(store, new Set(), 60_000, t0 + 50_000), { removed: 0, refused: 0, failed: [] }, 'tried 50 s ago: not yet')
  await tryAt(t0 + 60_000)
  t.same(await reconcile(store, new Set(), 60_000, t0 + 61_000, t0 + 60_000), { removed: 0, refused: 0, failed: [] }, 'a try since the reading is not judged by it')
  t.same(await reconcile(store, new Set(), 60_000, t0 + 80_000), { removed: 1, refused: 1, failed: [] }, 'first tried 80 s ago, never listed: refused')
  t.equal(await store.assignPort({ user: 'fred', name: 'fred.x', ranges: [[16002, 16003]], holdMs: 86_400_000 }), 16003, 'its next try gets the next port')
})

t.test('a failed read throws naming the URL and why, so nothing is removed on it', async t => {
  const denied = await fakeFrps(t, (_req, res) => json(res, 401, {}))
  await t.rejects(onlineProxies({ url: denied.url }, ['tcp']), { message: `frps API ${denied.url}/api/proxy/tcp: HTTP 401 (registry.frpsApi user and password: frps's webServer.user and webServer.password)` })
  const garbled = await fakeFrps(t, (_req, res) => res.end('<html>'))
  await t.rejects(onlineProxies({ url: garbled.url }, ['tcp']), { message: new RegExp(`^frps API ${garbled.url}/api/proxy/tcp: not JSON: `) })
  const odd = await fakeFrps(t, (_req, res) => json(res, 200, { proxies: 'all' }))
  await t.rejects(onlineProxies({ url: odd.url }, ['tcp']), { message: `frps API ${odd.url}/api/proxy/tcp: expected {"proxies": [...]}` })
  await t.rejects(onlineProxies({ url: 'http://127.0.0.1:1' }, ['tcp']), { message: /^frps API http:\/\/127\.0\.0\.1:1\/api\/proxy\/tcp: / })
})

t.test('a 200 answer that is not frps\'s (no "proxies" key: a wrong URL, a proxy in front) is a failed read, never "none online"', async t => {
  for (const body of ['{}', 'null', '[]', '"ok"', '{"status":"ok"}']) {
    const other = await fakeFrps(t, (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(body))
    await t.rejects(onlineProxies({ url: other.url }, ['tcp']), { message: `frps API ${other.url}/api/proxy/tcp: expected {"proxies": [...]}, not frps's answer` }, body)
  }
})

t.test('a chunked body (no Content-Length) is cut at 16 MiB', async t => {
  const chunk = Buffer.alloc(1024 * 1024, ' ')
  let written = 0
  const frps = await fakeFrps(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.write('{"proxies":[')
    const more = (): void => {
      while (written < 24 * 1024 * 1024) {
        written += chunk.length
        if (!res.write(chunk)) { res.once('drain', more); return }
      }
      res.end(']}')
    }
    res.on('error', () => {})
    more()
  })
  await t.rejects(onlineProxies({ url: frps.url }, ['tcp']), { message: `frps API ${frps.url}/api/proxy/tcp: a body of more than ${16 * 1024 * 1024} bytes` })
  t.ok(written < 24 * 1024 * 1024, `the read stopped before the end (${written} bytes written)`)
})

t.test('an item frps would never list (no string name or status) fails the read: the registry is not emptied by an answer of another shape', async t => {
  for (const item of [5, null, 'alice.p1', {}, { name: 'alice.p1' }, { name: { x: 1 }, status: 'online' }, { name: 'alice.p1', status: true }]) {
    const odd = await fakeFrps(t, (_req, res) => json(res, 200, { proxies: [TCP.proxies[0], item] }))
    await t.rejects(onlineProxies({ url: odd.url }, ['tcp']), { message: `frps API ${odd.url}/api/proxy/tcp: proxies[1]: expected {"name": "...", "status": "..."}, not frps's answer` }, JSON.stringify(item))
  }
})

t.test('a body of more values than frps would list is refused before it is parsed', async t => {
  // 15 MiB of empty objects (under the byte bound): some five million objects, where frps's own answer of that size holds about a million values
  const tiny = `{"proxies":[${'{},'.repeat(5_000_000)}{}]}`
  const frps = await fakeFrps(t, (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(tiny))
  await t.rejects(onlineProxies({ url: frps.url }, ['tcp']), { message: `frps API ${frps.url}/api/proxy/tcp: a body of up to 10000004 JSON values is more than 2000000, not frps's answer` })
  // a long list of real items is read: 20,000 proxies, about 6 MiB
  const many = { proxies: Array.from({ length: 20_000 }, (_, i) => ({ ...TCP.proxies[0], name: `u${i}.p`, conf: { ...TCP.proxies[0].conf, name: `u${i}.p`, remotePort: 20_000 + i } })) }
  const big = await fakeFrps(t, (_req, res) => json(res, 200, many))
  const online = await onlineProxies({ url: big.url }, ['tcp'])
  t.equal(online.size, 20_000)
  t.equal(online.ports.get(39_999), 'u19999.p')
})

t.test('reconcile removes records frps does not list online, once older than the grace period', async t => {
  const store = new MemoryRegistry()
  const now = 1_780_000_000_000
  await store.register({ user: 'alice', name: 'alice.p1', type: 'tcp', run_id: 'a', remote_port: 16001, registered_at: now - 120_000 })
  await store.register({ user: 'bob', name: 'bob.p1', type: 'tcp', run_id: 'b', remote_port: 16002, registered_at: now - 120_000 })
  await store.register({ user: 'bob', name: 'bob.new', type: 'tcp', run_id: 'b', registered_at: now - 10_000 })
  t.same(await reconcile(store, new Set(['alice.p1']), 60_000, now), { removed: 1, refused: 1, failed: [] })
  t.same((await store.list()).map(r => r.name), ['alice.p1', 'bob.new'], 'bob.p1 is gone (offline); bob.new is too young to judge')
  t.equal((await store.portOwner(16002))?.refused, true, 'and its port, never listed open, is held for no one')
  t.same(await reconcile(store, new Set(['alice.p1']), 60_000, now + 60_000), { removed: 1, refused: 0, failed: [] })
  t.same((await store.list()).map(r => r.name), ['alice.p1'])
})

t.test('reconcile leaves a record registered again (a reconnect keeps its run_id) after it listed the old one', async t => {
  const store = new MemoryRegistry()
  const old = { user: 'alice', name: 'alice.p1', type: 'tcp', run_id: 'r1', remote_port: 16001, registered_at: 1000 }
  await store.register(old)
  const list = store.list.bind(store)
  store.list = async (user?: string) => {
    const listed = await list(user)
    await store.register({ ...old, registered_at: 200_000 })
    return listed
  }
  t.same(await reconcile(store, new Set(), 60_000, 100_000), { removed: 0, refused: 0, failed: [] })
  t.equal((await store.get('alice', 'alice.p1'))?.registered_at, 200_000)
  t.same(await store.portOwner(16001), { user: 'alice', name: 'alice.p1' }, 'its port stays in use')
})

t.test('a removal that fails does not stop the others; the failures are answered', async t => {
  const store = new MemoryRegistry()
  for (const user of ['a', 'b', 'c']) await store.register({ user, name: `${user}.p`, type: 'http', run_id: 'r', registered_at: 0 })
  const unregister = store.unregister.bind(store)
  store.unregister = async (user, ...rest) => {
    if (user === 'b') throw new Error('store said no')
    return await unregister(user, ...rest)
  }
  const { removed, failed } = await reconcile(store, new Set(), 60_000, 100_000)
  t.equal(removed, 2)
  t.same(failed.map(e => e.message), ['store said no'])
  t.same((await store.list()).map(r => r.name), ['b.p'])
})
