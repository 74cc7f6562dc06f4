'use strict';
// Subscriber side of the load generator: N connections spread over the URLs
// given, counting every event each one receives (loss, duplicates) and the
// latency from the publisher's stamp to receipt.
//
// argv[2] is JSON: {kind: "ws"|"sio"|"sio-polling", urls: [...], count, event, stalled,
// connectConcurrency}
// stdin commands (JSON lines): begin {run, events, sessions} | pause | resume |
// collect {drainMs, rejected}; closing stdin closes every connection and exits.
// Events the server refused (`rejected` seqs) are not expected, so not lost.
const WebSocket = require('ws');
const { io } = require('socket.io-client');
const { nowUs, Histogram, cpuMs, say, listen, sleep } = require('./common');

const opts = JSON.parse(process.argv[2]);
const CONNECT_TIMEOUT_MS = 30000;

const state = {
  run: -1,
  events: 0,
  expected: 0,
  sessions: 0,
  rejected: new Uint8Array(0),
  latency: new Histogram(),
  stray: 0,
};
const subs = [];

function newSub(index) {
  return {
    stalled: index < opts.stalled,
    closed: false,
    socket: null,
    counts: new Uint8Array(0),
    received: 0,
    unique: 0,
    dups: 0,
    lastStatus: [],
    terminals: 0,
  };
}

function onEvent(sub, data) {
  const meta = data && data.metadata;
  if (!meta || meta.run !== state.run || !(meta.seq >= 0 && meta.seq < state.events)) {
    state.stray += 1;
    return;
  }
  const before = sub.counts[meta.seq];
  sub.counts[meta.seq] = before === 255 ? 255 : before + 1;
  sub.received += 1;
  if (before > 0) sub.dups += 1;
  else if (!state.rejected[meta.seq]) sub.unique += 1;
  if (sub.stalled) {
    if (data.status === 'completed' && before === 0) sub.terminals += 1;
    sub.lastStatus[meta.session] = data.status || 'running';
  } else {
    state.latency.record(nowUs() - meta.t);
  }
}

// A relay or bare-aiohttp frame: one event object, a control frame, or an array of
// events. Parsing every frame with JSON.parse would make the load generator cost
// as much per delivery as the servers it measures, so the common case (events
// that are not terminal) reads the few numbers it needs straight from the text;
// anything else (control frames, terminal events) takes the JSON.parse path.
const METADATA = '"metadata":{';

function intAfter(text, key, from, to) {
  const at = text.indexOf(key, from);
  if (at === -1 || at > to) return NaN;
  let value = 0;
  for (let i = at + key.length; i < text.length; i++) {
    const digit = text.charCodeAt(i) - 48;
    if (digit < 0 || digit > 9) break;
    value = value * 10 + digit;
  }
  return value;
}

function onWsFrame(sub, raw, subscribed) {
  const text = raw.toString('latin1');
  let at = text.indexOf(METADATA);
  if (at !== -1 && !text.includes('"completed"')) {
    while (at !== -1) {
      const end = text.indexOf('}', at);
      const meta = {
        run: intAfter(text, '"run":', at, end),
        seq: intAfter(text, '"seq":', at, end),
        session: intAfter(text, '"session":', at, end),
        t: intAfter(text, '"t":', at, end),
      };
      onEvent(sub, { metadata: meta, status: 'running' });
      at = text.indexOf(METADATA, end);
    }
    return;
  }
  const message = JSON.parse(raw);
  const items = Array.isArray(message) ? message : [message];
  for (const item of items) {
    if (item.type === 'subscribed') subscribed();
    else if (item.data) onEvent(sub, item.data);
    else state.stray += 1;
  }
}

function connectWs(sub, url) {
  return new Promise((resolve) => {
    const waitForSubscribed = url.includes('workflow_type=');
    const ws = new WebSocket(url, { perMessageDeflate: false, skipUTF8Validation: true });
    sub.socket = ws;
    const done = (ok) => resolve(ok);
    ws.on('open', () => {
      if (!waitForSubscribed) done(true);
    });
    ws.on('message', (raw) => onWsFrame(sub, raw, () => done(true)));
    ws.on('error', () => done(false));
    ws.on('close', () => {
      sub.closed = true;
      done(false);
    });
  });
}

// "sio" opens a WebSocket at once; "sio-polling" starts with long-polling and
// upgrades, as socket.io-client does by default.
const SIO_TRANSPORTS = opts.kind === 'sio-polling' ? ['polling', 'websocket'] : ['websocket'];

function connectSio(sub, url) {
  return new Promise((resolve) => {
    const socket = io(url, {
      transports: SIO_TRANSPORTS,
      reconnection: false,
      forceNew: true,
      timeout: CONNECT_TIMEOUT_MS,
    });
    sub.socket = socket;
    // A polling subscriber counts as connected once it has upgraded, so what is
    // measured after "ready" is a WebSocket session that began as a polling one.
    socket.on('connect', () => {
      const engine = socket.io.engine;
      if (engine.transport.name === 'websocket') {
        resolve(true);
        return;
      }
      engine.once('upgrade', () => resolve(true));
      engine.once('upgradeError', () => resolve(false));
    });
    socket.on('connect_error', () => resolve(false));
    socket.on('disconnect', () => {
      sub.closed = true;
    });
    socket.on(opts.event, (data) => onEvent(sub, data));
  });
}

// The TCP socket under a subscriber, to pause and resume reading.
function rawSocket(sub) {
  if (opts.kind === 'ws') return sub.socket._socket;
  return sub.socket.io.engine.transport.ws._socket;
}

async function connectAll() {
  const started = Date.now();
  const connect = opts.kind === 'ws' ? connectWs : connectSio;
  let next = 0;
  let failed = 0;
  async function worker() {
    while (next < opts.count) {
      const sub = newSub(next);
      const url = opts.urls[next % opts.urls.length];
      next += 1;
      subs.push(sub);
      if (!(await connect(sub, url))) failed += 1;
    }
  }
  const workers = [];
  for (let i = 0; i < opts.connectConcurrency; i++) workers.push(worker());
  await Promise.all(workers);
  say({ type: 'ready', connected: subs.length - failed, failed, ms: Date.now() - started });
}

function begin(command) {
  state.run = command.run;
  state.events = command.events;
  state.expected = command.events;
  state.rejected = new Uint8Array(command.events);
  state.sessions = command.sessions;
  state.latency = new Histogram();
  state.stray = 0;
  for (const sub of subs) {
    sub.counts = new Uint8Array(command.events);
    sub.received = 0;
    sub.unique = 0;
    sub.dups = 0;
    sub.lastStatus = [];
    sub.terminals = 0;
  }
  say({ type: 'begun', cpuMs: cpuMs() });
}

function settled(sub) {
  if (sub.closed) return true;
  return sub.stalled ? sub.terminals === state.sessions : sub.unique === state.expected;
}

function summarize() {
  const healthy = { subs: 0, received: 0, lost: 0, dups: 0, closed: 0 };
  const stalled = {
    subs: 0,
    received: 0,
    dups: 0,
    closed: 0,
    minTerminalSessions: null,
    minNewestSessions: null,
  };
  for (const sub of subs) {
    const group = sub.stalled ? stalled : healthy;
    group.subs += 1;
    group.received += sub.received;
    group.dups += sub.dups;
    if (sub.closed) group.closed += 1;
    if (sub.stalled) {
      let newest = 0;
      for (let s = 0; s < state.sessions; s++) if (sub.lastStatus[s] === 'completed') newest += 1;
      stalled.minTerminalSessions = Math.min(stalled.minTerminalSessions ?? Infinity, sub.terminals);
      stalled.minNewestSessions = Math.min(stalled.minNewestSessions ?? Infinity, newest);
    } else {
      healthy.lost += state.expected - sub.unique;
    }
  }
  return { healthy, stalled };
}

// Refused events leave the expected set; counts already taken are redone without them.
function exclude(rejected) {
  for (const seq of rejected) state.rejected[seq] = 1;
  state.expected = state.events - rejected.length;
  for (const sub of subs) {
    let unique = 0;
    for (let seq = 0; seq < state.events; seq++) {
      if (sub.counts[seq] > 0 && !state.rejected[seq]) unique += 1;
    }
    sub.unique = unique;
  }
}

async function collect(command) {
  if (command.rejected.length > 0) exclude(command.rejected);
  const deadline = Date.now() + command.drainMs;
  while (Date.now() < deadline && !subs.every(settled)) await sleep(20);
  const { healthy, stalled } = summarize();
  say({
    type: 'stats',
    events: state.events,
    expected: state.expected,
    sessions: state.sessions,
    healthy,
    stalled,
    latency: state.latency.summaryMs(),
    stray: state.stray,
    cpuMs: cpuMs(),
  });
}

function setPaused(paused) {
  for (const sub of subs) {
    if (!sub.stalled || sub.closed) continue;
    const socket = rawSocket(sub);
    if (paused) socket.pause();
    else socket.resume();
  }
  say({ type: paused ? 'paused' : 'resumed' });
}

function closeAll() {
  for (const sub of subs) {
    if (opts.kind === 'ws') sub.socket.terminate();
    else sub.socket.disconnect();
  }
  process.exit(0);
}

const handlers = {
  begin,
  collect,
  pause: () => setPaused(true),
  resume: () => setPaused(false),
};

listen((command) => handlers[command.cmd](command), closeAll);
connectAll().catch((err) => say({ type: 'error', message: String(err.stack || err) }));
