import type { Logger } from 'pino'
import type { ChainResult, TraceEntry } from './chain.js'
import { redactContent } from './log.js'
import { answerFor, isObject, own, type Content, type Op } from './protocol.js'
import type { Runtime } from './runtime.js'

export interface Trace { op: Op, wireOp: Op, entries: TraceEntry[], result: ChainResult, answer: string, commits: string[] }

/** Runs one call through the chain exactly as the RPC route does, recording every step. */
export async function traceCall (runtime: Runtime, wireOp: Op, content: Content, log: Logger): Promise<Trace> {
  const entries: TraceEntry[] = []
  const { op, result, ctx } = runtime.call(wireOp, content, performance.now(), 'trace', log, e => entries.push(e))
  const settled = await result
  // a shadow step that went asynchronous ran beside the chain: its line comes when it answers (until a second past the deadline)
  await settled.settling
  return { op, wireOp, entries, result: settled, answer: answerFor(op, settled), commits: runtime.describeCommit(op, content, settled, ctx) }
}

const show = (value: unknown): string => value === undefined ? '(absent)' : JSON.stringify(value)

/** A readable diff of two contents: one line per changed leaf, by dotted path. */
export function diffContent (before: unknown, after: unknown, path = ''): string[] {
  if (before === after) return []
  if (isObject(before) && isObject(after)) {
    const keys = [...Object.keys(before), ...Object.keys(after).filter(k => !Object.hasOwn(before, k))]
    return keys.flatMap(k => diffContent(own(before, k), own(after, k), path === '' ? k : `${path}.${k}`))
  }
  if (JSON.stringify(before) === JSON.stringify(after)) return []
  if (before === undefined) return [`+ ${path} = ${show(after)}`]
  if (after === undefined) return [`- ${path} (was ${show(before)})`]
  return [`~ ${path}: ${show(before)} -> ${show(after)}`]
}

/** Why a step failed, as the server's warn line has it: the error's kind and code, then its message. */
function cause (error: unknown): string {
  if (!(error instanceof Error)) return String(error)
  const { result, code, status } = error as { result?: unknown, code?: unknown, status?: unknown }
  const tags = [result, code ?? status].filter(v => typeof v === 'string' || typeof v === 'number')
  return `${tags.length > 0 ? `${tags.join(' ')}: ` : ''}${error.message}`
}

type RegistryRead = Extract<TraceEntry, { read: unknown }>

/** The registry's record of the call's proxy, as the chain read it. */
function readLine ({ read, record, seconds, error }: RegistryRead): string {
  const which = `${read.name} of ${read.user === '' ? '(no user)' : read.user}`
  const ms = (seconds * 1000).toFixed(3)
  if (record === 'error') return `registry: ${which} not read in ${ms} ms: cause: ${cause(error)}`
  if (record === null) return `registry: ${which}: no record (read in ${ms} ms): its proxy metas are empty`
  const port = record.remote_port !== undefined ? `, remote port ${record.remote_port}` : ''
  return `registry: ${which}: ${record.type}${port}, run_id ${record.run_id}, metas ${JSON.stringify(redactContent(record.metas ?? {}))}, ` +
    `registered ${new Date(record.registered_at).toISOString()} (read in ${ms} ms)`
}

/** plugins: each step's plugin, in chain order */
export function formatTrace (trace: Trace, plugins: ReadonlyMap<string, string>): string {
  const lines = [trace.op === trace.wireOp ? `trace ${trace.op}` : `trace ${trace.op} (sent by frps as ${trace.wireOp})`]
  if (trace.entries.length === 0 && trace.result.outcome !== 'error') lines.push('  (no step runs for this op)')
  // in chain order (plugins lists the steps so): a shadow step that ran beside the chain answered later
  const order = [...plugins.keys()]
  const steps = trace.entries.filter((e): e is Exclude<TraceEntry, RegistryRead> => !('read' in e))
    .sort((a, b) => order.indexOf(a.step) - order.indexOf(b.step))
  for (const e of trace.entries) if ('read' in e) lines.push(`  ${readLine(e)}`)
  steps.forEach((e, i) => {
    const head = `  ${i + 1}. ${e.step} (${plugins.get(e.step) ?? '?'})`
    if ('skipped' in e) {
      lines.push(`${head}: skipped, when.${e.skipped} does not hold`)
      return
    }
    const ms = (e.seconds * 1000).toFixed(3)
    const detail = [e.reason, e.error !== undefined ? `cause: ${cause(e.error)}` : undefined].filter(d => d !== undefined)
    const rule = e.rule !== undefined ? ` (rule ${e.rule})` : ''
    lines.push(`${head}: ${e.decision} in ${ms} ms${detail.length > 0 ? `: ${detail.join('; ')}` : ''}${rule}`)
    for (const change of diffContent(e.before, e.after)) lines.push(`       ${change}`)
  })
  lines.push(`outcome: ${trace.result.outcome}${trace.result.reason !== undefined && steps.length === 0 ? ` (${trace.result.reason})` : ''}`)
  lines.push(`answer: ${trace.answer}`)
  for (const commit of trace.commits) lines.push(`commit: ${commit} (not done by trace)`)
  return `${lines.join('\n')}\n`
}
