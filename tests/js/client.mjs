// One MQTT.js client, driven by tests/mqttjs.rs.
//
//   node client.mjs '<job as JSON>'
//
// The job (every key but `url` optional):
//   url              "ws://127.0.0.1:PORT/mqtt", "wss://...", or "mqtt://" / "mqtts://"
//   protocolVersion  4 (MQTT 3.1.1, the default) or 5
//   clientId, username, password, clean (default true), keepalive (seconds, default 60)
//   ca, cert, key    PEM file paths (wss / mqtts: the CA to trust; a client certificate for mTLS)
//   will             {topic, payload, qos, retain}
//   subscribe        [{topic, qos}]                    sent once connected, in one SUBSCRIBE
//   publish          [{topic, payload, qos, retain}]   then sent one at a time, each acknowledged
//   subprotocol      ws only: the Sec-WebSocket-Protocol to offer instead of MQTT.js's own
//                    choice ("mqtt"); null offers none
//   origin           ws only: an Origin header
//
// After the job's own steps it reads commands from standard input, one JSON object a line, run in
// order: {"subscribe": [...]}, {"publish": [...]}, {"end": true}. The end of standard input also
// ends the client (a graceful DISCONNECT); the test kills the process to end it without one.
//
// Standard output: one JSON object a line, each with an "event":
//   ws_open {protocol}           the WebSocket upgrade succeeded (the subprotocol the server chose)
//   ws_error {message}           the WebSocket failed (e.g. "Unexpected server response: 404")
//   ws_close {code, reason}
//   connect {sessionPresent, reasonCode}
//   suback {messageId, granted}  the SUBACK codes as they came over the wire (0x80 and up: refused)
//   published {topic, qos}       a publish fully acknowledged (QoS 0: written)
//   message {topic, payload, qos, retain, dup}   payload as UTF-8 text
//   disconnect {reasonCode}      the broker sent DISCONNECT (5.0)
//   error {message, code}
//   close                        the connection is gone; the process exits next (0 if the end was
//                                asked for, 1 otherwise)
// MQTT.js reconnects by default; here it does not, so one process is one connection.

import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import mqtt from 'mqtt'
import WebSocket from 'ws'

function emit (event, fields = {}) {
  // Standard output to a pipe is synchronous in Node on Linux: nothing is lost on exit.
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n')
}

let job
try {
  job = JSON.parse(process.argv[2] ?? '')
  if (typeof job.url !== 'string') throw new Error('the job needs a "url"')
} catch (e) {
  emit('error', { message: `bad job: ${e.message}`, code: 'JOB' })
  process.exit(2)
}

const options = {
  protocolVersion: job.protocolVersion ?? 4,
  clientId: job.clientId,
  username: job.username,
  password: job.password,
  clean: job.clean ?? true,
  keepalive: job.keepalive ?? 60,
  reconnectPeriod: 0,
  connectTimeout: 10_000,
  // The WebSocket is made here, as MQTT.js itself would make it (the same `ws` constructor and
  // options), so that its upgrade errors are reported (MQTT.js drops errors without a code) and a
  // test can offer another subprotocol.
  createWebsocket: (url, protocols, opts) => {
    let offered = protocols
    if (job.subprotocol === null) offered = []
    else if (job.subprotocol !== undefined) offered = [job.subprotocol]
    const wsOptions = { ...opts.wsOptions }
    if (job.origin !== undefined) wsOptions.origin = job.origin
    const socket = new WebSocket(url, offered, wsOptions)
    socket.on('open', () => emit('ws_open', { protocol: socket.protocol }))
    socket.on('error', (e) => emit('ws_error', { message: e.message }))
    socket.on('close', (code, reason) => emit('ws_close', { code, reason: reason.toString() }))
    return socket
  }
}
for (const name of ['ca', 'cert', 'key']) {
  if (job[name] !== undefined) options[name] = readFileSync(job[name])
}
if (job.will) {
  options.will = {
    topic: job.will.topic,
    payload: Buffer.from(job.will.payload ?? ''),
    qos: job.will.qos ?? 0,
    retain: job.will.retain ?? false
  }
}

let ending = false
const client = mqtt.connect(job.url, options)

client.on('connect', (connack) => {
  emit('connect', {
    sessionPresent: connack.sessionPresent,
    reasonCode: connack.reasonCode ?? connack.returnCode ?? 0
  })
})
client.on('packetreceive', (packet) => {
  if (packet.cmd === 'suback') {
    emit('suback', { messageId: packet.messageId, granted: packet.granted })
  } else if (packet.cmd === 'disconnect') {
    emit('disconnect', { reasonCode: packet.reasonCode ?? 0 })
  }
})
client.on('message', (topic, payload, packet) => {
  emit('message', {
    topic,
    payload: payload.toString('utf8'),
    qos: packet.qos,
    retain: packet.retain,
    dup: packet.dup
  })
})
client.on('error', (e) => emit('error', { message: e.message, code: e.code ?? null }))
client.on('close', () => {
  emit('close')
  setImmediate(() => process.exit(ending ? 0 : 1))
})

async function subscribe (subs) {
  try {
    await client.subscribeAsync(Object.fromEntries(subs.map((s) => [s.topic, { qos: s.qos ?? 0 }])))
  } catch (e) {
    // A refused filter: the codes are in the suback event already.
    if (!e.packet) emit('error', { message: e.message, code: e.code ?? null })
  }
}

async function publish (messages) {
  for (const m of messages) {
    const qos = m.qos ?? 0
    try {
      await client.publishAsync(m.topic, m.payload ?? '', { qos, retain: m.retain ?? false })
      emit('published', { topic: m.topic, qos })
    } catch (e) {
      emit('error', { message: e.message, code: e.code ?? null })
    }
  }
}

function end () {
  if (ending) return
  ending = true
  client.end()
}

async function run (step) {
  if (step.subscribe) await subscribe(step.subscribe)
  if (step.publish) await publish(step.publish)
  if (step.end) end()
}

// Every step waits for the connection, then for the steps before it.
let queue = new Promise((resolve) => client.once('connect', resolve)).then(() => run(job))
function enqueue (step) {
  queue = queue.then(() => run(step))
}

const input = createInterface({ input: process.stdin })
input.on('line', (line) => {
  if (line.trim() === '') return
  let step
  try {
    step = JSON.parse(line)
  } catch (e) {
    emit('error', { message: `bad command: ${e.message}`, code: 'COMMAND' })
    return
  }
  enqueue(step)
})
input.on('close', () => enqueue({ end: true }))
