'use strict';
// Open-loop publisher: POSTs `rate` events per second for `seconds` seconds on
// a fixed schedule, whatever the server's answers take; reports how closely
// it kept the schedule, and the answers.
//
// argv[2] is JSON: {url, rate, seconds, run, sessions, type, sockets, drainMs}
const http = require('node:http');
const { nowUs, scheduledEvent, Histogram, cpuMs, say } = require('./common');

const opts = JSON.parse(process.argv[2]);
const target = new URL(opts.url);
const agent = new http.Agent({ keepAlive: true, maxSockets: opts.sockets });
const total = Math.round(opts.rate * opts.seconds);
const intervalUs = 1e6 / opts.rate;

const result = { sent: 0, ok: 0, failed: 0, errors: 0, firstError: null };
const lag = new Histogram();
const answerTime = new Histogram();
let pending = 0;
let start = 0;
let lastSend = 0;
let lastAnswer = 0;

function answered(sentAt) {
  pending -= 1;
  lastAnswer = nowUs();
  answerTime.record(lastAnswer - sentAt);
}

function post(seq) {
  const t = nowUs();
  const body = JSON.stringify(scheduledEvent(opts.type, opts.run, seq, total, opts.sessions, t));
  pending += 1;
  result.sent += 1;
  lastSend = t;
  const request = http.request(
    {
      agent,
      host: target.hostname,
      port: target.port,
      path: target.pathname,
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    },
    (response) => {
      response.resume();
      response.on('end', () => {
        if (response.statusCode >= 200 && response.statusCode < 300) result.ok += 1;
        else result.failed += 1;
        answered(t);
      });
    },
  );
  request.on('error', (err) => {
    result.errors += 1;
    result.firstError = result.firstError || String(err.message);
    answered(t);
  });
  request.end(body);
}

function finish() {
  const sendSeconds = (lastSend - start) / 1e6 + 1 / opts.rate;
  say({
    type: 'done',
    ...result,
    pending,
    scheduled: total,
    sendRate: result.sent / sendSeconds,
    ackRate: result.ok / Math.max(1e-6, (lastAnswer - start) / 1e6),
    lagMs: lag.summaryMs(),
    answerMs: answerTime.summaryMs(),
    cpuMs: cpuMs(),
  });
  process.exit(0);
}

function awaitAnswers(deadline) {
  if (pending === 0 || nowUs() > deadline) finish();
  else setTimeout(() => awaitAnswers(deadline), 5);
}

let seq = 0;
function tick() {
  const due = Math.min(total, Math.floor((nowUs() - start) / intervalUs) + 1);
  while (seq < due) {
    lag.record(nowUs() - (start + seq * intervalUs));
    post(seq);
    seq += 1;
  }
  if (seq < total) setTimeout(tick, 1);
  else awaitAnswers(nowUs() + opts.drainMs * 1000);
}

start = nowUs();
tick();
