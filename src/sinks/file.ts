import { open, type FileHandle } from 'node:fs/promises'
import { SinkError, type Sink } from './sink.js'

/** Appends one event per line. Reopened on reload (SIGHUP), so logrotate can move the file away. */
export class FileSink implements Sink {
  readonly label: string
  #handle: Promise<FileHandle> | undefined

  constructor (private readonly path: string) {
    this.label = `file ${path}`
  }

  #file (): Promise<FileHandle> {
    this.#handle ??= open(this.path, 'a')
    // a failed open is tried again at the next event
    this.#handle.catch(() => { this.#handle = undefined })
    return this.#handle
  }

  async send (event: string): Promise<void> {
    try {
      await (await this.#file()).appendFile(`${event}\n`)
    } catch (err) {
      throw new SinkError(`${this.label}: ${(err as Error).message}`, true, { cause: err })
    }
  }

  async reopen (): Promise<void> {
    const old = this.#handle
    this.#handle = undefined
    await (await old?.catch(() => undefined))?.close()
  }

  async close (): Promise<void> {
    await this.reopen()
  }
}
