/**
 * The part of the Vue and React bindings (vue.js, react.js) that knows no
 * framework: which session of a workflow type to follow, and the fields shown
 * for it. Built on watchWorkflow() alone.
 *
 *   const follower = followProgress("map", null, {}, (fields) => render(fields));
 *   await follower.cancel();   // ask the worker of the followed session to stop
 *   follower.close();
 */

import { AUTH_STATUSES, watchWorkflow } from "./relay-client.js";

// How long a type follower's watcher keeps an ended session: the follower
// keeps its own copy of the one it shows, so the watcher need not hold every
// session a long-open page ever heard of.
const KEEP_ENDED_MS = 60_000;

let defaults = {};

/**
 * Set the gateway options every useWorkflowProgress() uses unless its own
 * options say otherwise: `url` (the page's origin when unset), `token`,
 * `getToken`. Each call replaces the previous defaults.
 */
export function configureRelay({ url, token, getToken } = {}) {
  defaults = { url, token, getToken };
}

/** The fields before any event (of `sessionId`, when one is named). */
export function initialFields(sessionId = null) {
  return Object.freeze({
    sessionId,
    step: null,
    progress: 0,
    metadata: Object.freeze({}),
    startTime: null,
    estimatedTimeRemaining: null,
    isComplete: false,
    isInProgress: false,
    status: null,
    error: null,
  });
}

/** The fields shown for a session's state, with the error of a refused token when there is one. */
function fieldsOf(state, connectionError) {
  return Object.freeze({
    sessionId: state.sessionId,
    step: state.step,
    progress: state.progress,
    metadata: state.metadata,
    startTime: state.startTime,
    estimatedTimeRemaining: state.estimatedTimeRemaining,
    isComplete: state.isComplete,
    isInProgress: state.isInProgress,
    status: state.status,
    error: state.error ?? connectionError,
  });
}

/** Drop the options left undefined, so they do not hide the defaults. */
function given(options) {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined));
}

/**
 * Follow one session of `workflowType` and call `onUpdate(fields)` with its
 * fields, first right away with the initial ones.
 *
 * With `sessionId`, that session only. Without, one session at a time: at the
 * start the most recently updated running one, else the first one heard of;
 * it stays followed until it ends, and then the next running session heard of
 * takes its place (the ended one is shown until then). `options` ({url,
 * token, getToken}) override those of configureRelay().
 *
 * Returns { fields, cancel(), reset(), close() }.
 */
export function followProgress(workflowType, sessionId = null, options = {}, onUpdate = () => {}) {
  const watcher = watchWorkflow({
    ...given(defaults),
    ...given(options),
    workflowType,
    sessionId,
    snapshot: !sessionId,
    ...(sessionId ? {} : { keepEnded: KEEP_ENDED_MS }),
  });
  let current = null; // the followed session's state
  let forgotten = null; // a session reset() put aside, not to be followed again
  let connectionError = null; // why the gateway refused the token, while it does
  let lastError = null;
  let pending = new Map(); // session id -> latest state heard of while choosing
  let closed = false;
  let fields;

  const update = () => {
    fields = current
      ? fieldsOf(current, connectionError)
      : Object.freeze({ ...initialFields(sessionId), error: connectionError });
    onUpdate(fields);
  };

  // States come in batches (a snapshot, a list loaded over HTTP) within one
  // turn: choose once the batch is all in, so the most recent running
  // session wins whatever order the batch came in.
  const choose = () => {
    const candidates = [...pending.values()];
    pending = new Map();
    if (closed) return;
    const running = candidates.filter((state) => state.isInProgress);
    const newest = running.reduce((a, b) => (b.updatedAt > a.updatedAt ? b : a), running[0]);
    const next = newest ?? (current ? null : candidates[0]);
    if (!next) return;
    current = next;
    update();
  };

  const stopChanges = watcher.onChange((state) => {
    if (!state || state.sessionId === forgotten) return;
    // A session watcher only ever hears of its own session.
    if (sessionId || state.sessionId === current?.sessionId) {
      current = state;
      update();
    } else if (!current?.isInProgress) {
      if (pending.size === 0) queueMicrotask(choose);
      pending.set(state.sessionId, state);
    }
  });
  const stopErrors = watcher.onError((error) => {
    lastError = error.message;
  });
  const stopStatus = watcher.onStatus((status) => {
    if (status === "live") lastError = null;
    let next = status === "live" ? null : connectionError;
    if (AUTH_STATUSES.includes(status)) {
      next = lastError ?? (status === "expired" ? "token expired" : "unauthorized");
    }
    if (next === connectionError) return;
    connectionError = next;
    update();
  });

  update();

  return {
    /** The latest fields. */
    get fields() {
      return fields;
    },
    /** Ask the worker of the followed session to stop; rejects when none is followed. */
    cancel() {
      const id = current?.sessionId ?? sessionId;
      if (!id) return Promise.reject(new Error("cancel(): no session is followed yet"));
      return watcher.cancel(id);
    },
    /** Forget the followed session and follow the next one heard of. */
    reset() {
      if (!sessionId && current) forgotten = current.sessionId;
      current = null;
      pending = new Map();
      update();
    },
    /** Stop following: close the watcher. */
    close() {
      closed = true;
      stopChanges();
      stopErrors();
      stopStatus();
      watcher.close();
    },
  };
}
