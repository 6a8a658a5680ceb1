import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Test } from 'tap'
import type { PortRanges, ProxyRecord, QuotaLimits, RegistryStore } from '../../src/registry/store.js'

let n = 0
/** A user no other test of the same store touches. */
const someone = (): string => `u${++n}-${randomUUID().slice(0, 8)}`

const proxy = (user: string, short: string, extra: Partial<ProxyRecord> = {}): ProxyRecord => ({
  user, name: `${user}.${short}`, type: 'tcp', run_id: 'run-1', registered_at: 1_780_000_000_000, ...extra
})

/**
 * What every registry store (memory, Redis standalone, Redis Cluster) answers. Each test uses users
 * of its own; ports are taken from a block per test, so tests of one store do not meet.
 */
export function runRegistryContract (t: Test, name: string, make: () => Promise<RegistryStore>): void {
  let block = 20000
  const ports = (size: number): [number, number] => { const lo = block; block += 100; return [lo, lo + size - 1] }

  t.test(`${name} registry contract`, async t => {
    const store = await make()

    t.test('register, get, list, count; a NewProxy for a registered name replaces its record', async t => {
      const alice = someone()
      const before = await store.count()
      const p1 = proxy(alice, 'p1', { remote_port: 6001, metas: { team: 'red' } })
      await store.register(p1)
      await store.register(proxy(alice, 'web', { type: 'http', custom_domains: ['a.example.com'], subdomain: 'a' }))
      t.same(await store.get(alice, `${alice}.p1`), p1)
      t.same((await store.list(alice)).map(r => r.name), [`${alice}.p1`, `${alice}.web`])
      t.equal(await store.count(), before + 2)
      await store.register({ ...p1, run_id: 'run-2', remote_port: 6002 })
      t.equal((await store.get(alice, `${alice}.p1`))?.run_id, 'run-2', 'a reconnect replaces, not adds')
      t.equal(await store.count(), before + 2)
      t.same(await store.list(someone()), [])
      t.equal(await store.get(alice, 'nope'), undefined)
      const everyone = await store.list()
      t.ok(everyone.some(r => r.name === `${alice}.web`), 'list() holds every user')
    })

    t.test('a record is the store\'s own: changing what was registered or read changes nothing stored', async t => {
      const ann = someone()
      const p = proxy(ann, 'web', { type: 'http', custom_domains: ['a.example.com'], metas: { team: 'red' } })
      await store.register(p)
      const kept = structuredClone(p)
      p.metas!.team = 'blue'
      p.custom_domains!.push('b.example.com')
      const read = await store.get(ann, p.name)
      t.same(read, kept)
      read!.metas!.team = 'green'
      read!.custom_domains!.length = 0
      t.same(await store.get(ann, p.name), kept)
    })

    t.test('unregister removes a record only for its run_id: a late CloseProxy of an old session changes nothing', async t => {
      const bob = someone()
      await store.register(proxy(bob, 'p', { run_id: 'old' }))
      await store.register(proxy(bob, 'p', { run_id: 'new' }))
      t.equal(await store.unregister(bob, `${bob}.p`, 'old'), false)
      t.equal((await store.get(bob, `${bob}.p`))?.run_id, 'new')
      t.equal(await store.unregister(bob, `${bob}.p`, 'new'), true)
      t.equal(await store.get(bob, `${bob}.p`), undefined)
      t.equal(await store.unregister(bob, `${bob}.p`, 'new'), false, 'twice is once')
    })

    t.test('a CloseProxy soon after a reconnect Login leaves a record the new session registered (frpc keeps its run_id)', async t => {
      const rick = someone()
      const name = `${rick}.p`
      const t0 = 1_780_000_000_000
      await store.register(proxy(rick, 'p', { run_id: 'X', registered_at: t0 }))
      await store.noteLogin(rick, 'X', t0 + 10_000)
      t.equal(await store.unregister(rick, name, 'X', { now: t0 + 10_050, ms: 5000 }), true, 'the old session\'s record goes: its close came first')
      await store.register(proxy(rick, 'p', { run_id: 'X', registered_at: t0 + 10_100 }))
      t.equal(await store.unregister(rick, name, 'X', { now: t0 + 10_200, ms: 5000 }), false, 'a late close of the old session: the new record stays')
      t.equal((await store.get(rick, name))?.registered_at, t0 + 10_100)
      t.equal(await store.unregister(rick, name, 'X', { now: t0 + 15_001, ms: 5000 }), true, 'past the settle period a close is a close')
      await store.register(proxy(rick, 'p', { run_id: 'X', registered_at: t0 + 20_000 }))
      t.equal(await store.unregister(rick, name, 'X'), true, 'without settle (reconciliation) the run_id alone decides')
      await store.register(proxy(rick, 'q', { run_id: 'Y', registered_at: t0 + 20_000 }))
      t.equal(await store.unregister(rick, `${rick}.q`, 'Y', { now: t0 + 20_100, ms: 5000 }), true, 'a client that never logged in again is not doubted')
    })

    t.test('quota: counts records and live reservations, and names the limit reached', async t => {
      const carol = someone()
      const req = (short: string, extra: Partial<{ run_id: string, port: boolean, ttlMs: number }> = {}) =>
        ({ user: carol, name: `${carol}.${short}`, run_id: 'r1', port: true, ttlMs: 5000, ...extra })
      await store.register(proxy(carol, 'a'))
      t.same(await store.reserve(req('b'), { maxProxies: 3 }), { allowed: true })
      t.same(await store.reserve(req('c'), { maxProxies: 3 }), { allowed: true })
      t.same(await store.reserve(req('d'), { maxProxies: 3 }), { allowed: false, limit: 'maxProxies', count: 3, max: 3 })
      t.same(await store.reserve(req('a'), { maxProxies: 3 }), { allowed: true }, 'a registered name is no new proxy')
      t.same(await store.reserve(req('b'), { maxProxies: 3 }), { allowed: true }, 'nor a reserved one')
      t.same(await store.reserve(req('b'), { maxProxies: 2 }), { allowed: false, limit: 'maxProxies', count: 2, max: 2 }, 'but the others count against a reserved one (a second quota step)')
      await store.release(carol, `${carol}.c`, 'other-run')
      t.same(await store.reserve(req('d'), { maxProxies: 3 }), { allowed: false, limit: 'maxProxies', count: 3, max: 3 }, 'release needs the run_id that reserved')
      await store.release(carol, `${carol}.c`, 'r1')
      t.same(await store.reserve(req('d'), { maxProxies: 3 }), { allowed: true }, 'a released reservation no longer counts')
      await store.register(proxy(carol, 'd'))
      t.same(await store.reserve(req('e'), { maxProxies: 3 }), { allowed: false, limit: 'maxProxies', count: 3, max: 3 }, 'register turns the reservation into the record')
    })

    t.test('quota: per client (run_id) and ports (tcp/udp) are counted apart', async t => {
      const dave = someone()
      await store.register(proxy(dave, 't1', { run_id: 'A' }))
      await store.register(proxy(dave, 'h1', { run_id: 'A', type: 'http' }))
      await store.register(proxy(dave, 'u1', { run_id: 'B', type: 'udp' }))
      const req = (short: string, run: string, port: boolean) => ({ user: dave, name: `${dave}.${short}`, run_id: run, port, ttlMs: 5000 })
      t.same(await store.reserve(req('x', 'A', false), { maxProxiesPerClient: 2 }), { allowed: false, limit: 'maxProxiesPerClient', count: 2, max: 2 })
      t.same(await store.reserve(req('x', 'B', false), { maxProxiesPerClient: 2 }), { allowed: true })
      t.same(await store.reserve(req('y', 'C', true), { maxPorts: 2 }), { allowed: false, limit: 'maxPorts', count: 2, max: 2 })
      t.same(await store.reserve(req('y', 'C', false), { maxPorts: 2 }), { allowed: true }, 'an http proxy holds no port')
      t.same(await store.reserve(req('z', 'C', true), { maxProxies: 10, maxPorts: 3 }), { allowed: true })
      t.same(await store.reserve(req('w', 'C', true), { maxProxies: 10, maxPorts: 3 }), { allowed: false, limit: 'maxPorts', count: 3, max: 3 }, 'a port reservation counts as a port')
    })

    t.test('quota: a reservation nothing commits ends at its ttl', async t => {
      const erin = someone()
      const req = (short: string) => ({ user: erin, name: `${erin}.${short}`, run_id: 'r', port: false, ttlMs: 150 })
      t.same(await store.reserve(req('a'), { maxProxies: 1 }), { allowed: true })
      t.same(await store.reserve(req('b'), { maxProxies: 1 }), { allowed: false, limit: 'maxProxies', count: 1, max: 1 })
      await sleep(250)
      t.same(await store.reserve(req('b'), { maxProxies: 1 }), { allowed: true })
    })

    t.test('quota: a burst of concurrent reservations admits exactly the limit', async t => {
      const frank = someone()
      const results = await Promise.all(Array.from({ length: 40 }, (_, i) =>
        store.reserve({ user: frank, name: `${frank}.p${i}`, run_id: 'r', port: true, ttlMs: 5000 }, { maxProxies: 7 })))
      t.equal(results.filter(r => r.allowed).length, 7)
    })

    t.test('quota: the reservations of one tick, of several users and limits, each get their own answer, in the order asked', async t => {
      const [ann, ben, cy] = [someone(), someone(), someone()]
      const ask = (user: string, short: string, limits: QuotaLimits, port = false) =>
        store.reserve({ user, name: `${user}.${short}`, run_id: 'r', port, ttlMs: 5000 }, limits)
      t.same(await Promise.all([
        ask(ann, 'a', { maxProxies: 2 }), ask(ben, 'a', { maxProxies: 0 }), ask(ann, 'b', { maxProxies: 2 }),
        ask(cy, 'a', { maxPorts: 1 }, true), ask(ann, 'c', { maxProxies: 2 }), ask(cy, 'a', { maxPorts: 1 }, true),
        ask(cy, 'b', { maxPorts: 1 }, true), ask(cy, 'c', { maxPorts: 1 })
      ]), [
        { allowed: true }, { allowed: false, limit: 'maxProxies', count: 0, max: 0 }, { allowed: true },
        { allowed: true }, { allowed: false, limit: 'maxProxies', count: 2, max: 2 }, { allowed: true },
        { allowed: false, limit: 'maxPorts', count: 1, max: 1 }, { allowed: true }
      ])
    })

    t.test('ports: assigned from the ranges, sticky per user and name, held after close, then freed', async t => {
      const gina = someone()
      const hank = someone()
      const [lo, hi] = ports(3)
      const ranges = [[lo, hi]] as const
      const ask = (user: string, short: string, holdMs = 60_000) => store.assignPort({ user, name: `${user}.${short}`, ranges, holdMs })
      t.equal(await ask(gina, 'a'), lo)
      t.equal(await ask(gina, 'a'), lo, 'the same user and name: the same port')
      t.equal(await ask(gina, 'b'), lo + 1)
      t.equal(await ask(hank, 'a'), lo + 2, 'another user with the same short name gets another port')
      t.equal(await ask(hank, 'z'), undefined, 'no port left')
      t.same(await store.portOwner(lo + 1), { user: gina, name: `${gina}.b`, heldUntil: (await store.portOwner(lo + 1))?.heldUntil })

      await store.register(proxy(gina, 'a', { remote_port: lo }))
      t.same(await store.portOwner(lo), { user: gina, name: `${gina}.a` }, 'registered: in use, no end')
      t.equal(await store.unregister(gina, `${gina}.a`, 'run-1'), true)
      const held = await store.portOwner(lo)
      t.equal(held?.name, `${gina}.a`, 'held after close')
      t.ok(held?.heldUntil !== undefined && held.heldUntil > Date.now() + 50_000, 'for holdMs')
      t.equal(await ask(hank, 'z'), undefined, 'a held port goes to no one else')
      t.equal(await ask(gina, 'a'), lo, 'and back to its owner after a restart')
    })

    t.test('ports: a hold ends after holdMs, and the port goes to whoever asks', async t => {
      const ian = someone()
      const jo = someone()
      const [lo] = ports(1)
      const ranges = [[lo, lo]] as const
      t.equal(await store.assignPort({ user: ian, name: `${ian}.a`, ranges, holdMs: 150 }), lo)
      t.equal(await store.assignPort({ user: jo, name: `${jo}.a`, ranges, holdMs: 150 }), undefined)
      await sleep(250)
      t.equal(await store.portOwner(lo), undefined)
      t.equal(await store.assignPort({ user: jo, name: `${jo}.a`, ranges, holdMs: 150 }), lo)
      t.equal(await store.assignPort({ user: ian, name: `${ian}.a`, ranges, holdMs: 150 }), undefined, 'ian lost it')
    })

    t.test('ports: a port handed out is held pendingMs when that is longer than holdMs (its call in flight); holdMs after its close', async t => {
      const kit = someone()
      const lou = someone()
      const [lo] = ports(1)
      const ranges = [[lo, lo]] as const
      t.equal(await store.assignPort({ user: kit, name: `${kit}.a`, ranges, holdMs: 100, pendingMs: 800 }), lo)
      await sleep(250)
      t.equal(await store.assignPort({ user: lou, name: `${lou}.a`, ranges, holdMs: 100 }), undefined, 'past holdMs, within pendingMs: still held')
      await store.register(proxy(kit, 'a', { remote_port: lo }))
      t.equal(await store.unregister(kit, `${kit}.a`, 'run-1'), true)
      const closed = await store.portOwner(lo)
      t.ok(closed?.heldUntil !== undefined && closed.heldUntil <= Date.now() + 150, 'after its close: holdMs')
      t.equal(await store.assignPort({ user: kit, name: `${kit}.a`, ranges, holdMs: 100, pendingMs: 800 }), lo, 'asked again while held')
      const again = await store.portOwner(lo)
      t.ok(again?.heldUntil !== undefined && again.heldUntil > Date.now() + 500, 'pendingMs again')
    })

    t.test('ports: a port registered without assignment is freed at close; registering takes it from a hold', async t => {
      const kim = someone()
      const lee = someone()
      const [lo, hi] = ports(2)
      await store.register(proxy(kim, 'x', { remote_port: lo }))
      t.same(await store.portOwner(lo), { user: kim, name: `${kim}.x` })
      t.equal(await store.assignPort({ user: lee, name: `${lee}.a`, ranges: [[lo, hi]], holdMs: 60_000 }), hi, 'a port in use is skipped')
      await store.unregister(kim, `${kim}.x`, 'run-1')
      t.equal(await store.portOwner(lo), undefined)
      await store.register(proxy(kim, 'y', { remote_port: hi }))
      t.same(await store.portOwner(hi), { user: kim, name: `${kim}.y` }, 'frps opened it: the registry says so')
      t.equal(await store.assignPort({ user: lee, name: `${lee}.a`, ranges: [[lo, hi]], holdMs: 60_000 }), lo, 'lee, whose hold was taken, gets another')
    })

    t.test('ports: a reconnect registered while the old session closes keeps its port in use, never held to lapse', async t => {
      for (let i = 0; i < 5; i++) {
        const [lo] = ports(1)
        const max = someone()
        t.equal(await store.assignPort({ user: max, name: `${max}.p`, ranges: [[lo, lo]], holdMs: 60_000 }), lo)
        await store.register(proxy(max, 'p', { run_id: 'old', remote_port: lo }))
        // what frps sends on a reconnect: the old session's CloseProxy and the new one's NewProxy, committed at once
        await Promise.all([store.unregister(max, `${max}.p`, 'old'), store.register(proxy(max, 'p', { run_id: 'new', remote_port: lo }))])
        t.equal((await store.get(max, `${max}.p`))?.run_id, 'new')
        t.same(await store.portOwner(lo), { user: max, name: `${max}.p` }, `in use by the new session, no end (round ${i})`)
        await store.unregister(max, `${max}.p`, 'new')
        t.equal((await store.portOwner(lo))?.heldUntil !== undefined, true, 'held once the new session closes')
      }
    })

    t.test('ports: a record on a port another proxy has open (frps refuses it) takes nothing from that proxy', async t => {
      const ned = someone()
      const oz = someone()
      const [lo] = ports(1)
      await store.register(proxy(ned, 'live', { remote_port: lo }))
      await store.register(proxy(oz, 'late', { remote_port: lo, run_id: 'o' }))
      t.same(await store.portOwner(lo), { user: ned, name: `${ned}.live` }, 'the port stays with the proxy that has it')
      t.equal(await store.unregister(oz, `${oz}.late`, 'o'), true, 'reconciliation removes the refused record')
      t.same(await store.portOwner(lo), { user: ned, name: `${ned}.live` }, 'and the port is still in use, not freed')
      t.equal(await store.assignPort({ user: oz, name: `${oz}.x`, ranges: [[lo, lo]], holdMs: 60_000 }), undefined, 'so no one is handed it')
    })

    t.test('ports: a record replaced by one that does not use its port (another type, port 0, or a port refused) releases it as a close would', async t => {
      const ned = someone()
      const [open] = ports(1)
      await store.register(proxy(ned, 'live', { remote_port: open }))
      for (const replacement of [{ type: 'http' }, { remote_port: undefined }, { remote_port: open }]) {
        const kim = someone()
        const [lo] = ports(1)
        t.equal(await store.assignPort({ user: kim, name: `${kim}.p`, ranges: [[lo, lo]], holdMs: 60_000 }), lo)
        await store.register(proxy(kim, 'p', { run_id: 'old', remote_port: lo }))
        await store.register(proxy(kim, 'p', { run_id: 'new', registered_at: 1_780_000_001_000, ...replacement }))
        const held = await store.portOwner(lo)
        t.equal(held?.heldUntil !== undefined, true, `${JSON.stringify(replacement)}: the old port is held for the proxy, no longer in use`)
        t.equal(await store.unregister(kim, `${kim}.p`, 'new'), true)
        t.same(await store.portOwner(lo), held, 'and its close changes nothing more')
        t.equal(await store.assignPort({ user: kim, name: `${kim}.p`, ranges: [[lo, lo]], holdMs: 60_000 }), lo, 'the proxy gets it back')
      }
      t.same(await store.portOwner(open), { user: ned, name: `${ned}.live` }, 'the port refused stays with the proxy that has it')
    })

    t.test('ports: a record replaced by one on another port (a second frpc with the name, refused by frps) holds the old port: no one else is handed it', async t => {
      const [kim, bob] = [someone(), someone()]
      const [lo, hi] = ports(3)
      t.equal(await store.assignPort({ user: kim, name: `${kim}.p`, ranges: [[lo, lo]], holdMs: 60_000 }), lo)
      await store.register(proxy(kim, 'p', { run_id: 'first', remote_port: lo }))
      await store.register(proxy(kim, 'p', { run_id: 'second', remote_port: hi, registered_at: 1_780_000_001_000 }))
      t.equal((await store.portOwner(lo))?.heldUntil !== undefined, true, 'the old port is held for the proxy, no longer in use')
      t.same(await store.portOwner(hi), { user: kim, name: `${kim}.p` }, 'the new one is in use')
      t.equal(await store.assignPort({ user: bob, name: `${bob}.x`, ranges: [[lo, hi]], holdMs: 60_000 }), lo + 1, 'another proxy gets neither')
      t.equal(await store.unregister(kim, `${kim}.p`, 'second'), true)
      t.equal(await store.assignPort({ user: kim, name: `${kim}.p`, ranges: [[lo, lo]], holdMs: 60_000 }), lo, 'the proxy gets its held port back')
    })

    t.test('ports: holdOpen holds the ports frps lists open that the table does not have for that proxy, so no one is handed them', async t => {
      const [ann, bob, cid, dot] = [someone(), someone(), someone(), someone()]
      const [lo] = ports(6)
      // lo: open at frps, unknown here (the registry started empty); lo+1: bob's record, as frps lists it; lo+2: cid's record,
      // registered before the read, refused by frps (ann's other proxy has it open); lo+3: dot's, registered after the read
      t.equal(await store.assignPort({ user: cid, name: `${cid}.p`, ranges: [[lo + 2, lo + 2]], holdMs: 60_000 }), lo + 2)
      await store.register(proxy(bob, 'p', { remote_port: lo + 1, registered_at: 1000 }))
      await store.register(proxy(cid, 'p', { remote_port: lo + 2, registered_at: 1000 }))
      await store.register(proxy(dot, 'p', { remote_port: lo + 3, registered_at: 3000 }))
      const listed = new Map([[lo, `${ann}.a`], [lo + 1, `${bob}.p`], [lo + 2, `${ann}.b`], [lo + 3, `${ann}.c`]])
      await store.holdOpen(listed, 60_000, 2000)
      t.equal((await store.portOwner(lo))?.name, `${ann}.a`, 'a port unknown here is held for the proxy frps lists')
      t.equal((await store.portOwner(lo))?.heldUntil !== undefined, true)
      t.same(await store.portOwner(lo + 1), { user: bob, name: `${bob}.p` }, 'a record\'s own port stays in use by it')
      t.equal((await store.portOwner(lo + 2))?.name, `${ann}.b`, 'a port frps lists for another proxy is that one\'s')
      t.same(await store.portOwner(lo + 3), { user: dot, name: `${dot}.p` }, 'a record registered after the read keeps its port')
      t.equal(await store.assignPort({ user: cid, name: `${cid}.p`, ranges: [[lo, lo + 5]], holdMs: 60_000 }), lo + 4, 'the refused proxy gets a port frps does not have open')
      t.equal(await store.assignPort({ user: someone(), name: 'x.q', ranges: [[lo, lo + 5]], holdMs: 60_000 }), lo + 5)
      t.equal(await store.assignPort({ user: ann, name: `${ann}.a`, ranges: [[lo, lo + 5]], holdMs: 60_000 }), lo, 'the proxy frps listed on a port gets it when assigned one')
      await store.register(proxy(ann, 'a', { run_id: 'back', remote_port: lo, registered_at: 4000 }))
      t.same(await store.portOwner(lo), { user: ann, name: `${ann}.a` }, 'the proxy registering again takes its port')
    })

    t.test('ports: removed with refusedMs, a record never confirmed (frps never opened it) leaves its port held for no one; a confirmed one, for its proxy', async t => {
      const [ref, ok, odd, other] = [someone(), someone(), `${someone()}\udc00`, someone()]
      const [lo, hi] = ports(4)
      const ranges = [[lo, hi]] as const
      const ask = (user: string, short: string) => store.assignPort({ user, name: `${user}.${short}`, ranges, holdMs: 60_000 })
      t.same([await ask(ref, 'p'), await ask(ok, 'p'), await ask(odd, 'p\ud800')], [lo, lo + 1, lo + 2])
      await store.register(proxy(ref, 'p', { remote_port: lo, registered_at: 1000 }))
      await store.register(proxy(ok, 'p', { remote_port: lo + 1, registered_at: 1000 }))
      await store.register(proxy(odd, 'p\ud800', { remote_port: lo + 2, registered_at: 1000 }))
      const key = (user: string, name: string, at = 1000) => ({ user, name, run_id: 'run-1', registered_at: at })
      await store.confirm([key(ok, `${ok}.p`), key(ref, `${ref}.p`, 999), key(odd, `${odd}.p\ud800`)], 5000)
      t.equal((await store.get(ok, `${ok}.p`))?.confirmed_at, 5000, 'the record listed is confirmed')
      t.equal((await store.get(odd, `${odd}.p\ud800`))?.confirmed_at, 5000, 'in the same call, whatever its names')
      t.equal((await store.get(ref, `${ref}.p`))?.confirmed_at, undefined, 'not one registered at another time')
      await store.confirm([key(ok, `${ok}.p`)], 9000)
      t.same(await store.get(ok, `${ok}.p`), proxy(ok, 'p', { remote_port: lo + 1, registered_at: 1000, confirmed_at: 5000 }), 'confirmed once, the record otherwise as registered')

      t.equal(await store.unregister(ref, `${ref}.p`, 'run-1', undefined, 1000, 60_000), true)
      t.equal(await store.unregister(ok, `${ok}.p`, 'run-1', undefined, 1000, 60_000), true)
      const blocked = await store.portOwner(lo)
      t.equal(blocked?.refused, true, 'the port of the record never confirmed is refused')
      t.ok(blocked?.heldUntil !== undefined && blocked.heldUntil > Date.now() + 50_000 && blocked.heldUntil <= Date.now() + 60_000, 'for refusedMs')
      const held = await store.portOwner(lo + 1)
      t.ok(held?.heldUntil !== undefined && held.refused === undefined, 'the confirmed one\'s is held for its proxy, as at a close')
      t.equal(await ask(ref, 'p'), hi, 'the refused proxy gets another port at its next try')
      t.equal(await ask(other, 'x'), undefined, 'and no one gets the refused port')
      t.equal(await ask(ok, 'p'), lo + 1, 'the confirmed proxy gets its port back')
      await store.holdOpen(new Map([[lo, 'x.other']]), 60_000, 0)
      t.same(await store.portOwner(lo), { user: '', name: 'x.other', heldUntil: (await store.portOwner(lo))?.heldUntil }, 'a proxy frps lists open on it gets the port')

      // a refused port comes back after refusedMs; a record refused on a port another proxy has open takes nothing from it
      const [one] = ports(1)
      await store.register(proxy(ok, 'q', { remote_port: one, registered_at: 1000 }))
      await store.register(proxy(ref, 'q', { remote_port: one, registered_at: 1000 }))
      t.equal(await store.unregister(ref, `${ref}.q`, 'run-1', undefined, 1000, 150), true)
      t.same(await store.portOwner(one), { user: ok, name: `${ok}.q` }, 'still in use by the proxy that has it')
      await store.unregister(ok, `${ok}.q`, 'run-1')
      t.equal(await store.assignPort({ user: ref, name: `${ref}.q`, ranges: [[one, one]], holdMs: 60_000 }), one)
      await store.register(proxy(ref, 'q', { remote_port: one, registered_at: 2000 }))
      t.equal(await store.unregister(ref, `${ref}.q`, 'run-1', undefined, 2000, 150), true)
      t.equal((await store.portOwner(one))?.refused, true)
      await sleep(250)
      t.equal(await store.portOwner(one), undefined, 'free after refusedMs')
      t.equal(await store.assignPort({ user: ref, name: `${ref}.q`, ranges: [[one, one]], holdMs: 60_000 }), one)
    })

    t.test('a record replacing one unconfirmed of the same run_id and port (frpc trying a refused proxy again) keeps when it was first registered', async t => {
      const [amy, odd] = [someone(), `${someone()}\udc00`]
      const [lo] = ports(2)
      for (const user of [amy, odd]) {
        const name = `${user}.p\ud800`
        const at = (registered: number, extra: Partial<ProxyRecord> = {}) => ({ ...proxy(user, 'p\ud800', { remote_port: lo, registered_at: registered }), ...extra })
        await store.register(at(1000))
        t.equal((await store.get(user, name))?.first_at, undefined, 'a first record has none')
        await Promise.all([store.register(at(31_000)), store.reserve({ user, name: `${user}.q`, run_id: 'r', port: false, ttlMs: 5000 }, {})])
        // Redis stores a lone surrogate of a name as U+FFFD (above)
        t.same({ ...await store.get(user, name), user, name }, at(31_000, { first_at: 1000 }), 'a try again: the first one\'s time, the record otherwise as registered')
        await store.register(at(61_000))
        t.equal((await store.get(user, name))?.first_at, 1000, 'and again')
        await store.register(at(91_000, { remote_port: lo + 1 }))
        t.equal((await store.get(user, name))?.first_at, undefined, 'not on another port')
        await store.register(at(92_000, { remote_port: lo + 1, run_id: 'other' }))
        t.equal((await store.get(user, name))?.first_at, undefined, 'nor for another client')
        await store.confirm([{ user, name, run_id: 'other', registered_at: 92_000 }], 95_000)
        await store.register(at(121_000, { remote_port: lo + 1, run_id: 'other' }))
        t.equal((await store.get(user, name))?.first_at, undefined, 'nor after a confirmed one (a reconnect)')
      }
    })

    t.test('ports: a user name with a newline in it gets no other user\'s port', async t => {
      const tag = someone()
      const [lo, hi] = ports(2)
      // the same "user\nname" text, split otherwise
      const a = { user: tag, name: `${tag}.y\n${tag}.p` }
      const b = { user: `${tag}\n${tag}.y`, name: `${tag}.p` }
      const pa = await store.assignPort({ ...a, ranges: [[lo, hi]], holdMs: 60_000 })
      const pb = await store.assignPort({ ...b, ranges: [[lo, hi]], holdMs: 60_000 })
      t.same([pa, pb], [lo, hi])
      await store.register({ ...a, type: 'tcp', run_id: 'a', remote_port: pa, registered_at: 1 })
      await store.register({ ...b, type: 'tcp', run_id: 'b', remote_port: pb, registered_at: 1 })
      t.equal(await store.unregister(b.user, b.name, 'b'), true)
      t.same(await store.portOwner(lo), a, 'a\'s proxy keeps its port in use')
      t.equal((await store.portOwner(hi))?.heldUntil !== undefined, true, 'b\'s is held for b')
      t.equal(await store.assignPort({ ...b, ranges: [[lo, hi]], holdMs: 60_000 }), hi)
    })

    t.test('unregister with registeredAt removes only the record registered then, not one registered again since', async t => {
      const ida = someone()
      const [lo] = ports(1)
      await store.register(proxy(ida, 'p', { remote_port: lo, registered_at: 1000 }))
      await store.register(proxy(ida, 'p', { remote_port: lo, registered_at: 2000 }))
      t.equal(await store.unregister(ida, `${ida}.p`, 'run-1', undefined, 1000), false)
      t.same(await store.portOwner(lo), { user: ida, name: `${ida}.p` }, 'its port stays in use')
      t.equal(await store.unregister(ida, `${ida}.p`, 'run-1', undefined, 2000), true)
    })

    t.test('ports: a close racing a reconnect of the same run_id never holds the port the new record uses', async t => {
      for (let i = 0; i < 10; i++) {
        const max = someone()
        const [lo] = ports(1)
        await store.assignPort({ user: max, name: `${max}.p`, ranges: [[lo, lo]], holdMs: 7 * 86_400_000 })
        await store.register(proxy(max, 'p', { run_id: 'R', remote_port: lo, registered_at: 1000 }))
        await store.noteLogin(max, 'R', 5000)
        await Promise.all([
          store.unregister(max, `${max}.p`, 'R', { now: 5010, ms: 5000 }),
          store.register(proxy(max, 'p', { run_id: 'R', remote_port: lo, registered_at: 5005 }))
        ])
        const record = await store.get(max, `${max}.p`)
        if (record !== undefined) t.same(await store.portOwner(lo), { user: max, name: `${max}.p` }, `round ${i}: a record stays, its port in use`)
        else t.equal((await store.portOwner(lo))?.heldUntil !== undefined, true, `round ${i}: the record went (its close came first), its port held`)
      }
    })

    t.test('ports: the asks of one tick, with one range or several, each get their own port, in the order asked', async t => {
      const [lo] = ports(6)
      const [dee, eli] = [someone(), someone()]
      const ask = (user: string, short: string, ranges: PortRanges) => store.assignPort({ user, name: `${user}.${short}`, ranges, holdMs: 60_000 })
      t.same(await Promise.all([
        ask(dee, 'a', [[lo, lo + 1]]), ask(eli, 'a', [[lo, lo], [lo + 3, lo + 5]]), ask(dee, 'b', [[lo, lo + 1]]),
        ask(dee, 'a', [[lo, lo + 1]]), ask(eli, 'b', [[lo + 1, lo + 1]]), ask(eli, 'c', [[lo + 1, lo + 2], [lo + 5, lo + 5]])
      ]), [lo, lo + 3, lo + 1, lo, undefined, lo + 2])
    })

    t.test('ports: concurrent asks never hand one port to two names', async t => {
      const [lo, hi] = ports(20)
      const users = Array.from({ length: 30 }, () => someone())
      const got = await Promise.all(users.map(u => store.assignPort({ user: u, name: `${u}.p`, ranges: [[lo, hi]], holdMs: 60_000 })))
      const given = got.filter((p): p is number => p !== undefined)
      t.equal(given.length, 20)
      t.equal(new Set(given).size, 20)
    })

    t.test('a burst of concurrent records all land, with their ports (Redis on one node writes them in batches of at most 200)', async t => {
      const [lo] = ports(100)
      const before = await store.count()
      const records = Array.from({ length: 250 }, (_, i) => {
        const user = someone()
        return i < 100 ? proxy(user, 'p', { remote_port: lo + i, run_id: `run-${i}` }) : proxy(user, 'web', { type: 'http', run_id: `run-${i}` })
      })
      await Promise.all(records.map(async r => await store.register(r)))
      t.equal(await store.count(), before + 250)
      const stored = await Promise.all(records.map(async r => await store.get(r.user, r.name)))
      t.same(stored, records)
      const owners = await Promise.all(records.slice(0, 100).map(async r => await store.portOwner(r.remote_port as number)))
      t.same(owners, records.slice(0, 100).map(r => ({ user: r.user, name: r.name })))
    })

    t.test('user names with braces (a Redis Cluster hash tag\'s own characters) or none are users like any other', async t => {
      const tag = someone()
      for (const user of [`}${tag}`, `{}${tag}`, `${tag}}`, `{${tag}`, `}`, '']) {
        const record = proxy(user, 'p', { remote_port: ports(1)[0] })
        t.same(await store.reserve({ user, name: record.name, run_id: 'run-1', port: true, ttlMs: 5000 }, { maxProxies: 1 }), { allowed: true }, `${JSON.stringify(user)} reserves`)
        t.equal(await store.assignPort({ user, name: record.name, ranges: [[record.remote_port as number, record.remote_port as number]], holdMs: 60_000 }), record.remote_port)
        await store.register(record)
        t.same(await store.get(user, record.name), record, `${JSON.stringify(user)} registers`)
        t.same((await store.list(user)).map(r => r.name), [record.name])
        t.same(await store.reserve({ user, name: `${user}.q`, run_id: 'run-1', port: false, ttlMs: 5000 }, { maxProxies: 1 }),
          { allowed: false, limit: 'maxProxies', count: 1, max: 1 }, `${JSON.stringify(user)} is counted`)
        t.equal(await store.unregister(user, record.name, 'run-1'), true)
        t.equal(await store.get(user, record.name), undefined)
      }
    })

    t.test('a record with a lone surrogate in it (a caller\'s, never frps\'s) is counted, replaced and removed like any other', async t => {
      const user = someone()
      const [lo] = ports(1)
      await store.register(proxy(user, 'a', { remote_port: lo, metas: { note: '\ud800', path: 'x\\ud800' }, subdomain: 'z\udfff' }))
      const back = await store.get(user, `${user}.a`)
      t.equal(back?.metas?.note.length, 1, 'one character stands for it')
      t.equal(back?.metas?.path, 'x\\ud800', 'a backslash before "ud800" is kept as written')
      t.same(await store.reserve({ user, name: `${user}.b`, run_id: 'run-1', port: true, ttlMs: 5000 }, { maxProxies: 1 }),
        { allowed: false, limit: 'maxProxies', count: 1, max: 1 }, 'the quota counts it')
      await store.register(proxy(user, 'a', { type: 'http', metas: { note: '\ud800' } }))
      t.equal(await store.portOwner(lo), undefined, 'replaced: its port released (freed: no ports step held it)')
      t.equal(await store.unregister(user, `${user}.a`, 'run-1'), true, 'a CloseProxy removes it')
    })

    t.test('a user and a proxy name with lone surrogates are reserved, given a port and recorded, and the others asked in the same turn too', async t => {
      const odd = `${someone()}\udc00`
      const other = someone()
      const [lo, hi] = ports(2)
      const asks = await Promise.all([
        store.reserve({ user: odd, name: `${odd}.p\ud800`, run_id: 'run-1', port: true, ttlMs: 5000 }, { maxProxies: 1 }),
        store.assignPort({ user: odd, name: `${odd}.p\ud800`, ranges: [[lo, hi]], holdMs: 60_000 }),
        store.reserve({ user: other, name: `${other}.p`, run_id: 'run-1', port: true, ttlMs: 5000 }, { maxProxies: 1 }),
        store.assignPort({ user: other, name: `${other}.p`, ranges: [[lo, hi]], holdMs: 60_000 })
      ])
      t.same(asks, [{ allowed: true }, lo, { allowed: true }, hi])
      await store.register(proxy(odd, 'p\ud800', { remote_port: lo }))
      t.equal((await store.list(odd)).length, 1, 'recorded')
      t.ok(await store.portOwner(lo), 'its port in use')
    })

    t.test('names and metas are data, not keys of an object', async t => {
      const user = someone()
      const odd = proxy(user, '__proto__', { metas: JSON.parse('{"constructor": "x", "__proto__": "y"}') })
      await store.register(odd)
      const back = await store.get(user, `${user}.__proto__`)
      t.same(back, odd)
      t.same(Object.keys(back?.metas ?? {}), ['constructor', '__proto__'], 'own keys, kept')
      t.equal(({} as Record<string, unknown>).x, undefined)
    })
  })
}
