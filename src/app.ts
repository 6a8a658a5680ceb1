import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import type { ChainResult } from './chain.js'
import { GatewayError } from './errors.js'
import { callLogger } from './log.js'
import { OUTCOMES, type Metrics, type Outcome } from './metrics.js'
import {
  answerFor, isObject, isOp, OPS, type Content, type Op
} from './protocol.js'
import type { Runtime } from './runtime.js'

/** The live runtime; reload replaces it whole, and a call keeps the one it started on. */
export interface RuntimeRef {
  current: Runtime
  /** set on shutdown: answers then close their keep-alive connection, so the server can finish */
  stopping?: boolean
}

export interface AppOptions {
  metrics: Metrics
  logger: Logger
  path: string
  bodyLimitBytes: number
  /** serve /metrics, /healthz and /readyz here (false when an admin listener has them) */
  adminRoutes: boolean
  https?: { cert: string | Buffer, key: string | Buffer }
}

const JSON_TYPE = 'application/json; charset=utf-8'
// fastify's own errors, answered with ours
const FASTIFY_ERRORS: Record<string, GatewayError | ((err: Error, opts: AppOptions) => GatewayError)> = {
  FST_ERR_CTP_BODY_TOO_LARGE: (_, opts) => new GatewayError('FRPGW_ERR_BODY_TOO_LARGE', opts.bodyLimitBytes),
  FST_ERR_CTP_EMPTY_JSON_BODY: new GatewayError('FRPGW_ERR_INVALID_JSON', 'empty body')
}

function toGatewayError (err: Error & { code?: string, statusCode?: number }, req: FastifyRequest, opts: AppOptions): GatewayError {
  if (err instanceof GatewayError) return err
  const known = err.code !== undefined ? FASTIFY_ERRORS[err.code] : undefined
  if (known !== undefined) return typeof known === 'function' ? known(err, opts) : known
  if (err.statusCode === 415) return new GatewayError('FRPGW_ERR_UNSUPPORTED_MEDIA_TYPE', req.headers['content-type'] ?? 'none')
  return new GatewayError('FRPGW_ERR_INTERNAL', err.message)
}

/** Reads the envelope frps sends; every way it can be wrong is a 400 with its own code. */
function envelope (req: FastifyRequest): { wireOp: Op, content: Content } {
  const body = req.body as { op?: unknown, content?: unknown } | null
  if (body === undefined) throw new GatewayError('FRPGW_ERR_BAD_ENVELOPE', 'body is empty')
  if (!isObject(body)) throw new GatewayError('FRPGW_ERR_BAD_ENVELOPE', 'body is not an object')
  if (typeof body.op !== 'string') throw new GatewayError('FRPGW_ERR_BAD_ENVELOPE', '"op" is missing or not a string')
  if (!isOp(body.op)) throw new GatewayError('FRPGW_ERR_UNKNOWN_OP', JSON.stringify(body.op))
  const queryOp = (req.query as Record<string, unknown>).op
  if (queryOp !== undefined && queryOp !== body.op) throw new GatewayError('FRPGW_ERR_OP_MISMATCH', JSON.stringify(queryOp), JSON.stringify(body.op))
  const content = body.content
  if (content === undefined) throw new GatewayError('FRPGW_ERR_BAD_ENVELOPE', '"content" is missing')
  if (!isObject(content)) throw new GatewayError('FRPGW_ERR_BAD_ENVELOPE', '"content" is not an object')
  return { wireOp: body.op, content }
}

/** /metrics, /healthz and /readyz, on the RPC listener or the admin one. */
export function registerAdminRoutes (app: FastifyInstance, ref: RuntimeRef, metrics: Metrics): void {
  app.get('/metrics', async (_, reply) => {
    reply.header('content-type', metrics.register.contentType)
    return await metrics.register.metrics()
  })
  app.get('/healthz', async () => ({ status: 'ok' }))
  app.get('/readyz', async (_, reply) => {
    const reason = await ref.current.ready()
    if (reason === null) return { status: 'ready' }
    reply.code(503)
    return { status: 'not ready', reason }
  })
}

function baseApp (opts: AppOptions, extra: object = {}): FastifyInstance {
  // No fastify logger: with one, fastify makes a child logger and runs its logging hooks on every
  // request (measured: 10 to 15% of an empty chain's throughput). The gateway logs for itself,
  // one line per call, through a per-call logger bound to frps's reqid.
  const app = Fastify({
    logger: false,
    requestIdHeader: 'x-frp-reqid',
    ...extra
  }) as unknown as FastifyInstance
  app.setNotFoundHandler((req, reply) => {
    const err = new GatewayError('FRPGW_ERR_NOT_FOUND', `${req.method} ${req.url.split('?')[0]}`)
    void reply.code(err.statusCode).send(err.toJSON())
  })
  return app
}

const ADMIN_ROUTES = '/metrics, /healthz and /readyz'

/** One start-up line per address a listener is up on: which listener, its URL, and where the admin routes are. */
function logListening (app: FastifyInstance, opts: AppOptions, listener: 'rpc' | 'admin'): void {
  app.addHook('onListen', async function () {
    for (const address of app.addresses() as AddressInfo[]) {
      const host = address.family === 'IPv6' ? `[${address.address}]` : address.address
      const origin = `${opts.https !== undefined ? 'https' : 'http'}://${host}:${address.port}`
      if (listener === 'admin') opts.logger.info({ listener, url: origin }, `admin listener: ${ADMIN_ROUTES}`)
      else if (opts.adminRoutes) opts.logger.info({ listener, url: `${origin}${opts.path}`, admin: origin }, `listening for frps calls; ${ADMIN_ROUTES} are on this listener too`)
      else opts.logger.info({ listener, url: `${origin}${opts.path}` }, 'listening for frps calls')
    }
  })
}

/** The fastify instance serving frps. It never listens by itself. */
export function buildApp (ref: RuntimeRef, opts: AppOptions): FastifyInstance {
  const { metrics } = opts
  const app = baseApp(opts, { bodyLimit: opts.bodyLimitBytes, ...(opts.https !== undefined ? { https: opts.https } : {}) })
  const invalidCalls = metrics.requests.labels('invalid', 'error')
  const perOp = <T>(make: (op: Op) => T) => Object.fromEntries(OPS.map(op => [op, make(op)])) as Record<Op, T>
  const requests = perOp(op => Object.fromEntries(OUTCOMES.map(o => [o, metrics.requests.labels(op, o)])) as Record<Outcome, ReturnType<typeof metrics.requests.labels>>)
  const durations = perOp(op => metrics.requestDuration.labels(op))

  // frps sends only JSON; JSON.parse keeps a "__proto__" key as a plain own key (never a prototype),
  // where fastify's default parser would refuse the call.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(null, JSON.parse(body as string))
    } catch (err) {
      done(new GatewayError('FRPGW_ERR_INVALID_JSON', (err as Error).message), undefined)
    }
  })

  app.setErrorHandler((err, req, reply) => {
    const gwErr = toGatewayError(err as Error, req, opts)
    const log = callLogger(opts.logger, req.id)
    if (gwErr.statusCode >= 500) log.error({ err }, 'request failed')
    else log.info({ code: gwErr.code, message: gwErr.message }, 'bad request')
    if (req.routeOptions.url === opts.path) invalidCalls.inc()
    void reply.code(gwErr.statusCode).type(JSON_TYPE).send(JSON.stringify(gwErr.toJSON()))
  })

  function respond (reply: FastifyReply, log: Logger, op: Op, content: Content, result: ChainResult, started: number): FastifyReply {
    const body = answerFor(result)
    const seconds = (performance.now() - started) / 1000
    requests[op][result.outcome].inc()
    durations[op].observe(seconds)
    // allowed calls (modified or not) are the steady stream: one line each only at debug
    if (result.reason !== undefined) log.info({ op, outcome: result.outcome, step: result.step, reason: result.reason, ms: seconds * 1000 }, 'call')
    else if (opts.logger.isLevelEnabled('debug')) log.debug({ op, outcome: result.outcome, ms: seconds * 1000, content }, 'call')
    if (ref.stopping === true) reply.header('connection', 'close')
    return reply.type(JSON_TYPE).send(body)
  }

  app.post(opts.path, (req, reply) => {
    const started = performance.now()
    const { wireOp, content } = envelope(req)
    const log = callLogger(opts.logger, req.id)
    const { op, result } = ref.current.call(wireOp, content, started, req.id, log)
    if (result instanceof Promise) return result.then(r => respond(reply, log, op, content, r, started))
    return respond(reply, log, op, content, result, started)
  })

  if (opts.adminRoutes) registerAdminRoutes(app, ref, metrics)
  logListening(app, opts, 'rpc')
  return app
}

/** The admin listener: metrics and health apart from the RPC port. */
export function buildAdminApp (ref: RuntimeRef, opts: AppOptions): FastifyInstance {
  const app = baseApp(opts)
  registerAdminRoutes(app, ref, opts.metrics)
  logListening(app, opts, 'admin')
  return app
}
