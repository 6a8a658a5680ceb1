// npm run e2e: the example config and every README recipe through a real frps and real frpc (FRP_BIN_DIR).
import { existsSync } from 'node:fs'
import { join, relative, resolve } from 'node:path'

import { detectFrp, ROOT, Scope, type FrpVersion } from './harness.js'
import { readmeRecipes } from './recipes.js'
import { exampleScenario, recipeScenarios, registryScenario, type Ctx } from './scenarios.js'

const SCENARIO_TIMEOUT_MS = 90_000

interface Outcome { name: string, failed: number, notRun: number, checks: number }

async function scenario (frp: FrpVersion, name: string, body: (ctx: Ctx) => Promise<void>): Promise<Outcome> {
  const started = Date.now()
  const scope = new Scope()
  let failed = 0
  let checks = 0
  let notRun = 0
  process.stdout.write(`\n# ${name}\n`)
  const ctx: Ctx = {
    frp,
    scope,
    check: (what, ok, detail, procs = []) => {
      checks++
      if (!ok) failed++
      process.stdout.write(`  ${ok ? 'ok    ' : 'FAILED'} ${what}${detail !== undefined && (!ok || process.env.E2E_VERBOSE !== undefined) ? `\n         ${detail}` : ''}\n`)
      if (!ok) for (const proc of procs) if (proc.lines.length > 0) process.stdout.write(proc.tail() + '\n')
      return ok
    },
    notRun: (what, why) => { notRun++; process.stdout.write(`  NOT RUN on frp ${frp.version}: ${what}: ${why}\n`) },
    say: text => process.stdout.write(`  - ${text}\n`)
  }
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([
      body(ctx),
      new Promise((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${SCENARIO_TIMEOUT_MS / 1000} s`)), SCENARIO_TIMEOUT_MS) })
    ])
  } catch (err) {
    failed++
    process.stdout.write(`  FAILED ${process.env.E2E_VERBOSE !== undefined ? (err as Error).stack : (err as Error).message}\n`)
  } finally {
    clearTimeout(timer)
    await scope.close()
  }
  if (checks === 0 && failed === 0 && notRun === 0) {
    failed++
    process.stdout.write('  FAILED the scenario checked nothing\n')
  }
  process.stdout.write(`  ${failed > 0 ? 'failed' : checks === 0 ? 'not run' : 'passed'}: ${name} (${checks} checks, ${((Date.now() - started) / 1000).toFixed(1)} s)\n`)
  return { name, failed, notRun, checks }
}

async function main (): Promise<number> {
  const usage = 'usage: FRP_BIN_DIR=DIR npm run e2e   (DIR holds the frps and frpc to test, e.g. ../shared/frp/0.64.0)\n'
  const dir = process.env.FRP_BIN_DIR
  if (dir === undefined || !existsSync(join(dir, 'frps')) || !existsSync(join(dir, 'frpc'))) {
    process.stderr.write(usage)
    return 2
  }
  const started = Date.now()
  // a frps that does not run or print a version is no FRP_BIN_DIR either
  const frp = await detectFrp(resolve(dir)).catch((err: Error) => { process.stderr.write(`${err.message}\n${usage}`) })
  if (frp === undefined) return 2
  process.stdout.write(`e2e: frp ${frp.version} (${frp.ini ? 'INI' : 'TOML'} configs) from ${frp.dir}\n`)

  const example = process.env.E2E_EXAMPLE ?? join(ROOT, 'config/gateway.example.json')
  const outcomes: Outcome[] = []
  outcomes.push(await scenario(frp, `example config ${relative(ROOT, resolve(example))}`, async ctx => await exampleScenario(ctx, example)))

  const only = process.env.E2E_ONLY
  if (only === undefined || 'registry'.includes(only)) outcomes.push(await scenario(frp, 'registry and a visitor rule (proxyMetas), frps\'s dashboard read every 2 s', registryScenario))

  const recipes = readmeRecipes(join(ROOT, 'README.md'))
  for (const recipe of recipes) {
    if (only !== undefined && !recipe.name.includes(only)) continue
    const name = `README recipe ${recipe.name} (README.md line ${recipe.line})`
    const run = recipeScenarios[recipe.name]
    if (run === undefined) {
      process.stdout.write(`\n# ${name}\n  FAILED no e2e scenario covers this recipe: add one to e2e/scenarios.ts\n`)
      outcomes.push({ name, failed: 1, notRun: 0, checks: 0 })
      continue
    }
    outcomes.push(await scenario(frp, name, async ctx => await run(ctx, recipe)))
  }

  // a scenario whose recipe left the README tests nothing: README and e2e must move together
  const names = new Set(recipes.map(r => r.name))
  if (only === undefined) {
    for (const name of Object.keys(recipeScenarios).filter(n => !names.has(n))) {
      process.stdout.write(`\n# scenario ${name}\n  FAILED no README recipe is named ${name} any more: update or remove its scenario in e2e/scenarios.ts\n`)
      outcomes.push({ name: `scenario ${name} (no recipe)`, failed: 1, notRun: 0, checks: 0 })
    }
  }

  const failed = outcomes.filter(o => o.failed > 0)
  const notRun = outcomes.reduce((n, o) => n + o.notRun, 0)
  const passed = outcomes.filter(o => o.failed === 0 && o.checks > 0).length
  process.stdout.write(`\ne2e frp ${frp.version}: ${passed} scenarios passed, ${failed.length} failed` +
    `${notRun > 0 ? `, ${notRun} checks not run on this version (named above)` : ''} in ${((Date.now() - started) / 1000).toFixed(0)} s\n`)
  for (const o of failed) process.stdout.write(`  failed: ${o.name}\n`)
  return failed.length > 0 ? 1 : 0
}

main().then(code => { process.exitCode = code }, err => { process.stderr.write(`${(err as Error).stack ?? String(err)}\n`); process.exitCode = 1 })
