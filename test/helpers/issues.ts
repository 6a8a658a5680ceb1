import { ConfigError, type ConfigIssue } from '../../src/errors.js'

/** The issues of the ConfigError that fn throws; any other outcome fails the test. */
export function issuesOf (fn: () => unknown): ConfigIssue[] {
  try {
    fn()
  } catch (err) {
    if (err instanceof ConfigError) return [...err.issues]
    throw err
  }
  throw new Error('expected a ConfigError')
}

/** The issues of the ConfigError that fn rejects with; any other outcome fails the test. */
export async function issuesOfAsync (fn: () => Promise<unknown>): Promise<ConfigIssue[]> {
  try {
    await fn()
  } catch (err) {
    if (err instanceof ConfigError) return [...err.issues]
    throw err
  }
  throw new Error('expected a ConfigError')
}
