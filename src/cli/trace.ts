import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { dirname } from 'node:path'
import { readBounded } from '../bounds.js'
import { loadConfig } from '../config.js'
import { GatewayError } from '../errors.js'
import { describeJsonError } from '../json-error.js'
import { MAX_FILE_BYTES, readTextFile } from '../json-file.js'
import { createLogger } from '../log.js'
import { createMetrics, type Outcome } from '../metrics.js'
import { isObject, isOp, OPS, parseCall, type Op } from '../protocol.js'
import { createRuntime } from '../runtime.js'
import { formatTrace, traceCall } from '../trace.js'
import { StartError, UsageError } from './usage.js'

async function readStdin (): Promise<string> {
  if (process.stdin.isTTY) process.stderr.write('reading the content from stdin (end it with Ctrl-D), or give --content FILE\n')
  // decoded whole: a character split between two chunks would become two U+FFFD
  return await readBounded(process.stdin as AsyncIterable<Buffer>, MAX_FILE_BYTES)
}

/** --content FILE: a regular file, or a FIFO (a shell's `<(...)`), the command's own input, read to its end as asked. */
async function readContent (file: string): Promise<string> {
  if ((await stat(file)).isFIFO()) return await readBounded(createReadStream(file), MAX_FILE_BYTES)
  return await readTextFile(file)
}

// trace's exit code says the outcome (1 and 2 keep their meaning: bad config or content, bad usage)
const TRACE_EXIT: Record<Outcome, number> = { allow: 0, modify: 0, reject: 3, error: 4 }

export async function trace (file: string, opName: string | undefined, contentFile: string | undefined): Promise<number> {
  if (opName !== undefined && !isOp(opName)) throw new UsageError(`--op ${opName}: expected one of ${OPS.join(', ')}`)
  const config = await loadConfig(file)
  const log = createLogger({ level: 'silent', redact: [] })
  const source = contentFile ?? '(stdin)'
  let text
  try {
    text = contentFile !== undefined ? await readContent(contentFile) : await readStdin()
  } catch (err) {
    throw new StartError(`cannot read --content ${source}: ${(err as Error).message}`)
  }
  // as for the config: a file an editor on Windows saved begins with a byte order mark
  if (text.startsWith('\uFEFF')) text = text.slice(1)
  let content: unknown
  try {
    content = parseCall(text)
  } catch {
    throw new StartError(`content ${source} is not valid JSON: ${describeJsonError(text, { lines: true })}`)
  }
  let op: Op | undefined = opName
  // a whole frps body is accepted too: {"version", "op", "content"}, and its op is the call's, as on the RPC route
  if (isObject(content) && typeof content.op === 'string' && typeof content.content === 'object') {
    if (!isOp(content.op)) throw new StartError(`content ${source}: op ${JSON.stringify(content.op)} is not one of ${OPS.join(', ')}`)
    if (op !== undefined && op !== content.op) throw new UsageError(`--op ${op} differs from the op of the body in ${source} (${content.op}): the RPC route refuses such a call (FRPGW_ERR_OP_MISMATCH)`)
    op = content.op
    content = content.content
  }
  if (op === undefined) throw new UsageError('trace needs --op OP, unless its content is a whole frps body {"version", "op", "content"}')
  if (!isObject(content)) throw new StartError(`content ${source} must be a JSON object`)
  const runtime = await createRuntime(config, { metrics: createMetrics(), log, baseDir: dirname(file), open: 'first-try' }, file)
  try {
    let result
    try {
      result = await traceCall(runtime, op, content, log)
    } catch (err) {
      // content the RPC route refuses before any step (nested too deep): said as the route says it
      if (!(err instanceof GatewayError)) throw err
      throw new StartError(`content ${source}: ${err.message} (the RPC route answers ${err.statusCode} ${err.code})`)
    }
    process.stdout.write(formatTrace(result, new Map(config.chain.map(s => [s.name, s.plugin]))))
    return TRACE_EXIT[result.result.outcome]
  } finally {
    await runtime.close()
  }
}
