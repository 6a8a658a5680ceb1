import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { MAIN, ROOT, runCli } from './helpers/cli.js'

// The command line's own surface: usage errors, help, --version, and a config file that is not there.

const USAGE = [
  'usage: frp-plugin-gateway [run] [--config FILE] [--watch]',
  '       frp-plugin-gateway check [--config FILE]',
  '       frp-plugin-gateway trace [--config FILE] [--op OP] [--content FILE]',
  '       frp-plugin-gateway schema',
  '       frp-plugin-gateway users SUBCOMMAND [ARGS] [--config FILE]',
  '       frp-plugin-gateway help [COMMAND] | --help | --version',
  'see frp-plugin-gateway --help',
  ''
].join('\n')

t.test('every usage error is one line naming the problem, then the usage; exit 2', async t => {
  const cases: Array<[string[], string]> = [
    [['frobnicate'], 'unknown command: frobnicate'],
    [['check', '--nope'], 'unknown option --nope'],
    [['-x'], 'unknown option -x'],
    [['check', 'extra'], 'unexpected argument: extra'],
    [['check', '--config'], '--config needs a value'],
    [['-c'], '--config needs a value'],
    [['run', '--watch=yes'], '--watch takes no value'],
    [['check', '--watch'], '--watch does not apply to check'],
    [['run', '--op', 'Login'], '--op does not apply to run'],
    [['schema', '--config', 'x.json'], '--config does not apply to schema'],
    [['help', 'nope'], 'unknown command: nope'],
    [['help', 'trace', 'more'], 'unexpected argument: more']
  ]
  // in parallel: each start costs seconds on a loaded machine
  const results = await Promise.all(cases.map(async ([args]) => await runCli(args)))
  for (const [i, [args, line]] of cases.entries()) {
    const res = results[i]
    t.equal(res.code, 2, args.join(' '))
    t.equal(res.stdout, '', args.join(' '))
    t.equal(res.stderr, `${line}\n${USAGE}`, args.join(' '))
  }
})

t.test('--version prints the package version', async t => {
  const { version } = JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8'))
  for (const args of [['--version'], ['check', '--version']]) {
    const res = await runCli(args)
    t.equal(res.code, 0, args.join(' '))
    t.equal(res.stdout, `frp-plugin-gateway ${version}\n`)
    t.equal(res.stderr, '')
  }
})

t.test('help, --help and -h: the whole help, or one command\'s', async t => {
  const all = [['help'], ['--help'], ['-h'], ['help', 'trace'], ['trace', '--help'], ['trace', '-h', '--op', 'Login'], ['help', '--help'], ...['run', 'check', 'schema'].map(c => [c, '--help'])]
  const [whole, ...others] = await Promise.all(all.map(async args => await runCli(args)))
  t.equal(whole.code, 0)
  t.equal(whole.stderr, '')
  t.ok(whole.stdout.startsWith(USAGE.split('\nsee')[0]), 'the usage first')
  for (const line of [
    '  trace   run one call through the chain, as frps would, and show each step',
    '  -c, --config FILE   the config file (default: $FRP_GATEWAY_CONFIG, then config/gateway.json)',
    '      --version       print the version',
    'exit codes: 0 ok, 1 bad config or failed start, 2 bad usage; trace: 0 allow or modify, 3 reject, 4 error'
  ]) t.ok(whole.stdout.split('\n').includes(line), line)
  for (const i of [0, 1, 5]) t.equal(others[i].stdout, whole.stdout, all[i + 1].join(' '))

  const trace = [
    'usage: frp-plugin-gateway trace [--config FILE] [--op OP] [--content FILE]',
    '',
    'run one call through the chain, as frps would, and show each step',
    '',
    'options:',
    '  -c, --config FILE   the config file (default: $FRP_GATEWAY_CONFIG, then config/gateway.json)',
    '      --op OP         Login, NewProxy, CloseProxy, Ping, NewWorkConn, NewUserConn (default: the op of a whole frps body)',
    '      --content FILE  the content, or a whole frps body {"version", "op", "content"} (default: stdin)',
    '',
    'exit codes: 0 allow or modify, 3 reject, 4 error, 1 bad config or content, 2 bad usage',
    ''
  ].join('\n')
  others.slice(2, 5).forEach((res, i) => {
    t.equal(res.code, 0, all[i + 3].join(' '))
    t.equal(res.stdout, trace, all[i + 3].join(' '))
  })
  others.slice(6).forEach((res, i) => {
    const command = all[i + 7][0]
    t.equal(res.code, 0, command)
    t.match(res.stdout, new RegExp(`^usage: frp-plugin-gateway \\[?${command}`), command)
    t.match(res.stdout, /\nexit codes: 0 /, command)
  })
})

t.test('a config file that does not exist: which one, where the name came from, how to give one', async t => {
  const example = `${ROOT}config/gateway.example.json`
  const hint = `Give one with --config FILE or $FRP_GATEWAY_CONFIG; ${example} is an example to start from. See frp-plugin-gateway --help.\n`
  // a folder without config/gateway.json, and no $FRP_GATEWAY_CONFIG
  const cwd = mkdtempSync(join(tmpdir(), 'frpgw-'))
  const defaults = [[], ['check'], ['trace', '--op', 'Login']]
  const [given, env, ...results] = await Promise.all([
    runCli(['--config', '/nonexistent.json'], { cwd }),
    runCli([], { cwd, env: { FRP_GATEWAY_CONFIG: '/nonexistent.json' } }),
    ...defaults.map(async args => await runCli(args, { cwd, env: { FRP_GATEWAY_CONFIG: '' } }))
  ])
  results.forEach((res, i) => {
    t.equal(res.code, 1, defaults[i].join(' '))
    t.equal(res.stdout, '')
    t.equal(res.stderr, `config file config/gateway.json does not exist (the default, as neither --config nor $FRP_GATEWAY_CONFIG is set)\n${hint}`, defaults[i].join(' '))
  })
  t.equal(given.code, 1)
  t.equal(given.stderr, `config file /nonexistent.json does not exist (given with --config)\n${hint}`)
  t.equal(env.code, 1)
  t.equal(env.stderr, `config file /nonexistent.json does not exist (from $FRP_GATEWAY_CONFIG)\n${hint}`)
  // from the clone's root, the example is named as the newcomer would type it
  const root = await runCli(['--config', '/nonexistent.json'])
  t.equal(root.stderr.split('\n')[1], 'Give one with --config FILE or $FRP_GATEWAY_CONFIG; config/gateway.example.json is an example to start from. See frp-plugin-gateway --help.')
})

t.test('the bin of package.json runs as is, as npx runs it from a clone', async t => {
  const pkg = JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8'))
  t.equal(join(ROOT, pkg.bin['frp-plugin-gateway']), MAIN)
  // spawned as a program, not through node: its mode and its #! line must do
  const child = spawn(MAIN, ['--version'], { env: { PATH: process.env.PATH } })
  let stdout = ''
  child.stdout.on('data', d => { stdout += String(d) })
  const code = await new Promise(resolve => { child.on('close', resolve); child.on('error', resolve) })
  t.equal(code, 0, 'it starts and exits 0')
  t.equal(stdout, `frp-plugin-gateway ${pkg.version}\n`)
})
