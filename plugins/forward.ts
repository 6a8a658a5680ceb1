import type { Logger } from 'pino'
import { Pool, type Dispatcher } from 'undici'
import { z } from 'zod'
import { BodyTooLarge, checkHeader, clientTls, connectTls, FRAMING_HEADERS, intIn, MAX_DEADLINE_MS, parseHttpUrl, readBounded, undiciTimeouts } from '../src/bounds.js'
import { definePlugin, type CallContext, type Verdict } from '../src/chain.js'
import { compileAt } from '../src/errors.js'
import { describeJsonError } from '../src/json-error.js'
import { FORWARD_RESULTS, type ForwardResult } from '../src/metrics.js'
import {
  AGREED_FIELDS, AGREED_OP, changedAgreedField, changedSession, checkContent, copy, foldedField, isObject, OPS, own, put, sameJson, withSession, type Content, type Op
} from '../src/protocol.js'

const MAX_ANSWER_BYTES = 1024 * 1024
// Past the call's deadline the chain answers (DESIGN, chain semantics 6); the request is cancelled just after.
const DEADLINE_GRACE_MS = 20
// Failures before a byte of the request left: the only ones another attempt cannot turn into a double call.
const NEVER_SENT = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN'])
const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])
// What frps sends and what frames the request: extra headers add to these, never replace them.
const RESERVED_HEADERS = new Set(['content-type', 'x-frp-reqid', 'user-agent', ...FRAMING_HEADERS])
// frps's Go client, header by header; the reqid follows per call
const FRPS_HEADERS = ['User-Agent', 'Go-http-client/1.1', 'Content-Type', 'application/json']

type Failure = Exclude<ForwardResult, 'ok'>

/** Why a forward call failed, as the chain's warn line shows it; frpc only ever sees the step name. */
class ForwardError extends Error {
  elapsedMs = 0
  attempts = 0
  constructor (readonly result: Failure, message: string, readonly status?: number, readonly code?: string, options?: ErrorOptions) {
    super(message, options)
  }
}

const invalid = (message: string): ForwardError => new ForwardError('invalid_response', message)

/** `true`/`"true"` and `false`/`"false"`/absent: plugins written from frp's doc send strings. */
function flag (answer: Content, key: string): boolean {
  const value = own(answer, key)
  if (value === true || value === 'true') return true
  if (value === false || value === 'false' || value == null) return false
  throw invalid(`"${key}" is a ${typeof value}, not a boolean`)
}

/** RFC 7396 merge patch; copies only the objects it changes, and every key stays a plain key. */
export function mergePatch (target: unknown, patch: unknown): unknown {
  if (!isObject(patch)) return patch
  const base = isObject(target) ? target : {}
  let out: Content | undefined
  for (const key of Object.keys(patch)) {
    const value = patch[key]
    if (value === null) {
      if (Object.hasOwn(base, key)) delete (out ??= copy(base))[key]
      continue
    }
    const current = own(base, key)
    const next = mergePatch(current, value)
    if (next !== current) put(out ??= copy(base), key, next)
  }
  return out ?? base
}

/** A body not to be read: the connection goes with it (its destroy emits an error no one else waits for). */
function discard (body: Dispatcher.ResponseData['body']): void {
  body.on('error', () => {}).destroy()
}

async function readAnswer (body: Dispatcher.ResponseData['body']): Promise<string> {
  try {
    return await readBounded(body, MAX_ANSWER_BYTES)
  } catch (err) {
    throw err instanceof BodyTooLarge ? invalid(`answer is larger than ${MAX_ANSWER_BYTES} bytes`) : err
  }
}

interface Breaker { admit: (now: number) => boolean, succeeded: () => void, failed: (now: number) => void }

/** Opens after `failureThreshold` consecutive failures; after `resetAfterMs`, one trial call decides. */
function createBreaker ({ failureThreshold, resetAfterMs }: { failureThreshold: number, resetAfterMs: number }, log: Logger): Breaker {
  let failures = 0
  let openUntil = 0
  return {
    admit (now) {
      if (failures < failureThreshold) return true
      if (now < openUntil) return false
      // half-open: every call but the trial fails fast until the trial settles (every request is bounded)
      openUntil = Infinity
      return true
    },
    succeeded () {
      if (failures >= failureThreshold) log.info('circuit breaker closed')
      failures = 0
      openUntil = 0
    },
    failed (now) {
      if (++failures < failureThreshold) return
      if (failures === failureThreshold || openUntil === Infinity) log.warn({ failures, resetAfterMs }, 'circuit breaker opened')
      openUntil = now + resetAfterMs
    }
  }
}

function checkForwardHeader (name: string, value: string, seen: Map<string, string>): void {
  checkHeader(name, value, RESERVED_HEADERS, 'the gateway sets this header as frps does; it cannot be replaced', seen)
  // a compressed answer would be read as JSON, and every call fail
  if (name.toLowerCase() === 'accept-encoding') throw new Error('the gateway reads answers as they come, uncompressed: it cannot ask for an encoding')
}

export default definePlugin({
  description: 'calls a downstream frps HTTP plugin, with a timeout, retries, a failure policy and a circuit breaker',
  ops: OPS,
  options: z.strictObject({
    url: z.string().describe('http:// or https:// URL of the plugin, path (and query) included; frps\'s addr + path'),
    timeoutMs: intIn(1, MAX_DEADLINE_MS).default(1000).describe('bound of the whole call, retries included (never past deadlineMs)'),
    retries: intIn(0, 5).default(0)
      .describe('further attempts after a connection that could not be opened (never once a request was sent)'),
    onError: z.enum(['reject', 'allow']).default('reject').describe('what a failed call decides'),
    merge: z.enum(['replace', 'patch']).default('replace')
      .describe('replace: returned content is the whole new content (as frps); patch: RFC 7396 merge patch onto it'),
    headers: z.record(z.string(), z.string()).default({}).describe('extra request headers (cannot replace the ones frps sends)'),
    tls: clientTls('downstream'),
    circuitBreaker: z.strictObject({
      failureThreshold: intIn(1, 1000).describe('consecutive failed calls that open the breaker'),
      resetAfterMs: intIn(1, 3_600_000).describe('how long calls fail fast before one trial call (ms, at most 1 h)')
    }).optional()
  }),
  create (options, deps) {
    const url = compileAt('url', () => {
      const parsed = parseHttpUrl(options.url)
      // the gateway adds op and version as frps does: a second one would be the first a plugin reads (Go's Query().Get, gin)
      const taken = ['op', 'version'].find(key => parsed.searchParams.has(key))
      if (taken !== undefined) throw new Error(`${parsed.search} has "${taken}", which the gateway sets on every call as frps does: leave it out of the url`)
      return parsed
    })
    const tls = connectTls(url, options.tls, deps.resolvePath)
    const seen = new Map<string, string>()
    const extra = Object.entries(options.headers).flatMap(([name, value]) => {
      compileAt(`headers.${name}`, () => checkForwardHeader(name, value, seen))
      return [name, value]
    })
    const query = url.search === '' ? '?' : `${url.search}&`
    // frps encodes the query with Go's url.Values: keys sorted, so op comes first
    const paths = Object.fromEntries(OPS.map(op => [op, `${url.pathname}${query}op=${op}&version=0.1.0`])) as Record<Op, string>
    const envelopes = Object.fromEntries(OPS.map(op => [op, `{"version":"0.1.0","op":"${op}","content":`])) as Record<Op, string>
    const pool = new Pool(url.origin, { connections: 64, connect: tls })
    const counters = Object.fromEntries(FORWARD_RESULTS.map(r => [r, deps.metrics.forwardRequests.labels(deps.name, r)])) as
      Record<ForwardResult, ReturnType<typeof deps.metrics.forwardRequests.labels>>
    const breaker = options.circuitBreaker !== undefined ? createBreaker(options.circuitBreaker, deps.log) : undefined
    const { timeoutMs, retries, onError, merge } = options
    const failedReason = `frp-plugin-gateway: step ${deps.name} failed`
    const rejectedReason = `rejected by ${deps.name}`

    /** One HTTP exchange: the parsed answer, or a ForwardError saying what went wrong. */
    async function exchange (request: Dispatcher.RequestOptions & { signal: AbortSignal }, budget: number): Promise<unknown> {
      let text
      try {
        const res = await pool.request(request)
        if (res.statusCode !== 200) {
          // not read (frps closes it too): a body trickled slowly would hold the connection with no end
          discard(res.body)
          throw new ForwardError('http_status', `downstream answered HTTP ${res.statusCode}`, res.statusCode)
        }
        text = await readAnswer(res.body)
      } catch (err) {
        if (err instanceof ForwardError) throw err
        const code = (err as { code?: unknown }).code
        if (request.signal.aborted || TIMEOUT_CODES.has(code as string)) {
          throw new ForwardError('timeout', `no answer within ${budget} ms`, undefined, 'ETIMEDOUT')
        }
        throw new ForwardError('connect_error', 'request failed', undefined, typeof code === 'string' ? code : undefined, { cause: err })
      }
      try {
        return JSON.parse(text)
      } catch {
        throw invalid(`answer is not JSON: ${describeJsonError(text)}`)
      }
    }

    function decide (answer: unknown, content: Content, op: Op): Verdict | undefined {
      if (!isObject(answer)) throw invalid('answer is not a JSON object')
      if (flag(answer, 'reject')) {
        const reason = own(answer, 'reject_reason')
        return { reject: typeof reason === 'string' && reason !== '' ? reason : rejectedReason }
      }
      const returned = own(answer, 'content')
      if (flag(answer, 'unchange') || returned == null) return
      if (!isObject(returned)) throw invalid('"content" is not a JSON object')
      let next = merge === 'patch' ? mergePatch(content, returned) as Content : returned
      const problem = checkContent(op, next)
      if (problem !== null) throw invalid(`the answer makes ${problem}`)
      const folded = foldedField(op, next)
      if (folded !== undefined) throw invalid(`the answer has ${folded} (Go matches keys whatever their case)`)
      const changed = op === AGREED_OP ? changedAgreedField(content, next) : undefined
      if (changed !== undefined) {
        throw invalid(`the answer changes ${changed}, which frpc and frps must agree on (${AGREED_FIELDS.get(changed) as string})`)
      }
      // frps keeps its session's user and run_id whatever an answer outside Login says: so do the steps after, quotas and the registry
      if (changedSession(op, content, next)) next = withSession(content, next)
      return sameJson(next, content) ? undefined : { content: next }
    }

    function fail (error: ForwardError, started: number, attempts: number): Verdict {
      const now = performance.now()
      error.elapsedMs = Math.round(now - started)
      error.attempts = attempts
      counters[error.result].inc()
      if (error.result !== 'circuit_open') breaker?.failed(now)
      return onError === 'allow' ? { error } : { error, reject: failedReason }
    }

    async function forward (content: Content, ctx: CallContext): Promise<Verdict | undefined> {
      const started = performance.now()
      if (breaker?.admit(started) === false) return fail(new ForwardError('circuit_open', 'circuit breaker open: downstream not called'), started, 0)
      const budget = Math.max(1, Math.ceil(Math.min(timeoutMs, ctx.deadline + DEADLINE_GRACE_MS - started)))
      const abort = new AbortController()
      const timer = setTimeout(() => { abort.abort() }, budget)
      const request = {
        method: 'POST' as const,
        path: paths[ctx.wireOp],
        headers: [...FRPS_HEADERS, 'X-Frp-Reqid', ctx.reqid, ...extra],
        body: `${envelopes[ctx.wireOp]}${JSON.stringify(content)}}`,
        signal: abort.signal,
        ...undiciTimeouts(budget)
      }
      let attempts = 0
      try {
        let answer
        while (true) {
          attempts++
          try {
            answer = await exchange(request, budget)
            break
          } catch (err) {
            const error = err as ForwardError
            if (attempts > retries || !NEVER_SENT.has(error.code as string) || abort.signal.aborted) throw error
            counters.connect_error.inc()
          }
        }
        const verdict = decide(answer, content, ctx.op)
        counters.ok.inc()
        breaker?.succeeded()
        return verdict
      } catch (err) {
        // anything else thrown on the way (an answer too deep to merge, say) is the answer's fault too
        return fail(err instanceof ForwardError ? err : invalid(`answer could not be used: ${(err as Error).message}`), started, attempts)
      } finally {
        clearTimeout(timer)
      }
    }

    // closed after the deadline of every call that used it: what is still in flight is of no use to anyone
    return Object.assign(forward, { close: async () => { await pool.destroy() } })
  }
})
