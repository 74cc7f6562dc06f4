'use strict';
// Shared by the load generators: the shared clock, the event body, a latency
// histogram, and the JSON-lines conversation with the Python orchestrator.
const readline = require('node:readline');

// process.hrtime reads CLOCK_MONOTONIC, as Python's time.monotonic_ns does, so
// stamps taken in different processes on this machine are comparable.
function nowUs() {
  return Number(process.hrtime.bigint() / 1000n);
}

const DETAILS = 'analyzing land cover: forests, rivers, roads';

// One event, about 200 bytes of JSON like a real progress report. The metadata
// carries what the subscribers check: run, sequence number, session, send time.
function eventBody(type, run, seq, session, progress, terminal, t) {
  const body = {
    session_id: 'bench-' + session,
    workflow_type: type,
    step: terminal ? 'done' : 'analyzing',
    progress,
    metadata: { run, seq, session, t, details: DETAILS },
  };
  if (terminal) body.status = 'completed';
  return body;
}

// A schedule of `total` events over `sessions` sessions, round-robin; each
// session's last event is terminal and its progress climbs to 100.
function scheduledEvent(type, run, seq, total, sessions, t) {
  const session = seq % sessions;
  const rounds = Math.ceil(total / sessions);
  const round = Math.floor(seq / sessions);
  const terminal = seq >= total - sessions;
  const progress = terminal ? 100 : Math.floor((round * 1000) / rounds) / 10;
  return eventBody(type, run, seq, session, progress, terminal, t);
}

// Log-spaced buckets 1% wide, in microseconds: percentiles within 1%, any range.
const GROWTH = 1.01;
const LOG_GROWTH = Math.log(GROWTH);
const BUCKETS = 2200;

class Histogram {
  constructor() {
    this.counts = new Float64Array(BUCKETS);
    this.count = 0;
    this.max = 0;
  }

  record(us) {
    const value = us < 1 ? 1 : us;
    const index = Math.min(BUCKETS - 1, Math.floor(Math.log(value) / LOG_GROWTH));
    this.counts[index] += 1;
    this.count += 1;
    if (value > this.max) this.max = value;
  }

  percentileUs(p) {
    const rank = Math.ceil((p / 100) * this.count);
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i];
      if (seen >= rank) return Math.min(this.max, GROWTH ** (i + 1));
    }
    return this.max;
  }

  summaryMs() {
    if (this.count === 0) return { count: 0, p50: null, p90: null, p99: null, max: null };
    const ms = (us) => Math.round(us) / 1000;
    return {
      count: this.count,
      p50: ms(this.percentileUs(50)),
      p90: ms(this.percentileUs(90)),
      p99: ms(this.percentileUs(99)),
      max: ms(this.max),
    };
  }
}

// CPU time this process has used, in ms: the load generator's own cost.
function cpuMs() {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
}

function say(message) {
  process.stdout.write(JSON.stringify(message) + '\n');
}

// Calls handler(command) for each JSON line on stdin; onEnd when stdin closes.
function listen(handler, onEnd) {
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    Promise.resolve(handler(JSON.parse(line))).catch((err) =>
      say({ type: 'error', message: String(err && err.stack ? err.stack : err) }),
    );
  });
  lines.on('close', onEnd);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

module.exports = { nowUs, scheduledEvent, Histogram, cpuMs, say, listen, sleep };
