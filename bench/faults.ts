import { once } from 'node:events'
import { createServer, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'

// Fault injection shared by the fault suite (test/faults.test.ts) and `npm run soak` (bench/soak.ts).

/** mulberry32: a seeded generator in [0, 1), so a failing run can be replayed from its seed. */
export function seededRandom (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

export const DOWNSTREAM_FAULTS = ['hang', 'status500', 'reset', 'slow', 'nonjson', 'close'] as const
export type DownstreamFault = (typeof DOWNSTREAM_FAULTS)[number]

/** What a faulty downstream does with a request while a fault is on; `slowMs` is how late `slow` answers. */
function misbehave (fault: DownstreamFault, res: ServerResponse, slowMs: number): void {
  switch (fault) {
    case 'hang': return
    case 'status500': res.writeHead(500).end('boom'); return
    case 'reset': res.socket?.resetAndDestroy(); return
    case 'slow': setTimeout(() => { if (!res.destroyed) res.writeHead(200, { 'content-type': 'application/json' }).end(ALLOW) }, slowMs); return
    case 'nonjson': res.writeHead(200, { 'content-type': 'text/html' }).end('<html>bad gateway</html>'); return
    case 'close': res.socket?.end()
  }
}

const ALLOW = '{"reject":false,"unchange":true}'

export interface FaultyDownstream {
  url: string
  /** the fault applied to requests arriving from now on; undefined: answers allow-unchanged at once */
  fault: DownstreamFault | undefined
  /** requests received */
  requests: number
  /** requests each fault was applied to */
  applied: Record<DownstreamFault, number>
  close: () => Promise<void>
}

/** A downstream frps plugin on 127.0.0.1:0 that fails as told, request by request (the fault at its arrival). */
export async function startFaultyDownstream (slowMs: number): Promise<FaultyDownstream> {
  const sockets = new Set<Socket>()
  const server = createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      down.requests++
      const fault = down.fault
      if (fault !== undefined) {
        down.applied[fault]++
        return misbehave(fault, res, slowMs)
      }
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': ALLOW.length }).end(ALLOW)
    })
  })
  server.on('connection', socket => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const down: FaultyDownstream = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/handler`,
    fault: undefined,
    requests: 0,
    applied: Object.fromEntries(DOWNSTREAM_FAULTS.map(f => [f, 0])) as Record<DownstreamFault, number>,
    async close () {
      const closed = once(server, 'close')
      server.close()
      for (const socket of sockets) socket.destroy()
      await closed
    }
  }
  return down
}

export interface FaultWindow<K> { from: number, to: number, kind: K }

/**
 * Random fault windows over [0, spanMs): every kind at least once (in a random order, repeated while
 * time is left), each lasting `lastMs`, separated by healthy gaps of `gapMs`; [min, max] ranges in ms.
 */
export function faultWindows<K> (random: () => number, kinds: readonly K[], spanMs: number,
  lastMs: [number, number], gapMs: [number, number]): Array<FaultWindow<K>> {
  const between = ([min, max]: [number, number]): number => min + Math.floor(random() * (max - min))
  const windows: Array<FaultWindow<K>> = []
  let at = between(gapMs)
  while (true) {
    const order = [...kinds]
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]]
    }
    for (const kind of order) {
      const to = at + between(lastMs)
      if (to > spanMs) return windows
      windows.push({ from: at, to, kind })
      at = to + between(gapMs)
    }
  }
}

export interface FaultChainOptions { authUrl: string, auditUrl: string, authTimeoutMs: number, resetAfterMs: number }

/**
 * The chain both runs put under faults: two Redis rate limits that never limit (one failing open, one
 * closed), built-in steps, a forward failing closed behind a circuit breaker, and one failing open whose
 * timeout lies past the deadline (a hanging audit is answered by the deadline).
 */
export function faultChain (o: FaultChainOptions): unknown[] {
  const noLimit = { limit: 1, window: '4s', burst: 7_800_000, store: 'redis' } // a bucket no run empties, within the bounds
  return [
    { name: 'rl-open', plugin: 'rate-limit', options: { ...noLimit, onStoreError: 'allow' } },
    { name: 'tag', plugin: 'metas', ops: ['Login'], options: { set: { region: 'eu-1' } } },
    { name: 'rl-closed', plugin: 'rate-limit', ops: ['Login', 'NewProxy'], options: { ...noLimit, onStoreError: 'reject' } },
    { name: 'no-udp', plugin: 'reject', ops: ['NewProxy'], when: { proxyTypes: ['udp'] }, options: { reason: 'no udp proxies' } },
    {
      name: 'auth',
      plugin: 'forward',
      ops: ['Login', 'NewProxy', 'NewUserConn'],
      options: { url: o.authUrl, timeoutMs: o.authTimeoutMs, circuitBreaker: { failureThreshold: 3, resetAfterMs: o.resetAfterMs } }
    },
    { name: 'audit', plugin: 'forward', options: { url: o.auditUrl, timeoutMs: 5000, onError: 'allow' } }
  ]
}
