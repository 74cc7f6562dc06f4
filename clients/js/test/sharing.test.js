import assert from "node:assert/strict";
import { afterEach, beforeEach, test } from "node:test";

import { WATCHERS_PER_SOCKET, watchWorkflow } from "../relay-client.js";
import { clear, event, install, sockets, until } from "./fake.js";

const URL_ = "http://gateway.test:9000";

install();
let watchers = [];

beforeEach(() => clear());
afterEach(() => {
  for (const watcher of watchers) watcher.close();
  watchers = [];
});

function watch(options) {
  const watcher = watchWorkflow({ url: URL_, workflowType: "map", ...options });
  watchers.push(watcher);
  return watcher;
}

/** The subscribe frames `socket` was sent. */
function subscribes(socket) {
  return socket.frames.filter((frame) => frame.action === "subscribe");
}

/** A turn of the event loop, after which a socket nobody uses is closed. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

test("watchers of one gateway and token share one socket, each with its own subscription", async () => {
  const all = watch({ token: "t" });
  const one = watch({ token: "t", sessionId: "s1" });
  await until(() => sockets.length === 1 && subscribes(sockets[0]).length === 2);
  const [socket] = sockets;
  assert.deepEqual(socket.frames, [
    { action: "auth", token: "t" },
    { action: "subscribe", workflow_type: "map" },
    { action: "subscribe", workflow_type: "map", session_id: "s1" },
  ]);
  // Each subscribed frame makes only the watcher it answers live.
  socket.receive({ type: "subscribed", workflow_type: "map", session_id: "s1" });
  assert.deepEqual([all.status, one.status], ["connecting", "live"]);
  socket.receive({ type: "subscribed", workflow_type: "map", session_id: null });
  assert.equal(all.status, "live");
  // Every event goes to each watcher it concerns, and only to those.
  socket.receive(event("1-0", "s1", { progress: 30 }));
  socket.receive(event("2-0", "s2", { progress: 60 }));
  assert.deepEqual([...all.sessions().keys()], ["s1", "s2"]);
  assert.deepEqual([...one.sessions().keys()], ["s1"]);
  assert.equal(one.get().progress, 30);
});

test("another token, another gateway or a full socket opens another socket", async () => {
  watch({ token: "a" });
  watch({ token: "b" });
  watch({ token: "a", url: "http://other.test:9000" });
  await until(() => sockets.length === 3);
  assert.deepEqual(
    sockets.map((socket) => [socket.url, socket.frames[0].token]),
    [
      ["ws://gateway.test:9000/ws", "a"],
      ["ws://gateway.test:9000/ws", "b"],
      ["ws://other.test:9000/ws", "a"],
    ],
  );
  for (let index = 1; index < WATCHERS_PER_SOCKET; index += 1) watch({ token: "a", sessionId: `s${index}` });
  await settle();
  assert.equal(sockets.length, 3);
  watch({ token: "a", sessionId: "one-too-many" });
  await until(() => sockets.length === 4 && subscribes(sockets[3]).length === 1);
  assert.equal(subscribes(sockets[0]).length, WATCHERS_PER_SOCKET);
});

test("a subscription ends when its last watcher leaves, the socket when every watcher has", async () => {
  const first = watch({ sessionId: "s1" });
  const second = watch({ sessionId: "s1" });
  const other = watch({ sessionId: "s2" });
  await until(() => sockets.length === 1 && subscribes(sockets[0]).length === 3);
  const [socket] = sockets;
  first.close();
  assert.equal(socket.frames.filter((f) => f.action === "unsubscribe").length, 0);
  second.close();
  other.close();
  assert.deepEqual(
    socket.frames.filter((f) => f.action === "unsubscribe"),
    [
      { action: "unsubscribe", workflow_type: "map", session_id: "s1" },
      { action: "unsubscribe", workflow_type: "map", session_id: "s2" },
    ],
  );
  assert.equal(socket.closed, false, "closed only once the turn is over");
  await settle();
  assert.equal(socket.closed, true);
  // A new watcher then opens a socket of its own.
  watch({});
  await until(() => sockets.length === 2);
});

test("a watcher closed and made again in the same turn keeps the socket", async () => {
  watch({ sessionId: "s1" }).close();
  watch({ sessionId: "s1" });
  await until(() => sockets.length === 1 && subscribes(sockets[0]).length === 1);
  await settle();
  assert.equal(sockets[0].closed, false);
  assert.equal(sockets.length, 1);
});

test("a refused subscription is told to its own watcher, and an answer for a closed one to nobody", async () => {
  const denied = watch({ workflowType: "secret" });
  const allowed = watch({});
  const gone = watch({ sessionId: "s9" });
  const heard = new Map([denied, allowed, gone].map((watcher) => [watcher, []]));
  for (const [watcher, errors] of heard) watcher.onError((error) => errors.push(error.code));
  await until(() => sockets.length === 1 && subscribes(sockets[0]).length === 3);
  const [socket] = sockets;
  gone.close();
  socket.receive({ type: "error", code: "forbidden", message: "not in your grant" });
  socket.receive({ type: "subscribed", workflow_type: "map", session_id: null });
  socket.receive({ type: "subscribed", workflow_type: "map", session_id: "s9" });
  assert.deepEqual(heard.get(denied), ["forbidden"]);
  assert.deepEqual(heard.get(allowed), []);
  assert.deepEqual([denied.status, allowed.status], ["connecting", "live"]);
  // The refused one holds nothing, so closing it unsubscribes nothing.
  denied.close();
  assert.equal(socket.frames.filter((f) => f.action === "unsubscribe" && f.workflow_type === "secret").length, 0);
});

test("after a reconnect every watcher subscribes again, each resuming from its own point", async () => {
  const map = watch({});
  const chars = watch({ workflowType: "char" });
  await until(() => sockets.length === 1 && subscribes(sockets[0]).length === 2);
  const [socket] = sockets;
  socket.receive({ type: "subscribed", workflow_type: "map", session_id: null });
  socket.receive({ type: "subscribed", workflow_type: "char", session_id: null });
  socket.receive(event("5-0", "m1"));
  socket.receive(event("7-0", "c1", {}, "char"));
  socket.drop(1006);
  assert.deepEqual([map.status, chars.status], ["reconnecting", "reconnecting"]);
  await until(() => sockets.length === 2 && subscribes(sockets[1]).length === 2);
  assert.deepEqual(subscribes(sockets[1]), [
    { action: "subscribe", workflow_type: "map", since: "5-0" },
    { action: "subscribe", workflow_type: "char", since: "7-0" },
  ]);
});

test("a refused token stops every watcher on the socket, and a new one moves only the one given it", async () => {
  const first = watch({ token: "old" });
  const second = watch({ token: "old", sessionId: "s1" });
  await until(() => sockets.length === 1 && subscribes(sockets[0]).length === 2);
  sockets[0].drop(4002, "token expired");
  assert.deepEqual([first.status, second.status], ["expired", "expired"]);
  first.setToken("new");
  await until(() => sockets.length === 2 && subscribes(sockets[1]).length === 1);
  assert.deepEqual(sockets[1].frames[0], { action: "auth", token: "new" });
  assert.deepEqual([first.status, second.status], ["connecting", "expired"]);
});
