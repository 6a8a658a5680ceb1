import { randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

// The users file of the users scenarios: 10,000 users, each with a token, 5 remote ports of its own
// and a team meta, written to a temp folder at bench start (fresh tokens each run).
export const USER_COUNT = 10_000
const PORTS_EACH = 5
const FIRST_PORT = 10_000
// autocannon cycles through a fixed list of prebuilt requests; every 10th user, spread over the table
const USERS_SENT = 1000

export interface BenchUser { name: string, token: string, firstPort: number, team: string }

export function writeUsersFile (dir: string): { file: string, users: BenchUser[] } {
  const users = Array.from({ length: USER_COUNT }, (_, i): BenchUser => ({
    name: `user${String(i).padStart(5, '0')}`,
    token: randomBytes(16).toString('hex'),
    firstPort: FIRST_PORT + i * PORTS_EACH,
    team: `team-${i % 50}`
  }))
  const records = Object.fromEntries(users.map(u => [u.name, {
    token: u.token,
    ports: [`${u.firstPort}-${u.firstPort + PORTS_EACH - 1}`],
    metas: { team: u.team }
  }]))
  const file = join(dir, 'users.json')
  writeFileSync(file, JSON.stringify({ users: records }))
  return { file, users }
}

interface Recorded { query: string, headers: Record<string, string>, body: { op: string, content: Record<string, unknown> } }
export interface BenchRequest { method: 'POST', path: string, headers: Record<string, string>, body: string }

const request = (s: Recorded, content: Record<string, unknown>): BenchRequest => ({
  method: 'POST',
  path: `/handler?${s.query}`,
  headers: s.headers,
  body: JSON.stringify({ ...s.body, content: { ...s.body.content, ...content } })
})

/** what autocannon sends, and a call the server must refuse (checked before measuring) */
export interface BenchCalls { requests: BenchRequest[], refused?: BenchRequest }

/** A Login and a NewProxy (tcp, a remote port inside the user's range) per sent user, from recorded frps bodies; a Login with a wrong token refused. */
export function userCalls (users: BenchUser[], login: Recorded, newProxy: Recorded): BenchCalls {
  const step = Math.max(1, Math.floor(users.length / USERS_SENT))
  const requests = users.filter((_, i) => i % step === 0).flatMap((u, i) => [
    request(login, { user: u.name, metas: { token: u.token } }),
    request(newProxy, {
      user: { user: u.name, metas: { token: u.token, team: u.team }, run_id: 'fcb43cb7791e015f' },
      proxy_name: `${u.name}.ssh`,
      remote_port: u.firstPort + i % PORTS_EACH
    })
  ])
  return { requests, refused: request(login, { user: users[0].name, metas: { token: users[1].token } }) }
}
