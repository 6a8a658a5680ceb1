import { dirname } from 'node:path'
import { loadConfig } from '../config.js'
import { createLogger } from '../log.js'
import { createMetrics } from '../metrics.js'
import { createRuntime, describeChains } from '../runtime.js'

export async function check (file: string): Promise<number> {
  const config = await loadConfig(file)
  const runtime = await createRuntime(config, { metrics: createMetrics(), log: createLogger({ level: 'silent', redact: [] }), open: false, baseDir: dirname(file) }, file)
  try {
    process.stdout.write(`${file}: OK\n${describeChains(runtime)}\n`)
  } finally {
    await runtime.close()
  }
  return 0
}
