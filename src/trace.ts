import type { Logger } from 'pino'
import type { ChainResult, TraceEntry } from './chain.js'
import { answerFor, isObject, own, type Content, type Op } from './protocol.js'
import type { Runtime } from './runtime.js'

export interface Trace { op: Op, wireOp: Op, entries: TraceEntry[], result: ChainResult, answer: string }

/** Runs one call through the chain exactly as the RPC route does, recording every step. */
export async function traceCall (runtime: Runtime, wireOp: Op, content: Content, log: Logger): Promise<Trace> {
  const entries: TraceEntry[] = []
  const { op, result } = runtime.call(wireOp, content, performance.now(), 'trace', log, e => entries.push(e))
  const settled = await result
  return { op, wireOp, entries, result: settled, answer: answerFor(settled) }
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

export function formatTrace (trace: Trace, plugins: ReadonlyMap<string, string>): string {
  const lines = [trace.op === trace.wireOp ? `trace ${trace.op}` : `trace ${trace.op} (sent by frps as ${trace.wireOp})`]
  if (trace.entries.length === 0 && trace.result.outcome !== 'error') lines.push('  (no step runs for this op)')
  trace.entries.forEach((e, i) => {
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
  lines.push(`outcome: ${trace.result.outcome}${trace.result.reason !== undefined && trace.entries.length === 0 ? ` (${trace.result.reason})` : ''}`)
  lines.push(`answer: ${trace.answer}`)
  return `${lines.join('\n')}\n`
}
