import { setTimeout as sleep } from 'node:timers/promises'
import pino from 'pino'
import t from 'tap'
import { Committer, type CommitEvent, type CommitHook } from '../src/commit.js'

const lines: Array<Record<string, unknown>> = []
const log = pino({ level: 'warn' }, { write: (line: string) => { lines.push(JSON.parse(line)) } })
const event = (outcome: CommitEvent['outcome']): CommitEvent => ({ call: {}, op: 'NewProxy', outcome, content: { proxy_name: 'a.p' }, reqid: 'r1', time: 0, log })
const hook = (name: string, commit: CommitHook['commit']): CommitHook => ({ name, commit, describe: () => undefined })

t.test('hooks run after the current tick, each told the event, and drain waits for them', async t => {
  const failed: string[] = []
  const committer = new Committer({ failed: step => failed.push(step) })
  const seen: string[] = []
  const e = event('modify')
  committer.run([
    hook('a', ev => { seen.push(`a:${ev.outcome}`) }),
    hook('b', async ev => { await sleep(50); seen.push(`b:${ev === e}`) })
  ], e)
  t.same(seen, [], 'nothing runs before the answer is out')
  t.equal(committer.pending, 1)
  t.equal(await committer.drain(2000), true)
  t.same(seen, ['a:modify', 'b:true'])
  t.equal(committer.pending, 0)
  t.same(failed, [])
})

t.test('a hook that throws or rejects is counted and logged, never thrown, and the others still run', async t => {
  const failed: string[] = []
  const committer = new Committer({ failed: step => failed.push(step) })
  const seen: string[] = []
  lines.length = 0
  committer.run([
    hook('throws', () => { throw new Error('boom') }),
    hook('rejects', async () => { throw Object.assign(new Error('redis down'), { code: 'ECONNREFUSED' }) }),
    hook('fine', () => { seen.push('fine') })
  ], event('allow'))
  t.equal(await committer.drain(2000), true)
  t.same(failed.sort(), ['rejects', 'throws'])
  t.same(seen, ['fine'])
  t.same(lines.map(l => [l.msg, l.step]).sort(), [['commit failed', 'rejects'], ['commit failed', 'throws']])
})

t.test('drain gives up after its bound and says so', async t => {
  const committer = new Committer({ failed: () => {} })
  committer.run([hook('hangs', async () => await new Promise(() => {}))], event('allow'))
  const started = performance.now()
  t.equal(await committer.drain(100), false)
  const ms = performance.now() - started
  t.ok(ms >= 95 && ms < 1000, `gave up after ${ms} ms`)
  t.equal(await new Committer({ failed: () => {} }).drain(100), true, 'nothing pending: at once')
})
