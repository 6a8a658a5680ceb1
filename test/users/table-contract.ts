import { readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Test } from 'tap'
import { userRecordSchema } from '../../src/users/record.js'
import type { UserLookup, UserTable } from '../../src/users/table.js'
import type { CompiledUser } from '../../src/users/record.js'
import { ROOT } from '../helpers/cli.js'

export const FIXTURE = JSON.parse(readFileSync(`${ROOT}test/fixtures/users/users.json`, 'utf8')) as { users: Record<string, Record<string, unknown>> }

/** One implementation under the contract: a table holding `users`, and a way to change it as its operator would. */
export interface TableUnderTest {
  table: UserTable
  /** replaces the whole table; resolves once the change may be seen (a file: reloaded; Redis: written) */
  replace: (users: Record<string, Record<string, unknown>>) => Promise<void>
  /** the longest a change takes to be seen after `replace` (Redis: cacheMs) */
  settleMs: number
}

const found = (lookup: UserLookup<CompiledUser>): CompiledUser | undefined => lookup.status === 'found' ? lookup.record : undefined

async function eventually (table: UserTable, name: string, settleMs: number, done: (l: UserLookup<CompiledUser>) => boolean): Promise<UserLookup<CompiledUser>> {
  const until = Date.now() + settleMs + 2000
  for (;;) {
    const lookup = await table.lookup(name)
    if (done(lookup) || Date.now() > until) return lookup
    await sleep(20)
  }
}

/** What every user table (file, Redis standalone, Redis Cluster) answers for the same users. */
export function runTableContract (t: Test, name: string, make: (users: Record<string, Record<string, unknown>>) => Promise<TableUnderTest>): void {
  t.test(`${name} user table contract`, async t => {
    const { table, replace, settleMs } = await make(FIXTURE.users)

    t.test('a known user is found with the record as the schema reads it, compiled', async t => {
      for (const [user, raw] of Object.entries(FIXTURE.users)) {
        const compiled = found(await table.lookup(user))
        t.same(compiled?.record, userRecordSchema.parse(raw), `${user}: the same record`)
        t.equal(compiled?.name, user)
      }
      t.ok(found(await table.lookup('alice'))?.tokenMatches('alice-secret'))
      t.notOk(found(await table.lookup('alice'))?.tokenMatches('alice-secret '))
      t.equal(found(await table.lookup('alice'))?.portsText, '6000-6099')
      t.ok(found(await table.lookup('bob'))?.portAllowed(7000), 'bob: tokenSha256, expires and a mixed port list')
      t.equal(found(await table.lookup('carol'))?.enabled, false)
    })

    t.test('unknown names, prototype names included, are unknown', async t => {
      for (const user of ['nobody', 'Alice', '__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
        t.same(await table.lookup(user), { status: 'unknown' }, user)
      }
    })

    t.test('a change is seen: a user disabled, one added, one removed', async t => {
      await replace({ alice: { ...FIXTURE.users.alice, enabled: false }, dave: { token: 'd', ports: [] } })
      t.equal(found(await eventually(table, 'alice', settleMs, l => found(l)?.enabled === false))?.enabled, false, 'alice disabled')
      const dave = found(await eventually(table, 'dave', settleMs, l => l.status === 'found'))
      t.ok(dave?.tokenMatches('d'), 'dave added')
      t.notOk(dave?.portAllowed(6000), 'with no port at all')
      t.same(await eventually(table, 'bob', settleMs, l => l.status === 'unknown'), { status: 'unknown' }, 'bob removed')
    })
  })
}
