import t from 'tap'
import { configFile, runCli } from './helpers/cli.js'
import { diffContent } from '../src/trace.js'

const config = {
  chain: [
    { name: 'deny-root', plugin: 'reject', ops: ['Login'], when: { users: ['root'] } },
    { name: 'office', plugin: 'reject', ops: ['Login'], when: { not: { clientCidrs: ['10.0.0.0/8'] } }, options: { reason: 'not from {{client_ip}}' } },
    { name: 'tag', plugin: 'metas', ops: ['Login'], options: { set: { region: 'eu', team: 'blue' }, remove: ['debug'] } },
    { name: 'watch', plugin: 'reject', ops: ['Login'], mode: 'shadow', options: { reason: 'would reject' } }
  ]
}

const timings = (out: string) => out.replace(/in \d+\.\d{3} ms/g, 'in X ms')

t.test('trace prints each step: skipped with the failing condition, decision, time, diff; then the answer', async t => {
  const file = configFile(config)
  const content = JSON.stringify({ user: 'alice', client_address: '10.1.2.3:5000', metas: { team: 'blue', debug: '1' } })
  const res = await runCli(['trace', '--config', file, '--op', 'Login'], { stdin: content })
  t.equal(res.code, 0, res.stderr)
  t.match(res.stdout, /in \d+\.\d{3} ms/)
  t.equal(timings(res.stdout), [
    'trace Login',
    '  1. deny-root (reject): skipped, when.users does not hold',
    '  2. office (reject): skipped, when.not does not hold',
    '  3. tag (metas): modify in X ms',
    '       - metas.debug (was "1")',
    '       + metas.region = "eu"',
    '  4. watch (reject): shadow_reject in X ms: would reject',
    'outcome: modify',
    'answer: {"reject":false,"unchange":false,"content":{"user":"alice","client_address":"10.1.2.3:5000","metas":{"team":"blue","region":"eu"}}}',
    ''
  ].join('\n'))
})

t.test('trace of a rejected call, with the content from a file holding a whole frps body', async t => {
  const file = configFile(config)
  const body = configFile({ version: '0.1.0', op: 'Login', content: { user: 'bob', client_address: '[2001:db8::1]:7000' } }, 'body.json')
  const res = await runCli(['trace', '--config', file, '--op', 'Login', '--content', body])
  t.equal(res.code, 0, res.stderr)
  t.equal(timings(res.stdout), [
    'trace Login',
    '  1. deny-root (reject): skipped, when.users does not hold',
    '  2. office (reject): reject in X ms: not from 2001:db8::1',
    'outcome: reject',
    'answer: {"reject":true,"reject_reason":"not from 2001:db8::1","unchange":true}',
    ''
  ].join('\n'))
})

t.test('trace names a mislabelled NewWorkConn and content of the wrong type', async t => {
  const file = configFile(config)
  const quirk = await runCli(['trace', '--config', file, '--op', 'Ping'], { stdin: '{"run_id":"abc","user":{"user":"a"}}' })
  t.equal(quirk.stdout, 'trace NewWorkConn (sent by frps as Ping)\n  (no step runs for this op)\noutcome: allow\nanswer: {"reject":false,"unchange":true}\n')
  const wrong = await runCli(['trace', '--config', file, '--op', 'Login'], { stdin: '{"user":5}' })
  t.match(wrong.stdout, /outcome: error \(invalid Login content: content\.user: /)
  const usage = await runCli(['trace', '--config', file, '--op', 'Logout'], { stdin: '{}' })
  t.equal(usage.code, 2)
  const notJson = await runCli(['trace', '--config', file, '--op', 'Login'], { stdin: '{' })
  t.equal(notJson.code, 1)
  t.match(notJson.stderr, /not valid JSON/)
})

t.test('diffContent: added, removed, changed, nested, arrays', async t => {
  t.same(diffContent({ a: 1, b: { c: [1, 2] }, d: 'x' }, { a: 1, b: { c: [1, 3], e: null }, f: true }), [
    '~ b.c: [1,2] -> [1,3]',
    '+ b.e = null',
    '- d (was "x")',
    '+ f = true'
  ])
  t.same(diffContent({ a: 1 }, { a: 1 }), [])
})
