import t from 'tap'
import { redisCli, startRedisCluster } from '../helpers/redis.js'
import { lines, redisCommands } from './users-commands.js'

t.test('Redis Cluster: every sub-command', async t => {
  const cluster = await startRedisCluster(t)
  // redis-cli -c follows MOVED to the master that holds the key
  await redisCommands(t, { cluster: cluster.urls }, async (...args) => lines(await redisCli(cluster.nodes[0].port, '-c', ...args)))
})
