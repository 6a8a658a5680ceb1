import { hash, timingSafeEqual } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createServer, type ServerResponse } from 'node:http'
import { Pool } from 'undici'

// "Three policies as three plugins", the way frps runs them, each part its own process (bench/run.ts):
//   users PORT FILE            checks the user and token (Login, NewProxy), the port range, sets the user's metas
//   rate PORT                  a rate limit in memory per op and user (GCRA, a bucket no bench empties)
//   metas PORT                 sets metas at Login
//   caller PORT CONNS OPS@URL  stands in for frps: calls each plugin listing the op, one after another,
//                              each seeing the content as the previous one left it, stopping at a reject
// The plugins are as small as the single-purpose plugins operators run, not the gateway's steps.
type Content = Record<string, any>
interface Answer { reject: boolean, reject_reason?: string, unchange: boolean, content?: Content }

const UNCHANGED: Answer = { reject: false, unchange: true }
const changed = (content: Content): Answer => ({ reject: false, unchange: false, content })
const rejected = (reason: string): Answer => ({ reject: true, reject_reason: reason, unchange: true })

function reply (res: ServerResponse, status: number, answer: unknown): void {
  const body = JSON.stringify(answer)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

function serve (port: number, handle: (op: string, content: Content) => Answer | Promise<Answer>): void {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      Promise.resolve().then(() => {
        const { op, content } = JSON.parse(Buffer.concat(chunks).toString())
        return handle(op, content)
      }).then(answer => reply(res, 200, answer), (err: Error) => reply(res, 500, { error: err.message }))
    })
  })
  // longer than undici's idle keep-alive (4 s), so the caller, not this server, closes an idle connection
  server.keepAliveTimeout = 65_000
  server.listen(port, '127.0.0.1')
}

const sha256 = (s: string): Buffer => hash('sha256', s, 'buffer')

function usersPlugin (port: number, file: string): void {
  const records = JSON.parse(readFileSync(file, 'utf8')).users as Record<string, { token: string, ports: string[], metas: Record<string, string> }>
  const table = new Map(Object.entries(records).map(([name, r]) => {
    const [low, high] = r.ports[0].split('-').map(Number)
    return [name, { digest: sha256(r.token), low, high, metas: r.metas }]
  }))
  const tokenMatches = (digest: Buffer, token: unknown): boolean => typeof token === 'string' && timingSafeEqual(sha256(token), digest)
  serve(port, (op, content) => {
    const name = op === 'Login' ? content.user : content.user?.user
    const user = table.get(name)
    const token = op === 'Login' ? content.metas?.token : content.user?.metas?.token
    if (user === undefined || !tokenMatches(user.digest, token)) return rejected(`invalid token for ${String(name)}`)
    if (op === 'Login') return changed({ ...content, metas: { ...content.metas, ...user.metas } })
    if (op === 'NewProxy' && (content.proxy_type === 'tcp' || content.proxy_type === 'udp') &&
      !(content.remote_port >= user.low && content.remote_port <= user.high)) return rejected(`port ${String(content.remote_port)} not allowed`)
    return UNCHANGED
  })
}

function ratePlugin (port: number): void {
  const INTERVAL_MS = 1e-3
  const BURST = 1e9
  const tat = new Map<string, number>()
  serve(port, (op, content) => {
    const key = `${op}:${String(op === 'Login' ? content.user : content.user?.user)}`
    const now = Date.now()
    const next = Math.max(tat.get(key) ?? now, now) + INTERVAL_MS
    if (next - now > BURST * INTERVAL_MS) return rejected('rate limit exceeded')
    tat.set(key, next)
    return UNCHANGED
  })
}

function metasPlugin (port: number): void {
  serve(port, (op, content) => op === 'Login'
    ? changed({ ...content, metas: { ...content.metas, region: 'eu-1', login_ip: String(content.client_address ?? '').replace(/:\d+$/, '') } })
    : UNCHANGED)
}

function caller (port: number, connections: number, specs: string[]): void {
  const plugins = specs.map(spec => {
    const [ops, url] = spec.split('@')
    return { ops: new Set(ops.split(',')), pool: new Pool(new URL(url).origin, { connections }), path: new URL(url).pathname }
  })
  let reqid = 0
  serve(port, async (op, input) => {
    let content = input
    let unchange = true
    for (const plugin of plugins) {
      if (!plugin.ops.has(op)) continue
      const { statusCode, body } = await plugin.pool.request({
        method: 'POST',
        path: `${plugin.path}?op=${op}&version=0.1.0`,
        headers: { 'content-type': 'application/json', 'x-frp-reqid': (++reqid).toString(16) },
        body: JSON.stringify({ version: '0.1.0', op, content })
      })
      const answer = await body.json() as Answer
      if (statusCode !== 200) throw new Error(`plugin answered ${statusCode}`)
      if (answer.reject) return answer
      if (!answer.unchange) {
        content = answer.content ?? {}
        unchange = false
      }
    }
    return unchange ? UNCHANGED : changed(content)
  })
}

const [kind, port, ...rest] = process.argv.slice(2)
if (kind === 'users' && rest.length === 1) usersPlugin(Number(port), rest[0])
else if (kind === 'rate') ratePlugin(Number(port))
else if (kind === 'metas') metasPlugin(Number(port))
else if (kind === 'caller' && rest.length >= 2) caller(Number(port), Number(rest[0]), rest.slice(1))
else {
  process.stderr.write('usage: series.js users PORT FILE | rate PORT | metas PORT | caller PORT CONNS OPS@URL...\n')
  process.exit(2)
}
