import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { join } from 'node:path'
import t from 'tap'
import { ROOT } from '../helpers/cli.js'

// npm run bench and npm run soak: a mistyped option is its name and the usage, exit 2, no stack trace,
// before any server starts.
const script = (name: string): string => join(ROOT, 'dist', 'bench', `${name}.js`)

t.test('a bad option of the bench or the soak is a usage error', async t => {
  const cases: Array<[string, string[], string]> = [
    ['run', ['--help'], "Unknown option '--help'"],
    ['run', ['--rounds', 'x'], 'an option is out of range'],
    ['run', ['--duration', '0'], 'an option is out of range'],
    ['run', ['--connections', '1.5'], 'an option is out of range'],
    ['soak', ['--duration', '3'], 'an option is out of range'],
    ['soak', ['--seed', 'abc'], 'an option is out of range'],
    ['soak', ['--bogus'], "Unknown option '--bogus'"],
    // taken before: the soak ran one connection while printing 1.5; an endless soak drew fault windows until it ran out of
    // memory, leaving its gateway and Redis running; an endless bench never ended
    ['soak', ['--connections', '1.5'], 'an option is out of range'],
    ['soak', ['--duration', 'Infinity'], 'an option is out of range'],
    ['run', ['--duration', 'Infinity'], 'an option is out of range'],
    // before: the baseline alone, measured and printed, exit 0
    ['run', ['--only', 'typical', '--only', 'quoat'], "--only quoat: no scenario's name contains it"],
    // before: a stack trace once the table was printed, minutes later
    ['run', ['--out', '/nonexistent/results.json'], '--out /nonexistent/results.json: cannot be written (ENOENT)'],
    ['run', ['--out', tmpdir()], `--out ${tmpdir()}: cannot be written (a folder)`]
  ]
  for (const [name, args, why] of cases) {
    const res = spawnSync(process.execPath, [script(name), ...args], { encoding: 'utf8', timeout: 20_000 })
    const lines = res.stderr.split('\n')
    t.equal(res.status, 2, `${name} ${args.join(' ')}: exit 2`)
    t.ok(lines[0].startsWith(why), `${name} ${args.join(' ')}: ${lines[0]}`)
    t.match(lines[1], new RegExp(`^usage: ${name}\\.js `), 'then the usage')
    t.notMatch(res.stderr, /\n\s+at /, 'no stack trace')
  }
})

t.test('the bench and the soak without redis-server on the PATH: one line saying so, exit 1', async t => {
  for (const [name, command] of [['run', 'npm run bench'], ['soak', 'npm run soak']]) {
    // the PATH holds no redis-server (node is named by its full path)
    const res = spawnSync(process.execPath, [script(name), '--duration', '10'], { encoding: 'utf8', timeout: 20_000, env: { ...process.env, PATH: mkdtempSync(join(tmpdir(), 'frpgw-nopath-')) } })
    t.equal(res.status, 1, `${command}: exit 1`)
    t.equal(res.stderr, `${command} needs redis-server and redis-cli on the PATH (Debian: apt-get install redis-server)\n`)
  }
})

t.test('npm run e2e with a FRP_BIN_DIR whose frps is no frps is a usage error', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'frpgw-e2e-args-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  for (const [frps, why] of [['', /EACCES/], ['#!/bin/sh\necho hello\n', /-v printed "hello", not a version/]] as const) {
    writeFileSync(join(dir, 'frps'), frps)
    chmodSync(join(dir, 'frps'), frps === '' ? 0o644 : 0o755)
    writeFileSync(join(dir, 'frpc'), '')
    const res = spawnSync(process.execPath, [join(ROOT, 'dist', 'e2e', 'run.js')], { encoding: 'utf8', timeout: 20_000, env: { ...process.env, FRP_BIN_DIR: dir } })
    const lines = res.stderr.split('\n')
    t.equal(res.status, 2, `${why.source}: exit 2`)
    t.match(lines[0], why)
    t.match(lines[1], /^usage: FRP_BIN_DIR=DIR npm run e2e /, 'then the usage')
    t.notMatch(res.stderr, /\n\s+at /, 'no stack trace')
  }
})

const childrenOf = (pid: number): number[] =>
  spawnSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).map(Number)
const gateway = (pid: number): boolean => spawnSync('ps', ['-o', 'args=', '-p', String(pid)], { encoding: 'utf8' }).stdout.includes(join('dist', 'src', 'main.js'))
const alive = (pid: number): boolean => spawnSync('ps', ['-o', 'stat=', '-p', String(pid)], { encoding: 'utf8' }).stdout.trim().replace(/^Z.*/, '') !== ''

t.test('a bench or a soak stopped by a signal leaves none of its servers running', async t => {
  for (const [name, args] of [['run', ['--only', 'typical', '--rounds', '50']], ['soak', ['--duration', '600']]] as const) {
    const script = spawn(process.execPath, [join(ROOT, 'dist', 'bench', `${name}.js`), ...args], { stdio: 'ignore' })
    const pid = script.pid as number
    // its gateway is the last server it starts
    let started: number[] = []
    for (let i = 0; i < 300 && !started.some(gateway); i++) {
      await sleep(100)
      started = childrenOf(pid)
    }
    t.ok(started.some(gateway) && started.length >= 2, `${name}: its servers started (${started.length})`)
    const exited = once(script, 'exit')
    script.kill('SIGTERM')
    t.equal((await exited)[0], 143, `${name}: exits 143 (SIGTERM)`)
    for (let i = 0; i < 50 && started.some(alive); i++) await sleep(100)
    t.same(started.filter(alive), [], `${name}: no server it started is left`)
  }
})
