import { execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import { closeSync, constants, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, renameSync } from 'node:fs'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { createRedisClient } from '../../src/stores/redis-client.js'
import { FileSink } from '../../src/sinks/file.js'
import { SinkQueue, type QueueResult } from '../../src/sinks/queue.js'
import { RedisStreamSink } from '../../src/sinks/redis-stream.js'
import type { Sink, SinkError } from '../../src/sinks/sink.js'
import { codeInAnswerOf, retryAfter, WebhookSink } from '../../src/sinks/webhook.js'
import { timerLateness } from '../helpers/lateness.js'
import { redisCli, startRedis, waitFor } from '../helpers/redis.js'

interface Receiver { url: string, bodies: string[], inFlight: () => number, most: () => number }

/** A real HTTP receiver; `answer` decides per request (the n-th, from 0). */
async function receiver (t: Test, answer: (n: number, req: IncomingMessage, res: ServerResponse) => void): Promise<Receiver> {
  const bodies: string[] = []
  let n = 0
  let open = 0
  let most = 0
  const server = createServer((req, res) => {
    open++
    most = Math.max(most, open)
    res.on('close', () => { open-- })
    let body = ''
    req.on('data', d => { body += String(d) })
    req.on('end', () => { bodies.push(body); answer(n++, req, res) })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, bodies, inFlight: () => open, most: () => most }
}

function queueOf (sink: Sink, opts: Partial<{ size: number, concurrency: number, retries: number, backoffMs: number, maxRetryAfterMs: number }> = {}) {
  const counts: Record<string, number> = {}
  const failures: string[] = []
  const queue = new SinkQueue(sink, {
    size: 100, concurrency: 4, retries: 3, backoffMs: 20, maxRetryAfterMs: 60_000, ...opts,
    count: (r: QueueResult) => { counts[r] = (counts[r] ?? 0) + 1 },
    onFailure: err => failures.push(err.message)
  })
  return { queue, counts, failures }
}

t.test('webhook: each event is POSTed as JSON; a 5xx is retried with backoff, a 4xx is not', async t => {
  const rx = await receiver(t, (n, req, res) => {
    if (req.headers['content-type'] !== 'application/json' || req.headers['x-key'] !== 'k') return res.writeHead(400).end()
    const body = rx.bodies[n]
    if (body.includes('flaky') && n < 2) return res.writeHead(503).end()
    if (body.includes('refused')) return res.writeHead(422).end('no')
    if (body.includes('slack')) return res.writeHead(404, { 'content-type': 'text/html' }).end('no_service')
    if (body.includes('discord')) return res.writeHead(400).end('{"message": "Cannot send an empty message",\n "code": 50006}')
    if (body.includes('long')) return res.writeHead(413).end(`${'a'.repeat(150)}\r\n\t${'b'.repeat(5000)}`)
    res.writeHead(204).end()
  })
  const sink = new WebhookSink({ url: rx.url, headers: { 'x-key': 'k' }, timeoutMs: 2000 })
  t.teardown(() => sink.close())
  const { queue, counts, failures } = queueOf(sink, { concurrency: 1 })
  queue.push('{"text":"flaky"}')
  queue.push('{"text":"refused"}')
  for (const what of ['slack', 'discord', 'long']) queue.push(`{"text":"${what}"}`)
  t.equal(await queue.drain(5000), true)
  t.same(counts, { retried: 2, sent: 1, failed: 4 })
  t.same(rx.bodies.slice(0, 4), ['{"text":"flaky"}', '{"text":"flaky"}', '{"text":"flaky"}', '{"text":"refused"}'])
  // the answer's start says why, on one line (the 503s, answered with nothing, say nothing more)
  const hook = `webhook ${new URL(rx.url).origin}/hook`
  t.same(failures, [`${hook}: HTTP 422: no`, `${hook}: HTTP 404: no_service`, `${hook}: HTTP 400: {"message": "Cannot send an empty message", "code": 50006}`,
    `${hook}: HTTP 413: ${'a'.repeat(150)} ${'b'.repeat(49)}...`])
})

t.test('webhook: a 429 or 503 with Retry-After waits that long before the next attempt (seconds or a date), at most maxRetryAfterMs; other statuses keep the backoff', async t => {
  const arrivals: number[] = []
  const rx = await receiver(t, (n, _req, res) => {
    arrivals.push(performance.now())
    const body = rx.bodies[n]
    const first = rx.bodies.indexOf(body) === n
    if (!first) return res.writeHead(204).end()
    if (body.includes('seconds')) return res.writeHead(429, { 'retry-after': '1' }).end()
    if (body.includes('date')) return res.writeHead(503, { 'retry-after': new Date(Date.now() + 2000).toUTCString() }).end()
    if (body.includes('hour')) return res.writeHead(429, { 'retry-after': '3600' }).end()
    res.writeHead(500, { 'retry-after': '30' }).end()
  })
  const sink = new WebhookSink({ url: rx.url, headers: {}, timeoutMs: 2000 })
  t.teardown(() => sink.close())
  const gaps: Record<string, number> = {}
  for (const what of ['seconds', 'date', 'hour', 'error']) {
    const { queue, counts, failures } = queueOf(sink, { concurrency: 1, maxRetryAfterMs: 1500 })
    const from = arrivals.length
    queue.push(`{"text":"${what}"}`)
    t.equal(await queue.drain(10_000), true, `${what}: delivered within 10 s`)
    t.same(counts, { retried: 1, sent: 1 }, `${what}: one more attempt, sent`)
    t.same(failures, [])
    gaps[what] = arrivals[from + 1] - arrivals[from]
  }
  t.ok(gaps.seconds >= 1000 - 5, `Retry-After: 1 on a 429: the next attempt ${Math.round(gaps.seconds)} ms later`)
  // a date has whole seconds: 2 s from now is 1 to 2 s away
  t.ok(gaps.date >= 1000 - 5, `Retry-After: a date 2 s ahead on a 503: the next attempt ${Math.round(gaps.date)} ms later`)
  t.ok(gaps.hour >= 1500 - 5 && gaps.hour < 8000, `Retry-After: 3600 on a 429: the next attempt ${Math.round(gaps.hour)} ms later (maxRetryAfterMs 1500)`)
  t.ok(gaps.error < 8000, `Retry-After: 30 on a 500 is not followed: the next attempt ${Math.round(gaps.error)} ms later`)
})

t.test('webhook: Retry-After read as delay-seconds or an HTTP-date, nothing else', async t => {
  const now = Date.parse('Fri, 27 Nov 2026 17:00:00 GMT')
  t.equal(retryAfter('5', now), 5000)
  t.equal(retryAfter(' 120 ', now), 120_000)
  t.equal(retryAfter('Fri, 27 Nov 2026 17:00:30 GMT', now), 30_000)
  t.equal(retryAfter('Fri, 27 Nov 2026 16:59:00 GMT', now), 0, 'a date past')
  for (const bad of [undefined, '', '-1', '1.5', 'soon', '5 s', 'Friday, 27-Nov-26 17:00:30 GMT']) t.equal(retryAfter(bad, now), 0, JSON.stringify(bad))
})

t.test('webhook: a chat API that answers 200 to a message it refuses (DingTalk, WeCom, Feishu, Lark): its code decides, the event is given up with its reason, not tried again', async t => {
  const rx = await receiver(t, (n, _req, res) => {
    const body = rx.bodies[n]
    const answer = body.includes('frp')
      ? (body.includes('feishu') ? '{"StatusCode":0,"StatusMessage":"success","code":0,"data":{},"msg":"success"}' : '{"errcode":0,"errmsg":"ok"}')
      : body.includes('feishu') ? '{"code":19024,"data":{},"msg":"Key Words Not Found"}'
        : body.includes('text') ? 'not json' : '{"errcode":310000,"errmsg":"keywords not in content\\n\\u001b[31m"}'
    res.writeHead(200, { 'content-type': 'application/json' }).end(answer)
  })
  const dingtalk = new WebhookSink({ url: rx.url, headers: {}, timeoutMs: 2000, codeInAnswer: codeInAnswerOf(new URL('https://oapi.dingtalk.com/robot/send?access_token=x')) })
  const feishu = new WebhookSink({ url: rx.url, headers: {}, timeoutMs: 2000, codeInAnswer: codeInAnswerOf(new URL('https://open.feishu.cn/open-apis/bot/v2/hook/x')) })
  const plain = new WebhookSink({ url: rx.url, headers: {}, timeoutMs: 2000 })
  t.teardown(async () => { await Promise.all([dingtalk.close(), feishu.close(), plain.close()]) })
  const origin = new URL(rx.url).origin
  for (const [sink, events, expected, reasons] of [
    [dingtalk, ['{"msgtype":"text","text":{"content":"frp: alice"}}', '{"msgtype":"markdown"}', '{"text":"answered not json"}'], { sent: 2, failed: 1 }, ['refused: errcode 310000: keywords not in content [31m']],
    [feishu, ['{"msg_type":"text","content":{"text":"frp feishu"}}', '{"msg_type":"text","content":{"text":"feishu"}}'], { sent: 1, failed: 1 }, ['refused: code 19024: Key Words Not Found']],
    // any other receiver: a 2xx is sent, whatever its body
    [plain, ['{"msgtype":"markdown"}'], { sent: 1 }, []]
  ] as const) {
    const { queue, counts, failures } = queueOf(sink, { concurrency: 1 })
    const from = rx.bodies.length
    for (const e of events) queue.push(e)
    t.equal(await queue.drain(5000), true)
    t.same(counts, expected)
    t.same(failures, reasons.map(r => `webhook ${origin}/hook: ${r}`))
    t.same(rx.bodies.slice(from), events, 'each posted once')
  }
  t.same(['https://oapi.dingtalk.com/robot/send?access_token=x', 'https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=x', 'https://open.feishu.cn/open-apis/bot/v2/hook/x',
    'https://open.larksuite.com/open-apis/bot/v2/hook/x', 'https://hooks.slack.com/services/T/B/X', 'https://discord.com/api/webhooks/1/x', 'https://dingtalk.com.example/robot/send']
    .map(u => codeInAnswerOf(new URL(u))?.code), ['errcode', 'errcode', 'code', 'code', undefined, undefined, undefined])
})

t.test('webhook: an answer is read up to 64 KiB, its status decides, also when it stalls after the status: a 2xx is sent, not sent again', async t => {
  const big = 'x'.repeat(200 * 1024)
  const rx = await receiver(t, (n, req, res) => {
    const body = rx.bodies[n]
    if (body.includes('stall')) {
      res.writeHead(200, { 'content-length': '10' }).write('12345')
      return
    }
    if (body.includes('endless')) {
      // 32 KiB every 10 ms, never ended: only cutting it at 64 KiB frees the sink before its timeout
      res.writeHead(200)
      const timer = setInterval(() => res.write(big.slice(0, 32 * 1024)), 10)
      res.on('close', () => clearInterval(timer))
      return
    }
    res.writeHead(body.includes('bad') && n < 3 ? 500 : 200).end(big)
  })
  const sink = new WebhookSink({ url: rx.url, headers: {}, timeoutMs: 300 })
  t.teardown(() => sink.close())
  const { queue, counts, failures } = queueOf(sink, { concurrency: 1, retries: 1 })
  queue.push('{"text":"ok"}')
  queue.push('{"text":"endless"}')
  queue.push('{"text":"bad"}')
  queue.push('{"text":"stall"}')
  t.equal(await queue.drain(5000), true)
  t.same(counts, { sent: 4, retried: 1 }, 'a 200 with 200 KiB, an endless 200 and a stalled 200 are sent; a 500 with 200 KiB is retried, then sent')
  t.same(rx.bodies, ['{"text":"ok"}', '{"text":"endless"}', '{"text":"bad"}', '{"text":"bad"}', '{"text":"stall"}'], 'the stalled one is not sent twice')
  t.same(failures, [])
})

t.test('webhook: a dead receiver costs retries, then the event is given up; a silent one times out', async t => {
  const dead = new WebhookSink({ url: 'http://127.0.0.1:1/hook', headers: {}, timeoutMs: 500 })
  t.teardown(() => dead.close())
  const a = queueOf(dead, { retries: 2 })
  a.queue.push('{}')
  t.equal(await a.queue.drain(5000), true)
  t.same(a.counts, { retried: 2, failed: 1 })
  t.match(a.failures[0], /^webhook http:\/\/127\.0\.0\.1:1\/hook: .*ECONNREFUSED/)

  const rx = await receiver(t, () => {}) // never answers
  const silent = new WebhookSink({ url: rx.url, headers: {}, timeoutMs: 100 })
  t.teardown(() => silent.close())
  const b = queueOf(silent, { retries: 1 })
  b.queue.push('{}')
  t.equal(await b.queue.drain(5000), true)
  t.same(b.counts, { retried: 1, failed: 1 })
  t.same(b.failures, [`webhook ${new URL(rx.url).origin}/hook: no answer within 100 ms`])
})

t.test('webhook: an attempt is given all of timeoutMs, whenever it starts, and at most a second more', async t => {
  const rx = await receiver(t, () => {}) // never answers
  const sink = new WebhookSink({ url: rx.url, headers: {}, timeoutMs: 998 })
  t.teardown(() => sink.close())
  // a machine too loaded to run the process when a timer is due gives up as late
  const lateness = timerLateness()
  const took = await Promise.all([0, 130, 260, 390].map(async at => {
    await sleep(at)
    const started = performance.now()
    await t.rejects(sink.send('{}'), { message: `webhook ${new URL(rx.url).origin}/hook: no answer within 998 ms` })
    return performance.now() - started
  }))
  const late = lateness()
  for (const ms of took) t.ok(ms >= 998 - 2 && ms < 998 + 1000 + 300 + late, `gave up after ${Math.round(ms)} ms (timers up to ${Math.round(late)} ms late)`)
})

t.test('webhook: an answer dripped slowly is cut within timeoutMs and a second more; its status, once come, decides', async t => {
  // headers at once, then one byte every 200 ms: undici's timers see no wait long enough
  const rx = await receiver(t, (_n, req, res) => {
    res.writeHead(req.headers['x-status'] === '503' ? 503 : 200)
    const timer = setInterval(() => res.write('x'), 200)
    res.on('close', () => clearInterval(timer))
  })
  for (const status of ['200', '503']) {
    const sink = new WebhookSink({ url: rx.url, headers: { 'x-status': status }, timeoutMs: 500 })
    t.teardown(() => sink.close())
    const lateness = timerLateness()
    const started = performance.now()
    const outcome = await sink.send('{}').then(() => 'sent', (err: SinkError) => `${err.message} (retryable: ${err.retryable})`)
    const took = performance.now() - started
    const late = lateness()
    if (status === '200') t.equal(outcome, 'sent', 'a 200 dripped')
    else t.match(outcome, new RegExp(`^webhook ${new URL(rx.url).origin}/hook: HTTP 503(: x+)? \\(retryable: true\\)$`), 'a 503 dripped: what came of it shown')
    t.ok(took >= 500 && took < 500 + 1000 + 300 + late, `cut after ${Math.round(took)} ms (timers up to ${Math.round(late)} ms late)`)
  }
  await waitFor('the cut connections closed at the receiver', async () => rx.inFlight() === 0, 2000)
})

t.test('webhook: every send of the step\'s concurrency is in flight at once, none waits for a connection outside its timeout', async t => {
  const rx = await receiver(t, () => {}) // never answers
  const sink = new WebhookSink({ url: rx.url, headers: {}, timeoutMs: 400, connections: 16 })
  t.teardown(() => sink.close())
  const took = await Promise.all(Array.from({ length: 16 }, async () => {
    const started = performance.now()
    await t.rejects(sink.send('{}'), { message: /no answer within 400 ms/ })
    return performance.now() - started
  }))
  t.equal(rx.most(), 16)
  for (const ms of took) t.ok(ms < 400 + 1000 + 300, `gave up after ${Math.round(ms)} ms`)
})

t.test('the queue is bounded: with the receiver stuck, the oldest events are dropped and counted, and concurrency holds', async t => {
  let release: (() => void) | undefined
  const stuck = new Promise<void>(resolve => { release = resolve })
  const rx = await receiver(t, (_n, _req, res) => { void stuck.then(() => res.writeHead(200).end()) })
  const sink = new WebhookSink({ url: rx.url, headers: {}, timeoutMs: 10_000 })
  t.teardown(() => sink.close())
  const { queue, counts } = queueOf(sink, { size: 10, concurrency: 3 })
  for (let i = 0; i < 50; i++) queue.push(JSON.stringify({ i }))
  await sleep(300)
  t.equal(queue.inFlight, 3)
  t.equal(queue.length, 10)
  t.equal(counts.dropped, 37, '50 - 3 in flight - 10 waiting')
  t.equal(rx.most(), 3, 'never more than concurrency at the receiver')
  release?.()
  t.equal(await queue.drain(5000), true)
  t.equal(counts.sent, 13)
  t.same(rx.bodies.slice(3).map(b => JSON.parse(b).i).sort((a, b) => a - b), [40, 41, 42, 43, 44, 45, 46, 47, 48, 49], 'the newest were kept')
})

t.test('onLost runs for an event dropped for a newer one or given up, never for one sent or left at drain', async t => {
  let release: (() => void) | undefined
  const stuck = new Promise<void>(resolve => { release = resolve })
  // the first request hangs until released, the third is refused for good (400), the others are taken
  const rx = await receiver(t, (n, _req, res) => { if (n === 0) void stuck.then(() => res.writeHead(204).end()); else res.writeHead(n === 2 ? 400 : 204).end() })
  const sink = new WebhookSink({ url: rx.url, headers: {}, timeoutMs: 10_000 })
  t.teardown(() => sink.close())
  const { queue, counts } = queueOf(sink, { size: 2, concurrency: 1 })
  const lost: string[] = []
  const push = (name: string): void => { queue.push(JSON.stringify({ name }), '', () => lost.push(name)) }
  for (const name of ['a', 'b', 'c', 'd']) push(name)
  t.same(lost, ['b'], 'b dropped for d (a in flight, c and d wait)')
  release?.()
  t.equal(await queue.drain(5000), true)
  t.same(lost, ['b', 'd'], 'd refused for good (the third request)')
  t.same([counts.sent, counts.dropped, counts.failed], [2, 1, 1])
  const left = queueOf(new WebhookSink({ url: 'http://127.0.0.1:1/hook', headers: {}, timeoutMs: 1000 }), { retries: 5, backoffMs: 1000 })
  left.queue.push('{}', '', () => lost.push('left'))
  await left.queue.drain(100)
  t.same(lost, ['b', 'd'], 'nothing goes after an event left at drain')
})

t.test('drain gives up after its bound: what waits is dropped and counted; closing the sink cuts the send in flight, also dropped', async t => {
  const rx = await receiver(t, () => {})
  const sink = new WebhookSink({ url: rx.url, headers: {}, timeoutMs: 10_000 })
  t.teardown(() => sink.close())
  const { queue, counts, failures } = queueOf(sink, { concurrency: 1 })
  for (let i = 0; i < 5; i++) queue.push('{}')
  t.equal(await queue.drain(200), false)
  t.equal(counts.dropped, 4)
  queue.push('{}')
  t.equal(counts.dropped, 5, 'a drained queue takes nothing more')
  t.equal(rx.inFlight(), 1)
  const closing = performance.now()
  await sink.close()
  const ms = performance.now() - closing
  t.ok(ms < 1000, `closed in ${Math.round(ms)} ms, not when the send's timeoutMs (10 s) ends`)
  for (let i = 0; i < 50 && counts.dropped === 5; i++) await new Promise(resolve => setTimeout(resolve, 10))
  t.same({ ...counts, failures }, { dropped: 6, failures: [] }, 'the send cut at the stop is left undone, not a failed event')
})

t.test('redisStream: a Redis that cannot take writes now (a demoted master: READONLY) is away, not a refusal: events wait for it', async t => {
  const [master, other] = await Promise.all([startRedis(t), startRedis(t)])
  const client = createRedisClient({ url: master.url })
  t.teardown(() => client.disconnect())
  await once(client, 'ready')
  const { queue, counts, failures } = queueOf(new RedisStreamSink(client, 'audit', 100), { retries: 1, backoffMs: 50 })
  await redisCli(master.port, 'REPLICAOF', '127.0.0.1', String(other.port))
  queue.push('{"n":1}')
  await sleep(1500)
  t.same([failures, counts.sent, counts.failed], [[], undefined, undefined], 'neither sent nor given up while it is a replica')
  await redisCli(master.port, 'REPLICAOF', 'NO', 'ONE')
  t.equal(await queue.drain(10_000), true)
  t.equal(counts.sent, 1)
  t.equal(await redisCli(master.port, 'XLEN', 'audit'), '1\n')
})

t.test('redisStream: XADD with one field `event`, trimmed to about maxLen; events wait while Redis is away, past their retries', async t => {
  const redis = await startRedis(t)
  const client = createRedisClient({ url: redis.url })
  t.teardown(() => client.disconnect())
  await once(client, 'ready')
  const sink = new RedisStreamSink(client, 'audit', 100)
  const { queue, counts } = queueOf(sink, { retries: 8, backoffMs: 100 })
  queue.push('{"op":"Login","outcome":"allow"}')
  t.equal(await queue.drain(5000), true)
  const [[, fields]] = JSON.parse(await redisCli(redis.port, '--json', 'XRANGE', 'audit', '-', '+')) as Array<[string, string[]]>
  t.same(fields, ['event', '{"op":"Login","outcome":"allow"}'])

  // one retry after 100 ms would give an event up at once: a Redis away spends none, the events wait for it
  const later = queueOf(sink, { retries: 1, backoffMs: 100, concurrency: 1 })
  await redis.stop()
  for (let i = 0; i < 3; i++) later.queue.push(`{"n":${i}}`)
  await sleep(2500)
  t.same({ ...later.counts, retried: undefined }, { retried: undefined }, 'nothing sent, failed or dropped while away')
  t.equal(later.queue.length + later.queue.inFlight, 3, 'all three wait')
  await redis.start()
  t.equal(await later.queue.drain(10_000), true)
  t.ok((later.counts.retried ?? 0) >= 3, `asked again while Redis was away (${later.counts.retried})`)
  t.same([later.counts.sent, later.counts.failed], [3, undefined])
  t.equal(await redisCli(redis.port, 'XLEN', 'audit'), '3\n', 'the restarted Redis (nothing persisted) has the three events')

  // Redis answers no (the key is not a stream): tried again, then given up
  await redisCli(redis.port, 'SET', 'not-a-stream', 'x')
  const refused = queueOf(new RedisStreamSink(client, 'not-a-stream', 100), { retries: 1, backoffMs: 10 })
  refused.queue.push('{}')
  t.equal(await refused.queue.drain(5000), true)
  t.same([refused.counts.retried, refused.counts.failed, refused.failures.length], [1, 1, 1])
  t.match(refused.failures[0], `redisStream not-a-stream: redis ${redis.url}: WRONGTYPE`, 'naming the Redis')

  const many = queueOf(sink, { size: 1000 })
  for (let i = 0; i < 500; i++) many.queue.push(`{"i":${i}}`)
  t.equal(await many.queue.drain(10_000), true)
  const len = Number(await redisCli(redis.port, 'XLEN', 'audit'))
  t.ok(len >= 100 && len < 300, `trimmed to about maxLen: ${len}`)
  t.equal(counts.sent, 1)
})

t.test('file: a FIFO (/dev/stdout in a container) with no reader fails its sends at once, never held for ever; with a reader, it gets the events', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'frpgw-fifo-'))
  const path = join(dir, 'events.log')
  execFileSync('mkfifo', [path])
  const sink = new FileSink(path)
  t.teardown(async () => { await sink.close() })
  const lonely = await sink.send('{"a":1}').then(() => 'sent', (err: SinkError) => err.message)
  t.match(lonely, /ENXIO/, 'no reader: the open fails at once')
  const reader = spawn('cat', [path], { stdio: ['ignore', 'pipe', 'ignore'] })
  t.teardown(() => { reader.kill() })
  let read = ''
  reader.stdout.setEncoding('utf8').on('data', (d: string) => { read += d })
  await sleep(200)
  t.equal(await sink.send('{"a":2}').then(() => 'sent', (err: SinkError) => err.message), 'sent')
  await sink.close()
  await once(reader, 'close')
  t.equal(read, '{"a":2}\n', 'the reader got the event, one line')
})

t.test('file: a FIFO whose reader stops reading holds its sends, and a close ends them at once (a stop would wait for ever)', async t => {
  const path = join(mkdtempSync(join(tmpdir(), 'frpgw-fifo-')), 'events.log')
  execFileSync('mkfifo', [path])
  // a reader that never reads: the pipe's buffer (64 KiB) fills, then writes wait
  const reader = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK)
  t.teardown(() => { closeSync(reader) })
  const sink = new FileSink(path)
  const event = JSON.stringify({ user: 'x'.repeat(16 * 1024) })
  const sends = Array.from({ length: 12 }, async () => await sink.send(event).then(() => 'sent', (err: SinkError) => err.message))
  await sleep(300)
  const started = Date.now()
  await sink.close()
  t.ok(Date.now() - started < 1000, `closed in ${Date.now() - started} ms`)
  const results = await Promise.all(sends)
  t.ok(results.filter(r => r === 'sent').length >= 3, 'what the pipe took was sent')
  t.ok(results.some(r => r !== 'sent'), 'what waited for the reader failed at the close')
})

t.test('file: one event per line, appended; reopen follows a rotated file', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'frpgw-sink-'))
  const path = join(dir, 'events.jsonl')
  const sink = new FileSink(path)
  t.teardown(() => sink.close())
  const { queue } = queueOf(sink, { concurrency: 1 })
  queue.push('{"n":1}')
  queue.push('{"n":2}')
  await sleep(100)
  renameSync(path, `${path}.1`)
  await sink.reopen()
  queue.push('{"n":3}')
  t.equal(await queue.drain(5000), true)
  t.equal(readFileSync(`${path}.1`, 'utf8'), '{"n":1}\n{"n":2}\n')
  t.equal(readFileSync(path, 'utf8'), '{"n":3}\n')
})

t.test('file: large events written at once stay whole lines (appendFile writes 512 KiB pieces), also from two sinks of one path (a reload\'s old and new)', async t => {
  const path = join(mkdtempSync(join(tmpdir(), 'frpgw-sink-')), 'events.jsonl')
  const sinks = [new FileSink(path), new FileSink(path)]
  t.teardown(async () => { await Promise.all(sinks.map(async sink => { await sink.close() })) })
  const queues = sinks.map(sink => queueOf(sink, { concurrency: 4 }))
  for (const c of 'abcdefgh') queues['abcd'.includes(c) ? 0 : 1].queue.push(JSON.stringify({ user: c.repeat(900 * 1024) }))
  t.same(await Promise.all(queues.map(async ({ queue }) => await queue.drain(10_000))), [true, true])
  t.same(queues.map(({ counts }) => counts.sent), [4, 4])
  const users = readFileSync(path, 'utf8').split('\n').filter(l => l !== '').map(l => (JSON.parse(l) as { user: string }).user)
  t.same(users.map(u => [u[0], u.length]).sort(), [...'abcdefgh'].map(c => [c, 900 * 1024]))
})

t.test('file: an event waiting to be tried again when the queue is drained is dropped, and the closed sink opens nothing', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'frpgw-sink-'))
  const path = join(dir, 'later', 'events.jsonl')
  const sink = new FileSink(path)
  const { queue, counts } = queueOf(sink, { concurrency: 1, backoffMs: 200 })
  queue.push('{"n":1}')
  await sleep(50)
  t.equal(await queue.drain(0), false)
  await sink.close()
  mkdirSync(join(dir, 'later'))
  await sleep(500)
  t.same(counts, { retried: 1, dropped: 1 })
  t.equal(existsSync(path), false, 'nothing was written after the close')
  t.same(readdirSync('/proc/self/fd').filter(fd => { try { return readlinkSync(`/proc/self/fd/${fd}`) === path } catch { return false } }), [], 'no descriptor left open')
})

t.test('the queue holds 32 Mi characters of events at most, whatever their number: the oldest are dropped', async t => {
  const rx = await receiver(t, () => {}) // never answers
  const sink = new WebhookSink({ url: rx.url, headers: {}, timeoutMs: 10_000 })
  t.teardown(() => sink.close())
  const { queue, counts } = queueOf(sink, { size: 10_000, concurrency: 1 })
  const big = 'x'.repeat(1024 * 1024)
  for (let i = 0; i < 40; i++) queue.push(big)
  t.equal(queue.inFlight, 1)
  t.equal(queue.length, 32, '32 events of 1 Mi characters')
  t.equal(counts.dropped, 7)
  queue.push('x'.repeat(33 * 1024 * 1024))
  t.equal(queue.length, 32, 'an event larger than the whole bound is dropped itself')
  t.equal(counts.dropped, 8)
  queue.push('{}')
  t.equal(queue.length, 32, 'a small one takes the place of the oldest')
  t.equal(await queue.drain(0), false)
})
