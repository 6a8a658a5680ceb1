import { existsSync } from 'node:fs'
import { isAbsolute, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { OPS } from '../protocol.js'

export const OPTIONS = {
  config: { type: 'string', short: 'c', help: '-c, --config FILE   the config file (default: $FRP_GATEWAY_CONFIG, then config/gateway.json)' },
  watch: { type: 'boolean', help: '    --watch         reload when the config file or the users file changes (SIGHUP reloads too)' },
  op: { type: 'string', help: `    --op OP         ${OPS.join(', ')} (default: the op of a whole frps body)` },
  content: { type: 'string', help: '    --content FILE  the content, or a whole frps body {"version", "op", "content"} (default: stdin)' },
  from: { type: 'string', help: '    --from FORMAT   users import: fp-multiuser (user=token lines) or frps-panel (its frps-tokens.toml)' },
  'to-redis': { type: 'boolean', help: '    --to-redis      users import: write the users into the Redis of the config instead of printing a users file' },
  help: { type: 'boolean', short: 'h', help: '-h, --help          print this help (with a command: its help)' },
  version: { type: 'boolean', help: '    --version       print the version' }
} as const
export type Option = keyof typeof OPTIONS

/** A sub-command of a command (`users get NAME`): its positional arguments, by name, and its options. */
export interface SubCommand { args: readonly string[], usage: string, does: string, options: readonly Option[] }
interface Command { usage: string, does: string, options: readonly Option[], exits: string, sub?: Record<string, SubCommand> }

const USERS: Record<string, SubCommand> = {
  list: { args: [], usage: '[--config FILE]', does: 'print the names of the user table, one a line, with (disabled), (expired) or (not a valid record: ...) after some', options: ['config'] },
  get: { args: ['NAME'], usage: 'NAME [--config FILE]', does: "print NAME's record as JSON, as the file or Redis holds it", options: ['config'] },
  set: { args: ['NAME', 'JSON'], usage: 'NAME JSON [--config FILE]', does: "replace NAME's whole record with JSON, validated (Redis table)", options: ['config'] },
  enable: { args: ['NAME'], usage: 'NAME [--config FILE]', does: 'set NAME\'s "enabled": true, leaving the rest of the record (Redis table)', options: ['config'] },
  disable: { args: ['NAME'], usage: 'NAME [--config FILE]', does: 'set NAME\'s "enabled": false: their clients are refused from their next call (Redis table)', options: ['config'] },
  delete: { args: ['NAME'], usage: 'NAME [--config FILE]', does: 'remove NAME from the table (Redis table)', options: ['config'] },
  import: { args: ['FILE'], usage: '--from fp-multiuser|frps-panel FILE [--to-redis [--config FILE]]', does: 'print a users file made from the tokens FILE of fp-multiuser or frps-panel; --to-redis writes the users into the Redis of the config instead', options: ['from', 'to-redis', 'config'] }
}
export const COMMANDS: Record<string, Command> = {
  run: { usage: '[run] [--config FILE] [--watch]', does: 'serve frps calls (the default command)', options: ['config', 'watch'], exits: '0 stopped by SIGTERM or SIGINT, 1 bad config or failed start, 2 bad usage' },
  check: { usage: 'check [--config FILE]', does: 'validate the config and print the steps that run, per op', options: ['config'], exits: '0 valid, 1 bad config, 2 bad usage' },
  trace: { usage: 'trace [--config FILE] [--op OP] [--content FILE]', does: 'run one call through the chain, as frps would, and show each step', options: ['config', 'op', 'content'], exits: '0 allow or modify, 3 reject, 4 error, 1 bad config or content, 2 bad usage' },
  schema: { usage: 'schema', does: 'print the JSON Schema of the config file', options: [], exits: '0 printed, 2 bad usage' },
  users: { usage: 'users SUBCOMMAND [ARGS] [--config FILE]', does: 'list, show, change and import the users of the user table (config "users")', options: ['config', 'from', 'to-redis'], exits: '0 done, 1 bad config, bad file or record, unknown user or Redis not reachable, 2 bad usage or a change asked of a file-backed table', sub: USERS },
  help: { usage: 'help [COMMAND] | --help | --version', does: 'print this help, or the help of COMMAND', options: [], exits: '0 printed, 2 bad usage' }
}
// a command with sub-commands shows one line per sub-command in its own usage
const commandUsages = (name: string, own: boolean): string[] => {
  const { usage, sub } = COMMANDS[name]
  return own && sub !== undefined ? Object.entries(sub).map(([s, c]) => `${name} ${s} ${c.usage}`) : [usage]
}
const usageLines = (names: string[], own = false): string =>
  names.flatMap(name => commandUsages(name, own)).map((line, i) => `${i === 0 ? 'usage:' : '      '} frp-plugin-gateway ${line}`).join('\n')
export const USAGE = `${usageLines(Object.keys(COMMANDS))}\nsee frp-plugin-gateway --help`
/** The usage a bad use of a command with sub-commands is answered with. */
export const commandUsage = (command: string): string => `${usageLines([command], true)}\nsee frp-plugin-gateway help ${command}`

export function help (command?: string): string {
  if (command !== undefined) {
    const { does, options, exits, sub } = COMMANDS[command]
    const subs = sub !== undefined ? `\ncommands:\n${Object.entries(sub).map(([name, c]) => `  ${name.padEnd(9)}${c.does}`).join('\n')}\n` : ''
    return `${usageLines([command], true)}\n\n${does}\n${subs}${options.length > 0 ? `\noptions:\n${options.map(o => `  ${OPTIONS[o].help}`).join('\n')}\n` : ''}\nexit codes: ${exits}\n`
  }
  return [
    usageLines(Object.keys(COMMANDS)), '', 'commands:',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(8)}${c.does}`), '', 'options:',
    ...Object.values(OPTIONS).map(o => `  ${o.help}`), '',
    'exit codes: 0 ok, 1 bad config or failed start, 2 bad usage; trace: 0 allow or modify, 3 reject, 4 error',
    'frp-plugin-gateway help COMMAND shows the options of one command.', ''
  ].join('\n')
}

/** Bad usage: one line, then the usage (the whole one, or that of the command); exit 2. */
export class UsageError extends Error {
  constructor (message: string, readonly usage = USAGE) {
    super(message)
  }
}

/** The operator's to fix, not a bug: these lines and exit 1 (or the code given), without a stack. */
export class StartError extends Error {
  constructor (message: string, readonly exitCode = 1) {
    super(message)
  }
}

export type Values = ReturnType<typeof args>['values']

export function args (argv: string[]) {
  try {
    return parseArgs({ args: argv, allowPositionals: true, options: OPTIONS })
  } catch (err) {
    // node's own messages run to several sentences: one line each, naming the option
    const { code, message } = err as { code?: string, message: string }
    const option = /'(?:-\w, )?(-{1,2}[^' ]+)/.exec(message)?.[1] ?? message
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw new UsageError(`unknown option ${option}`)
    if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') throw new UsageError(message.includes('does not take') ? `${option} takes no value` : `${option} needs a value`)
    throw new UsageError(message)
  }
}

const DEFAULT_CONFIG = 'config/gateway.json'
const EXAMPLE_CONFIG = fileURLToPath(new URL('../../../config/gateway.example.json', import.meta.url))

/** The config file to read: --config, then $FRP_GATEWAY_CONFIG, then the default; a missing one says how to give one. */
export function configPath (given: string | undefined): string {
  const env = process.env.FRP_GATEWAY_CONFIG
  const file = given ?? (env !== undefined && env !== '' ? env : DEFAULT_CONFIG)
  if (existsSync(file)) return file
  const from = given !== undefined ? 'given with --config' : file === env ? 'from $FRP_GATEWAY_CONFIG' : 'the default, as neither --config nor $FRP_GATEWAY_CONFIG is set'
  const example = relative(process.cwd(), EXAMPLE_CONFIG)
  throw new StartError([
    `config file ${file} does not exist (${from})`,
    `Give one with --config FILE or $FRP_GATEWAY_CONFIG; ${example.startsWith('..') || isAbsolute(example) ? EXAMPLE_CONFIG : example} is an example to start from. See frp-plugin-gateway --help.`
  ].join('\n'))
}

/** The sub-command `name` of `command`, or a usage error with the usage of the command. */
export function subCommand (command: string, name: string | undefined): SubCommand {
  const sub = COMMANDS[command].sub ?? {}
  if (name === undefined) throw new UsageError(`${command} needs a sub-command: ${Object.keys(sub).join(', ')}`, commandUsage(command))
  if (!Object.hasOwn(sub, name)) throw new UsageError(`unknown ${command} command: ${name}`, commandUsage(command))
  return sub[name]
}

/** `command SUB ARGS...`: SUB known, as many ARGS as it takes, and only its options; else a usage error. */
export function checkSubCommand (command: string, positionals: string[], values: Values): SubCommand {
  const [name, ...rest] = positionals
  const sub = subCommand(command, name)
  const usage = commandUsage(command)
  if (rest.length < sub.args.length) throw new UsageError(`${command} ${name} needs ${sub.args.slice(rest.length).join(' and ')}`, usage)
  if (rest.length > sub.args.length) throw new UsageError(`unexpected argument: ${rest[sub.args.length]}`, usage)
  const stray = (Object.keys(values) as Option[]).find(o => !sub.options.includes(o))
  if (stray !== undefined) throw new UsageError(`--${stray} does not apply to ${command} ${name}`, usage)
  return sub
}
