import { readFileSync } from 'node:fs'
import t from 'tap'
import { configFile, ROOT, runCli } from './helpers/cli.js'

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
  // each sample: the command line, then its output up to the end of the text block or the next command
  const sample = (command: string): string => {
    const at = readme.indexOf(`$ ${command}\n`)
    t.not(at, -1, command)
    return readme.slice(at + command.length + 3).split(/\n```|\n\$ /)[0] + '\n'
  }
  const example = await runCli(['check', '--config', 'config/gateway.example.json'])
  t.equal(example.code, 0)
  t.equal(example.stdout, sample('frp-plugin-gateway check --config config/gateway.example.json'))
  const broken = readme.slice(readme.indexOf('for this `broken.json`:')).split('```json\n')[1].split('\n```')[0]
  const file = configFile(broken, 'broken.json')
  const res = await runCli(['check', '--config', file])
  t.equal(res.code, 1)
  t.equal(res.stderr.replace(file, 'broken.json'), sample('frp-plugin-gateway check --config broken.json'))
})

t.test('run refuses to start with the same complete list', async t => {
  const res = await runCli(['--config', configFile({ chain: [{ name: 'x', plugin: 'nope' }, { name: 'y', plugin: 'reject', when: { remoteCidrs: ['1.2.3.4/40'] } }] })])
  t.equal(res.code, 1)
  t.match(res.stderr, /chain\[0\]\.plugin: unknown plugin/)
  t.match(res.stderr, /chain\[1\]\.when\.remoteCidrs\[0\]: "1\.2\.3\.4\/40" is not/)
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
