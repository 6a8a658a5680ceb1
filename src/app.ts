import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { STATUS_CODES, type IncomingMessage } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { Transform, type Readable } from 'node:stream'
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib'
import type { Logger } from 'pino'
import type { ChainResult } from './chain.js'
import { GatewayError } from './errors.js'
import { describeJsonError } from './json-error.js'
import { callLogger, escapeUnsafe, loggedReason, quote, reqidOf } from './log.js'
import { OUTCOMES, type Metrics, type Outcome } from './metrics.js'
import {
  answerFor, clip, isObject, isOp, OPS, parseCall, type Content, type Op
} from './protocol.js'
import { viewOf } from './registry/live.js'
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
  FST_ERR_CTP_EMPTY_JSON_BODY: new GatewayError('FRPGW_ERR_INVALID_JSON', 'empty body'),
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: new GatewayError('FRPGW_ERR_BAD_REQUEST', 'the body is not as long as Content-Length says'),
  FST_ERR_BAD_URL: new GatewayError('FRPGW_ERR_BAD_REQUEST', 'the URL has a malformed %-escape')
}

function toGatewayError (err: Error & { code?: string, statusCode?: number }, req: FastifyRequest, opts: AppOptions): GatewayError {
  if (err instanceof GatewayError) return err
  const known = err.code !== undefined ? FASTIFY_ERRORS[err.code] : undefined
  if (known !== undefined) return typeof known === 'function' ? known(err, opts) : known
  if (err.statusCode === 415) {
    const type = req.headers['content-type']
    return new GatewayError('FRPGW_ERR_UNSUPPORTED_MEDIA_TYPE', type !== undefined ? quote(type) : 'none')
  }
  // a client gone mid-body (aborted), or another of fastify's refusals of what was sent (its message may repeat the caller's path)
  if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) return new GatewayError('FRPGW_ERR_BAD_REQUEST', escapeUnsafe(clip(err.message, MAX_FRAMEWORK_MESSAGE)))
  return new GatewayError('FRPGW_ERR_INTERNAL', err.message)
}

const MAX_FRAMEWORK_MESSAGE = 200
const CHARSET = /;\s*charset\s*=\s*"?([^";\s]*)/i
const UTF8 = /^utf-?8$/i

/** Node's limit on the request line and headers together (its default, stated). */
export const MAX_HEADER_BYTES = 16384
/**
 * frps's Go client keeps an idle connection up to 90 s and does not retry a POST it wrote on a
 * connection the server closed meanwhile: the server must never be the one to close first.
 */
export const KEEP_ALIVE_TIMEOUT_MS = 95_000
/** Pending connections the kernel may queue for a burst of calls (as frpc clients log in again after an frps restart). */
export const LISTEN_BACKLOG = 4096
const MIN_REQUEST_TIMEOUT_MS = 1000
const TIMEOUT_CHECK_INTERVAL_MS = 500

/**
 * The server's time limits, from the call deadline: a request (line, headers and body) arrives within
 * `request` ms or gets a 408; a connection on which nothing moves for `idle` ms while a call is open is
 * closed; a kept-alive connection with no call is closed after keepAlive ms.
 */
export function serverTimeouts (deadlineMs: number): { request: number, idle: number, keepAlive: number } {
  const request = Math.max(deadlineMs, MIN_REQUEST_TIMEOUT_MS)
  return { request, idle: 2 * request, keepAlive: KEEP_ALIVE_TIMEOUT_MS }
}

function serverOptions (deadlineMs: number, https: AppOptions['https']): object {
  const t = serverTimeouts(deadlineMs)
  const node = {
    headersTimeout: t.request,
    connectionsCheckingInterval: TIMEOUT_CHECK_INTERVAL_MS,
    maxHeaderSize: MAX_HEADER_BYTES,
    // Node answers a request without Host by itself, outside the error contract; frps always sends it
    requireHostHeader: false
  }
  return {
    requestTimeout: t.request,
    connectionTimeout: t.idle,
    keepAliveTimeout: t.keepAlive,
    ...(https !== undefined ? { https: { ...https, ...node, handshakeTimeout: t.request } } : { http: node })
  }
}

/** An error answer written straight to a socket the HTTP parser gave up on; the connection is closed after it. */
function answerRaw (socket: Socket, err: GatewayError, extraHeaders = ''): void {
  const body = JSON.stringify(err.toJSON())
  socket.end(`HTTP/1.1 ${err.statusCode} ${STATUS_CODES[err.statusCode] ?? ''}\r\nContent-Type: ${JSON_TYPE}\r\n${extraHeaders}` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
  socket.destroySoon()
}

const parserError = (err: Error & { code?: string, reason?: string }): string =>
  `${err.reason ?? err.message} (${err.code ?? 'unknown'})`

const DECODERS: Readonly<Record<string, () => Transform>> = {
  gzip: createGunzip, 'x-gzip': createGunzip, deflate: createInflate, br: createBrotliDecompress
}

/**
 * The body as its Content-Encoding says. The decoded size is held to the body limit as it is produced,
 * so a small bomb stops decompressing at the limit; fastify checks Content-Length against
 * receivedEncodedLength, the bytes that came in.
 */
function decodeBody (req: FastifyRequest, payload: Readable, limit: number): Readable {
  const header = req.headers['content-encoding'] ?? ''
  const encoding = header.trim().toLowerCase()
  if (encoding === '' || encoding === 'identity') return payload
  const make = Object.hasOwn(DECODERS, encoding) ? DECODERS[encoding] : undefined
  if (make === undefined) throw new GatewayError('FRPGW_ERR_UNSUPPORTED_ENCODING', quote(header))
  const decoder = make()
  let decoded = 0
  const out = new Transform({
    transform (chunk: Buffer, _encoding, done) {
      decoded += chunk.length
      if (decoded <= limit) return done(null, chunk)
      payload.unpipe(decoder)
      decoder.destroy()
      done(new GatewayError('FRPGW_ERR_BODY_TOO_LARGE', limit))
    }
  }) as Transform & { receivedEncodedLength: number }
  out.receivedEncodedLength = 0
  // fastify may answer without reading the body (a 415, say): a decoding error must not go unhandled then
  out.on('error', () => {})
  payload.on('data', (chunk: Buffer) => { out.receivedEncodedLength += chunk.length })
  decoder.on('error', err => out.destroy(new GatewayError('FRPGW_ERR_BAD_ENCODING', encoding, err.message)))
  return payload.pipe(decoder).pipe(out)
}

/** Reads the envelope frps sends; every way it can be wrong is a 400 with its own code. */
function envelope (req: FastifyRequest): { wireOp: Op, content: Content } {
  const body = req.body as { op?: unknown, content?: unknown } | null
  // no Content-Type and no body: fastify parses nothing; the same answer as an empty JSON body
  if (body === undefined) throw new GatewayError('FRPGW_ERR_INVALID_JSON', 'empty body')
  if (!isObject(body)) throw new GatewayError('FRPGW_ERR_BAD_ENVELOPE', 'body is not an object')
  if (typeof body.op !== 'string') throw new GatewayError('FRPGW_ERR_BAD_ENVELOPE', '"op" is missing or not a string')
  if (!isOp(body.op)) throw new GatewayError('FRPGW_ERR_UNKNOWN_OP', quote(body.op))
  const queryOp = (req.query as Record<string, unknown>).op
  if (queryOp !== undefined && queryOp !== body.op) throw new GatewayError('FRPGW_ERR_OP_MISMATCH', quote(queryOp), quote(body.op))
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
  metrics.registryProxies.source.count = async () => await ref.current.registry?.store.count() ?? 0
  metrics.redisUp.source.answers = async () => ref.current.redisInUse && await ref.current.ready() === null
  // errors answered here, not thrown: the error handler counts what it answers as a malformed call from frps
  const proxies = async (reply: FastifyReply, user?: string): Promise<unknown> => {
    const registry = ref.current.registry
    let err = new GatewayError('FRPGW_ERR_NO_REGISTRY')
    if (registry !== undefined) {
      try {
        return { proxies: (await registry.store.list(user)).map(viewOf) }
      } catch (e) {
        err = new GatewayError('FRPGW_ERR_REGISTRY_UNAVAILABLE', (e as Error).message)
      }
    }
    return await reply.code(err.statusCode).type(JSON_TYPE).send(JSON.stringify(err.toJSON()))
  }
  app.get('/proxies', async (_, reply) => await proxies(reply))
  app.get<{ Params: { user: string } }>('/proxies/:user', async (req, reply) => await proxies(reply, req.params.user))
  app.get('/healthz', async () => ({ status: 'ok' }))
  app.get('/readyz', async (_, reply) => {
    const reason = await ref.current.ready()
    if (reason === null) return { status: 'ready' }
    reply.code(503)
    return { status: 'not ready', reason }
  })
}

/**
 * What a listener needs besides AppOptions: the call deadline its timeouts derive from; on the RPC
 * listener, its path and the counter of refused calls.
 */
interface Listener { deadlineMs: number, rpc?: { path: string, invalid: { inc: () => void } } }

/**
 * A fastify instance whose every answer, down to what Node's HTTP parser refuses and what times out,
 * is an FRPGW_ERR_ error that is logged and (on the RPC listener) counted as op="invalid".
 */
function baseApp (opts: AppOptions, listener: Listener, extra: object = {}): FastifyInstance {
  const timeouts = serverTimeouts(listener.deadlineMs)
  // sockets answered by the parser's error path: the request fastify may still hold on them is not answered twice
  const answered = new WeakSet<Socket>()
  const refused = (err: GatewayError, log: Logger): void => {
    log.info({ code: err.code, message: err.message }, 'bad request')
    listener.rpc?.invalid.inc()
  }
  // No fastify logger: with one, fastify makes a child logger and runs its logging hooks on every
  // request (measured: 10 to 15% of an empty chain's throughput). The gateway logs for itself,
  // one line per call, through a per-call logger bound to frps's reqid.
  const app = Fastify({
    logger: false,
    requestIdHeader: false,
    // GET /proxies/USER: a user name as long as a request line may be (fastify's default cuts at 100)
    routerOptions: { maxParamLength: MAX_HEADER_BYTES },
    // a call that began arriving before a stop is in flight: answered by the chain (Connection: close), not by fastify's own 503 body
    return503OnClosing: false,
    genReqId: (req: { headers: Record<string, string | string[] | undefined> }) => reqidOf(req.headers['x-frp-reqid']),
    ...serverOptions(listener.deadlineMs, opts.https),
    clientErrorHandler (err: Error & { code?: string }, socket: Socket) {
      if (socket.destroyed) return
      // a reset, or TLS that failed or never began (on https): there is no HTTP to answer in.
      // A connection that never sent a byte is closed as an idle kept-alive one is: no call, no answer.
      const http = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code?.startsWith('HPE_') === true
      if (!http || (err.code === 'ERR_HTTP_REQUEST_TIMEOUT' && socket.bytesRead === 0)) return socket.destroy()
      // a request answered before its body came (a 404, 405 or 415) whose body is still coming: it has had its one answer
      const incoming = (socket as Socket & { parser?: { incoming?: IncomingMessage | null } }).parser?.incoming
      const pending = (socket as Socket & { _httpMessage?: { headersSent: boolean } | null })._httpMessage
      if (incoming != null && !incoming.complete && pending == null) return socket.destroy()
      const gwErr = err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? new GatewayError('FRPGW_ERR_REQUEST_TIMEOUT', timeouts.request)
        : err.code === 'HPE_HEADER_OVERFLOW'
          ? new GatewayError('FRPGW_ERR_HEADERS_TOO_LARGE', MAX_HEADER_BYTES)
          : new GatewayError('FRPGW_ERR_BAD_REQUEST', parserError(err))
      answered.add(socket)
      // a request whose headers came (its body did not, or went bad) is a call with a reqid
      refused(gwErr, incoming != null && !incoming.complete ? callLogger(opts.logger, reqidOf(incoming.headers['x-frp-reqid'])) : opts.logger)
      if (socket.writable && pending?.headersSent !== true) answerRaw(socket, gwErr)
      else socket.destroy()
    },
    frameworkErrors (err: Error, req: FastifyRequest, reply: FastifyReply) {
      const gwErr = toGatewayError(err, req, opts)
      refused(gwErr, callLogger(opts.logger, req.id))
      void reply.code(gwErr.statusCode).type(JSON_TYPE).send(JSON.stringify(gwErr.toJSON()))
    },
    ...extra
  }) as unknown as FastifyInstance
  // CONNECT is handed to a 'connect' listener, or the socket is closed without a word
  app.server.on('connect', (req: IncomingMessage, socket: Socket) => {
    const err = new GatewayError('FRPGW_ERR_METHOD_NOT_ALLOWED', 'CONNECT', quote(req.url ?? ''))
    refused(err, callLogger(opts.logger, reqidOf(req.headers['x-frp-reqid'])))
    answerRaw(socket, err, isRpcPath((req.url ?? '').split('?')[0]) ? 'Allow: POST\r\n' : '')
  })
  // Node answers an Expect other than 100-continue by itself (a bare 417): answered as other refusals are
  app.server.on('checkExpectation', (req: IncomingMessage) => {
    const err = new GatewayError('FRPGW_ERR_BAD_REQUEST', `Expect ${quote(req.headers.expect ?? '')} is not supported`)
    refused(err, callLogger(opts.logger, reqidOf(req.headers['x-frp-reqid'])))
    answerRaw(req.socket, err)
  })
  // the router matches a path with its %-escapes decoded (POST /h%61ndler is the RPC): so does the 405
  const isRpcPath = (path: string): boolean => {
    try {
      return listener.rpc !== undefined && decodeURIComponent(path) === listener.rpc.path
    } catch {
      return false
    }
  }
  // frps posts every call: a POST elsewhere is most likely an frps whose httpPlugins path or port is wrong
  const rpcHint = listener.rpc !== undefined
    ? `: the plugin RPC is at ${quote(listener.rpc.path)} (listen.path); check the path in frps's httpPlugins`
    : `: this is the admin listener; the plugin RPC is on the listen port, at ${quote(opts.path)}`
  const noRoute = (req: FastifyRequest, reply: FastifyReply): FastifyReply => {
    const path = req.url.split('?')[0]
    const err = isRpcPath(path) && req.method !== 'POST'
      ? new GatewayError('FRPGW_ERR_METHOD_NOT_ALLOWED', req.method, quote(path))
      : new GatewayError('FRPGW_ERR_NOT_FOUND', `${req.method} ${quote(path)}`, req.method === 'POST' ? rpcHint : '')
    refused(err, callLogger(opts.logger, req.id))
    if (err.statusCode === 405) reply.header('allow', 'POST')
    return reply.code(err.statusCode).type(JSON_TYPE).send(JSON.stringify(err.toJSON()))
  }
  // an unknown route is answered before its body is read: what the body holds (not JSON, too large) is not why it is refused
  void app.register(async scope => {
    scope.addHook('onRequest', async (req, reply) => noRoute(req, reply))
    scope.setNotFoundHandler(noRoute)
  })
  // the common other methods on the RPC path are answered before their body is read (or refused)
  if (listener.rpc !== undefined) {
    app.route({ method: ['GET', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'QUERY'], url: listener.rpc.path, onRequest: async (req, reply) => noRoute(req, reply), handler: async () => {} })
  }
  app.setErrorHandler((err, req, reply) => {
    const gwErr = toGatewayError(err as Error, req, opts)
    // the parser's error path answered this socket already (a body that stopped coming, say)
    if (answered.has(req.raw.socket)) return reply.code(gwErr.statusCode).send()
    const log = callLogger(opts.logger, req.id)
    if (gwErr.statusCode >= 500) {
      log.error({ err }, 'request failed')
      listener.rpc?.invalid.inc()
    } else {
      refused(gwErr, log)
    }
    void reply.code(gwErr.statusCode).type(JSON_TYPE).send(JSON.stringify(gwErr.toJSON()))
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
  const rpc = { path: opts.path, invalid: metrics.requests.labels('invalid', 'error') }
  const app = baseApp(opts, { deadlineMs: ref.current.config.deadlineMs, rpc }, { bodyLimit: opts.bodyLimitBytes })
  const perOp = <T>(make: (op: Op) => T) => Object.fromEntries(OPS.map(op => [op, make(op)])) as Record<Op, T>
  const requests = perOp(op => Object.fromEntries(OUTCOMES.map(o => [o, metrics.requests.labels(op, o)])) as Record<Outcome, ReturnType<typeof metrics.requests.labels>>)
  const durations = perOp(op => metrics.requestDuration.labels(op))

  // frps sends only JSON; JSON.parse keeps a "__proto__" key as a plain own key (never a prototype),
  // where fastify's default parser would refuse the call.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    // the body is read as UTF-8 (frps names no charset): another one would be read wrong
    const charset = CHARSET.exec(req.headers['content-type'] ?? '')?.[1]
    if (charset !== undefined && !UTF8.test(charset)) {
      done(new GatewayError('FRPGW_ERR_UNSUPPORTED_MEDIA_TYPE', `${quote(req.headers['content-type'])} (charset: only utf-8)`), undefined)
      return
    }
    try {
      done(null, parseCall(body as string))
    } catch {
      // JSON.parse's message quotes the body, which may hold a secret: say only what and where
      done(new GatewayError('FRPGW_ERR_INVALID_JSON', describeJsonError(body as string)), undefined)
    }
  })

  /**
   * Counted last, once all that can throw (the answer, the log line) is done: a call that fails before
   * is answered and counted by the error handler instead, so no call is counted twice.
   */
  function respond (reply: FastifyReply, log: Logger, op: Op, content: Content, result: ChainResult, started: number): FastifyReply {
    const body = answerFor(op, result)
    const seconds = (performance.now() - started) / 1000
    // allowed calls (modified or not) are the steady stream: one line each only at debug
    if (result.reason !== undefined) log.info({ op, outcome: result.outcome, step: result.step, reason: loggedReason(result.loggedReason ?? result.reason), ms: seconds * 1000 }, 'call')
    else if (opts.logger.isLevelEnabled('debug')) log.debug({ op, outcome: result.outcome, failed: result.failed, ms: seconds * 1000, content }, 'call')
    requests[op][result.outcome].inc()
    durations[op].observe(seconds)
    if (ref.stopping === true) reply.header('connection', 'close')
    return reply.type(JSON_TYPE).send(body)
  }

  // a call without Content-Encoding (every call frps makes) hands fastify no new stream to keep
  const preParsing = (req: FastifyRequest, _reply: FastifyReply, payload: Readable, done: (err: Error | null, payload?: Readable) => void): void => {
    if (req.headers['content-encoding'] === undefined) return done(null)
    try {
      done(null, decodeBody(req, payload, opts.bodyLimitBytes))
    } catch (err) {
      done(err as Error)
    }
  }
  app.post(opts.path, { preParsing }, (req, reply) => {
    const started = performance.now()
    const { wireOp, content } = envelope(req)
    const log = callLogger(opts.logger, req.id)
    // the runtime that ran the call commits it, even when a reload swapped in another meanwhile
    const runtime = ref.current
    const { op, result, ctx } = runtime.call(wireOp, content, started, req.id, log)
    if (result instanceof Promise) {
      return result.then(r => {
        const answered = respond(reply, log, op, content, r, started)
        runtime.commit(op, content, r, ctx)
        return answered
      })
    }
    const answered = respond(reply, log, op, content, result, started)
    runtime.commit(op, content, result, ctx)
    return answered
  })

  if (opts.adminRoutes) registerAdminRoutes(app, ref, metrics)
  logListening(app, opts, 'rpc')
  return app
}

/** The admin listener: metrics and health apart from the RPC port. */
export function buildAdminApp (ref: RuntimeRef, opts: AppOptions): FastifyInstance {
  const app = baseApp(opts, { deadlineMs: ref.current.config.deadlineMs })
  registerAdminRoutes(app, ref, opts.metrics)
  logListening(app, opts, 'admin')
  return app
}
