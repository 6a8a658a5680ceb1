import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { readmeRecipes } from '../e2e/recipes.js'
import { configFile, ROOT, runCli } from './helpers/cli.js'

/** A README sample: the output after `$ command`, up to the end of its text block or the next command. */
function sampleOf (readme: string, command: string): string | undefined {
  const at = readme.indexOf(`$ ${command}\n`)
  return at === -1 ? undefined : readme.slice(at + command.length + 3).split(/\n```|\n\$ /)[0] + '\n'
}

t.test('check reports every error of every step in one run, each with its JSON path', async t => {
  const file = configFile({
    deadlineMs: 2 ** 31,
    surprise: true,
    chain: [
      { name: 'a', plugin: 'teleport', when: { users: [] } },
      { name: 'b', plugin: 'reject', when: { clientCidrs: ['10.0.0.0/8', '10.0.0.0/33', 'nope'] }, options: { reason: 'hi {{usr}}' } },
      { name: 'c', plugin: 'reject', ops: ['NewProxy'], when: { remotePorts: ['7000-6000', 70000, -1, 'abc', 80] } },
      { name: 'b', plugin: 'forward', options: { url: 'ftp://x', headers: { 'b@d': 'x', Host: 'y' } } },
      { name: 'e', plugin: 'rate-limit', options: { key: '{{nope}}', limit: 1e-300, window: '1h' } },
      { name: 'f', plugin: 'rewrite', options: { set: { 'a..b': 1, x: '{{q}}' }, replace: [{ path: 'p', pattern: '(', replacement: '' }] } }
    ]
  })
  const res = await runCli(['check', '--config', file])
  t.equal(res.code, 1)
  t.equal(res.stdout, '')
  const lines = res.stderr.trimEnd().split('\n')
  t.equal(lines[0], `invalid config ${file}:`)
  t.same(lines.slice(1).map(l => /^ {2}(\S+): /.exec(l)?.[1]), [
    'deadlineMs',
    'surprise',
    'chain[0].plugin',
    'chain[0].when.users',
    'chain[1].when.clientCidrs[1]',
    'chain[1].when.clientCidrs[2]',
    'chain[1].options.reason',
    'chain[2].when.remotePorts[0]',
    'chain[2].when.remotePorts[1]',
    'chain[2].when.remotePorts[2]',
    'chain[2].when.remotePorts[3]',
    'chain[3].name',
    'chain[3].options.url',
    'chain[3].options.headers.b@d',
    'chain[3].options.headers.Host',
    'chain[4].options.limit',
    'chain[5].options.set.a..b',
    'chain[5].options.set.x',
    'chain[5].options.replace[0].pattern'
  ], 'every path, in order')
  t.match(res.stderr, /deadlineMs: expected an integer from 1 to 10000\n/)
  t.match(res.stderr, /chain\[2\]\.when\.remotePorts\[1\]: "70000" is not a port/)
  t.match(res.stderr, /chain\[3\]\.name: duplicate step name "b"/)
  // a file with one schema error and no other still reports exactly that one
  const one = await runCli(['check', '--config', configFile({ chain: [{ name: 'x', plugin: 'reject', when: { remotePorts: ['9-1'] } }] })])
  t.equal(one.code, 1)
  t.equal(one.stderr.trimEnd().split('\n').slice(1).join('\n'), '  chain[0].when.remotePorts[0]: "9-1" is not a port or a "low-high" range within 0-65535')
})

t.test("README's check samples are what check prints", async t => {
  const readme = readFileSync(`${ROOT}README.md`, 'utf8')
  const sample = (command: string): string | undefined => sampleOf(readme, command)
  const example = await runCli(['check', '--config', 'config/gateway.example.json'])
  t.equal(example.code, 0)
  t.equal(example.stdout, sample('frp-plugin-gateway check --config config/gateway.example.json'))
  const broken = readme.slice(readme.indexOf('for this `broken.json`:')).split('```json\n')[1].split('\n```')[0]
  const file = configFile(broken, 'broken.json')
  const res = await runCli(['check', '--config', file])
  t.equal(res.code, 1)
  t.equal(res.stderr.replace(file, 'broken.json'), sample('frp-plugin-gateway check --config broken.json'))
})

t.test("README's users section: its check and trace samples are what the CLI prints for its gateway.json and users.json", async t => {
  const readme = readFileSync(`${ROOT}README.md`, 'utf8')
  const recipe = readmeRecipes(`${ROOT}README.md`).find(r => r.name === 'login-rate+users')
  if (recipe?.config === undefined) throw new Error('README has no login-rate+users config')
  const dir = mkdtempSync(join(tmpdir(), 'frpgw-readme-'))
  writeFileSync(join(dir, 'gateway.json'), JSON.stringify(recipe.config, null, 2))
  for (const [name, text] of Object.entries(recipe.files)) writeFileSync(join(dir, name), text)
  const check = await runCli(['check', '--config', 'gateway.json'], { cwd: dir })
  t.equal(check.code, 0, check.stderr)
  t.equal(check.stdout, sampleOf(readme, 'frp-plugin-gateway check --config gateway.json'))

  const section = readme.slice(readme.indexOf('\n## Users: '), readme.indexOf('\n### From fp-multiuser'))
  const traces = [...section.matchAll(/^\$ echo '(.*)' \\\n {4}\| frp-plugin-gateway trace --config gateway\.json --op (\w+)(; echo "exit \$\?")?\n([\s\S]*?)\n```/gm)]
  t.equal(traces.length, 2, 'a Login and a NewProxy sample')
  // timings differ from run to run
  const untimed = (text: string): string => text.replace(/ in \d+\.\d+ ms/g, ' in N ms')
  for (const [, content, op, withExit, output] of traces) {
    const res = await runCli(['trace', '--config', 'gateway.json', '--op', op], { cwd: dir, stdin: content })
    const exit = withExit !== undefined ? `exit ${String(res.code)}\n` : ''
    t.equal(untimed(res.stdout + exit), untimed(output + '\n'), `trace --op ${op}`)
  }
})

t.test('run refuses to start with the same complete list', async t => {
  const res = await runCli(['--config', configFile({ chain: [{ name: 'x', plugin: 'nope' }, { name: 'y', plugin: 'reject', when: { remoteCidrs: ['1.2.3.4/40'] } }] })])
  t.equal(res.code, 1)
  t.match(res.stderr, /chain\[0\]\.plugin: unknown plugin/)
  t.match(res.stderr, /chain\[1\]\.when\.remoteCidrs\[0\]: "1\.2\.3\.4\/40" is not/)
})

t.test('check ends with the ops frps must send: the ops of the steps, and the registry\'s three', async t => {
  const last = async (config: unknown): Promise<string | undefined> => (await runCli(['check', '--config', configFile(config)])).stdout.trimEnd().split('\n').at(-1)
  t.equal(await last({ chain: [] }), 'frps.toml:   (no op needs the gateway)')
  t.equal(await last({ chain: [{ name: 'v', plugin: 'reject', ops: ['NewUserConn', 'Login'], when: { users: ['eve'] } }] }),
    'frps.toml:   ops = ["Login", "NewUserConn"]  (INI: ops = Login,NewUserConn)', 'in frps\'s order')
  t.equal(await last({ registry: {}, chain: [{ name: 'q', plugin: 'quota', options: { maxProxies: 1 } }] }),
    'frps.toml:   ops = ["Login", "NewProxy", "CloseProxy"]  (INI: ops = Login,NewProxy,CloseProxy)', 'the registry records after NewProxy and CloseProxy, and notes reconnects at Login')
  t.equal(await last({ chain: [{ name: 'off', plugin: 'reject', ops: ['Ping'], enabled: false }] }), 'frps.toml:   (no op needs the gateway)', 'a step turned off needs nothing')
})

t.test('a bad top-level key hides no other key: each block that parses is used for the cross-checks and the steps', async t => {
  // the registry block is there: a bad log level must not make quota and ports ask for it
  const registry = await runCli(['check', '--config', configFile({
    log: { level: 'loud' },
    registry: {},
    chain: [{ name: 'q', plugin: 'quota', options: { maxProxies: 1 } }, { name: 'p', plugin: 'ports', options: { range: ['6000-6009'] } }]
  })])
  t.equal(registry.code, 1)
  t.same(registry.stderr.split('\n').map(l => /^ {2}(\S+):/.exec(l)?.[1]).filter(p => p !== undefined), ['log.level'])
  // a bad registry interval hides neither admin on the RPC port nor a forward to the gateway itself
  const listen = await runCli(['check', '--config', configFile({
    registry: { reconcileEvery: '1x' },
    listen: { port: 9100 },
    admin: { port: 9100 },
    chain: [{ name: 'f', plugin: 'forward', options: { url: 'http://127.0.0.1:9100/handler' } }]
  })])
  t.equal(listen.code, 1)
  t.same(listen.stderr.split('\n').map(l => /^ {2}(\S+):/.exec(l)?.[1]).filter(p => p !== undefined),
    ['registry.reconcileEvery', 'admin.port', 'chain[0].options.url'])
  // a block that is there but broken is named by its own problem, not as missing by the steps that need it
  const broken = await runCli(['check', '--config', configFile({
    redis: { url: 'http://x' },
    registry: { store: 'bogus' },
    users: { file: 7 },
    chain: [{ name: 'u', plugin: 'users' }, { name: 'q', plugin: 'quota', options: { fromUsers: true } },
      { name: 'r', plugin: 'rate-limit', options: { key: '{{user}}', limit: 1, window: '1s', store: 'redis' } },
      { name: 'p', plugin: 'ports', options: { mode: 'sticky' } },
      { name: 'v', plugin: 'reject', ops: ['NewUserConn'], when: { proxyMetas: { team: 'x' } }, options: { reason: 'no' } },
      { name: 'n', plugin: 'notify', options: { sink: { redisStream: { stream: 'audit' } } } }]
  })])
  t.equal(broken.code, 1)
  t.same(broken.stderr.split('\n').map(l => /^ {2}(\S+):/.exec(l)?.[1]).filter(p => p !== undefined), ['redis.url', 'users.file', 'registry.store'])
  t.notMatch(broken.stderr, /needs the top-level|assigns from each user/)
  // the blocks that parsed but need a broken one say nothing of it either
  const needsRedis = await runCli(['check', '--config', configFile({
    redis: { url: 'http://x' }, registry: { store: 'redis' }, users: { redis: {} }, chain: [{ name: 'q', plugin: 'quota', options: { maxProxies: 1 } }, { name: 'p', plugin: 'ports', options: { range: ['6000-6009'] } }]
  })])
  t.same(needsRedis.stderr.split('\n').map(l => /^ {2}(\S+):/.exec(l)?.[1]).filter(p => p !== undefined), ['redis.url'])
  // a block that is not there at all is still asked for
  const missing = await runCli(['check', '--config', configFile({ log: { level: 'loud' }, chain: [{ name: 'q', plugin: 'quota', options: { maxProxies: 1 } }] })])
  t.match(missing.stderr, /chain\[0\]\.options: plugin quota needs the top-level "registry" block/)
})

t.test('a step that does not parse still has its when compiled: an unknown plugin or a bad option hides no CIDR or port', async t => {
  const res = await runCli(['check', '--config', configFile({ chain: [
    { name: 'x', plugin: 'nope', when: { clientCidrs: ['10.0.0.0/33'] } },
    { name: 'y', plugin: 'reject', options: { reason: 5 }, when: { not: { remotePorts: ['9-1'] } } }
  ] })])
  t.equal(res.code, 1)
  const paths = res.stderr.split('\n').map(l => /^ {2}(\S+):/.exec(l)?.[1]).filter(p => p !== undefined)
  t.same(paths, ['chain[0].plugin', 'chain[0].when.clientCidrs[0]', 'chain[1].options.reason', 'chain[1].when.not.remotePorts[0]'])
})

t.test('a when that fails the schema still has each condition that parses compiled: an empty name hides no CIDR, port or empty not', async t => {
  const res = await runCli(['check', '--config', configFile({ chain: [
    { name: 'x', plugin: 'reject', ops: ['Login'], when: { users: [''], clientCidrs: ['10.0.0.0/33'], not: {} } },
    { name: 'y', plugin: 'reject', when: { not: { proxyNames: [''], remotePorts: ['9-1'], not: { clientCidrs: ['x'] } } } }
  ] })])
  t.equal(res.code, 1)
  t.equal(res.stderr.split('\n').slice(1).join('\n'), [
    '  chain[0].when.users[0]: an empty name never matches: frps omits empty values',
    '  chain[0].when.clientCidrs[0]: "10.0.0.0/33" is not an IPv4 or IPv6 address or CIDR',
    '  chain[0].when.not: an empty condition holds on every call, so under not on none: the step would never run',
    '  chain[1].when.not.proxyNames[0]: an empty name never matches: frps omits empty values',
    '  chain[1].when.not.remotePorts[0]: "9-1" is not a port or a "low-high" range within 0-65535',
    '  chain[1].when.not.not.clientCidrs[0]: "x" is not an IPv4 or IPv6 address or CIDR',
    ''
  ].join('\n'))
})

t.test('check: a step with enabled: false that would not compile is valid as it is, with a note saying what turning it on would fail on', async t => {
  const file = configFile({
    chain: [
      { name: 'ok', plugin: 'reject', ops: ['Login'], when: { users: ['mallory'] } },
      { name: 'later', plugin: 'reject', enabled: false, options: { reason: 'bye {{usr}}' } },
      { name: 'fine-off', plugin: 'metas', enabled: false, ops: ['Login'], options: { set: { a: 'b' } } }
    ]
  })
  const res = await runCli(['check', '--config', file])
  t.equal(res.code, 0, 'valid as it is')
  t.match(res.stdout, `${file}: OK\nLogin:       ok (reject; when users)\n`, 'the chains without the steps turned off')
  // the same problem check reports of the step turned on, as a note on stderr
  const on = await runCli(['check', '--config', configFile({ chain: [{ name: 'ok', plugin: 'reject', ops: ['Login'] }, { name: 'later', plugin: 'reject', options: { reason: 'bye {{usr}}' } }] })])
  const problem = on.stderr.split('\n').find(l => l.startsWith('  chain[1].options.reason: '))?.slice('  chain[1].options.reason: '.length)
  t.match(problem, /^unknown template name \{\{usr\}\}/)
  t.equal(res.stderr, `note: chain[1].options.reason (a step with enabled: false, which run leaves out): ${problem}\n`, 'one note, the step that compiles says nothing')
})
