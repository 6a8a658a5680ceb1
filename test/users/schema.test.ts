import { readFileSync } from 'node:fs'
import t from 'tap'
import { Ajv2020 } from 'ajv/dist/2020.js'
import { usersJsonSchema } from '../../src/users/record.js'
import { ROOT } from '../helpers/cli.js'

const committed = JSON.parse(readFileSync(`${ROOT}config/users.schema.json`, 'utf8'))

t.test('config/users.schema.json is the schema the code generates (regenerate with `npm run schema`)', async t => {
  t.same(committed, usersJsonSchema())
})

t.test('config/users.schema.json compiles in a strict JSON Schema validator (ajv) and holds for the fixture', async t => {
  t.equal(committed.$schema, 'https://json-schema.org/draft/2020-12/schema')
  const validate = new Ajv2020({ strict: true, allErrors: true }).compile(committed)
  const fixture = JSON.parse(readFileSync(`${ROOT}test/fixtures/users/users.json`, 'utf8'))
  t.ok(validate(fixture), JSON.stringify(validate.errors))
  t.notOk(validate({ users: { alice: { bandwidthLimit: '10GB', tokenSha256: 'xyz', maxProxies: -1, extra: 1 } } }))
  t.same(validate.errors?.map(e => `${e.instancePath} ${e.keyword}`).sort(),
    ['/users/alice additionalProperties', '/users/alice/bandwidthLimit pattern', '/users/alice/maxProxies minimum', '/users/alice/tokenSha256 pattern'])
  t.notOk(validate({ users: { 'bad name': {} } }), 'user names are in the schema')
  t.notOk(validate({ users: {}, extra: 1 }), 'unknown top-level keys are errors')
})
