import assert from "node:assert/strict";
import { afterEach, beforeEach, mock, test } from "node:test";

import { RelayError, estimatedTimeRemaining, watchWorkflow } from "../relay-client.js";
import { answerWith, clear, event, install, serverState, sockets, until } from "./fake.js";

const URL_ = "http://gateway.test:9000";

install();
let watcher = null;

beforeEach(() => clear());
afterEach(() => {
  watcher?.close();
  watcher = null;
  mock.timers.reset();
});

/** A watcher of `options`, live on its first socket, which it returns. */
async function live(options) {
  watcher = watchWorkflow({ url: URL_, workflowType: "map", ...options });
  await until(() => sockets.length === 1 && sockets[0].frames.some((f) => f.action === "subscribe"));
  const [socket] = sockets;
  socket.receive({ type: "subscribed", workflow_type: "map", recovered: true });
  return socket;
}

test("events become the session's state", async () => {
  const socket = await live({ token: "t1" });
  assert.equal(socket.url, "ws://gateway.test:9000/ws");
  assert.deepEqual(socket.frames[0], { action: "auth", token: "t1" });
  socket.receive(event("1-0", "s1", { progress: 40 }));
  assert.equal(watcher.get("s1").progress, 40);
  assert.equal(watcher.status, "live");
});

test("a retry's attempt and error stay in the state through later reports", async () => {
  const socket = await live({});
  socket.receive(event("1-0", "s1"));
  assert.deepEqual([watcher.get("s1").attempt, watcher.get("s1").lastError], [1, null]);
  socket.receive(event("2-0", "s1", { status: "retrying", attempt: 2, error: "timed out" }));
  const retrying = watcher.get("s1");
  assert.deepEqual([retrying.status, retrying.attempt, retrying.error], ["retrying", 2, "timed out"]);
  assert.equal(retrying.isInProgress, true);
  socket.receive(event("3-0", "s1", { progress: 20 }));
  const running = watcher.get("s1");
  assert.deepEqual([running.status, running.attempt, running.error, running.lastError], [
    "running",
    2,
    null,
    "timed out",
  ]);
});

test("a session's owner passes into its state and stays through reports omitting it", async () => {
  const socket = await live({});
  socket.receive(event("1-0", "s1"));
  assert.equal(watcher.get("s1").owner, null);
  socket.receive(event("2-0", "s1", { owner: "alice" }));
  socket.receive(event("3-0", "s1", { progress: 50 }));
  assert.equal(watcher.get("s1").owner, "alice");
});

test("a plan's overall figures come from the frames, and the ETA follows them", async () => {
  const socket = await live({});
  const plan = { step_count: 3 };
  const at = (step, progress, ts, overall, index) => ({
    step,
    progress,
    ts,
    overall_progress: overall,
    step_index: index,
    ...plan,
  });
  socket.receive(event("1-0", "s1", at("a", 0, 1000, 0, 1)));
  socket.receive(event("2-0", "s1", at("b", 50, 5000, 40, 2)));
  const midway = watcher.get("s1");
  const figures = [midway.progress, midway.overallProgress, midway.stepIndex, midway.stepCount];
  assert.deepEqual(figures, [50, 40, 2, 3]);
  // 40% of the whole in 4 s: 6 s for the rest.
  assert.equal(midway.estimatedTimeRemaining, 6);
  socket.receive(event("3-0", "s1", at("extra", 10, 6000, null, null)));
  const unlisted = watcher.get("s1");
  assert.deepEqual([unlisted.overallProgress, unlisted.stepIndex], [40, null]);
  socket.receive(event("4-0", "s2", { progress: 30 }));
  const planless = watcher.get("s2");
  const planlessFigures = [planless.overallProgress, planless.stepIndex, planless.stepCount];
  assert.deepEqual(planlessFigures, [30, null, null]);
});

test("getToken is asked on every connect, sync or async", async () => {
  const tokens = ["first", "second"];
  let asked = 0;
  const getToken = async () => tokens[asked++];
  const socket = await live({ getToken });
  assert.deepEqual(socket.frames[0], { action: "auth", token: "first" });
  socket.drop(1006);
  assert.equal(watcher.status, "reconnecting");
  await until(() => sockets.length === 2 && sockets[1].sent.length > 0);
  assert.deepEqual(sockets[1].frames[0], { action: "auth", token: "second" });
  assert.equal(asked, 2);
});

test("a refused token with a new one from getToken connects again", async () => {
  const tokens = ["old", "new"];
  const getToken = () => tokens.shift();
  const errors = [];
  const socket = await live({ getToken });
  watcher.onError((error) => errors.push(error));
  socket.drop(4002, "token expired");
  assert.equal(watcher.status, "expired");
  await until(() => sockets.length === 2 && sockets[1].sent.length > 0);
  assert.deepEqual(sockets[1].frames[0], { action: "auth", token: "new" });
  assert.equal(watcher.status, "connecting");
  assert.equal(errors.length, 1);
  assert.ok(errors[0] instanceof RelayError);
  assert.deepEqual([errors[0].closeCode, errors[0].code, errors[0].message], [
    4002,
    "token_expired",
    "token expired",
  ]);
});

for (const [code, status] of [
  [4001, "unauthorized"],
  [4002, "expired"],
]) {
  test(`close ${code} with the same token from getToken stays ${status}`, async () => {
    let asked = 0;
    const getToken = () => {
      asked += 1;
      return "same";
    };
    const socket = await live({ getToken });
    socket.drop(code);
    await until(() => asked === 2);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(watcher.status, status);
    assert.equal(sockets.length, 1);
  });
}

test("a refused token without getToken stops until setToken", async () => {
  const socket = await live({ token: "bad" });
  socket.drop(4001);
  assert.equal(watcher.status, "unauthorized");
  watcher.setToken("good");
  await until(() => sockets.length === 2 && sockets[1].sent.length > 0);
  assert.deepEqual(sockets[1].frames[0], { action: "auth", token: "good" });
});

test("a getToken that throws is reported and retried like a lost connection", async () => {
  let asked = 0;
  const getToken = () => {
    asked += 1;
    if (asked === 1) throw new Error("no session");
    return "late";
  };
  const errors = [];
  watcher = watchWorkflow({ url: URL_, workflowType: "map", getToken });
  watcher.onError((error) => errors.push(error));
  await until(() => sockets.length === 1 && sockets[0].sent.length > 0);
  assert.deepEqual(sockets[0].frames[0], { action: "auth", token: "late" });
  assert.deepEqual(
    errors.map((error) => [error.code, error.message]),
    [["get_token_failed", "no session"]],
  );
});

test("onError hears error frames and closes, and its unsubscribe works", async () => {
  const socket = await live({});
  const errors = [];
  const stop = watcher.onError((error) => errors.push(error));
  socket.receive({ type: "error", code: "invalid_message", message: "bad frame" });
  assert.deepEqual(
    errors.map((error) => [error.code, error.message, error.closeCode]),
    [["invalid_message", "bad frame", null]],
  );
  socket.drop(1011, "internal error");
  assert.deepEqual([errors[1].code, errors[1].closeCode], ["connection_closed", 1011]);
  stop();
  await until(() => sockets.length === 2);
  sockets[1].receive({ type: "error", code: "invalid_message", message: "again" });
  assert.equal(errors.length, 2);
});

test("keepEnded drops an ended session that long after it ended", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  const socket = await live({ keepEnded: 1000 });
  const changes = [];
  watcher.onChange((state) => changes.push(state?.sessionId ?? null));
  socket.receive(event("1-0", "done", { status: "completed", progress: 100 }));
  socket.receive(event("2-0", "busy"));
  mock.timers.tick(999);
  assert.equal(watcher.get("done").status, "completed");
  mock.timers.tick(1);
  assert.equal(watcher.get("done"), null);
  assert.deepEqual([...watcher.sessions().keys()], ["busy"]);
  assert.deepEqual(changes, ["done", "busy", null]);
});

test("without keepEnded an ended session stays", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  const socket = await live({});
  socket.receive(event("1-0", "done", { status: "failed" }));
  mock.timers.tick(365 * 24 * 3600 * 1000);
  assert.equal(watcher.get("done").status, "failed");
});

test("reset() also cancels pending evictions", async () => {
  mock.timers.enable({ apis: ["setTimeout"] });
  const socket = await live({ keepEnded: 1000 });
  socket.receive(event("1-0", "done", { status: "cancelled" }));
  watcher.reset();
  const changes = [];
  watcher.onChange((state) => changes.push(state));
  socket.receive(event("2-0", "done", { status: "running" }));
  mock.timers.tick(1000);
  assert.equal(watcher.get("done").status, "running");
  assert.equal(changes.length, 1);
});

test("a session first heard of live is estimated from its type's typical duration", async () => {
  const old = { updated_at: 1700000020000, typical_duration: 20 };
  answerWith(() => ({ status: 200, body: [serverState("old", old)] }));
  const socket = await live({ snapshot: true }); // a snapshot loads the states over HTTP
  await until(() => watcher.get("old"));
  assert.equal(watcher.get("old").typicalDuration, 20);
  socket.receive(event("2-0", "new", { progress: 5, ts: 1700000030000 }));
  assert.equal(watcher.get("new").typicalDuration, 20);
  assert.equal(watcher.get("new").estimatedTimeRemaining, 20); // not moved: the typical duration
  socket.receive(event("3-0", "new", { step: "later", progress: 5, ts: 1700000035000 }));
  assert.equal(watcher.get("new").estimatedTimeRemaining, 15);
});

test("a planned session keeps its state's typical step durations until another plan", async () => {
  const planned = {
    step: "smelt",
    progress: 0,
    status: "running",
    estimated_time_remaining: 22,
    updated_at: 1700000000000,
    plan: [{ step: "smelt", weight: 1 }, { step: "cast", weight: 2 }, { step: "polish", weight: 1 }],
    step_index: 1,
    step_count: 3,
    overall_progress: 0,
    first_overall_progress: 0,
    typical_duration: 30,
    typical_step_durations: [3, 15, 4],
  };
  answerWith(() => ({ status: 200, body: [serverState("s1", planned)] }));
  const socket = await live({ snapshot: true });
  await until(() => watcher.get("s1"));
  assert.deepEqual(watcher.get("s1").typicalStepDurations, [3, 15, 4]);
  const at = 1700000005000;
  const cast = { step: "cast", progress: 50, ts: at, overall_progress: 50, step_index: 2, step_count: 3 };
  socket.receive(event("2-0", "s1", cast));
  const point = {
    status: "running",
    progress: 50,
    metadata: {},
    firstProgress: 0,
    startedAt: 1700000000000,
    updatedAt: at,
  };
  const steps = { typicalStepDurations: [3, 15, 4], stepIndex: 2, stepProgress: 50 };
  const bySteps = estimatedTimeRemaining({ ...point, ...steps });
  assert.equal(watcher.get("s1").estimatedTimeRemaining, bySteps);
  assert.notEqual(bySteps, estimatedTimeRemaining({ ...point, typicalDuration: 30 }));
  // A new plan may list other steps: the figure is the type's again.
  const plan = [{ step: "cast", weight: 1 }, { step: "ship", weight: 1 }];
  const replanned = { ...cast, ts: at + 1000, plan, overall_progress: 25, step_index: 1, step_count: 2 };
  socket.receive(event("3-0", "s1", replanned));
  assert.equal(watcher.get("s1").typicalStepDurations, null);
  socket.receive(event("4-0", "s2", { ...cast }));
  assert.equal(watcher.get("s2").typicalStepDurations, null); // first heard of live: none
});
