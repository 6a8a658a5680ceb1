import { once } from 'node:events'
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http'
import https from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'

import { freePort } from './redis.js'

interface Teardown { teardown: (fn: () => unknown) => void }

export interface ReceivedRequest {
  method: string
  url: string
  /** header names and values as they came, in order */
  rawHeaders: string[]
  headers: IncomingHttpHeaders
  body: string
  /** the client's port: the same for requests on one keep-alive connection */
  remotePort: number
  /** true once the connection that carried the request is closed */
  readonly connectionClosed: boolean
}

/**
 * Answers one request. A returned value (or promise of one) is sent with status 200: a string as it is,
 * anything else as JSON. `undefined` leaves the answer to the handler, which may also never give one.
 */
export type Handler = (req: ReceivedRequest, res: ServerResponse) => unknown

export interface Downstream {
  /** origin plus `/handler` */
  url: string
  origin: string
  /** every request whose body arrived, in order */
  requests: ReceivedRequest[]
  /** replaceable between calls */
  handler: Handler
  /** TCP connections accepted so far */
  connections: number
  /** connections open now */
  openSockets: () => number
}

/** A real frps-plugin-like server on 127.0.0.1, http or (with tls) https; closed in teardown, open sockets included. */
export async function startDownstream (t: Teardown, handler: Handler, opts: { tls?: { cert: string, key: string } } = {}): Promise<Downstream> {
  const sockets = new Set<Socket>()
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = []
    req.on('data', (chunk: Buffer) => chunks.push(chunk))
    req.on('end', () => {
      const received: ReceivedRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        rawHeaders: req.rawHeaders,
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
        remotePort: req.socket.remotePort ?? 0,
        get connectionClosed () { return req.socket.closed }
      }
      downstream.requests.push(received)
      Promise.resolve(downstream.handler(received, res)).then(value => {
        if (value === undefined) return
        res.writeHead(200, { 'content-type': 'application/json' }).end(typeof value === 'string' ? value : JSON.stringify(value))
      }, (err: unknown) => { res.destroy(err as Error) })
    })
  }
  const server = opts.tls !== undefined ? https.createServer(opts.tls, onRequest) : http.createServer(onRequest)
  server.on('connection', (socket: Socket) => {
    downstream.connections++
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const origin = `${opts.tls !== undefined ? 'https' : 'http'}://127.0.0.1:${(server.address() as AddressInfo).port}`
  const downstream: Downstream = { url: `${origin}/handler`, origin, requests: [], handler, connections: 0, openSockets: () => sockets.size }
  t.teardown(async () => {
    const closed = once(server, 'close')
    server.close()
    for (const socket of sockets) socket.destroy()
    await closed
  })
  return downstream
}

/** A port on 127.0.0.1 that nothing listens on: connecting to it is refused. */
export const closedPort = freePort

/** Polls (every 10 ms, for up to timeoutMs) until done() holds; answers whether it did. */
export async function until (done: () => boolean, timeoutMs = 1000): Promise<boolean> {
  for (let i = 0; i < timeoutMs / 10 && !done(); i++) await sleep(10)
  return done()
}
