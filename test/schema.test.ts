import { readdirSync, readFileSync } from 'node:fs'
import t from 'tap'
import { Ajv2020 } from 'ajv/dist/2020.js'
import { ROOT } from './helpers/cli.js'

const schema = JSON.parse(readFileSync(`${ROOT}config/gateway.schema.json`, 'utf8'))

t.test('config/gateway.schema.json compiles in a strict JSON Schema validator (ajv) and holds for the example configs', async t => {
  t.equal(schema.$schema, 'https://json-schema.org/draft/2020-12/schema')
  // strict: an unknown keyword or format is an error, as editors and CI validators may treat it
  const validate = new Ajv2020({ strict: true, allErrors: true }).compile(schema)
  const examples = readdirSync(`${ROOT}config`).filter(f => f.endsWith('.json') && !f.endsWith('.schema.json') && f !== 'grafana-dashboard.json')
  t.ok(examples.includes('gateway.example.json'))
  for (const name of examples) {
    const ok = validate(JSON.parse(readFileSync(`${ROOT}config/${name}`, 'utf8')))
    t.ok(ok, `${name}: ${JSON.stringify(validate.errors)}`)
  }
  t.notOk(validate({ listen: { path: 'handler' } }), 'listen.path must start with /')
  t.same(validate.errors?.map(e => e.instancePath), ['/listen/path'])
  t.notOk(validate({ deadlineMs: 10001, listen: { bodyLimitBytes: 1e15 } }), 'the bounds are in the schema')
  t.same(validate.errors?.map(e => e.instancePath).sort(), ['/deadlineMs', '/listen/bodyLimitBytes'])
})
