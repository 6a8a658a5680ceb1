import { readFileSync } from 'node:fs'
import t from 'tap'
import { readmeRecipes } from '../e2e/recipes.js'
import { fromFpMultiuser, fromFrpsPanel } from '../src/users/import.js'
import { ROOT } from './helpers/cli.js'

const README = `${ROOT}README.md`

t.test("README's migrations: each users file is what the import makes of the tokens file shown before it", async t => {
  const readme = readFileSync(README, 'utf8')
  const lineOf = (text: string): number => readme.slice(0, readme.indexOf(text)).split('\n').length
  const recipes = readmeRecipes(README)
  const cases = [
    { heading: '### From fp-multiuser', input: /^```text\n# tokens\n([\s\S]*?)^```/m, from: fromFpMultiuser },
    { heading: '### From frps-panel', input: /^```toml\n# frps-tokens\.toml\n([\s\S]*?)^```/m, from: fromFrpsPanel }
  ]
  for (const { heading, input, from } of cases) {
    const start = readme.indexOf(heading)
    t.not(start, -1, heading)
    // up to the next heading (the `# file` lines inside code blocks are not headings)
    const end = readme.slice(start + heading.length).search(/\n##+ /)
    const section = readme.slice(start, start + heading.length + end)
    const tokens = input.exec(section)?.[1]
    if (tokens === undefined) throw new Error(`${heading}: no tokens file block`)
    // the migration's config (e2e runs it) and the users file written beside it
    const recipe = recipes.find(r => r.line > lineOf(heading) && r.line < lineOf(heading) + section.split('\n').length)
    const file = recipe?.files[recipe.config?.users?.file]
    if (file === undefined) throw new Error(`${heading}: no config with a users file`)
    t.same(JSON.parse(file), { $schema: './users.schema.json', ...from(tokens) }, heading)
  }
})
