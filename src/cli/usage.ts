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
  help: { type: 'boolean', short: 'h', help: '-h, --help          print this help (with a command: its help)' },
  version: { type: 'boolean', help: '    --version       print the version' }
} as const
export type Option = keyof typeof OPTIONS

interface Command { usage: string, does: string, options: readonly Option[], exits: string }
export const COMMANDS: Record<string, Command> = {
  run: { usage: '[run] [--config FILE] [--watch]', does: 'serve frps calls (the default command)', options: ['config', 'watch'], exits: '0 stopped by SIGTERM or SIGINT, 1 bad config or failed start, 2 bad usage' },
  check: { usage: 'check [--config FILE]', does: 'validate the config and print the steps that run, per op', options: ['config'], exits: '0 valid, 1 bad config, 2 bad usage' },
  trace: { usage: 'trace [--config FILE] [--op OP] [--content FILE]', does: 'run one call through the chain, as frps would, and show each step', options: ['config', 'op', 'content'], exits: '0 allow or modify, 3 reject, 4 error, 1 bad config or content, 2 bad usage' },
  schema: { usage: 'schema', does: 'print the JSON Schema of the config file', options: [], exits: '0 printed, 2 bad usage' },
  help: { usage: 'help [COMMAND] | --help | --version', does: 'print this help, or the help of COMMAND', options: [], exits: '0 printed, 2 bad usage' }
}
const usageLines = (names: string[]): string => names.map((name, i) => `${i === 0 ? 'usage:' : '      '} frp-plugin-gateway ${COMMANDS[name].usage}`).join('\n')
export const USAGE = `${usageLines(Object.keys(COMMANDS))}\nsee frp-plugin-gateway --help`

export function help (command?: string): string {
  if (command !== undefined) {
    const { does, options, exits } = COMMANDS[command]
    return `${usageLines([command])}\n\n${does}\n${options.length > 0 ? `\noptions:\n${options.map(o => `  ${OPTIONS[o].help}`).join('\n')}\n` : ''}\nexit codes: ${exits}\n`
  }
  return [
    usageLines(Object.keys(COMMANDS)), '', 'commands:',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(8)}${c.does}`), '', 'options:',
    ...Object.values(OPTIONS).map(o => `  ${o.help}`), '',
    'exit codes: 0 ok, 1 bad config or failed start, 2 bad usage; trace: 0 allow or modify, 3 reject, 4 error',
    'frp-plugin-gateway help COMMAND shows the options of one command.', ''
  ].join('\n')
}

/** Bad usage: one line, then the usage; exit 2. */
export class UsageError extends Error {}
/** The operator's to fix, not a bug: these lines and exit 1, without a stack. */
export class StartError extends Error {}

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
