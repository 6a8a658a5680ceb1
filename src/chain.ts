import type { Logger } from 'pino'
import type { z } from 'zod'
import type { Cluster, Redis } from 'ioredis'
import type { CommitHook } from './commit.js'
import { loggedReason, warnRepeated } from './log.js'
import type { Matcher } from './match.js'
import type { Decision, Metrics, Outcome } from './metrics.js'
import type { RateLimitStore } from './stores/store.js'
import { sameJson, type Content, type Op } from './protocol.js'
import type { TemplateContext } from './template.js'
import type { LiveRegistry } from './registry/live.js'
import type { ProxyLookup } from './registry/store.js'
import type { UserTable } from './users/table.js'

/** What a step knows of the call besides the content. */
export interface CallContext extends TemplateContext {
  /** the op whose steps run (a mislabelled NewWorkConn counts as NewWorkConn) */
  op: Op
  /** the op frps put on the wire */
  wireOp: Op
  reqid: string
  /** performance.now() by which the answer must be out */
  deadline: number
  log: Logger
  /** set by the trace command: told of every step, applied or skipped */
  trace?: (entry: TraceEntry) => void
}

/**
 * One step as the trace command sees it: skipped (and by which `when` condition) or its decision; or the
 * registry's record of the call's proxy, read before the chain (`record` 'error': it could not be read).
 */
export type TraceEntry =
  | { step: string, skipped: string }
  | { step: 'registry', read: { user: string, name: string }, record: ProxyLookup, seconds: number, error?: unknown }
  | { step: string, decision: Decision, seconds: number, before: Content, after: Content, reason?: string, error?: unknown, rule?: string }

/**
 * A step's answer. Nothing (or `{}`) allows unchanged; `content` (a new object, only when a value really
 * differs) modifies; `reject` rejects with that reason; `error` marks a decision taken by a failure policy.
 */
export interface Verdict {
  reject?: string
  /** the reason as log lines show it, when it renders a secret (Template.masked) */
  loggedReason?: string
  content?: Content
  error?: unknown
  /** the rule that decided, for trace (`bad_token`, `ok`) */
  rule?: string
}

/**
 * A compiled step: validated and compiled once, called per call. `close` frees what it holds,
 * finishing work after answers (a notify queue) for at most `drainMs`;
 * `commit` is told the final outcome of every call of the step's ops, once its answer is written.
 */
export interface Step {
  (content: Content, ctx: CallContext): Verdict | undefined | Promise<Verdict | undefined>
  close?: (drainMs: number) => Promise<void>
  /** opens again the files it writes (SIGHUP: logrotate moved them) */
  reopen?: () => Promise<void>
  /** `when`: the step's `when` is matched against the final content before `commit` is told (its in-chain skip says nothing then) */
  commit?: Omit<CommitHook, 'name'> & { when?: true }
}

/** What the runtime hands a plugin factory. */
export interface PluginDeps {
  /** the step's name (logs, metric labels, reasons) */
  name: string
  /** the ops the step runs on */
  ops: readonly Op[]
  log: Logger
  metrics: Metrics
  /** the rate-limit store of that kind ('auto': Redis when configured, else memory); throws when it cannot be had */
  store: (kind: 'auto' | 'memory' | 'redis') => RateLimitStore
  /** the user table of the top-level `users` block; throws when there is none */
  users: () => UserTable
  /** the live proxy registry of the top-level `registry` block; throws when there is none */
  registry: () => LiveRegistry
  /** the runtime's Redis client (the top-level `redis` block); throws when there is none */
  redis: () => Redis | Cluster
  /** a path of the step's options, a relative one from the config file's folder (as users.file and listen.tls) */
  resolvePath: (path: string) => string
}

/** A built-in plugin: its options schema and a factory that validates and compiles once. */
export interface PluginDef<S extends z.ZodType = z.ZodType> {
  description: string
  ops: readonly Op[]
  options: S
  create: (options: z.output<S>, deps: PluginDeps) => Step
  /** takes no part in the decision (it only acts at commit): `mode: "shadow"` is a config error */
  observer?: true
}

export const definePlugin = <S extends z.ZodType>(def: PluginDef<S>): PluginDef<S> => def

/** A step as the chain of one op holds it. */
export interface ChainStep {
  name: string
  shadow: boolean
  when: Matcher
  run: Step
  /** records one decision and the step's duration in seconds */
  record: (decision: Decision, seconds: number) => void
}

export interface ChainResult {
  outcome: Outcome
  /** the rejection reason (reject and error outcomes) */
  reason?: string
  /** the reason as log lines show it, when it differs */
  loggedReason?: string
  /** the whole final content (modify outcome) */
  content?: Content
  /** the step that rejected or failed */
  step?: string
  /** the steps that failed and let the call go on (an allow policy), for the call's log line */
  failed?: string[]
  /** the registry's record of the call's proxy, read before the chain (NewUserConn, CloseProxy), for the commit */
  proxy?: ProxyLookup
  /** shadow steps still running beside the chain that the commit (a step's own hook) or trace waits for, until the deadline */
  settling?: Promise<void>
}

interface State { content: Content, modified: number, i: number, failure?: ChainResult, detached?: Array<Promise<void>>, failed?: string[] }

const isPromise = (v: unknown): v is Promise<unknown> => typeof (v as Promise<unknown> | undefined)?.then === 'function'

/**
 * Runs the steps of one op in order (chain semantics 1 to 7 of DESIGN.md). Stays synchronous while the
 * steps are; the deadline timer starts only when a step goes asynchronous.
 */
export function runChain (steps: readonly ChainStep[], original: Content, ctx: CallContext): ChainResult | Promise<ChainResult> {
  const state: State = { content: original, modified: 0, i: 0 }
  for (; state.i < steps.length; state.i++) {
    const step = steps[state.i]
    if (skip(step, state, ctx)) continue
    const started = performance.now()
    const verdict = run(step, state, ctx)
    if (isPromise(verdict)) {
      if (detached(step, state, ctx, verdict, started)) continue
      return finishAsync(steps, original, state, ctx, verdict, started)
    }
    // a step that never waits cannot be cut off by the deadline's timer: past it, it is abandoned all the same
    if (performance.now() > ctx.deadline) return withDetached(state, ctx, pastDeadline(step, state, ctx, started))
    if (settle(step, state, verdict, ctx, started)) return withDetached(state, ctx, state.failure as ChainResult)
  }
  return withDetached(state, ctx, finish(original, state, ctx))
}

const TRACE_GRACE_MS = 1000

/**
 * A shadow quota's reservation may come after the answer: its commit (the release on a reject) must
 * come after it, or the reservation stands until the deadline. Past the deadline it has lapsed anyway.
 */
function withDetached (state: State, ctx: CallContext, result: ChainResult): ChainResult {
  if (state.detached === undefined) return result
  let timer: NodeJS.Timeout | undefined
  // trace waits a little past it: a step that ends at the deadline (a forward's own budget) is still printed
  const bound = ctx.deadline - performance.now() + (ctx.trace !== undefined ? TRACE_GRACE_MS : 0)
  const deadline = new Promise<void>(resolve => { timer = setTimeout(resolve, Math.max(0, Math.ceil(bound))) })
  const all = Promise.all(state.detached).then(() => { clearTimeout(timer) })
  return { ...result, settling: Promise.race([all, deadline]) }
}

/**
 * The rest of the chain once a step went asynchronous: one promise and one deadline timer per call.
 * A step still running at the deadline is abandoned: its late answer (or failure) is ignored.
 */
function finishAsync (steps: readonly ChainStep[], original: Content, state: State, ctx: CallContext,
  first: Promise<Verdict | undefined>, started: number): Promise<ChainResult> {
  return new Promise((resolve, reject) => {
    let done = false
    const end = (result: ChainResult): void => {
      done = true
      clearTimeout(timer)
      resolve(withDetached(state, ctx, result))
    }
    // what the synchronous path does with a throw (a log destination failing): the call is answered
    // by the error handler, where a throw in a promise callback or a timer would end the process
    const abort = (err: unknown): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      reject(err)
    }
    // timers may fire a little early against performance.now(): re-arm for what is left
    const arm = (): NodeJS.Timeout => setTimeout(onDeadline, Math.max(0, Math.ceil(ctx.deadline - performance.now())))
    const onDeadline = (): void => {
      if (done) return
      if (performance.now() < ctx.deadline) {
        timer = arm()
        return
      }
      let result
      try {
        result = pastDeadline(steps[state.i], state, ctx, started)
      } catch (err) {
        return abort(err)
      }
      end(result)
    }
    let timer = arm()

    const follow = (step: ChainStep, pending: Promise<Verdict | undefined>): void => {
      pending.then(verdict => advance(step, verdict), (err: unknown) => advance(step, failed(step, err)))
    }
    const advance = (step: ChainStep, verdict: Verdict | undefined): void => {
      if (done) return
      try {
        if (settle(step, state, verdict, ctx, started)) return end(state.failure as ChainResult)
        while (true) {
          do state.i++
          while (state.i < steps.length && skip(steps[state.i], state, ctx))
          if (state.i >= steps.length) return end(finish(original, state, ctx))
          step = steps[state.i]
          started = performance.now()
          const next = run(step, state, ctx)
          if (isPromise(next)) {
            if (detached(step, state, ctx, next, started)) continue
            return follow(step, next)
          }
          if (performance.now() > ctx.deadline) return end(pastDeadline(step, state, ctx, started))
          if (settle(step, state, next, ctx, started)) return end(state.failure as ChainResult)
        }
      } catch (err) {
        abort(err)
      }
    }
    follow(steps[state.i], first)
  })
}

/** The answer of a call whose step ran past the deadline: what the step says, if it ever does, is ignored. */
function pastDeadline (step: ChainStep, state: State, ctx: CallContext, started: number): ChainResult {
  const seconds = (performance.now() - started) / 1000
  step.record('error', seconds)
  ctx.trace?.({ step: step.name, decision: 'error', seconds, before: state.content, after: state.content, reason: 'deadline exceeded' })
  warnRepeated(ctx.log, `${step.name}\ndeadline`, { step: step.name }, { step: step.name }, 'deadline exceeded')
  return ctx.op === 'CloseProxy' ? { outcome: 'allow' } : { outcome: 'error', reason: `frp-plugin-gateway: deadline exceeded in step ${step.name}`, step: step.name }
}

/**
 * A shadow step takes no part in the answer, nor in its time: one that goes asynchronous (a forward,
 * a store) runs beside the rest of the chain, and its decision is recorded when it comes, past the
 * answer if need be (a shadow step slower than deadlineMs would otherwise fail the call). trace
 * answers as a run does, then waits for it (until a second past the deadline) to print its line.
 */
function detached (step: ChainStep, state: State, ctx: CallContext, pending: Promise<Verdict | undefined>, started: number): boolean {
  if (!step.shadow) return false
  const alone: State = { content: state.content, modified: 0, i: state.i }
  const settled = pending.then(verdict => settle(step, alone, verdict, ctx, started), (err: unknown) => settle(step, alone, failed(step, err), ctx, started))
    // settle only counts and logs: a log destination that throws has nowhere else to go
    .then(() => {}, () => {})
  // the commit waits for a step's own commit hook; trace, to print every step
  if (step.run.commit !== undefined || ctx.trace !== undefined) (state.detached ??= []).push(settled)
  return true
}

function skip (step: ChainStep, state: State, ctx: CallContext): boolean {
  const failed = step.when(ctx.op, state.content, ctx)
  if (failed !== null) ctx.trace?.({ step: step.name, skipped: failed })
  return failed !== null
}

/** Calls a step on the content as the chain has it; a step that throws gives the verdict of failed(). */
function run (step: ChainStep, state: State, ctx: CallContext): ReturnType<Step> {
  try {
    return step.run(state.content, ctx)
  } catch (err) {
    return failed(step, err)
  }
}

/** A step that threw: a bug in the step, never a reason to crash. Fails closed. */
function failed (step: ChainStep, err: unknown): Verdict {
  return { error: err, reject: `frp-plugin-gateway: step ${step.name} failed` }
}

/** Applies one verdict; returns true when the chain ends here (state.failure holds the result). */
function settle (step: ChainStep, state: State, verdict: Verdict | undefined, ctx: CallContext, started: number): boolean {
  const seconds = (performance.now() - started) / 1000
  const failed = verdict?.error !== undefined
  if (failed) logFailure(step, verdict.error, ctx)
  const before = state.content
  let decision: Decision = 'allow'
  let ends = false
  if (verdict?.reject !== undefined) {
    decision = step.shadow ? 'shadow_reject' : 'reject'
    if (!step.shadow && ctx.op !== 'CloseProxy') {
      // frps hands the reason to frpc as its error text, and frpc takes an empty one for success (a proxy "running")
      const empty = verdict.reject === ''
      state.failure = {
        outcome: failed ? 'error' : 'reject', reason: empty ? `rejected by ${step.name}` : verdict.reject, loggedReason: empty ? undefined : verdict.loggedReason, step: step.name
      }
      ends = true
    }
  } else if (verdict?.content !== undefined && verdict.content !== state.content) {
    decision = step.shadow ? 'shadow_modify' : 'modify'
    if (!step.shadow) {
      state.content = verdict.content
      state.modified++
    }
  }
  step.record(failed ? 'error' : decision, seconds)
  if (failed && !ends && !step.shadow) (state.failed ??= []).push(step.name)
  // what shadow mode is for: the reject it would have made, on live traffic
  if (decision === 'shadow_reject') ctx.log.info({ step: step.name, decision, reason: loggedReason(verdict?.loggedReason ?? verdict?.reject as string) }, 'shadow decision')
  else if (decision === 'shadow_modify' && ctx.log.isLevelEnabled('debug')) ctx.log.debug({ step: step.name, decision }, 'shadow decision')
  ctx.trace?.({ step: step.name, decision: failed ? 'error' : decision, seconds, before, after: verdict?.content ?? before, reason: verdict?.reject, error: verdict?.error, rule: verdict?.rule })
  return ends
}

/** A failing store or downstream fails every call: its stack is logged once, then the repeats counted (log.ts). */
function logFailure (step: ChainStep, err: unknown, ctx: CallContext): void {
  const { code, result, name, message } = (err ?? {}) as Record<string, unknown>
  // result: a forward failure's kind (http_status, invalid_response...), when no code says more
  const kind = [code, result, name].find(k => typeof k === 'string') as string | undefined ?? typeof err
  warnRepeated(ctx.log, `${step.name}\n${kind}`, { step: step.name, err }, { step: step.name, code: kind, error: message ?? String(err) }, 'step failed')
}

function finish (original: Content, state: State, ctx: CallContext): ChainResult {
  // frps ignores the CloseProxy answer. A step returns content only when a value differs, so only
  // two or more modifications can have brought it back to what frps sent, which is no change.
  const result: ChainResult = ctx.op === 'CloseProxy' || state.modified === 0 || (state.modified > 1 && sameJson(state.content, original))
    ? { outcome: 'allow' }
    : { outcome: 'modify', content: state.content }
  if (state.failed !== undefined) result.failed = state.failed
  return result
}
