import { constants, open as openFd, type Stats } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { Socket } from 'node:net'
import { promisify } from 'node:util'
import { notRegular } from '../json-file.js'
import { SinkError, type Sink } from './sink.js'

/** Where events go: a file handle, or a FIFO written as a stream (libuv's, never a threadpool thread). */
interface Appender {
  append: (text: string) => Promise<void>
  /** ends it at once: a FIFO write waiting for a reader that stopped reading fails */
  close: () => Promise<void>
}

/**
 * The appends of every sink of one path in one order: a reload's new runtime writes beside the old one's
 * while that drains, and appendFile writes in pieces of 512 KiB, so two at once would interleave a large event's.
 */
const orders = new Map<string, Promise<unknown>>()

/** Appends one event per line, one append at a time. Reopened on reload (SIGHUP), so logrotate can move the file away. */
export class FileSink implements Sink {
  readonly label: string
  #out: Appender | undefined
  #closed = false

  constructor (private readonly path: string) {
    this.label = `file ${path}`
  }

  #next<T> (work: () => Promise<T>): Promise<T> {
    const done = (orders.get(this.path) ?? Promise.resolve()).then(work)
    const settled = done.catch(() => {})
    orders.set(this.path, settled)
    void settled.then(() => { if (orders.get(this.path) === settled) orders.delete(this.path) })
    return done
  }

  async send (event: string): Promise<void> {
    try {
      await this.#next(async () => {
        if (this.#closed) throw new Error('closed')
        // a failed open is tried again at the next event
        const out = this.#out ??= await openAppend(this.path)
        await out.append(`${event}\n`).catch(async (err: unknown) => {
          // a FIFO whose reader left (EPIPE) is opened again at the next event, to a reader come back
          if (this.#out === out) this.#out = undefined
          await out.close()
          throw err
        })
      })
    } catch (err) {
      throw new SinkError(`${this.label}: ${(err as Error).message}`, !this.#closed, { cause: err })
    }
  }

  async reopen (): Promise<void> {
    await this.#next(async () => {
      const old = this.#out
      this.#out = undefined
      await old?.close()
    })
  }

  async close (): Promise<void> {
    this.#closed = true
    // before its turn: an append to a FIFO that no one reads would hold every turn after it, this close's too
    const out = this.#out
    this.#out = undefined
    await out?.close()
    await this.reopen()
  }
}

/** What the sink may append to: a regular file, a character device (/dev/null, a terminal) or a FIFO (/dev/stdout under a container runtime). */
export function notAppendable (stats: Stats): string | undefined {
  return stats.isCharacterDevice() || stats.isFIFO() ? undefined : notRegular(stats)
}

/**
 * The file, opened to append. A FIFO with no reader fails the open at once (ENXIO) where it would block it, and
 * every send after it, for ever; one with a reader is written as a stream, as Node writes a stdout that is a pipe:
 * a write the reader is not ready for waits in libuv, not in a threadpool thread, which a stop could not end
 * (process.exit joins those threads) and four of which would stall every gzip body and file read.
 */
async function openAppend (path: string): Promise<Appender> {
  const handle = await open(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NONBLOCK, 0o666)
  const stats = await handle.stat()
  const problem = notAppendable(stats)
  if (problem === undefined && !stats.isFIFO()) return { append: async text => { await handle.appendFile(text) }, close: async () => { await handle.close() } }
  try {
    if (problem !== undefined) throw new Error(problem)
    // opened while the first is: closing it first would leave the FIFO without a writer, and a reader such as cat ends there
    return pipeAppender(await promisify(openFd)(path, constants.O_WRONLY | constants.O_APPEND | constants.O_NONBLOCK))
  } finally {
    await handle.close()
  }
}

function pipeAppender (fd: number): Appender {
  const stream = new Socket({ fd, readable: false, writable: true })
  let failed: Error | undefined
  stream.on('error', (err: Error) => { failed ??= err })
  return {
    append: async text => {
      await new Promise<void>((resolve, reject) => {
        if (failed !== undefined || stream.destroyed) { reject(failed ?? new Error('closed')); return }
        stream.write(text, err => { if (err == null) resolve(); else reject(failed ?? err) })
      })
    },
    close: async () => { stream.destroy() }
  }
}
