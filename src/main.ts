#!/usr/bin/env node
import { args, checkSubCommand, COMMANDS, configPath, help, StartError, subCommand, UsageError, type Option } from './cli/usage.js'
import type { EarlyHup } from './cli/serve.js'
import { ConfigError } from './errors.js'
import { packageVersion } from './version.js'

// each command's module is loaded when it runs: usage, help and --version start in a third of the time


/** set by `run`: every other command is done once main settles */
let serving = false

export async function main (argv: string[]): Promise<number> {
  const { values, positionals } = args(argv)
  if (values.version === true) {
    process.stdout.write(`frp-plugin-gateway ${packageVersion()}\n`)
    return 0
  }
  const [command = 'run', ...rest] = positionals
  if (!Object.hasOwn(COMMANDS, command)) throw new UsageError(`unknown command: ${command}`)
  if (command === 'help' || values.help === true) {
    const about = command === 'help' ? rest.shift() : command === 'run' && positionals.length === 0 ? undefined : command
    if (about !== undefined && !Object.hasOwn(COMMANDS, about)) throw new UsageError(`unknown command: ${about}`)
    // `help users get` and `users get NAME --help` show the help of users
    if (about !== undefined && COMMANDS[about].sub !== undefined && rest.length > 0) {
      subCommand(about, rest[0])
      rest.splice(0, command === 'help' ? 1 : rest.length)
    }
    if (rest.length > 0) throw new UsageError(`unexpected argument: ${rest[0]}`)
    process.stdout.write(help(about))
    return 0
  }
  if (command === 'users') {
    checkSubCommand(command, rest, values)
    const { users } = await import('./cli/users.js')
    return await users(rest[0], rest.slice(1), values)
  }
  if (rest.length > 0) throw new UsageError(`unexpected argument: ${rest[0]}`)
  const stray = (Object.keys(values) as Option[]).find(o => !COMMANDS[command].options.includes(o))
  if (stray !== undefined) throw new UsageError(`--${stray} does not apply to ${command}`)
  switch (command) {
    case 'run': {
      serving = true
      // heard from before the server loads (a moment): serve reloads for it once started
      const early: EarlyHup = { heard: false, listener: () => { early.heard = true } }
      process.on('SIGHUP', early.listener)
      const { serve } = await import('./cli/serve.js')
      await serve(configPath(values.config), values.watch === true, early)
      return 0
    }
    case 'check': {
      const { check } = await import('./cli/check.js')
      return await check(configPath(values.config))
    }
    case 'trace': {
      const { trace } = await import('./cli/trace.js')
      return await trace(configPath(values.config), values.op, values.content)
    }
    case 'schema': {
      const { configJsonSchema } = await import('./config.js')
      process.stdout.write(`${JSON.stringify(configJsonSchema(), null, 2)}\n`)
      return 0
    }
    default:
      throw new UsageError(`unknown command: ${command}`)
  }
}

// a one-shot command ends with its output: a Redis client's lost socket or reconnect timer would hold the
// process up to 2 s more (stdout and stderr are synchronous on Linux for files, pipes and terminals)
const done = (): void => { if (!serving) process.exit() }

main(process.argv.slice(2)).then(code => {
  if (code !== 0) process.exitCode = code
  done()
}, err => {
  if (err instanceof UsageError) {
    process.stderr.write(`${err.message}\n${err.usage}\n`)
    process.exitCode = 2
  } else if (err instanceof ConfigError || err instanceof StartError) {
    process.stderr.write(`${err.message}\n`)
    process.exitCode = err instanceof StartError ? err.exitCode : 1
  } else {
    process.stderr.write(`failed to start: ${(err as Error).stack ?? String(err)}\n`)
    process.exitCode = 1
  }
  done()
})
