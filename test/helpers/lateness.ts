/**
 * Starts measuring how late this process's timers run; the function it answers stops and answers the worst lateness
 * (ms). A bound on how soon the gateway acts (a deadline, a commit) is met that late too when the machine is too loaded
 * to run the process when a timer is due. A block that began at the start or lasts to the end counts as well.
 */
export function timerLateness (): () => number {
  const everyMs = 10
  let last = performance.now()
  let worst = 0
  const tick = (): void => {
    const now = performance.now()
    worst = Math.max(worst, now - last - everyMs)
    last = now
  }
  const timer = setInterval(tick, everyMs)
  return () => {
    clearInterval(timer)
    tick()
    return worst
  }
}
