import type { z } from 'zod'
import type { ConfigIssue } from './errors.js'
import { formatPath } from './protocol.js'

const issuePath = (path: readonly PropertyKey[]): string => formatPath(path) || '(top level)'

/**
 * A zod error as config problems, each with its JSON path (under `at`): every unknown key on its
 * own, and a record key that failed with its own schema's message. A problem is said once: checks
 * that share a message (an integer within bounds: 1e20 fails both) each report it.
 */
export const issuesOf = (error: z.ZodError, at: readonly PropertyKey[] = []): ConfigIssue[] => {
  const issues = error.issues.flatMap(issue => {
    const path = [...at, ...issue.path]
    if (issue.code === 'unrecognized_keys') return issue.keys.map(key => ({ path: issuePath([...path, key]), message: 'unknown key' }))
    if (issue.code === 'invalid_key') return [{ path: issuePath(path), message: issue.issues[0]?.message ?? issue.message }]
    // zod says "Invalid input: expected string, received undefined" of a key left out
    if (issue.code === 'invalid_type' && typeof path.at(-1) === 'string' && issue.message.endsWith(', received undefined')) {
      return [{ path: issuePath(path), message: `missing: expected ${issue.expected}` }]
    }
    return [{ path: issuePath(path), message: issue.message }]
  })
  const seen = new Set<string>()
  return issues.filter(i => !seen.has(`${i.path}\n${i.message}`) && seen.add(`${i.path}\n${i.message}`) !== undefined)
}
