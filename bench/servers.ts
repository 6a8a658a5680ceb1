import { createServer } from 'node:http'
import Fastify from 'fastify'

// The two servers the gateway is measured against, each run as its own process by bench/run.ts:
//   baseline PORT    the fastest a fastify route can answer frps
//   downstream PORT  a minimal downstream plugin (node:http), for forward and for calling it directly
//   receiver PORT    a minimal webhook (node:http, 204) for notify; GET /received says how many events came
const [kind, port] = process.argv.slice(2)
const ALLOW = '{"reject":false,"unchange":true}'

if (kind === 'baseline') {
  const app = Fastify({ logger: false })
  app.post('/handler', async (_req, reply) => await reply.type('application/json; charset=utf-8').send(ALLOW))
  await app.listen({ host: '127.0.0.1', port: Number(port) })
} else if (kind === 'downstream') {
  createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': ALLOW.length })
      res.end(ALLOW)
    })
  }).listen(Number(port), '127.0.0.1')
} else if (kind === 'receiver') {
  let received = 0
  createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/received') {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.end(String(received))
      return
    }
    req.resume()
    req.on('end', () => {
      if (req.url === '/hook') received++
      res.writeHead(204)
      res.end()
    })
  }).listen(Number(port), '127.0.0.1')
} else {
  process.stderr.write('usage: servers.js baseline|downstream|receiver PORT\n')
  process.exit(2)
}
