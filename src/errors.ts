/** Every error the gateway answers or exits with: one row each, a stable code callers can branch on. */
export const ERRORS = {
  FRPGW_ERR_INVALID_JSON: { status: 400, message: 'body is not valid JSON: %s' },
  FRPGW_ERR_BAD_ENVELOPE: { status: 400, message: 'body must be a JSON object with "op" (string) and "content" (object): %s' },
  FRPGW_ERR_UNKNOWN_OP: { status: 400, message: 'unknown op %s: expected one of Login, NewProxy, CloseProxy, Ping, NewWorkConn, NewUserConn' },
  FRPGW_ERR_OP_MISMATCH: { status: 400, message: 'op in the query (%s) differs from op in the body (%s)' },
  FRPGW_ERR_BODY_TOO_LARGE: { status: 413, message: 'body is larger than listen.bodyLimitBytes (%s bytes)' },
  FRPGW_ERR_UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'content-type must be application/json, got %s' },
  FRPGW_ERR_TOO_DEEP: { status: 400, message: '%s nests objects and arrays deeper than %s levels' },
  FRPGW_ERR_BAD_ENCODING: { status: 400, message: 'body does not decode as content-encoding %s: %s' },
  FRPGW_ERR_UNSUPPORTED_ENCODING: { status: 415, message: 'content-encoding %s is not supported: expected gzip (x-gzip), deflate, br or identity' },
  FRPGW_ERR_BAD_REQUEST: { status: 400, message: 'malformed HTTP request: %s' },
  FRPGW_ERR_HEADERS_TOO_LARGE: { status: 431, message: 'request line and headers are larger than %s bytes' },
  FRPGW_ERR_REQUEST_TIMEOUT: { status: 408, message: 'request not received within %s ms' },
  FRPGW_ERR_NOT_FOUND: { status: 404, message: 'no route %s%s' },
  FRPGW_ERR_METHOD_NOT_ALLOWED: { status: 405, message: '%s %s: the plugin RPC takes POST only' },
  FRPGW_ERR_NO_REGISTRY: { status: 404, message: 'no registry: the config has no top-level "registry" block' },
  FRPGW_ERR_REGISTRY_UNAVAILABLE: { status: 503, message: 'the registry cannot be read: %s' },
  FRPGW_ERR_INTERNAL: { status: 500, message: 'internal error: %s' },
  FRPGW_ERR_CONFIG: { status: 500, message: 'invalid config %s' }
} as const satisfies Record<string, { status: number, message: string }>

export type ErrorCode = keyof typeof ERRORS

export class GatewayError extends Error {
  readonly code: ErrorCode
  readonly statusCode: number
  constructor (code: ErrorCode, ...args: unknown[]) {
    let i = 0
    super(ERRORS[code].message.replace(/%s/g, () => String(args[i++])))
    this.name = 'GatewayError'
    this.code = code
    this.statusCode = ERRORS[code].status
  }

  toJSON (): { error: { code: ErrorCode, message: string } } {
    return { error: { code: this.code, message: this.message } }
  }
}

/** One problem in a config file, located by its JSON path. */
export interface ConfigIssue { path: string, message: string }

// Top-level problems first, then step by step in file order (a stable sort keeps each step's own order).
const stepOf = (issue: ConfigIssue): number => Number(/^chain\[(\d+)\]/.exec(issue.path)?.[1] ?? -1)

export class ConfigError extends GatewayError {
  readonly issues: readonly ConfigIssue[]
  constructor (source: string, unordered: readonly ConfigIssue[]) {
    const issues = [...unordered].sort((a, b) => stepOf(a) - stepOf(b))
    super('FRPGW_ERR_CONFIG', `${source}:\n${issues.map(i => `  ${i.path}: ${i.message}`).join('\n')}`)
    this.name = 'ConfigError'
    this.issues = issues
  }
}

/** A plugin option that validated but does not compile (unknown template name, bad regex); path is under `options`. */
export class OptionError extends Error {
  readonly path: string
  constructor (path: string, message: string) {
    super(message)
    this.name = 'OptionError'
    this.path = path
  }
}

/**
 * A top-level block a step needs is in the file but did not parse: its own problems say what is wrong,
 * so the step stops compiling without a problem of its own (it would say the block is missing).
 */
export class BrokenBlock extends Error {
  constructor (readonly block: string) {
    super(`the top-level "${block}" block did not parse`)
    this.name = 'BrokenBlock'
  }
}

const joinPath = (outer: string, path: string): string => outer === '' || path.startsWith('[') ? `${outer}${path}` : `${outer}.${path}`

// The step being compiled under collectIssues: compile errors land here and compiling goes on.
let collecting: { issues: ConfigIssue[], at: string, broken: boolean } | undefined

/**
 * Runs a compile step, blaming `path` (relative to the enclosing compileAt) for whatever it throws.
 * Under collectIssues the problem is recorded and compiling goes on: the value is then undefined,
 * a placeholder in a step that will never run (a throw it causes later is not recorded again).
 * Elsewhere it throws an OptionError.
 */
export function compileAt<T> (path: string, compile: () => T): T {
  if (collecting === undefined) {
    try {
      return compile()
    } catch (err) {
      if (err instanceof OptionError) throw new OptionError(joinPath(path, err.path), err.message)
      throw new OptionError(path, (err as Error).message)
    }
  }
  const state = collecting
  const outer = state.at
  const recorded = state.issues.length
  state.at = joinPath(outer, path)
  try {
    return compile()
  } catch (err) {
    if (err instanceof BrokenBlock) state.broken = true
    else if (state.issues.length === recorded) state.issues.push({ path: state.at, message: (err as Error).message })
    return undefined as T
  } finally {
    state.at = outer
  }
}

/**
 * Compiles one step, gathering every problem its compileAt calls record under `path`. A throw after
 * a recorded problem is that problem's placeholder at work, not news; a throw alone is the step's.
 * The value comes back even with problems, so whatever it holds can be closed. `broken`: the step
 * needs a block that did not parse (BrokenBlock), and is not usable though it may have no problem of its own.
 */
export function collectIssues<T> (path: string, compile: () => T): { value?: T, issues: readonly ConfigIssue[], broken: boolean } {
  const outer = collecting
  const state = { issues: [] as ConfigIssue[], at: path, broken: false }
  collecting = state
  try {
    const value = compile()
    return { value, issues: state.issues, broken: state.broken }
  } catch (err) {
    if (err instanceof BrokenBlock) state.broken = true
    else if (state.issues.length === 0) state.issues.push({ path, message: (err as Error).message })
    return { issues: state.issues, broken: state.broken }
  } finally {
    collecting = outer
  }
}
