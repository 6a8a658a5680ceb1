import { compileOnly, loadConfig, readTls, type Config } from '../config.js'
import { ConfigError } from '../errors.js'
import { createRuntime, describeChains } from '../runtime.js'

export async function check (file: string): Promise<number> {
  const config = await loadConfig(file, { tls: true })
  // as run reads them, so check passes only what run starts with
  if (config.listen.tls !== undefined) readTls(file, config.listen.tls)
  const runtime = await createRuntime(config, compileOnly(file), file)
  try {
    process.stdout.write(`${file}: OK\n${describeChains(runtime)}\n`)
  } finally {
    await runtime.close()
  }
  const notes = await disabledProblems(file, config)
  if (notes.length > 0) process.stderr.write(`${notes.join('\n')}\n`)
  return 0
}

/**
 * What a step with enabled: false would fail on once turned on (its options and when are compiled only
 * then): said as notes, the file is valid as it is. Every such step is compiled turned on, the rest as they are.
 */
async function disabledProblems (file: string, config: Config): Promise<string[]> {
  const off = new Set(config.chain.flatMap((step, i) => step.enabled ? [] : [`chain[${i}]`]))
  if (off.size === 0) return []
  try {
    const runtime = await createRuntime({ ...config, chain: config.chain.map(step => ({ ...step, enabled: true })) }, compileOnly(file), file)
    await runtime.close()
    return []
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    return err.issues.filter(i => off.has(/^chain\[\d+\]/.exec(i.path)?.[0] ?? '')).map(i => `note: ${i.path} (a step with enabled: false, which run leaves out): ${i.message}`)
  }
}
