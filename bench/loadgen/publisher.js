'use strict';
// Open-loop publisher: POSTs `rate` events per second for `seconds` seconds on
// a fixed schedule, whatever the server's answers take; reports how closely
// it kept the schedule (sendRate, lagMs), and the answers.
//
// A session's terminal event waits until every earlier event of that session
// was answered, as a worker would, so it is the session's newest entry in the
// stream; every other event goes out on schedule over whichever socket is free.
//
// argv[2] is JSON: {url, rate, seconds, run, sessions, type, sockets, drainMs}
const http = require('node:http');
const { nowUs, scheduledEvent, Histogram, cpuMs, say } = require('./common');

const opts = JSON.parse(process.argv[2]);
const target = new URL(opts.url);
const agent = new http.Agent({ keepAlive: true, maxSockets: opts.sockets });
const total = Math.round(opts.rate * opts.seconds);
const intervalUs = 1e6 / opts.rate;

const result = { sent: 0, ok: 0, failed: 0, errors: 0, deferred: 0, firstError: null, rejected: [] };
const lag = new Histogram();
const answerTime = new Histogram();
const inFlight = new Int32Array(opts.sessions);
const deferred = new Map(); // session -> its terminal event's seq, held back
let pending = 0;
let start = 0;
let lastScheduled = 0;
let lastAnswer = 0;

function answered(session, sentAt) {
  pending -= 1;
  inFlight[session] -= 1;
  lastAnswer = nowUs();
  answerTime.record(lastAnswer - sentAt);
  if (inFlight[session] === 0 && deferred.has(session)) {
    const seq = deferred.get(session);
    deferred.delete(session);
    post(seq);
  }
}

function post(seq) {
  const t = nowUs();
  const session = seq % opts.sessions;
  const body = JSON.stringify(scheduledEvent(opts.type, opts.run, seq, total, opts.sessions, t));
  pending += 1;
  inFlight[session] += 1;
  result.sent += 1;
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
        if (response.statusCode >= 200 && response.statusCode < 300) {
          result.ok += 1;
        } else {
          result.failed += 1;
          result.rejected.push(seq);
        }
        answered(session, t);
      });
    },
  );
  request.on('error', (err) => {
    result.errors += 1;
    result.firstError = result.firstError || String(err.message);
    result.rejected.push(seq);
    answered(session, t);
  });
  request.end(body);
}

function schedule(seq) {
  const session = seq % opts.sessions;
  if (seq >= total - opts.sessions && inFlight[session] > 0) {
    result.deferred += 1;
    deferred.set(session, seq);
  } else {
    post(seq);
  }
}

function finish() {
  const scheduleSeconds = (lastScheduled - start) / 1e6 + 1 / opts.rate;
  say({
    type: 'done',
    ...result,
    pending: pending + deferred.size,
    scheduled: total,
    sendRate: next / scheduleSeconds,
    ackRate: result.ok / Math.max(1e-6, (lastAnswer - start) / 1e6),
    lagMs: lag.summaryMs(),
    answerMs: answerTime.summaryMs(),
    cpuMs: cpuMs(),
  });
  process.exit(0);
}

function awaitAnswers(deadline) {
  if ((pending === 0 && deferred.size === 0) || nowUs() > deadline) finish();
  else setTimeout(() => awaitAnswers(deadline), 5);
}

let next = 0;
function tick() {
  const due = Math.min(total, Math.floor((nowUs() - start) / intervalUs) + 1);
  while (next < due) {
    lastScheduled = nowUs();
    lag.record(lastScheduled - (start + next * intervalUs));
    schedule(next);
    next += 1;
  }
  if (next < total) setTimeout(tick, 1);
  else awaitAnswers(nowUs() + opts.drainMs * 1000);
}

start = nowUs();
tick();
