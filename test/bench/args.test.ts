import { spawnSync } from 'node:child_process'
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
    ['soak', ['--bogus'], "Unknown option '--bogus'"]
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
