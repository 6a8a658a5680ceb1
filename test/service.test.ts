import { readFileSync } from 'node:fs'
import t from 'tap'
import { STOP_GRACE_MS } from '../src/cli/serve.js'
import { MAX_DEADLINE_MS, MAX_DRAIN_MS } from '../src/bounds.js'
import { ROOT } from './helpers/cli.js'

// config/frp-plugin-gateway.service, as systemd reads it: the last value of each key of each section
const unit: Record<string, Record<string, string>> = {}
let section = ''
for (const line of readFileSync(`${ROOT}config/frp-plugin-gateway.service`, 'utf8').split('\n')) {
  const header = /^\[(\w+)\]$/.exec(line)
  if (header !== null) unit[section = header[1]] = {}
  else if (/^\w+=/.test(line)) unit[section][line.slice(0, line.indexOf('='))] = line.slice(line.indexOf('=') + 1)
}
const pkg = JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8'))
const readme = readFileSync(`${ROOT}README.md`, 'utf8')

t.test('the unit runs the package\'s command on the config under /etc, reloads with SIGHUP, stops with SIGTERM', async t => {
  const [, command, config] = /^(\S+) --config (\S+)$/.exec(unit.Service.ExecStart) ?? []
  t.ok(Object.keys(pkg.bin).includes(command.slice(command.lastIndexOf('/') + 1)), 'the command is the package\'s bin')
  t.match(readme, `Its \`ExecStart\` runs \`${command}\``)
  t.equal(config, '/etc/frp-plugin-gateway/gateway.json')
  t.match(readme, `cp config/gateway.example.json ${config}`, 'where the README puts the config')
  t.equal(unit.Service.ExecReload, '/bin/kill -HUP $MAINPID')
  t.equal(unit.Service.KillSignal, 'SIGTERM')
  t.equal(unit.Service.Type, 'simple', 'the gateway stays in the foreground')
  t.equal(unit.Unit.Before, 'frps.service')
  t.equal(unit.Install.WantedBy, 'multi-user.target')
  t.ok(pkg.files.includes('config'), 'the unit ships in the package')
})

t.test('a config that does not load stops the restarts: 5 failed starts fit in the start limit\'s interval, as the README says', async t => {
  const [interval, burst, every] = [unit.Unit.StartLimitIntervalSec, unit.Unit.StartLimitBurst, unit.Service.RestartSec].map(Number)
  t.equal(unit.Service.Restart, 'on-failure')
  // a failing start loads the gateway before it exits 1: up to a few seconds on a busy host
  t.ok(burst * (every + 4) < interval, `${burst} starts ${every} s apart, each up to 4 s, within ${interval} s`)
  t.match(readme, `\`Restart=on-failure\`, ${every} s apart`)
  t.match(readme, `gives up after ${burst} starts in ${interval} s`)
})

t.test('systemd waits longer than the longest stop the config allows, and the README says both figures', async t => {
  const longest = MAX_DEADLINE_MS + MAX_DRAIN_MS + STOP_GRACE_MS
  const timeout = Number(unit.Service.TimeoutStopSec)
  t.ok(timeout * 1000 > longest, `TimeoutStopSec ${timeout} s is above ${longest} ms`)
  t.match(readme, `waits up to ${timeout} s (\`TimeoutStopSec\`)`)
  t.match(readme, `\`drainMs\` + ${STOP_GRACE_MS / 1000} s, ${longest / 1000} s with the largest of both`)
  t.match(readme, `frp-plugin-gateway-${pkg.version as string}.tgz`, 'the tarball npm pack makes')
})
