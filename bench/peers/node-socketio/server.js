'use strict';
// Peer system: Socket.IO with the Redis streams adapter. POST /api/workflows/progress
// broadcasts the body to every client of every instance as 'workflow:progress:<type>'.
const http = require('node:http');
const { parseArgs } = require('node:util');
const { createClient } = require('redis');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-streams-adapter');

const MAX_BODY = 1 << 20;

function answer(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

function publish(io, req, res) {
  const chunks = [];
  let size = 0;
  req.on('data', (chunk) => {
    size += chunk.length;
    if (size <= MAX_BODY) chunks.push(chunk);
  });
  req.on('end', () => {
    if (size > MAX_BODY) return answer(res, 413, { error: 'body too large' });
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString());
    } catch (err) {
      return answer(res, 400, { error: 'malformed JSON' });
    }
    if (typeof body !== 'object' || body === null || typeof body.workflow_type !== 'string') {
      return answer(res, 422, { error: 'workflow_type is required' });
    }
    const event = 'workflow:progress:' + body.workflow_type;
    io.emit(event, body);
    return answer(res, 202, { event });
  });
}

async function main() {
  const { values } = parseArgs({
    options: { port: { type: 'string' }, 'redis-url': { type: 'string' } },
  });
  const redis = createClient({ url: values['redis-url'] });
  redis.on('error', (err) => console.error('redis:', err.message));
  await redis.connect();
  let io;
  const server = http.createServer((req, res) => {
    if (req.method === 'POST' && req.url === '/api/workflows/progress') return publish(io, req, res);
    if (req.method === 'GET' && req.url === '/healthz') return answer(res, 200, { status: 'ok' });
    return answer(res, 404, { error: 'not found' });
  });
  io = new Server(server, { adapter: createAdapter(redis), serveClient: false });
  server.listen(Number(values.port), '127.0.0.1');
  const stop = () => process.exit(0);
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
