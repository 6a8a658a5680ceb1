import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

interface Teardown { teardown: (fn: () => unknown) => void }

export interface TestCerts {
  /** path of the CA certificate (PEM) */
  caFile: string
  /** the server certificate (for 127.0.0.1 and localhost, signed by the CA) and its key, PEM */
  cert: string
  key: string
}

/** A CA and a server certificate for 127.0.0.1 and localhost, made by the openssl CLI in a tmpdir removed in teardown. */
export async function makeCerts (t: Teardown): Promise<TestCerts> {
  const dir = await mkdtemp(join(tmpdir(), 'frpgw-tls-'))
  t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
  const at = (name: string): string => join(dir, name)
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  await run('openssl', ['req', '-x509', ...ec, '-keyout', at('ca.key'), '-out', at('ca.pem'), '-days', '2', '-subj', '/CN=frpgw test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'])
  await run('openssl', ['req', ...ec, '-keyout', at('server.key'), '-out', at('server.csr'), '-subj', '/CN=localhost'])
  await writeFile(at('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n')
  await run('openssl', ['x509', '-req', '-in', at('server.csr'), '-CA', at('ca.pem'), '-CAkey', at('ca.key'), '-CAcreateserial',
    '-out', at('server.pem'), '-days', '2', '-extfile', at('server.ext')])
  return { caFile: at('ca.pem'), cert: await readFile(at('server.pem'), 'utf8'), key: await readFile(at('server.key'), 'utf8') }
}
