import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";

import { configureRelay, followProgress, initialFields } from "../progress.js";
import { answerWith, clear, event, install, requests, serverState as server, sockets, until } from "./fake.js";

const URL_ = "http://gateway.test:9000";

install();
let follower = null;
let shown = [];

beforeEach(() => {
  clear();
  shown = [];
  configureRelay({ url: URL_ });
});
afterEach(() => {
  follower?.close();
  follower = null;
});

/** A follower of `map` (or of one session), live on its first socket, which it returns. */
async function live(sessionId = null, options = {}) {
  follower = followProgress("map", sessionId, options, (fields) => shown.push(fields));
  await until(() => sockets.length === 1 && sockets[0].frames.some((f) => f.action === "subscribe"));
  const [socket] = sockets;
  socket.receive({ type: "subscribed", workflow_type: "map", recovered: true });
  return socket;
}

/** Resolve once the follower shows `sessionId` with `progress`. */
function showing(sessionId, progress) {
  return until(() => follower.fields.sessionId === sessionId && follower.fields.progress === progress);
}

test("the fields start empty and are shown right away", async () => {
  const socket = await live();
  assert.deepEqual(shown[0], initialFields());
  assert.deepEqual(
    { ...follower.fields },
    {
      sessionId: null,
      step: null,
      progress: 0,
      metadata: {},
      startTime: null,
      estimatedTimeRemaining: null,
      isComplete: false,
      isInProgress: false,
      status: null,
      error: null,
    },
  );
  assert.equal(socket.frames.at(-1).snapshot, true);
});

test("at the start the most recently updated running session of the snapshot is followed", async () => {
  const socket = await live();
  socket.receive([
    event("1-0", "older", { progress: 30, ts: 1700000001000 }),
    event("2-0", "newest", { progress: 60, ts: 1700000009000 }),
    event("3-0", "middle", { progress: 20, ts: 1700000005000 }),
  ]);
  await showing("newest", 60);
  assert.equal(follower.fields.status, "running");
  assert.equal(follower.fields.isInProgress, true);
  // Nothing but the chosen session was ever shown.
  assert.deepEqual([...new Set(shown.map((fields) => fields.sessionId))], [null, "newest"]);
});

test("a session is followed until it ends, then the next running one takes over", async () => {
  const socket = await live();
  socket.receive(event("1-0", "a", { progress: 10, ts: 1700000000000 }));
  await showing("a", 10);
  socket.receive(event("2-0", "b", { progress: 50, ts: 1700000001000 }));
  socket.receive(event("3-0", "a", { step: "texturing", progress: 40, ts: 1700000003000 }));
  await showing("a", 40);
  assert.equal(follower.fields.step, "texturing");
  assert.equal(follower.fields.startTime, 1700000000000);
  // 30 points in 3 s: 60 left take 6 s.
  assert.equal(follower.fields.estimatedTimeRemaining, 6);

  socket.receive(event("4-0", "a", { progress: 100, status: "completed", ts: 1700000004000 }));
  await showing("a", 100);
  assert.equal(follower.fields.isComplete, true);
  assert.equal(follower.fields.isInProgress, false);
  assert.equal(follower.fields.estimatedTimeRemaining, 0);
  // An ended session of another id changes nothing; the result stays shown.
  socket.receive(event("5-0", "c", { progress: 100, status: "failed", error: "boom" }));
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(follower.fields.sessionId, "a");
  socket.receive(event("6-0", "b", { progress: 70 }));
  await showing("b", 70);
});

test("without a running session at the start, the first one heard of is followed", async () => {
  answerWith((url) =>
    url.includes("/api/workflows/sessions?")
      ? {
          status: 200,
          body: [
            server("latest", { status: "failed", error: "out of tiles", progress: 40 }),
            server("earlier", { last_event_id: "0-5" }),
          ],
        }
      : { status: 404, body: { error: "not_found", message: "unknown" } },
  );
  await live();
  await showing("latest", 40);
  assert.equal(follower.fields.status, "failed");
  assert.equal(follower.fields.error, "out of tiles");
  assert.equal(follower.fields.estimatedTimeRemaining, 0);
});

test("with a session id only that session is followed, and cancelled", async () => {
  const socket = await live("s7");
  assert.equal(follower.fields.sessionId, "s7");
  assert.equal(socket.frames.at(-1).session_id, "s7");
  socket.receive(event("1-0", "s7", { progress: 35, metadata: { tiles: 4 } }));
  await showing("s7", 35);
  assert.deepEqual(follower.fields.metadata, { tiles: 4 });
  answerWith(() => ({ status: 202, body: { session_id: "s7", status: "cancel_requested" } }));
  assert.equal((await follower.cancel()).session_id, "s7");
  assert.equal(requests.at(-1).url, `${URL_}/api/workflows/sessions/s7/cancel`);
  socket.receive(event("2-0", "s7", { progress: 35, status: "cancel_requested" }));
  await until(() => follower.fields.status === "cancel_requested");
  assert.equal(follower.fields.isInProgress, true);
});

test("cancel without a followed session rejects, saying so", async () => {
  await live();
  await assert.rejects(follower.cancel(), /no session is followed/);
  assert.equal(requests.filter((request) => request.url.endsWith("/cancel")).length, 0);
});

test("reset forgets the followed session and follows the next one", async () => {
  const socket = await live();
  socket.receive(event("1-0", "a", { progress: 100, status: "completed" }));
  await showing("a", 100);
  follower.reset();
  assert.deepEqual(follower.fields, initialFields());
  socket.receive(event("2-0", "b", { progress: 100, status: "cancelled" }));
  await showing("b", 100);
  assert.equal(follower.fields.status, "cancelled");
  assert.equal(follower.fields.estimatedTimeRemaining, null);
});

test("options override configureRelay's defaults", async () => {
  configureRelay({ url: "http://elsewhere.test", token: "default-token" });
  const socket = await live(null, { url: URL_ });
  assert.equal(socket.url, "ws://gateway.test:9000/ws");
  assert.deepEqual(socket.frames[0], { action: "auth", token: "default-token" });
});

test("a refused token shows as the error", async () => {
  const socket = await live(null, { token: "stale" });
  socket.drop(4001, "invalid token");
  await until(() => follower.fields.error === "invalid token");
  assert.equal(follower.fields.sessionId, null);
});

test("close closes the watcher's socket and nothing more is shown", async () => {
  const socket = await live();
  follower.close();
  const count = shown.length;
  socket.receive(event("1-0", "a"));
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(socket.closed, true);
  assert.equal(shown.length, count);
});
