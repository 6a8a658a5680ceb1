import { readFileSync } from 'node:fs'

export type Step = Record<string, any> & { name: string, plugin: string }

export interface Recipe {
  /** the step names joined by `+`: what a scenario is registered under */
  name: string
  steps: Step[]
  /** the whole config, when the block is one (it has more than `chain`) */
  config?: Record<string, any>
  /** line of the block in README.md */
  line: number
  /** files the config names, to write beside it: its `users.file`, from the users file block of the recipe's section */
  files: Record<string, string>
}

const isObject = (v: unknown): v is Record<string, any> => typeof v === 'object' && v !== null && !Array.isArray(v)

const isStep = (v: unknown): v is Step =>
  typeof v === 'object' && v !== null && typeof (v as Step).name === 'string' && typeof (v as Step).plugin === 'string'

/** The line that marks the next block as not a recipe (the broken file of the `check` sample). */
export const NOT_A_RECIPE = '<!-- e2e: not a recipe -->'

/**
 * Every ```json block of the README that is a chain step (an object with `name` and `plugin`) or
 * holds a `chain` array, whole (`{...}`) or as a fragment (`"chain": [...]`), unless the line before
 * it is NOT_A_RECIPE. A whole config naming `users.file` gets the one users file block (`{"users":
 * {NAME: {...}}}`, no `chain`) of its section (between the headings around it), written under that name.
 */
export function readmeRecipes (file: string): Recipe[] {
  const text = readFileSync(file, 'utf8')
  const recipes: Recipe[] = []
  const usersFiles: Array<{ line: number, text: string }> = []
  for (const match of text.matchAll(/^```json\n([\s\S]*?)^```/gm)) {
    const before = text.slice(0, match.index).split('\n')
    const line = before.length
    if (before.filter(l => l.trim() !== '').at(-1)?.trim() === NOT_A_RECIPE) continue
    const parsed = parse(match[1])
    if (isStep(parsed)) {
      recipes.push({ name: parsed.name, steps: [parsed], line, files: {} })
    } else if (isObject(parsed) && Array.isArray(parsed.chain) && parsed.chain.every(isStep)) {
      const steps = parsed.chain as Step[]
      recipes.push({ name: steps.map(s => s.name).join('+'), steps, config: Object.keys(parsed).length > 1 ? parsed : undefined, line, files: {} })
    } else if (isObject(parsed) && isObject(parsed.users) && Object.values(parsed.users).every(isObject)) {
      usersFiles.push({ line, text: match[1] })
    }
  }
  const section = sectionOf(text)
  for (const recipe of recipes) {
    const name = recipe.config?.users?.file
    if (typeof name !== 'string') continue
    const found = usersFiles.filter(f => section(f.line) === section(recipe.line))
    if (found.length !== 1) {
      throw new Error(`README.md line ${recipe.line}: the config names users.file ${JSON.stringify(name)}, and its section has ` +
        `${found.length === 0 ? 'no users file block' : `${found.length} users file blocks (lines ${found.map(f => f.line).join(', ')})`}: give it exactly one`)
    }
    recipe.files[name] = found[0].text
  }
  return recipes
}

/** The section of a line: the line of the last heading before it (headings inside fenced blocks are code, not headings). */
function sectionOf (text: string): (line: number) => number {
  const headings: number[] = [0]
  let fenced = false
  text.split('\n').forEach((l, i) => {
    if (l.startsWith('```')) fenced = !fenced
    else if (!fenced && /^#{1,6} /.test(l)) headings.push(i + 1)
  })
  return line => headings.filter(h => h < line).at(-1) ?? 0
}

function parse (block: string): any {
  for (const candidate of [block, `{${block}}`]) {
    try {
      return JSON.parse(candidate)
    } catch {}
  }
  return undefined
}
