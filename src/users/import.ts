import { parse as parseToml, TomlError } from 'smol-toml'
import { ConfigError, type ConfigIssue } from '../errors.js'
import { issuesOf } from '../issues.js'
import { parseUsersFile, userNameSchema, userRecordSchema, type UsersFile } from './record.js'

type RawRecord = Record<string, unknown>

const nameIssue = (name: string, path: string): ConfigIssue[] => {
  const parsed = userNameSchema.safeParse(name)
  return parsed.success ? [] : [{ path, message: `${JSON.stringify(name)}: ${parsed.error.issues[0].message}` }]
}

// Each record is checked where the source format has it, so an error names its line or table (and the source's key).
const recordIssues = (record: RawRecord, at: (field: string) => string): ConfigIssue[] => {
  const parsed = userRecordSchema.safeParse(record)
  return parsed.success ? [] : issuesOf(parsed.error).map(i => ({ path: at(i.path), message: i.message }))
}

function finish (users: Map<string, RawRecord>, issues: ConfigIssue[], source: string): UsersFile {
  if (issues.length > 0) throw new ConfigError(source, issues)
  return parseUsersFile({ users: Object.fromEntries(users) }, source)
}

/**
 * fp-multiuser's tokens file: one `user=token` per line, split at the first `=`, both sides
 * trimmed (as fp-multiuser does). Blank lines and lines starting with `#` or `;` are skipped.
 * fp-multiuser silently ignores a line without `=` and lets a repeated user's last line win: here
 * both are errors naming the line, and so is an empty token or a name frpc's users should not
 * have. Throws a ConfigError with `line N` paths.
 */
export function fromFpMultiuser (text: string, source = 'fp-multiuser tokens file'): UsersFile {
  const users = new Map<string, RawRecord>()
  const seenAt = new Map<string, number>()
  const issues: ConfigIssue[] = []
  text.replace(/^\uFEFF/, '').split('\n').forEach((row, i) => {
    const line = row.trim()
    const at = `line ${i + 1}`
    if (line === '' || line.startsWith('#') || line.startsWith(';')) return
    const eq = line.indexOf('=')
    if (eq === -1) {
      issues.push({ path: at, message: 'expected user=token' })
      return
    }
    const name = line.slice(0, eq).trim()
    const token = line.slice(eq + 1).trim()
    const problems = nameIssue(name, at)
    if (seenAt.has(name)) problems.push({ path: at, message: `user ${JSON.stringify(name)} again (first on line ${seenAt.get(name)})` })
    if (token === '') problems.push({ path: at, message: `empty token for ${JSON.stringify(name)}` })
    else problems.push(...recordIssues({ token }, () => at))
    issues.push(...problems)
    if (!seenAt.has(name)) seenAt.set(name, i + 1)
    if (problems.length === 0) users.set(name, { token })
  })
  return finish(users, issues, source)
}

const PANEL_KEYS = new Set(['user', 'token', 'comment', 'ports', 'domains', 'subdomains', 'enable', 'status'])

/**
 * frps-panel's list fields: `[""]` (what its form writes for an empty field) means no limit, so
 * the field is left out; `[]` means nothing is allowed and stays `[]`. Empty strings among other
 * entries are dropped; a port given as a string of digits becomes a number.
 */
function panelList (value: unknown, path: string, issues: ConfigIssue[], ports: boolean): { list: Array<string | number>, from: number[] } | undefined {
  if (!Array.isArray(value)) {
    issues.push({ path, message: 'expected a list' })
    return undefined
  }
  const list: Array<string | number> = []
  // the file's index of each kept entry, so a record check names the entry where the file has it
  const from: number[] = []
  for (const [i, entry] of value.entries()) {
    if (typeof entry === 'string') {
      const s = entry.trim()
      if (s === '') continue
      list.push(ports && /^\d+$/.test(s) ? Number(s) : ports ? s.replace(/\s*-\s*/, '-') : s)
      from.push(i)
    } else if (ports && typeof entry === 'number') {
      list.push(entry)
      from.push(i)
    } else {
      issues.push({ path: `${path}[${i}]`, message: `expected ${ports ? 'a port number or a "low-high" string' : 'a string'}` })
    }
  }
  return value.length > 0 && list.length === 0 ? undefined : { list, from }
}

/**
 * frps-panel's `frps-tokens.toml`: `[tokens.NAME]` tables with `user` (must equal NAME when
 * given: frps-panel looks users up by NAME), `token`, `comment`, `ports`, `domains`, `subdomains`
 * and `enable` (`status` in frps-panel before 2.0; default true). Lists follow panelList. Throws a
 * ConfigError with TOML paths (`tokens.alice.ports[1]`), or the line of a TOML syntax error.
 */
export function fromFrpsPanel (text: string, source = 'frps-panel tokens file'): UsersFile {
  let doc: Record<string, unknown>
  try {
    doc = parseToml(text)
  } catch (err) {
    const line = err instanceof TomlError ? `line ${err.line}` : '(file)'
    throw new ConfigError(source, [{ path: line, message: `not valid TOML: ${(err as Error).message.split('\n')[0]}` }])
  }
  const issues: ConfigIssue[] = []
  const users = new Map<string, RawRecord>()
  for (const key of Object.keys(doc)) if (key !== 'tokens') issues.push({ path: key, message: 'unknown table: expected [tokens.NAME] tables' })
  const tokens = doc.tokens ?? {}
  if (tokens === null || typeof tokens !== 'object' || Array.isArray(tokens)) {
    issues.push({ path: 'tokens', message: 'expected [tokens.NAME] tables' })
    throw new ConfigError(source, issues)
  }
  for (const [name, table] of Object.entries(tokens as Record<string, unknown>)) {
    const at = `tokens.${name}`
    if (table === null || typeof table !== 'object' || Array.isArray(table)) {
      issues.push({ path: at, message: 'expected a table' })
      continue
    }
    const t = table as Record<string, unknown>
    const problems = nameIssue(name, at)
    for (const key of Object.keys(t)) if (!PANEL_KEYS.has(key)) problems.push({ path: `${at}.${key}`, message: 'unknown key' })
    if (t.user !== undefined && t.user !== name) problems.push({ path: `${at}.user`, message: `${JSON.stringify(t.user)} differs from the table name ${JSON.stringify(name)}` })
    if (t.enable !== undefined && t.status !== undefined) problems.push({ path: `${at}.status`, message: 'give enable or status, not both' })
    const record: RawRecord = {}
    if (t.token === undefined || t.token === '') problems.push({ path: `${at}.token`, message: 'missing or empty token' })
    else record.token = t.token
    const enable = t.enable ?? t.status
    if (enable !== undefined) record.enabled = enable
    if (t.comment !== undefined && t.comment !== '') record.comment = t.comment
    const from: Record<string, number[]> = {}
    for (const field of ['ports', 'domains', 'subdomains'] as const) {
      if (t[field] === undefined) continue
      const kept = panelList(t[field], `${at}.${field}`, problems, field === 'ports')
      if (kept !== undefined) [record[field], from[field]] = [kept.list, kept.from]
    }
    const sourceKey = t.enable === undefined && t.status !== undefined ? 'status' : 'enable'
    const fileKey = (field: string): string => `${at}.${field
      .replace(/^enabled/, sourceKey)
      .replace(/^(ports|domains|subdomains)\[(\d+)\]/, (_, list: string, i: string) => `${list}[${from[list][Number(i)]}]`)}`
    // every problem in one run; a field already found wrong above is not reported twice
    const found = new Set(problems.map(p => p.path))
    problems.push(...recordIssues(record, fileKey).filter(p => !found.has(p.path)))
    issues.push(...problems)
    if (problems.length === 0) users.set(name, record)
  }
  return finish(users, issues, source)
}
