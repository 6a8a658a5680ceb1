import { resolve } from 'node:path'
import { duplicateKeyIssues, readJsonText } from '../json-file.js'
import { compileUsers, parseUsersFile, type CompiledUser } from './record.js'
import type { UserLookup } from './redis-source.js'

const UNKNOWN = Object.freeze({ status: 'unknown' as const })
type Found = UserLookup<CompiledUser> & { status: 'found' }
const lookups = (users: ReadonlyMap<string, CompiledUser>): ReadonlyMap<string, Found> =>
  new Map([...users].map(([name, user]) => [name, Object.freeze({ status: 'found' as const, record: user })]))

/**
 * Reads, parses and compiles a users file; a ConfigError names the file and every problem with its JSON path,
 * a user or field given twice too (a copied line whose name was left: JSON.parse would keep the last one silently).
 */
export async function loadUsersFile (file: string): Promise<ReadonlyMap<string, CompiledUser>> {
  return (await readUsersFile(file)).users
}

/** loadUsersFile, with the file's value as written (`users get` prints a record from the read the table came from). */
async function readUsersFile (file: string): Promise<{ users: ReadonlyMap<string, CompiledUser>, value: unknown }> {
  const { text, value } = await readJsonText(file)
  return { users: compileUsers(parseUsersFile(value, file, duplicateKeyIssues(text))), value }
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
  readonly kind = 'file' as const
  readonly path: string
  #users: ReadonlyMap<string, CompiledUser>
  #lookups: ReadonlyMap<string, Found>

  private constructor (path: string, users: ReadonlyMap<string, CompiledUser>) {
    this.path = path
    this.#users = users
    this.#lookups = lookups(users)
  }

  /** `file` relative to `baseDir` (the config file's folder) unless absolute. */
  static async open (file: string, baseDir: string): Promise<FileUserSource> {
    return (await FileUserSource.read(file, baseDir)).source
  }

  /** open, with the file's value as written. */
  static async read (file: string, baseDir: string): Promise<{ source: FileUserSource, value: unknown }> {
    const path = resolve(baseDir, file)
    const { users, value } = await readUsersFile(path)
    return { source: new FileUserSource(path, users), value }
  }

  /** The compiled user, or undefined for a name the table does not hold. */
  get (name: string): CompiledUser | undefined {
    return this.#users.get(name)
  }

  /** The UserTable view of get: found or unknown, one Map read, no allocation. */
  lookup (name: string): UserLookup<CompiledUser> {
    return this.#lookups.get(name) ?? UNKNOWN
  }

  get size (): number {
    return this.#users.size
  }

  names (): IterableIterator<string> {
    return this.#users.keys()
  }

  /** Reads the file again; swaps the table only when the whole file is good, else throws (see the class). */
  async reload (): Promise<void> {
    const users = await loadUsersFile(this.path)
    this.#users = users
    this.#lookups = lookups(users)
  }
}
