import { z } from 'zod'

/**
 * frpc waits 10 s for the answer to its Login (frp client/service.go: SetReadDeadline 10 s before
 * reading LoginResp), and then gives up: no call needs a longer deadline.
 */
export const MAX_DEADLINE_MS = 10_000

/** An integer config value; every error names the range the code accepts. */
export function intIn (min: number, max: number): z.ZodNumber {
  const error = `expected an integer from ${min} to ${max}`
  return z.number({ error }).int({ error }).min(min, { error }).max(max, { error })
}
