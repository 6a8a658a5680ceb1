import { constants, type Stats } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { notRegular } from '../json-file.js'
import { SinkError, type Sink } from './sink.js'

/**
 * Appends one event per line, one append at a time: appendFile writes in pieces of 512 KiB, and two
 * at once would interleave a large event's. Reopened on reload (SIGHUP), so logrotate can move the file away.
 */
export class FileSink implements Sink {
  readonly label: string
  #handle: FileHandle | undefined
  /** the appends, reopens and the close, in the order asked */
  #last: Promise<unknown> = Promise.resolve()
  #closed = false

  constructor (private readonly path: string) {
    this.label = `file ${path}`
  }

  #next<T> (work: () => Promise<T>): Promise<T> {
    const done = this.#last.then(work)
    this.#last = done.catch(() => {})
    return done
  }

  async send (event: string): Promise<void> {
    try {
      await this.#next(async () => {
        if (this.#closed) throw new Error('closed')
        // a failed open is tried again at the next event
        this.#handle ??= await openAppend(this.path)
        await this.#handle.appendFile(`${event}\n`)
      })
    } catch (err) {
      throw new SinkError(`${this.label}: ${(err as Error).message}`, !this.#closed, { cause: err })
    }
  }

  async reopen (): Promise<void> {
    await this.#next(async () => {
      const old = this.#handle
      this.#handle = undefined
      await old?.close()
    })
  }

  async close (): Promise<void> {
    this.#closed = true
    await this.reopen()
  }
}

/** What the sink may append to: a regular file, a character device (/dev/null, a terminal) or a FIFO (/dev/stdout under a container runtime). */
export function notAppendable (stats: Stats): string | undefined {
  return stats.isCharacterDevice() || stats.isFIFO() ? undefined : notRegular(stats)
}

/**
 * The file, opened to append. A FIFO with no reader fails the open at once (ENXIO) where it would block it, and
 * every send after it, for ever; one with a reader is opened again to be written as a log to stdout is, blocking
 * (a write that cannot go on at once would otherwise fail half written, its retry writing the line again).
 */
async function openAppend (path: string): Promise<FileHandle> {
  const handle = await open(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NONBLOCK, 0o666)
  const stats = await handle.stat()
  const problem = notAppendable(stats)
  if (problem === undefined && !stats.isFIFO()) return handle
  try {
    if (problem !== undefined) throw new Error(problem)
    // opened while the first is: closing it first would leave the FIFO without a writer, and a reader such as cat ends there
    return await open(path, 'a')
  } finally {
    await handle.close()
  }
}
