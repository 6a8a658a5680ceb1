import type { Logger } from 'pino'
import { warnRepeated } from './log.js'
import type { Outcome } from './metrics.js'
import type { Content, Op } from './protocol.js'
import type { ProxyLookup } from './registry/store.js'

/** What frps was told, as the commit phase tells it to the steps that ask. */
export interface CommitEvent {
  /** the call, the object its steps were given as ctx: a step notes in a WeakSet what it did in that call */
  call: object
  op: Op
  outcome: Outcome
  /** the content frps acts on: the modified content for modify, else what frps sent */
  content: Content
  /** the step that rejected or failed; undefined for allow and modify */
  decidedBy?: string
  reason?: string
  reqid: string
  /** when the call arrived, ms since the epoch */
  time: number
  /** the registry's record of the call's proxy, when a step reads its metas (NewUserConn, CloseProxy) */
  proxy?: ProxyLookup
  log: Logger
}

/**
 * Work done once the answer is decided and written: the registry's records, a quota's
 * reservation, an event. `commit` never delays an answer and its failures are logged and counted,
 * never thrown; `describe` says what commit would do, doing nothing (the trace command).
 */
export interface CommitHook {
  name: string
  commit: (event: CommitEvent) => void | Promise<void>
  describe: (event: CommitEvent) => string | undefined
}

export interface CommitCounters { failed: (hook: string) => void }

/**
 * Runs the commit hooks of calls after their answers, and keeps the ones in progress so that a
 * stop or a reload can wait for them (bounded by drainMs).
 */
export class Committer {
  readonly #pending = new Set<Promise<void>>()
  /** the calls answered in this turn of the event loop, committed together after it */
  #queued: Array<[readonly CommitHook[], CommitEvent]> = []
  constructor (private readonly counters: CommitCounters) {}

  /** Schedules the hooks for after the current tick: the answer is written first; with `after`, once it settles too. */
  run (hooks: readonly CommitHook[], event: CommitEvent, after?: Promise<void>): void {
    if (after !== undefined) {
      this.#track(after.then(() => { for (const hook of hooks) this.#one(hook, event) }))
      return
    }
    if (this.#queued.length === 0) this.#track(new Promise<void>(resolve => setImmediate(resolve)).then(() => { this.#flush() }))
    this.#queued.push([hooks, event])
  }

  #flush (): void {
    const queued = this.#queued
    this.#queued = []
    for (const [hooks, event] of queued) {
      for (const hook of hooks) this.#one(hook, event)
    }
  }

  /** A hook that answers at once costs no promise; one that returns a promise is kept until it settles. */
  #one (hook: CommitHook, event: CommitEvent): void {
    try {
      const done = hook.commit(event)
      if (done instanceof Promise) this.#track(done.catch((err: unknown) => { this.#failed(hook, event, err) }))
    } catch (err) {
      this.#failed(hook, event, err)
    }
  }

  #track (done: Promise<void>): void {
    this.#pending.add(done)
    void done.finally(() => this.#pending.delete(done))
  }

  #failed (hook: CommitHook, event: CommitEvent, err: unknown): void {
    this.counters.failed(hook.name)
    const { code, message } = (err ?? {}) as { code?: unknown, message?: unknown }
    warnRepeated(event.log, `commit\n${hook.name}\n${String(code)}`, { step: hook.name, err }, { step: hook.name, error: message ?? String(err) }, 'commit failed')
  }

  get pending (): number {
    return this.#pending.size
  }

  /** Resolves when every commit in progress is done, or after ms: true when none was left behind. */
  async drain (ms: number): Promise<boolean> {
    if (this.#pending.size === 0) return true
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<false>(resolve => { timer = setTimeout(() => resolve(false), ms) })
    const all = (async () => {
      while (this.#pending.size > 0) await Promise.all([...this.#pending])
      return true
    })()
    const drained = await Promise.race([all, timeout])
    clearTimeout(timer)
    return drained
  }
}
