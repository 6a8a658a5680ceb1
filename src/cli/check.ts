import { dirname } from 'node:path'
import { loadConfig, readTls } from '../config.js'
import { createLogger } from '../log.js'
import { createMetrics } from '../metrics.js'
import { createRuntime, describeChains } from '../runtime.js'

export async function check (file: string): Promise<number> {
  const config = await loadConfig(file)
  // as run reads them, so check passes only what run starts with
  if (config.listen.tls !== undefined) readTls(file, config.listen.tls)
  const runtime = await createRuntime(config, { metrics: createMetrics(undefined, { defaults: false }), log: createLogger({ level: 'silent', redact: [] }), open: false, baseDir: dirname(file) }, file)
  try {
    process.stdout.write(`${file}: OK\n${describeChains(runtime)}\n`)
  } finally {
    await runtime.close()
  }
  return 0
}
