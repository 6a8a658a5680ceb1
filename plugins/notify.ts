import { statSync } from 'node:fs'
import { dirname } from 'node:path'
import { z } from 'zod'
import { checkHeader, clientTls, connectTls, durationIn, FRAMING_HEADERS, intIn, oneFormOf, parseHttpUrl } from '../src/bounds.js'
import { definePlugin } from '../src/chain.js'
import type { CommitEvent } from '../src/commit.js'
import { compileAt, OptionError } from '../src/errors.js'
import { warnRepeated } from '../src/log.js'
import { OUTCOMES } from '../src/metrics.js'
import { OPS } from '../src/protocol.js'
import { FileSink, notAppendable } from '../src/sinks/file.js'
import { QUEUE_RESULTS, SinkQueue, type QueueResult } from '../src/sinks/queue.js'
import { RedisStreamSink } from '../src/sinks/redis-stream.js'
import type { Sink } from '../src/sinks/sink.js'
import { WebhookSink } from '../src/sinks/webhook.js'
import { boundedKey, compileTemplate, type Template, type TemplateContext } from '../src/template.js'

/** What an event may name besides the call's own template names. */
/** what an event of a step without throttle carries: shared, so such a step allocates nothing for it */
const UNTHROTTLED = Object.freeze({ key: '', held: 0 })
const EVENT_NAMES = ['time', 'outcome', 'reason', 'decided_by', 'held_back'] as const

const DEFAULT_EVENT = {
  time: '{{time}}',
  reqid: '{{reqid}}',
  op: '{{op}}',
  user: '{{user}}',
  run_id: '{{run_id}}',
  outcome: '{{outcome}}',
  decided_by: '{{decided_by}}',
  reason: '{{reason}}',
  proxy_name: '{{proxy_name}}',
  proxy_type: '{{proxy_type}}',
  client_ip: '{{client_ip}}',
  remote_ip: '{{remote_ip}}'
}

const webhook = z.strictObject({
  url: z.string().regex(/^https?:\/\//, 'expected an http:// or https:// URL'),
  headers: z.record(z.string(), z.string()).default({}).describe('request headers, e.g. an Authorization'),
  timeoutMs: intIn(1, 60_000).default(5000).describe('an attempt with no answer within this fails (ms)'),
  retries: intIn(0, 10).default(3).describe('further attempts after a connection error, a timeout, a 429 or a 5xx, from 200 ms, doubling'),
  tls: clientTls('webhook')
})
const sink = oneFormOf({
  webhook: z.strictObject({ webhook }),
  redisStream: z.strictObject({ redisStream: z.strictObject({ stream: z.string().min(1), maxLen: intIn(1, 100_000_000).default(100_000) }) }),
  file: z.strictObject({ file: z.strictObject({ path: z.string().min(1) }) })
}, 'expected exactly one of {"webhook": {...}}, {"redisStream": {...}}, {"file": {...}}')

// the sink posts JSON: a content-type of the config would be a second one
const WEBHOOK_RESERVED = new Set(['content-type', ...FRAMING_HEADERS])
const MAX_TEMPLATE_DEPTH = 8
const BACKOFF_MS = 200
const MAX_RETRY_AFTER_MS = 60_000
const MAX_HELD_KEYS = 100_000

type Rendered = string | number | boolean | null | Rendered[] | { [key: string]: Rendered }
type Render = (event: CommitEvent, values: TemplateContext['values']) => Rendered

/** The sink opens the file at its first event and creates no folder: a path that could never open would fail every event. */
function checkFilePath (path: string): void {
  const stats = statSync(path, { throwIfNoEntry: false })
  if (stats?.isDirectory() === true) throw new Error(`${path} is a folder: give a file in it`)
  const problem = stats === undefined ? undefined : notAppendable(stats)
  if (problem !== undefined) throw new Error(`${path} ${problem}: the sink appends to a regular file, a device or a FIFO`)
  if (statSync(dirname(path), { throwIfNoEntry: false })?.isDirectory() !== true) throw new Error(`${dirname(path)} is not a folder: the file's folder must exist`)
}

/** The template, a JSON value whose strings are templates, compiled once into one render function. */
function compileEvent (value: unknown, step: string, path: string, depth = 0): Render {
  if (depth > MAX_TEMPLATE_DEPTH) throw new OptionError(path, `nested more than ${MAX_TEMPLATE_DEPTH} levels`)
  if (typeof value === 'string') {
    const template: Template = compileAt(path, () => compileTemplate(value, { step, extra: EVENT_NAMES }))
    return (e, values) => template(e.content, { op: e.op, reqid: e.reqid, values, proxy: e.proxy })
  }
  if (Array.isArray(value)) {
    const items = value.map((v, i) => compileEvent(v, step, `${path}[${i}]`, depth + 1))
    return (e, values) => items.map(item => item(e, values))
  }
  if (value !== null && typeof value === 'object') {
    const fields = Object.entries(value).map(([k, v]) => [k, compileEvent(v, step, `${path}.${k}`, depth + 1)] as const)
    // only "__proto__" is not a plain key under assignment; defineProperty for every field cost 3% of a notify call
    if (fields.some(([k]) => k === '__proto__')) {
      return (e, values) => {
        const out: Record<string, Rendered> = {}
        for (const [k, render] of fields) Object.defineProperty(out, k, { value: render(e, values), enumerable: true, writable: true, configurable: true })
        return out
      }
    }
    return (e, values) => {
      const out: Record<string, Rendered> = {}
      for (const [k, render] of fields) out[k] = render(e, values)
      return out
    }
  }
  return () => value as Rendered
}

export default definePlugin({
  description: 'tells a webhook, a Redis Stream or a file of the calls it watches, once their answer is decided: an audit trail and alerts',
  ops: OPS,
  observer: true,
  options: z.strictObject({
    outcomes: z.array(z.enum(OUTCOMES)).min(1).default([...OUTCOMES]).describe('the final outcomes to report (default: all)'),
    sink,
    // not z.json: it rebuilds objects and drops a "__proto__" key without a word; the config is JSON already
    template: z.unknown().optional().describe('a JSON value whose strings are templates; default: an event object {time, reqid, op, user, run_id, outcome, decided_by, reason, proxy_name, proxy_type, client_ip, remote_ip}'),
    throttle: z.strictObject({
      limit: intIn(1, 1_000_000),
      window: durationIn(1000, 86_400_000, 'a window'),
      key: z.string().default('{{op}}:{{outcome}}').describe('template: what is counted apart')
    }).optional().describe('at most `limit` events per `window` per `key`; what was held back is told in the next one ({{held_back}})'),
    queue: intIn(1, 1_000_000).default(10_000).describe('events waiting at most; when full the oldest is dropped'),
    concurrency: intIn(1, 64).default(4).describe('sends in flight at once')
  }),
  create (options, deps) {
    const render = compileEvent(options.template ?? DEFAULT_EVENT, deps.name, 'template')
    const outcomes = new Set<string>(options.outcomes)
    const throttle = options.throttle
    const throttleKey = throttle === undefined ? undefined : compileAt('throttle.key', () => compileTemplate(throttle.key, { step: deps.name, extra: EVENT_NAMES, keyOf: deps.ops }))
    const target: Sink = compileAt('sink', () => {
      const s = options.sink
      if ('webhook' in s) {
        const url = compileAt('webhook.url', () => parseHttpUrl(s.webhook.url))
        const tls = compileAt('webhook', () => connectTls(url, s.webhook.tls, deps.resolvePath))
        const seen = new Map<string, string>()
        for (const [name, value] of Object.entries(s.webhook.headers)) {
          compileAt(`webhook.headers.${name}`, () => checkHeader(name, value, WEBHOOK_RESERVED, 'the gateway sets this header (content-type: application/json) or undici frames the request with it: it cannot be given', seen))
        }
        return new WebhookSink({ ...s.webhook, connections: options.concurrency, tls })
      }
      if ('redisStream' in s) return new RedisStreamSink(deps.redis(), s.redisStream.stream, s.redisStream.maxLen)
      const path = deps.resolvePath(s.file.path)
      compileAt('file.path', () => checkFilePath(path))
      return new FileSink(path)
    })
    const counters = Object.fromEntries([...QUEUE_RESULTS].map(r => [r, deps.metrics.notifyEvents.labels(deps.name, r)])) as unknown as Record<QueueResult, { inc: () => void }>
    const queue = new SinkQueue(target, {
      size: options.queue,
      concurrency: options.concurrency,
      retries: 'webhook' in options.sink ? options.sink.webhook.retries : 3,
      backoffMs: BACKOFF_MS,
      maxRetryAfterMs: MAX_RETRY_AFTER_MS,
      count: result => counters[result].inc(),
      onFailure: (err, reqid) => warnRepeated(deps.log, `${deps.name}\nnotify`, { reqid, err }, { error: err.message }, 'notify event given up')
    })
    // per key, a window from its first event: at most `limit` events in it (a token bucket let nearly twice that through)
    const windows = new Map<string, { ends: number, sent: number }>()
    const heldBack = new Map<string, number>()
    /** The key's window at `now`, a new one when the last has ended; the oldest key goes past MAX_HELD_KEYS. */
    const windowOf = (key: string, now: number, ms: number): { ends: number, sent: number } => {
      let w = windows.get(key)
      if (w !== undefined && w.ends > now) return w
      windows.delete(key)
      // windows are in the order they began, all as long: the ones that ended are first
      for (const [k, old] of windows) {
        if (old.ends > now) break
        windows.delete(k)
      }
      if (windows.size >= MAX_HELD_KEYS) windows.delete(windows.keys().next().value as string)
      windows.set(key, w = { ends: now + ms, sent: 0 })
      return w
    }

    const valuesOf = (e: CommitEvent, held: number) => ({
      time: new Date(e.time).toISOString(), outcome: e.outcome, reason: e.reason ?? '', decided_by: e.decidedBy ?? '', held_back: held
    })
    const holdBack = (key: string, n: number): void => {
      if (heldBack.size >= MAX_HELD_KEYS && !heldBack.has(key)) heldBack.delete(heldBack.keys().next().value as string)
      heldBack.set(key, (heldBack.get(key) ?? 0) + n)
    }
    /** The key and its count of events held back since its last event, or undefined when this one is held back too. */
    const admitted = (e: CommitEvent): { key: string, held: number } | undefined => {
      if (throttle === undefined || throttleKey === undefined) return UNTHROTTLED
      const key = boundedKey(throttleKey(e.content, { op: e.op, reqid: e.reqid, values: valuesOf(e, 0), proxy: e.proxy }))
      const w = windowOf(key, e.time, throttle.window)
      if (w.sent >= throttle.limit) {
        holdBack(key, 1)
        counters.throttled.inc()
        return undefined
      }
      w.sent++
      const held = heldBack.get(key) ?? 0
      heldBack.delete(key)
      return { key, held }
    }

    return Object.assign(function notify () { return undefined }, {
      commit: {
        when: true as const,
        commit (e: CommitEvent) {
          if (!outcomes.has(e.outcome)) return
          const admit = admitted(e)
          if (admit === undefined) return
          const { key, held } = admit
          // the count it carries goes to the key's next event if this one never goes out
          queue.push(JSON.stringify(render(e, valuesOf(e, held))), e.reqid, held > 0 ? () => { holdBack(key, held) } : undefined)
        },
        describe (e: CommitEvent) {
          if (!outcomes.has(e.outcome)) return `nothing: outcome ${e.outcome} is not in outcomes`
          return `would send to ${target.label}: ${JSON.stringify(render(e, valuesOf(e, 0)))}`
        }
      },
      async close (drainMs: number) {
        await queue.drain(drainMs)
        await target.close()
      },
      async reopen () {
        await target.reopen?.()
      }
    })
  }
})
