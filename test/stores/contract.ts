import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Test } from 'tap'
import type { RateLimitStore, RateRule, TakeResult } from '../../src/stores/store.js'

const uniqueKey = (label: string): string => `${label}:${randomUUID()}`

async function takeN(store: RateLimitStore, key: string, rule: RateRule, n: number): Promise<TakeResult[]> {
  const results: TakeResult[] = []
  for (let i = 0; i < n; i++) results.push(await store.take(key, rule))
  return results
}

/**
 * The behaviour every RateLimitStore must have. Windows are long wherever exact counts are
 * asserted, so a slow machine cannot refill a token in the middle of a burst.
 */
export function runStoreContract(t: Test, name: string, makeStore: () => Promise<{ store: RateLimitStore }>): void {
  t.test(`${name} store contract`, async t => {
    const { store } = await makeStore()

    t.test('exactly `burst` takes allowed when burst equals limit', async t => {
      const rule = { limit: 5, windowMs: 60_000, burst: 5 }
      const results = await takeN(store, uniqueKey('exact'), rule, 8)
      t.same(results.map(r => r.allowed), [true, true, true, true, true, false, false, false])
      t.same(results.map(r => r.remaining), [4, 3, 2, 1, 0, 0, 0, 0])
      t.same(results.slice(0, 5).map(r => r.retryAfterMs), [0, 0, 0, 0, 0])
      const refused = results.slice(5).map(r => r.retryAfterMs)
      for (const ms of refused) t.ok(ms > 10_000 && ms <= 12_000, `retryAfterMs ${ms} is about one interval (12 s)`)
      t.ok(refused[0] >= refused[1] && refused[1] >= refused[2], `refused takes consume nothing: ${refused}`)
    })

    t.test('burst smaller than limit caps the bucket', async t => {
      const results = await takeN(store, uniqueKey('small-burst'), { limit: 10, windowMs: 60_000, burst: 3 }, 6)
      t.same(results.map(r => r.allowed), [true, true, true, false, false, false])
      t.same(results.slice(0, 3).map(r => r.remaining), [2, 1, 0])
      t.ok(results[3].retryAfterMs > 5_000 && results[3].retryAfterMs <= 6_000, `retryAfterMs ${results[3].retryAfterMs}`)
    })

    t.test('burst larger than limit allows the whole burst', async t => {
      const results = await takeN(store, uniqueKey('big-burst'), { limit: 2, windowMs: 60_000, burst: 6 }, 9)
      t.same(results.map(r => r.allowed), [true, true, true, true, true, true, false, false, false])
      t.same(results.slice(0, 6).map(r => r.remaining), [5, 4, 3, 2, 1, 0])
      t.ok(results[6].retryAfterMs > 29_000 && results[6].retryAfterMs <= 30_000, `retryAfterMs ${results[6].retryAfterMs}`)
    })

    t.test('tokens refill with time, up to burst', async t => {
      const key = uniqueKey('refill')
      const rule = { limit: 2, windowMs: 1000, burst: 2 }
      const first = await takeN(store, key, rule, 3)
      t.same(first.map(r => r.allowed), [true, true, false])
      const wait = first[2].retryAfterMs
      t.ok(wait > 0 && wait <= 500, `retryAfterMs ${wait} within one 500 ms interval`)

      await sleep(wait + 50)
      t.same((await takeN(store, key, rule, 2)).map(r => r.allowed), [true, false], 'one token back after retryAfterMs')

      await sleep(1200)
      const refilled = await takeN(store, key, rule, 3)
      t.same(refilled.map(r => r.allowed), [true, true, false], 'a long idle refills only up to burst')
      t.same(refilled.slice(0, 2).map(r => r.remaining), [1, 0])
    })

    t.test('keys are independent', async t => {
      const rule = { limit: 1, windowMs: 60_000, burst: 1 }
      const a = uniqueKey('a')
      const b = uniqueKey('b')
      t.same((await takeN(store, a, rule, 2)).map(r => r.allowed), [true, false])
      t.same((await store.take(b, rule)).allowed, true, 'b has its own bucket')
      t.same((await store.take(a, rule)).allowed, false, 'a stays empty')
    })

    t.test('50 distinct keys each get their own bucket', async t => {
      const rule = { limit: 2, windowMs: 60_000, burst: 2 }
      const keys = Array.from({ length: 50 }, (_, i) => uniqueKey(`many-${i}`))
      const perKey = await Promise.all(keys.map(k => takeN(store, k, rule, 3)))
      for (const results of perKey) t.same(results.map(r => [r.allowed, r.remaining]), [[true, 1], [true, 0], [false, 0]])
    })
  })
}
