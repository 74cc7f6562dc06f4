// A fake WebSocket and fetch for the tests: each socket records what it was
// sent, and the test plays the gateway's part through it.

/** Every FakeSocket opened, oldest first. */
export const sockets = [];

export class FakeSocket {
  constructor(url) {
    this.url = String(url);
    this.sent = [];
    this.closed = false;
    sockets.push(this);
    queueMicrotask(() => this.onopen?.());
  }

  /** The frames the watcher sent, parsed. */
  get frames() {
    return this.sent.map((text) => JSON.parse(text));
  }

  send(text) {
    this.sent.push(text);
  }

  close() {
    this.closed = true;
  }

  /** The gateway sends `frame`. */
  receive(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  /** The gateway (or the network) closes the socket with `code`. */
  drop(code, reason = "") {
    this.closed = true;
    this.onclose?.({ code, reason });
  }
}

/** Every fetch made, as { url, headers }; answered with `answer(url)` as JSON. */
export const requests = [];
let answer = () => ({ status: 404, body: { error: "not_found", message: "unknown" } });

/** How fetch answers from now on: `respond(url)` gives { status, body }. */
export function answerWith(respond) {
  answer = respond;
}

export function install() {
  globalThis.WebSocket = FakeSocket;
  globalThis.fetch = async (url, init = {}) => {
    requests.push({ url: String(url), headers: init.headers ?? {} });
    const { status, body } = answer(String(url));
    return {
      ok: status >= 200 && status < 300,
      status,
      statusText: String(status),
      json: async () => body,
    };
  };
}

/** Forget every socket and request of the previous test. */
export function clear() {
  sockets.length = 0;
  requests.length = 0;
  answerWith(() => ({ status: 404, body: { error: "not_found", message: "unknown" } }));
}

/** Resolve once `condition()` holds, checking on every turn of the event loop; fail after `ms`. */
export async function until(condition, ms = 2000) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${condition}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** An event frame of session `sessionId` in type `type`. */
export function event(id, sessionId, fields = {}, type = "map") {
  return {
    event: `workflow:progress:${type}`,
    id,
    data: {
      session_id: sessionId,
      workflow_type: type,
      step: "step",
      progress: 10,
      status: "running",
      metadata: {},
      ts: 1700000000000,
      ...fields,
    },
  };
}

/** A session as the gateway's HTTP API gives it. */
export function serverState(sessionId, fields = {}) {
  return {
    session_id: sessionId,
    workflow_type: "map",
    step: "done",
    progress: 100,
    status: "completed",
    metadata: {},
    error: null,
    started_at: 1700000000000,
    updated_at: 1700000005000,
    first_progress: 0,
    estimated_time_remaining: 0,
    last_event_id: "1-0",
    ...fields,
  };
}
