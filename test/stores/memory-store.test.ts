import v8 from 'node:v8'
import vm from 'node:vm'
import t from 'tap'
import { MemoryStore } from '../../src/stores/memory-store.js'
import { countsExactly } from '../../src/stores/store.js'
import { runStoreContract } from './contract.js'

runStoreContract(t, 'memory', async () => ({ store: new MemoryStore() }))

t.test('take answers synchronously', async t => {
  const result = new MemoryStore().take('k', { limit: 1, windowMs: 1000, burst: 1 })
  t.notOk(result instanceof Promise)
  t.same(result, { allowed: true, remaining: 0, retryAfterMs: 0 })
})

t.test('GCRA arithmetic with an injected clock', async t => {
  let now = 1_700_000_000_000
  const store = new MemoryStore({ now: () => now })

  t.test('limit 3 burst 3 per second: interval 333.33 ms', async t => {
    const rule = { limit: 3, windowMs: 1000, burst: 3 }
    t.same([1, 2, 3, 4].map(() => store.take('thirds', rule)), [
      { allowed: true, remaining: 2, retryAfterMs: 0 },
      { allowed: true, remaining: 1, retryAfterMs: 0 },
      { allowed: true, remaining: 0, retryAfterMs: 0 },
      { allowed: false, remaining: 0, retryAfterMs: 334 },
    ])
    now += 333
    t.same(store.take('thirds', rule), { allowed: false, remaining: 0, retryAfterMs: 1 })
    now += 1
    t.same(store.take('thirds', rule), { allowed: true, remaining: 0, retryAfterMs: 0 })
    now += 1000
    t.same(store.take('thirds', rule), { allowed: true, remaining: 2, retryAfterMs: 0 }, 'capped at burst after a long idle')
  })

  t.test('limit 5 burst 2 per second: interval 200 ms', async t => {
    const rule = { limit: 5, windowMs: 1000, burst: 2 }
    t.same([1, 2, 3].map(() => store.take('fifths', rule).retryAfterMs), [0, 0, 200])
    now += 50
    t.same(store.take('fifths', rule), { allowed: false, remaining: 0, retryAfterMs: 150 })
    now += 150
    t.same(store.take('fifths', rule), { allowed: true, remaining: 0, retryAfterMs: 0 })
    now += 300
    t.same(store.take('fifths', rule), { allowed: true, remaining: 0, retryAfterMs: 0 }, 'half an interval is not a token')
    now += 100
    t.same(store.take('fifths', rule), { allowed: true, remaining: 0, retryAfterMs: 0 })
    t.same(store.take('fifths', rule), { allowed: false, remaining: 0, retryAfterMs: 200 })
  })

  t.test('a full burst at one instant is exact despite float rounding', async t => {
    // e.g. 7 per second: 7 * (1000 / 7) lands a hair above 1000 in doubles
    for (let limit = 1; limit <= 20; limit++) {
      const rule = { limit, windowMs: 1000, burst: limit }
      const results = Array.from({ length: limit + 1 }, () => store.take(`burst-${limit}`, rule))
      t.same(results.map(r => r.remaining), [...Array.from({ length: limit }, (_, i) => limit - 1 - i), 0], `limit ${limit}`)
      t.same(results.map(r => r.allowed).lastIndexOf(true), limit - 1, `limit ${limit}: exactly ${limit} allowed`)
    }
  })
})

t.test('expired buckets are dropped before live ones when over maxKeys', async t => {
  let now = 0
  const store = new MemoryStore({ maxKeys: 3, now: () => now })
  const short = { limit: 1, windowMs: 100, burst: 1 }
  const long = { limit: 1, windowMs: 60_000, burst: 1 }
  store.take('old-live', long)
  store.take('short-1', short)
  store.take('short-2', short)
  t.equal(store.size, 3)
  now = 100
  store.take('new-live', long)
  t.equal(store.size, 2, 'both expired buckets dropped, no live one')
  t.equal(store.take('old-live', long).allowed, false, 'oldest live bucket kept')
  t.equal(store.take('new-live', long).allowed, false)
})

t.test('least recently used live buckets go first when every bucket is live', async t => {
  const store = new MemoryStore({ maxKeys: 10, now: () => 0 })
  const rule = { limit: 1, windowMs: 60_000, burst: 1 }
  for (let i = 0; i < 10; i++) store.take(`k${i}`, rule)
  t.equal(store.take('k0', rule).allowed, false, 'a refused take does not refresh k0')
  store.take('k10', rule)
  t.equal(store.size, 9)
  t.equal(store.take('k1', rule).allowed, true, 'k1 was evicted')
  t.equal(store.take('k10', rule).allowed, false, 'k10 kept')
})

t.test('a bucket taken again is kept over ones not used since', async t => {
  const store = new MemoryStore({ maxKeys: 10, now: () => 0 })
  const rule = { limit: 2, windowMs: 60_000, burst: 2 }
  for (let i = 0; i < 10; i++) store.take(`k${i}`, rule)
  t.equal(store.take('k0', rule).allowed, true, 'k0 taken again: its second token')
  store.take('k10', rule)
  t.equal(store.size, 9)
  t.equal(store.take('k0', rule).allowed, false, 'k0 kept: its bucket is empty')
  t.equal(store.take('k3', rule).allowed, true, 'k3 kept, one token left')
  t.equal(store.take('k3', rule).allowed, false, 'k3 kept: now empty')
  t.equal(store.take('k2', rule).allowed, true, 'k2 evicted: a fresh bucket')
  t.equal(store.take('k2', rule).allowed, true, 'k2: its second token')
})

t.test('memory stays bounded with 100,000 distinct keys', async t => {
  // a full GC before each reading makes heapUsed the retained size, not pending garbage
  v8.setFlagsFromString('--expose-gc')
  const gc = vm.runInNewContext('gc') as () => void
  const store = new MemoryStore({ maxKeys: 10_000 })
  const rule = { limit: 10, windowMs: 60_000, burst: 10 }
  gc()
  const heapBefore = process.memoryUsage().heapUsed
  let maxSize = 0
  for (let i = 0; i < 100_000; i++) {
    store.take(`client-${i}-${'x'.repeat(40)}`, rule)
    maxSize = Math.max(maxSize, store.size)
  }
  gc()
  const growthMb = (process.memoryUsage().heapUsed - heapBefore) / 1e6
  t.ok(maxSize <= 10_000, `size never above maxKeys (max ${maxSize})`)
  t.ok(store.size > 0, 'the store is still alive at the second reading')
  // about 4 MB retained when bounded; an unbounded Map of these 100k keys retains about 28 MB
  t.ok(growthMb < 15, `heap retained ${growthMb.toFixed(1)} MB more`)
})

t.test('close clears every bucket', async t => {
  const store = new MemoryStore()
  store.take('k', { limit: 1, windowMs: 60_000, burst: 1 })
  await store.ping()
  await store.close()
  t.equal(store.size, 0)
})

t.test('a burst at one instant is counted exactly up to the largest burst the config accepts', async t => {
  // float drift of tat grows with the burst: with a fixed slack, a burst of 105 at 105/s lost its last token
  const now = 1_764_000_000_123.456
  const wrong: string[] = []
  const largest = new Map<string, number>()
  for (const windowMs of [1000, 60_000, 3_600_000]) {
    for (const limit of [3, 7, 53.846, 105, 1000, 1420, 10_000]) {
      const interval = windowMs / limit
      let most = 1
      while (countsExactly(interval, most + 1) && most < 5000) most++
      largest.set(`${limit}/${windowMs}`, most)
      for (const burst of [...new Set([1, 99, 100, 105, 137, 1000, most])].filter(b => b <= most)) {
        const store = new MemoryStore({ now: () => now })
        const rule = { limit, windowMs, burst }
        const results = Array.from({ length: burst + 1 }, () => store.take('k', rule))
        const allowed = results.filter(r => r.allowed).length
        const remaining = results.slice(0, burst).map(r => r.remaining)
        if (allowed !== burst || remaining.some((r, i) => r !== burst - 1 - i)) {
          wrong.push(`${limit} per ${windowMs} ms, burst ${burst}: ${allowed} allowed, remaining ${remaining.slice(-3).join(',')}`)
        }
      }
    }
  }
  t.same(wrong, [], 'every burst counted exactly')
  // the bursts tried reach the largest the config accepts (README: 2027 at 1000 per second; the default burst up to 1420 per second)
  t.equal(largest.get('1000/1000'), 2027)
  t.ok((largest.get('1420/1000') ?? 0) >= 1420, `at 1420 per second up to ${String(largest.get('1420/1000'))}`)
  // the fastest refill the config allows (a token per 0.1 ms) is counted exactly too: burst 100 is among the bursts tried
  t.ok((largest.get('10000/1000') ?? 0) >= 100, `at 10000 per second up to ${String(largest.get('10000/1000'))}`)
})

t.test('a wall clock stepped back (NTP, a resumed VM) closes no bucket: the default clock is monotonic', async t => {
  const wall = Date.now
  let stepped = 0
  Date.now = () => wall() - stepped
  t.teardown(() => { Date.now = wall })
  const store = new MemoryStore()
  const rule = { limit: 1, windowMs: 1000, burst: 1 }
  t.equal(store.take('k', rule).allowed, true)
  stepped = 3_600_000
  await new Promise(resolve => setTimeout(resolve, 1100))
  const again = store.take('k', rule)
  t.same([again.allowed, again.retryAfterMs], [true, 0], 'a window later the bucket has its token again')
})
