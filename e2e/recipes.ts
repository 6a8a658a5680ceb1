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
}

const isStep = (v: unknown): v is Step =>
  typeof v === 'object' && v !== null && typeof (v as Step).name === 'string' && typeof (v as Step).plugin === 'string'

/** The line that marks the next block as not a recipe (the broken file of the `check` sample). */
export const NOT_A_RECIPE = '<!-- e2e: not a recipe -->'

/**
 * Every ```json block of the README that is a chain step (an object with `name` and `plugin`) or
 * holds a `chain` array, whole (`{...}`) or as a fragment (`"chain": [...]`), unless the line before
 * it is NOT_A_RECIPE.
 */
export function readmeRecipes (file: string): Recipe[] {
  const text = readFileSync(file, 'utf8')
  const recipes: Recipe[] = []
  for (const match of text.matchAll(/^```json\n([\s\S]*?)^```/gm)) {
    const before = text.slice(0, match.index).split('\n')
    const line = before.length
    if (before.filter(l => l.trim() !== '').at(-1)?.trim() === NOT_A_RECIPE) continue
    const parsed = parse(match[1])
    if (isStep(parsed)) {
      recipes.push({ name: parsed.name, steps: [parsed], line })
    } else if (typeof parsed === 'object' && parsed !== null && Array.isArray(parsed.chain) && parsed.chain.every(isStep)) {
      const steps = parsed.chain as Step[]
      recipes.push({ name: steps.map(s => s.name).join('+'), steps, config: Object.keys(parsed).length > 1 ? parsed : undefined, line })
    }
  }
  return recipes
}

function parse (block: string): any {
  for (const candidate of [block, `{${block}}`]) {
    try {
      return JSON.parse(candidate)
    } catch {}
  }
  return undefined
}
