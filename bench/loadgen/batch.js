'use strict';
// Closed-loop batch publisher: `clients` concurrent loops, each POSTing a JSON
// array of `batchSize` events and waiting for the answer, for `seconds` seconds.
//
// argv[2] is JSON: {url, clients, batchSize, seconds, type, sessions}
const http = require('node:http');
const { nowUs, scheduledEvent, cpuMs, say } = require('./common');

const opts = JSON.parse(process.argv[2]);
const target = new URL(opts.url);
const agent = new http.Agent({ keepAlive: true, maxSockets: opts.clients });
const result = { events: 0, requests: 0, failed: 0, errors: 0, firstError: null };

function batchBody(client) {
  const events = [];
  for (let i = 0; i < opts.batchSize; i++) {
    const seq = client * opts.batchSize + i;
    events.push(scheduledEvent(opts.type, 0, seq, Infinity, opts.sessions, 0));
  }
  return JSON.stringify(events);
}

function postOnce(body) {
  return new Promise((resolve) => {
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
          result.requests += 1;
          if (response.statusCode >= 200 && response.statusCode < 300) {
            result.events += opts.batchSize;
          } else {
            result.failed += 1;
          }
          resolve();
        });
      },
    );
    request.on('error', (err) => {
      result.errors += 1;
      result.firstError = result.firstError || String(err.message);
      resolve();
    });
    request.end(body);
  });
}

async function client(index, deadline) {
  const body = batchBody(index);
  while (nowUs() < deadline) await postOnce(body);
}

async function main() {
  const start = nowUs();
  const deadline = start + opts.seconds * 1e6;
  const clients = [];
  for (let i = 0; i < opts.clients; i++) clients.push(client(i, deadline));
  await Promise.all(clients);
  const seconds = (nowUs() - start) / 1e6;
  say({ type: 'done', ...result, seconds, eventsPerSecond: result.events / seconds, cpuMs: cpuMs() });
  process.exit(0);
}

main().catch((err) => {
  say({ type: 'error', message: String(err.stack || err) });
  process.exit(1);
});
