import { resolve } from 'node:path'
import { readJsonFile } from '../json-file.js'
import { compileUsers, parseUsersFile, type CompiledUser } from './record.js'

/** Reads, parses and compiles a users file; a ConfigError names the file and every problem with its JSON path. */
export async function loadUsersFile (file: string): Promise<ReadonlyMap<string, CompiledUser>> {
  return compileUsers(parseUsersFile(await readJsonFile(file), file))
}

/**
 * The user table from a JSON users file (`{"users": {NAME: record}}`).
 *
 * Contract for the runtime: `FileUserSource.open` and `reload` throw a ConfigError (code
 * FRPGW_ERR_CONFIG; `issues` holds every problem with its JSON path, e.g. `users.alice.ports[1]`)
 * when the file cannot be read, is not JSON or does not validate, the same error `loadConfig`
 * throws, so a reload counts and logs it the same way. A failed `reload` leaves the table it had:
 * `get` keeps answering from the last good file. Lookups are one Map read, no I/O.
 */
export class FileUserSource {
  readonly path: string
  #users: ReadonlyMap<string, CompiledUser>

  private constructor (path: string, users: ReadonlyMap<string, CompiledUser>) {
    this.path = path
    this.#users = users
  }

  /** `file` relative to `baseDir` (the config file's folder) unless absolute. */
  static async open (file: string, baseDir: string): Promise<FileUserSource> {
    const path = resolve(baseDir, file)
    return new FileUserSource(path, await loadUsersFile(path))
  }

  /** The compiled user, or undefined for a name the table does not hold. */
  get (name: string): CompiledUser | undefined {
    return this.#users.get(name)
  }

  get size (): number {
    return this.#users.size
  }

  names (): IterableIterator<string> {
    return this.#users.keys()
  }

  /** Reads the file again; swaps the table only when the whole file is good, else throws (see the class). */
  async reload (): Promise<void> {
    this.#users = await loadUsersFile(this.path)
  }
}
