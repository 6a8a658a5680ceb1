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
