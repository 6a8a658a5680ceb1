import { randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

// The users file of the users scenarios: 10,000 users, each with a token, 5 remote ports of its own,
// a team meta and one proxy at most, written to a temp folder at bench start (fresh tokens each run).
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
    metas: { team: u.team },
    maxProxies: 1
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

/** what autocannon sends, a call the server must refuse, and the remote port each first call must be answered with (checked before measuring) */
export interface BenchCalls { requests: BenchRequest[], refused?: BenchRequest, remotePorts?: number[] }

const sentUsers = (users: BenchUser[]): BenchUser[] => {
  const step = Math.max(1, Math.floor(users.length / USERS_SENT))
  return users.filter((_, i) => i % step === 0)
}

/** A NewProxy of the user's one proxy (tcp), asking for the i-th port of its range (mod 5). */
const proxyOf = (newProxy: Recorded, u: BenchUser, i: number, name = `${u.name}.ssh`): BenchRequest => request(newProxy, {
  user: { user: u.name, metas: { token: u.token, team: u.team }, run_id: 'fcb43cb7791e015f' },
  proxy_name: name,
  remote_port: u.firstPort + i % PORTS_EACH
})

/** A Login and a NewProxy (tcp, a remote port inside the user's range) per sent user, from recorded frps bodies; a Login with a wrong token refused. */
export function userCalls (users: BenchUser[], login: Recorded, newProxy: Recorded): BenchCalls {
  const requests = sentUsers(users).flatMap((u, i) => [request(login, { user: u.name, metas: { token: u.token } }), proxyOf(newProxy, u, i)])
  return { requests, refused: request(login, { user: users[0].name, metas: { token: users[1].token } }) }
}

/**
 * The NewProxy of the same sent users alone, as a sticky ports step answers it: each user's proxy
 * gets the first port of its range (the one frpc asked for in every 5th call, another one
 * otherwise). Every call after the first of a user is that proxy reconnecting, which its quota of
 * one proxy counts once; a second proxy of the first user is refused.
 */
export function proxyCalls (users: BenchUser[], newProxy: Recorded): BenchCalls {
  const sent = sentUsers(users)
  return {
    requests: sent.map((u, i) => proxyOf(newProxy, u, i)),
    refused: proxyOf(newProxy, sent[0], 0, `${sent[0].name}.web`),
    remotePorts: sent.map(u => u.firstPort)
  }
}
