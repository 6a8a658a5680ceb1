import { execFileSync } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import t from 'tap'
import { configFile, runCli } from './helpers/cli.js'
import { closedPort, startDownstream } from './helpers/downstream.js'
import { freePort } from './helpers/redis.js'
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

t.test('trace of a rejected call exits 3, with the content from a file holding a whole frps body, whose op it takes', async t => {
  const file = configFile(config)
  const body = configFile({ version: '0.1.0', op: 'Login', content: { user: 'bob', client_address: '[2001:db8::1]:7000' } }, 'body.json')
  const [res, withOp] = await Promise.all([
    runCli(['trace', '--config', file, '--content', body]),
    runCli(['trace', '--config', file, '--op', 'Login', '--content', body])
  ])
  t.equal(res.code, 3, res.stderr)
  t.equal(timings(withOp.stdout), timings(res.stdout), 'the same --op changes nothing')
  t.equal(withOp.code, 3)
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
  t.equal(quirk.code, 0)
  t.equal(quirk.stdout, 'trace NewWorkConn (sent by frps as Ping)\n  (no step runs for this op)\noutcome: allow\nanswer: {"reject":false,"unchange":true}\n')
  const wrong = await runCli(['trace', '--config', file, '--op', 'Login'], { stdin: '{"user":5}' })
  t.match(wrong.stdout, /outcome: error \(invalid Login content: content\.user: /)
  t.equal(wrong.code, 4)
  const usage = await runCli(['trace', '--config', file, '--op', 'Logout'], { stdin: '{}' })
  t.equal(usage.code, 2)
  const notJson = await runCli(['trace', '--config', file, '--op', 'Login'], { stdin: '{' })
  t.equal(notJson.code, 1)
  t.match(notJson.stderr, /not valid JSON/)
  const deep = await runCli(['trace', '--config', file], { stdin: JSON.stringify({ op: 'Login', content: { x: JSON.parse('['.repeat(40) + ']'.repeat(40)) } }) })
  t.same({ code: deep.code, stderr: deep.stderr }, {
    code: 1,
    stderr: 'content (stdin): content.x nests objects and arrays deeper than 32 levels (the RPC route answers 400 FRPGW_ERR_TOO_DEEP)\n'
  }, 'content the RPC route refuses: said as the route says it, no stack')
})

t.test('a whole frps body whose op differs from --op is refused, as the RPC route refuses it', async t => {
  const file = configFile(config)
  const body = configFile({ version: '0.1.0', op: 'Login', content: { user: 'bob' } }, 'body.json')
  const [mismatch, stdin, none, unknown] = await Promise.all([
    runCli(['trace', '--config', file, '--op', 'NewProxy', '--content', body]),
    runCli(['trace', '--config', file, '--op', 'Ping'], { stdin: '{"version":"0.1.0","op":"Login","content":{"user":"bob"}}' }),
    runCli(['trace', '--config', file], { stdin: '{"user":"bob"}' }),
    runCli(['trace', '--config', file], { stdin: '{"op":"Logout","content":{}}' })
  ])
  t.equal(mismatch.code, 2)
  t.equal(mismatch.stdout, '')
  t.equal(mismatch.stderr.split('\n')[0], `--op NewProxy differs from the op of the body in ${body} (Login): the RPC route refuses such a call (FRPGW_ERR_OP_MISMATCH)`)
  t.match(mismatch.stderr, /\nusage: frp-plugin-gateway /)
  t.equal(stdin.code, 2)
  t.equal(stdin.stderr.split('\n')[0], '--op Ping differs from the op of the body in (stdin) (Login): the RPC route refuses such a call (FRPGW_ERR_OP_MISMATCH)')
  t.equal(none.code, 2, 'content alone needs --op')
  t.equal(none.stderr.split('\n')[0], 'trace needs --op OP, unless its content is a whole frps body {"version", "op", "content"}')
  t.equal(unknown.code, 1)
  t.equal(unknown.stderr, 'content (stdin): op "Logout" is not one of Login, NewProxy, CloseProxy, Ping, NewWorkConn, NewUserConn\n')
})

t.test('a step that failed shows its cause on its line; the exit code says the outcome (0 allow, 3 reject, 4 error)', async t => {
  const refused = `http://127.0.0.1:${await closedPort()}/hook`
  const broken = await startDownstream(t, (_req, res) => { res.statusCode = 503; res.end() })
  const forwardTo = (url: string, onError: string) => configFile({ chain: [{ name: 'fw', plugin: 'forward', ops: ['Login'], options: { url, onError } }] })
  const login = '{"user":"alice"}'
  const [closed, allowed, status] = await Promise.all([
    runCli(['trace', '--config', forwardTo(refused, 'reject'), '--op', 'Login'], { stdin: login }),
    runCli(['trace', '--config', forwardTo(refused, 'allow'), '--op', 'Login'], { stdin: login }),
    runCli(['trace', '--config', forwardTo(broken.url, 'reject'), '--op', 'Login'], { stdin: login })
  ])
  t.equal(closed.code, 4, closed.stderr)
  t.equal(timings(closed.stdout), [
    'trace Login',
    '  1. fw (forward): error in X ms: frp-plugin-gateway: step fw failed; cause: connect_error ECONNREFUSED: request failed',
    'outcome: error',
    'answer: {"reject":true,"reject_reason":"frp-plugin-gateway: step fw failed","unchange":true}',
    ''
  ].join('\n'))
  t.equal(allowed.code, 0, 'onError allow: the call is allowed')
  t.equal(timings(allowed.stdout), [
    'trace Login',
    '  1. fw (forward): error in X ms: cause: connect_error ECONNREFUSED: request failed',
    'outcome: allow',
    'answer: {"reject":false,"unchange":true}',
    ''
  ].join('\n'))
  t.equal(status.code, 4)
  t.equal(timings(status.stdout).split('\n')[1], '  1. fw (forward): error in X ms: frp-plugin-gateway: step fw failed; cause: http_status 503: downstream answered HTTP 503')
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

t.test('a shadow step slower than deadlineMs: trace answers as a run does, and prints its line in chain order once it comes', async t => {
  const slow = await startDownstream(t, (_req, res) => { setTimeout(() => res.end('{"reject":false,"unchange":true}'), 1000) })
  const file = configFile({
    deadlineMs: 300,
    chain: [
      { name: 'try-auth', plugin: 'forward', ops: ['Login'], mode: 'shadow', options: { url: slow.url, timeoutMs: 2000 } },
      { name: 'tag', plugin: 'metas', ops: ['Login'], options: { set: { region: 'eu' } } }
    ]
  })
  const res = await runCli(['trace', '--config', file, '--op', 'Login'], { stdin: '{"user":"alice"}' })
  t.equal(res.code, 0, res.stderr)
  const lines = timings(res.stdout).split('\n')
  t.match(lines[1], /^ {2}1\. try-auth \(forward\): error in X ms/, 'the shadow step, first, failed at the deadline')
  t.same(lines.slice(2), [
    '  2. tag (metas): modify in X ms',
    '       + metas = {"region":"eu"}',
    'outcome: modify',
    'answer: {"reject":false,"unchange":false,"content":{"user":"alice","metas":{"region":"eu"}}}',
    ''
  ], 'the answer a run gives')
})

t.test('content that begins with a byte order mark (a Windows editor saved it) is read, as the config is', async t => {
  const file = configFile(config)
  const body = configFile(`\uFEFF${JSON.stringify({ version: '0.1.0', op: 'Login', content: { user: 'bob', client_address: '10.0.0.1:7000' } })}`, 'body.json')
  const [fromFile, fromStdin] = await Promise.all([
    runCli(['trace', '--config', file, '--content', body]),
    runCli(['trace', '--config', file, '--op', 'Login'], { stdin: '\uFEFF{"user":"bob","client_address":"10.0.0.1:7000"}' })
  ])
  t.equal(fromFile.code, 0, fromFile.stderr)
  t.equal(fromStdin.code, 0, fromStdin.stderr)
  t.match(fromFile.stdout, /^trace Login\n/)
})

t.test('content read whole and as UTF-8: a character across two chunks of stdin stays one; a device is refused, not read', async t => {
  const file = configFile({ chain: [{ name: 'tag', plugin: 'metas', ops: ['Login'], options: { set: { region: 'eu' } } }] })
  const long = 'é'.repeat(50_000)
  const res = await runCli(['trace', '--config', file, '--op', 'Login'], { stdin: JSON.stringify({ user: 'a', metas: { x: long } }) })
  t.equal(res.code, 0, res.stderr)
  t.ok(res.stdout.includes(long), 'the 100 KB value comes out as it went in')
  t.notOk(res.stdout.includes('\uFFFD'), 'no character was split')
  // a FIFO, as a shell's <(...) or /dev/stdin of a pipeline gives: the command's own input, waited for
  const fifo = join(dirname(file), 'content.fifo')
  execFileSync('mkfifo', [fifo])
  const [piped] = await Promise.all([runCli(['trace', '--config', file, '--op', 'Login', '--content', fifo]), writeFile(fifo, '{"user":"a"}')])
  t.equal(piped.code, 0, `a FIFO given as --content is read (${piped.stderr})`)
  t.match(piped.stdout, /^trace Login\n/)
  const zero = await runCli(['trace', '--config', file, '--op', 'Login', '--content', '/dev/zero'])
  t.equal(zero.code, 1)
  t.equal(zero.stderr.trim(), 'cannot read --content /dev/zero: is a device, not a regular file')
})

t.test('with its Redis away, trace shows what a call meets at once, and ends with its output', async t => {
  const chain = [{ name: 'rl', plugin: 'rate-limit', options: { limit: 5, window: '1m' } }]
  const timed = async (config: unknown): Promise<Awaited<ReturnType<typeof runCli>> & { ms: number }> => {
    const started = performance.now()
    const res = await runCli(['trace', '--config', configFile(config), '--op', 'Login'], { stdin: '{"user":"a"}' })
    return { ...res, ms: performance.now() - started }
  }
  const memory = await timed({ chain })
  const res = await timed({ redis: { url: `redis://127.0.0.1:${await freePort()}` }, chain })
  t.equal(memory.code, 0, memory.stderr)
  t.equal(res.code, 0, res.stderr)
  // a connection refused is what the call meets: trace does not wait the 2 s a serving gateway gives Redis to come up
  t.ok(res.ms < memory.ms + 1200, `no wait for a Redis that refuses (${Math.round(res.ms)} ms, ${Math.round(memory.ms)} ms without Redis)`)
  t.match(res.stdout, /rl \(rate-limit\): error in .* ECONNREFUSED/)
  // an exit on a loaded machine takes up to about a second; the socket waited on was 2 s more
  t.ok(res.lingerMs < 1500, `exit ${res.lingerMs} ms after the output`)
})
