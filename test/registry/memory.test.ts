import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import t from 'tap'
import { MemoryRegistry } from '../../src/registry/memory.js'
import { runRegistryContract } from './contract.js'

runRegistryContract(t, 'memory', async () => new MemoryRegistry())

t.test('users whose reservations all ended leave nothing behind (a caller choosing user names cannot grow the heap)', async t => {
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const store = new MemoryRegistry()
  const churn = async (from: number, n: number): Promise<void> => {
    for (let i = from; i < from + n; i++) {
      const user = `user-${i}`
      await store.reserve({ user, name: `${user}.p`, run_id: 'r', port: false, ttlMs: 3000 }, { maxProxies: 5 })
      // half released (the call was refused), half registered then closed
      if (i % 2 === 0) await store.release(user, `${user}.p`, 'r')
      else {
        await store.register({ user, name: `${user}.p`, type: 'http', run_id: 'r', registered_at: 0 })
        await store.unregister(user, `${user}.p`, 'r')
      }
    }
  }
  await churn(0, 10_000)
  gc()
  const before = process.memoryUsage().heapUsed
  await churn(10_000, 100_000)
  gc()
  const grown = process.memoryUsage().heapUsed - before
  t.ok(grown < 4_000_000, `the heap grew by ${grown} bytes over 100,000 users`)
})
