import type { CompiledUser } from './record.js'
import type { UserLookup } from './redis-source.js'

export type { UserLookup }

/**
 * The user table a users step reads, from a file or from Redis (config `users`). A lookup is
 * synchronous when it costs no I/O (a file table, a Redis cache hit) and never rejects: Redis
 * trouble is an `error` lookup, a record in Redis that does not validate an `invalid` one.
 */
export interface UserTable {
  readonly kind: 'file' | 'redis'
  lookup (name: string): UserLookup<CompiledUser> | Promise<UserLookup<CompiledUser>>
}
