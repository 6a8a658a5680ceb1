import { readFileSync } from 'node:fs'
import net, { type Socket } from 'node:net'

export interface RawAnswer {
  /** status of the first response, 0 when none came */
  status: number
  headers: Record<string, string>
  /** its body as text */
  body: string
  /** everything the server sent */
  raw: string
  /** ms from connecting until the server closed the connection; undefined when it was still open at waitMs */
  closedAfterMs: number | undefined
}

/**
 * Opens a TCP connection to 127.0.0.1:port, lets `send` write to it (all at once or bit by bit), and
 * resolves with what the server answered once it closes the connection, or at waitMs.
 */
export async function rawExchange (port: number, send: (socket: Socket) => void, waitMs = 5000): Promise<RawAnswer> {
  return await new Promise(resolve => {
    const socket = net.connect(port, '127.0.0.1')
    const started = performance.now()
    const chunks: Buffer[] = []
    const finish = (closedAfterMs: number | undefined): void => {
      clearTimeout(timer)
      socket.destroy()
      resolve({ ...parseResponse(Buffer.concat(chunks).toString('latin1')), closedAfterMs })
    }
    const timer = setTimeout(() => finish(undefined), waitMs)
    socket.on('data', chunk => chunks.push(chunk))
    socket.on('error', () => {})
    socket.on('close', () => finish(performance.now() - started))
    socket.on('connect', () => send(socket))
  })
}

/** The first HTTP response in raw bytes (latin1 text). */
export function parseResponse (raw: string): Omit<RawAnswer, 'closedAfterMs'> {
  const end = raw.indexOf('\r\n\r\n')
  if (end === -1) return { status: 0, headers: {}, body: '', raw }
  const [statusLine, ...lines] = raw.slice(0, end).split('\r\n')
  const headers: Record<string, string> = {}
  for (const line of lines) {
    const colon = line.indexOf(':')
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim()
  }
  const length = Number(headers['content-length'] ?? 0)
  return { status: Number(statusLine.split(' ')[1]), headers, body: Buffer.from(raw.slice(end + 4, end + 4 + length), 'latin1').toString('utf8'), raw }
}

/** A request as frps writes it: `POST path`, its headers, a Content-Length, the body. */
export function frpsRequest (body: string, { path = '/handler?version=0.1.0&op=Login', headers = '' } = {}): string {
  return `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Go-http-client/1.1\r\nContent-Type: application/json\r\n` +
    `X-Frp-Reqid: 00000000000000ab\r\n${headers}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
}

/** A kept-alive connection: one request at a time, each answer read whole. */
export class RawConnection {
  private buffered = ''
  private waiting: (() => void) | undefined
  closedAt: number | undefined
  readonly socket: Socket

  private constructor (socket: Socket) {
    this.socket = socket
    socket.on('data', chunk => { this.buffered += chunk.toString('latin1'); this.waiting?.() })
    socket.on('error', () => {})
    socket.on('close', () => { this.closedAt = performance.now(); this.waiting?.() })
  }

  static async open (port: number): Promise<RawConnection> {
    const socket = net.connect(port, '127.0.0.1')
    await new Promise(resolve => socket.once('connect', resolve))
    return new RawConnection(socket)
  }

  /** Writes a request and resolves with its whole answer (or what came before the connection closed). */
  async request (data: string): Promise<Omit<RawAnswer, 'closedAfterMs'>> {
    this.socket.write(data)
    while (true) {
      const answer = parseResponse(this.buffered)
      const end = this.buffered.indexOf('\r\n\r\n')
      if (answer.status !== 0 && this.buffered.length - end - 4 >= Number(answer.headers['content-length'] ?? 0)) {
        this.buffered = ''
        return answer
      }
      if (this.closedAt !== undefined) return answer
      await new Promise<void>(resolve => { this.waiting = resolve })
    }
  }
}

/**
 * Whether the server end of this loopback connection has accepted it and read all that was sent on it: the kernel's
 * receive queue for it (in /proc/net/tcp) is empty. Node parses what it reads in the same turn, so from then on the
 * server knows of every byte written before.
 */
export function serverHasRead (socket: Socket): boolean {
  const hexPort = (port: number | undefined): string => (port ?? 0).toString(16).toUpperCase().padStart(4, '0')
  const local = `:${hexPort(socket.remotePort)}`
  const remote = `:${hexPort(socket.localPort)}`
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const [, localAddress, remoteAddress, state, queues] = line.trim().split(/\s+/)
    // state 01: established; queues is tx_queue:rx_queue, in hex
    if (localAddress?.endsWith(local) === true && remoteAddress?.endsWith(remote) === true && state === '01') return parseInt(queues.split(':')[1], 16) === 0
  }
  return false
}
