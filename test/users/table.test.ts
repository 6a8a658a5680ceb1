import { once } from 'node:events'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { randomUUID } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { createRedisClient } from '../../src/stores/redis-client.js'
import { FileUserSource } from '../../src/users/file-source.js'
import { parseUserRecord } from '../../src/users/record.js'
import { RedisUserSource } from '../../src/users/redis-source.js'
import { startRedis, startRedisCluster } from '../helpers/redis.js'
import { runTableContract } from './table-contract.js'

runTableContract(t, 'file', async users => {
  const dir = mkdtempSync(join(tmpdir(), 'frpgw-table-'))
  const write = (u: unknown): void => writeFileSync(join(dir, 'users.json'), JSON.stringify({ users: u }))
  write(users)
  const table = await FileUserSource.open('users.json', dir)
  return { table, settleMs: 0, replace: async next => { write(next); await table.reload() } }
})

async function redisTable (client: ReturnType<typeof createRedisClient>, users: Record<string, Record<string, unknown>>) {
  const table = new RedisUserSource(client, { keyPrefix: `frpgw:contract:${randomUUID()}:`, parse: parseUserRecord, cacheMs: 200 })
  for (const [name, record] of Object.entries(users)) await table.set(name, record)
  return {
    table,
    settleMs: 200,
    // through another source on the same prefix, as a control plane would: this table learns of it only through its cache expiring
    replace: async (next: Record<string, Record<string, unknown>>) => {
      const other = new RedisUserSource(client, { keyPrefix: table.userKey('').replace(/user:\{\}$/, ''), parse: parseUserRecord })
      for (const name of await other.list()) if (!Object.hasOwn(next, name)) await other.delete(name)
      for (const [name, record] of Object.entries(next)) await other.set(name, record)
    }
  }
}

runTableContract(t, 'Redis standalone', async users => {
  const redis = await startRedis(t)
  const client = createRedisClient({ url: redis.url })
  t.teardown(() => client.disconnect())
  await once(client, 'ready')
  return await redisTable(client, users)
})

runTableContract(t, 'Redis Cluster', async users => {
  const cluster = await startRedisCluster(t)
  const client = createRedisClient({ cluster: cluster.urls })
  t.teardown(() => client.disconnect())
  await once(client, 'ready')
  return await redisTable(client, users)
})
