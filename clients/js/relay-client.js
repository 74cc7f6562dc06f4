/**
 * relay browser client: live progress of workflow sessions from a relay gateway.
 *
 *   import { watchWorkflow } from "relay-progress-client";   // or "/static/relay-client.js"
 *
 *   const watcher = watchWorkflow({ url: "http://localhost:8080", workflowType: "map", sessionId: "s1" });
 *   const stop = watcher.onChange((state, event) => render(state));
 *   await watcher.cancel();          // ask the worker to stop
 *   stop();                          // remove that listener
 *   watcher.close();                 // no more callbacks
 *
 * A dependency-free ES module: the npm package relay-progress-client (types in
 * index.d.ts), which the gateway also serves at `/static/relay-client.js`.
 * Watchers of one gateway share a WebSocket (see "shared sockets" below),
 * but each keeps its own session states and listeners, so none disturbs
 * another. The wire protocol is described in docs/protocol.md.
 */

/** The workflow type that stands for every type. */
export const ANY_TYPE = "*";
/** The statuses a session ends with; no later report revives it. */
export const TERMINAL_STATUSES = Object.freeze(["completed", "failed", "cancelled"]);
/** The metadata key under which a worker may give its own seconds-left figure. */
export const ETA_METADATA_KEY = "estimated_time_remaining";

const TERMINAL = new Set(TERMINAL_STATUSES);

// Reconnect delays: 250 ms doubling up to 5 s, each scaled by a random factor
// in [0.5, 1) so a restarted gateway is not hit by every browser at once.
const RECONNECT_FIRST_MS = 250;
const RECONNECT_MAX_MS = 5000;

// The gateway pings us, but browsers answer those pings without telling the
// page. A connection that died without a close (a laptop lid, a dropped NAT
// entry) is only noticed by sending something: ping, and give up on a socket
// that has said nothing for a while.
const PING_EVERY_MS = 20000;
const SILENCE_LIMIT_MS = 2 * PING_EVERY_MS + 5000;

// History pages fetched at a time by history().
const HISTORY_PAGE = 1000;

// The gateway's answers to a token it will not take (close codes 4001 and
// 4002, HTTP 401): retrying with the same token cannot help, so the watcher
// stops and says so until it is given another token.
const CLOSE_UNAUTHORIZED = 4001;
const CLOSE_TOKEN_EXPIRED = 4002;
const EXPIRED_MESSAGE = "token expired";
/** The statuses in which the watcher waits for a token (see setToken()). */
export const AUTH_STATUSES = Object.freeze(["unauthorized", "expired"]);

/**
 * Something that went wrong between the watcher and the gateway: an HTTP
 * answer that was not a success (`status`), a WebSocket closed by the gateway
 * or the network (`closeCode`), an error frame, or a getToken() that threw.
 */
export class RelayError extends Error {
  constructor(status, code, message, closeCode = null) {
    super(message);
    this.name = "RelayError";
    this.status = status;
    this.code = code;
    this.closeCode = closeCode;
  }
}

// The `code` of a RelayError for a closed WebSocket, by close code.
const CLOSE_ERROR_CODES = { [CLOSE_UNAUTHORIZED]: "unauthorized", [CLOSE_TOKEN_EXPIRED]: "token_expired" };

/**
 * Order two stream entry ids ("1700000000000-3"): negative, zero or positive.
 * A missing id sorts before every id. Ids only compare within one workflow type.
 */
export function compareIds(a, b) {
  if (a === b) return 0;
  if (a == null) return -1;
  if (b == null) return 1;
  const [aMs, aSeq] = a.split("-").map(Number);
  const [bMs, bSeq] = b.split("-").map(Number);
  return aMs - bMs || aSeq - bSeq;
}

/**
 * Watch one session (`sessionId`) or every session of a workflow type
 * (`workflowType`, `"*"` for all types).
 *
 * - `url`: the gateway's base http(s) URL; the page's origin when omitted.
 * - `snapshot`: for a type watcher, start from the current state of the
 *   type's sessions (the latest event of every running one, then the recent
 *   sessions over HTTP, ended ones included) instead of only new events.
 * - `limit`: how many recent sessions a type watcher loads over HTTP (1 to 1000).
 * - `token`: sent in an `auth` frame first thing on every WebSocket and as
 *   `Authorization: Bearer` on HTTP requests (never in a URL, which proxies
 *   log). When the gateway refuses it, the watcher stops with the status
 *   "unauthorized" or "expired" instead of reconnecting; setToken() resumes.
 * - `getToken`: a function returning the token, or a promise of it, called
 *   before every (re)connect and when the gateway refuses the token (4001,
 *   4002, HTTP 401): a token other than the refused one connects again, the
 *   same one (or null) leaves the watcher stopped.
 * - `keepEnded`: milliseconds an ended session stays in the state after the
 *   watcher learned it ended; kept for good when omitted.
 */
export function watchWorkflow({
  url,
  workflowType = ANY_TYPE,
  sessionId = null,
  token = null,
  getToken = null,
  snapshot = false,
  limit = 100,
  keepEnded = Infinity,
} = {}) {
  return new Watcher({
    url,
    workflowType,
    sessionId,
    token,
    getToken,
    snapshot,
    limit,
    keepEnded,
  });
}

// --- shared sockets -------------------------------------------------------
//
// Every watcher of a page with the same gateway and the same credential (one
// token, or one getToken function) rides on one WebSocket: the protocol lets
// a connection hold many subscriptions and delivers each event to it once,
// however they overlap. A socket carries at most WATCHERS_PER_SOCKET
// watchers; more open another. Each watcher sends its own subscribe frame
// and keeps its own resume point and state, so sharing changes what goes
// over the network, never what a watcher sees.

/**
 * Watchers one WebSocket carries. Half the gateway's default limit of 100
 * subscriptions per connection, so that the frames a reconnect sends at
 * once (the auth frame, then one subscribe per watcher) stay within its
 * default burst of 100 frames.
 */
export const WATCHERS_PER_SOCKET = 50;

// The error frames that answer a subscribe frame; the others (rate_limited)
// concern the whole connection.
const SUBSCRIBE_ERRORS = new Set(["invalid_message", "forbidden", "too_many_subscriptions"]);

/** Open shared sockets by WebSocket URL; a refused or closed socket leaves. */
const pool = new Map();

/** The shared socket `watcher` should join: one with room for the same credential, or a new one. */
function socketFor(wsUrl, credential) {
  const open = poolOf(wsUrl);
  const found = open.find(
    (shared) => shared.credential === credential && shared.size < WATCHERS_PER_SOCKET,
  );
  if (found) return found;
  const shared = new SharedSocket(wsUrl, credential);
  open.push(shared);
  return shared;
}

/** The shared sockets open on `wsUrl`, a list kept in the pool. */
function poolOf(wsUrl) {
  if (!pool.has(wsUrl)) pool.set(wsUrl, []);
  return pool.get(wsUrl);
}

/** The subscription key of a subscribe, subscribed or unsubscribe frame. */
function keyOf(frame) {
  return `${frame.workflow_type}\u0000${frame.session_id ?? ""}`;
}

class SharedSocket {
  // Either a token (a string or null) or a getToken function; watchers with
  // the same one share the socket.
  credential;
  /** The token the socket presents now. */
  token;

  #wsUrl;
  #getToken;
  #watchers = new Set();
  // What each watcher is subscribed to on the current socket ({workflow_type,
  // session_id}, as its subscribe frame said), and how many hold each key:
  // the gateway keeps one subscription per key, so it is unsubscribed only
  // when the last watcher holding it leaves.
  #held = new Map();
  #keyCounts = new Map();
  // Subscribe frames sent and not yet answered, oldest first: the gateway
  // answers them in the order it got them, by a subscribed or an error frame.
  #pending = [];
  #socket = null;
  #open = false;
  #attempt = 0;
  #retryTimer = null;
  #pingTimer = null;
  #lastHeard = 0;
  #closing = false;
  #refused = false;
  // Bumped whenever a pending getToken() answer must be ignored: a newer
  // connect, setToken() or the socket's end came in while it was on its way.
  #generation = 0;

  constructor(wsUrl, credential) {
    this.#wsUrl = wsUrl;
    this.credential = credential;
    this.#getToken = typeof credential === "function" ? credential : null;
    this.token = this.#getToken ? null : credential;
    this.#start();
  }

  /** Watchers on this socket. */
  get size() {
    return this.#watchers.size;
  }

  /** The connection status a watcher joining now starts with. */
  get joiningStatus() {
    return this.#attempt > 0 ? "reconnecting" : "connecting";
  }

  /** Take `watcher` on; it subscribes now if the socket is open, else once it opens. */
  attach(watcher) {
    this.#watchers.add(watcher);
    if (this.#open) this.#subscribe(watcher);
  }

  /** Let `watcher` go; its subscription ends once no other watcher holds the same. */
  detach(watcher) {
    if (!this.#watchers.delete(watcher)) return;
    const target = this.#release(watcher);
    if (target && this.#open) this.#send({ action: "unsubscribe", ...target });
    // Its answer may still come; it must reach nobody.
    for (const entry of this.#pending) if (entry.watcher === watcher) entry.watcher = null;
    // Not at once: a framework that closes a watcher and opens one like it in
    // the same turn (React's strict mode, a changed argument) keeps the socket.
    if (this.#watchers.size === 0) queueMicrotask(() => this.#endIfEmpty());
  }

  /** Present another token from now on (a getToken socket's watchers share it). */
  setToken(token) {
    this.#generation += 1;
    this.token = token;
    if (this.#refused) {
      this.#refused = false;
      poolOf(this.#wsUrl).push(this);
    }
    clearTimeout(this.#retryTimer);
    this.#dropSocket();
    this.#attempt = 0;
    this.#tell((watcher) => watcher.socketStatus("connecting"));
    this.#connect();
  }

  /** The gateway refused the token (close 4001/4002, or 401 over HTTP). */
  refuse(status) {
    clearTimeout(this.#retryTimer);
    this.#dropSocket();
    if (this.#closing) return;
    this.#refused = true;
    this.#leavePool();
    this.#tell((watcher) => watcher.socketStatus(status));
    if (this.#getToken) this.#retryWithNewToken();
  }

  #endIfEmpty() {
    if (this.#watchers.size > 0 || this.#closing) return;
    this.#closing = true;
    this.#generation += 1;
    clearTimeout(this.#retryTimer);
    this.#dropSocket();
    this.#leavePool();
  }

  #leavePool() {
    const open = pool.get(this.#wsUrl);
    const index = open?.indexOf(this) ?? -1;
    if (index >= 0) open.splice(index, 1);
    if (open?.length === 0) pool.delete(this.#wsUrl);
  }

  /** Connect, with a token from getToken() when there is one. */
  async #start() {
    if (this.#getToken) {
      const generation = ++this.#generation;
      const token = await this.#askToken();
      if (generation !== this.#generation || this.#closing) return;
      if (token === undefined) {
        this.#disconnected();
        return;
      }
      this.token = token;
    }
    this.#connect();
  }

  /** What getToken() gives (null for none), or undefined when it threw. */
  async #askToken() {
    // Not before the caller's own turn is over, so the onError() callbacks
    // it adds right after watchWorkflow() hear of a first getToken() failing.
    await null;
    try {
      return (await this.#getToken()) ?? null;
    } catch (error) {
      const message = String(error?.message ?? error);
      this.#tell((watcher) => watcher.fail(new RelayError(null, "get_token_failed", message)));
      return undefined;
    }
  }

  #connect() {
    const socket = new WebSocket(this.#wsUrl);
    this.#socket = socket;
    socket.onopen = () => {
      this.#open = true;
      this.#lastHeard = Date.now();
      this.#pingTimer = setInterval(() => this.#keepAlive(), PING_EVERY_MS);
      // The gateway reads frames in order: the subscriptions are checked against this token.
      if (this.token) this.#send({ action: "auth", token: this.token });
      for (const watcher of this.#watchers) this.#subscribe(watcher);
    };
    socket.onmessage = (message) => {
      this.#lastHeard = Date.now();
      this.#receive(message.data);
    };
    // An error is always followed by a close, which does the work. Closes
    // of our own never get here: the socket is detached first.
    socket.onclose = (close) => {
      const code = CLOSE_ERROR_CODES[close.code] ?? "connection_closed";
      const message = close.reason || `connection closed (${close.code})`;
      this.#tell((watcher) => watcher.fail(new RelayError(null, code, message, close.code)));
      if (close.code === CLOSE_UNAUTHORIZED) this.refuse("unauthorized");
      else if (close.code === CLOSE_TOKEN_EXPIRED) this.refuse("expired");
      else this.#disconnected();
    };
  }

  #subscribe(watcher) {
    const frame = watcher.subscription();
    const key = keyOf(frame);
    this.#held.set(watcher, { workflow_type: frame.workflow_type, session_id: frame.session_id ?? null });
    this.#keyCounts.set(key, (this.#keyCounts.get(key) ?? 0) + 1);
    this.#pending.push({ key, watcher });
    this.#send(frame);
  }

  /** Forget what `watcher` held; the target to unsubscribe when it was the last to hold it. */
  #release(watcher) {
    const target = this.#held.get(watcher);
    if (!target) return null;
    this.#held.delete(watcher);
    const key = keyOf(target);
    const left = this.#keyCounts.get(key) - 1;
    if (left > 0) {
      this.#keyCounts.set(key, left);
      return null;
    }
    this.#keyCounts.delete(key);
    return target;
  }

  #send(frame) {
    this.#socket.send(JSON.stringify(frame));
  }

  #keepAlive() {
    if (Date.now() - this.#lastHeard > SILENCE_LIMIT_MS) this.#disconnected();
    else this.#send({ action: "ping" });
  }

  /** Detach the current socket so none of its late callbacks reach us, then close it. */
  #dropSocket() {
    clearInterval(this.#pingTimer);
    this.#open = false;
    this.#pending = [];
    this.#held.clear();
    this.#keyCounts.clear();
    const socket = this.#socket;
    if (!socket) return;
    this.#socket = null;
    socket.onopen = socket.onmessage = socket.onclose = null;
    socket.close();
  }

  #disconnected() {
    this.#dropSocket();
    if (this.#closing) return;
    this.#tell((watcher) => watcher.socketStatus("reconnecting"));
    const delay = Math.min(RECONNECT_MAX_MS, RECONNECT_FIRST_MS * 2 ** this.#attempt);
    this.#attempt += 1;
    this.#retryTimer = setTimeout(() => this.#start(), delay * (0.5 + Math.random() / 2));
  }

  async #retryWithNewToken() {
    const refused = this.token;
    const generation = ++this.#generation;
    const token = await this.#askToken();
    if (generation !== this.#generation || this.#closing || !this.#refused) return;
    if (!token || token === refused) return;
    this.setToken(token);
  }

  /** Call `action(watcher)` for every watcher, as the set is when the call starts. */
  #tell(action) {
    for (const watcher of [...this.#watchers]) action(watcher);
  }

  #receive(text) {
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch {
      return;
    }
    // The gateway may batch several frames into one JSON array.
    for (const frame of Array.isArray(parsed) ? parsed : [parsed]) {
      if (frame && "event" in frame) this.#tell((watcher) => watcher.onEvent(frame));
      else if (frame?.type === "subscribed") this.#answer(frame, keyOf(frame))?.onSubscribed(frame);
      else if (frame?.type === "reset") this.#tell((watcher) => watcher.onReset(frame));
      else if (frame?.type === "error") this.#onError(frame);
    }
  }

  /** The watcher whose subscribe `frame` answers (null if it has left), taken off the pending list. */
  #answer(frame, key = null) {
    const index = key === null ? 0 : this.#pending.findIndex((entry) => entry.key === key);
    if (index < 0 || index >= this.#pending.length) return null;
    this.#attempt = 0;
    return this.#pending.splice(index, 1)[0].watcher;
  }

  #onError(frame) {
    const error = new RelayError(null, frame.code, frame.message);
    if (SUBSCRIBE_ERRORS.has(frame.code) && this.#pending.length > 0) {
      // Refused: the gateway holds nothing for it.
      const watcher = this.#answer(frame);
      if (watcher) {
        this.#release(watcher);
        watcher.fail(error);
      }
    } else {
      this.#tell((watcher) => watcher.fail(error));
    }
  }
}

// --- watchers -------------------------------------------------------------

class Watcher {
  #base;
  #wsUrl;
  #shared = null;
  #keepEnded;
  #workflowType;
  #sessionId;
  #snapshot;
  #limit;

  #records = new Map(); // session id -> { state, firstProgress }
  #typical = new Map(); // workflow type -> its typical duration, as the gateway last said
  #evictions = new Map(); // session id -> timer dropping it once ended for keepEnded ms
  #listeners = new Set();
  #statusListeners = new Set();
  #errorListeners = new Set();

  #connectedBefore = false;
  #resumeFrom = null; // newest event id received on the subscription
  #resumed = false; // whether the current subscription was asked with `since`
  #closed = false;
  #status = "connecting";

  constructor({ url, workflowType, sessionId, token, getToken, snapshot, limit, keepEnded }) {
    const base = new URL(url ?? globalThis.location.origin, globalThis.location?.href);
    if (!base.pathname.endsWith("/")) base.pathname += "/";
    base.search = "";
    base.hash = "";
    this.#base = base;
    const wsUrl = new URL("ws", base);
    wsUrl.protocol = base.protocol === "https:" ? "wss:" : "ws:";
    this.#wsUrl = String(wsUrl);
    this.#keepEnded = keepEnded;
    this.#workflowType = workflowType;
    this.#sessionId = sessionId;
    this.#snapshot = snapshot;
    this.#limit = limit;
    this.#join(getToken ?? token);
  }

  /**
   * Call `callback(state, event)` after every change of a session's state.
   * `event` is the event frame (`{event, id, data}`) that caused it, or null
   * when the state came over HTTP. After reset() it is called once with
   * `(null, null)`, as after the gateway reset a type's history or ended
   * sessions were dropped (keepEnded). Returns a function that removes the callback.
   */
  onChange(callback) {
    this.#listeners.add(callback);
    return () => this.#listeners.delete(callback);
  }

  /** Call `callback(status)` whenever the connection status changes; returns an unsubscribe. */
  onStatus(callback) {
    this.#statusListeners.add(callback);
    return () => this.#statusListeners.delete(callback);
  }

  /**
   * Call `callback(error)`, a RelayError, for every socket the gateway or the
   * network closed (`closeCode`: 4001 unauthorized and 4002 token expired
   * stop the watcher, others are followed by a reconnect), every error frame,
   * state load that failed, and getToken() that threw. Without a callback
   * these go to console.warn. Returns an unsubscribe.
   */
  onError(callback) {
    this.#errorListeners.add(callback);
    return () => this.#errorListeners.delete(callback);
  }

  /**
   * "connecting", "live" (subscribed), "reconnecting", "closed", or, when the
   * gateway refused the token (or wanted one), "unauthorized" or "expired".
   */
  get status() {
    return this.#status;
  }

  /**
   * Use another token (null for none) from now on: the watcher connects again
   * with it, resuming where it was, also after it stopped on a refused token.
   * A watcher made with getToken presents it until getToken is next asked,
   * and so do the watchers sharing that getToken.
   */
  setToken(token) {
    if (this.#closed) return;
    const shared = this.#shared;
    if (typeof shared.credential === "function") {
      shared.setToken(token);
    } else {
      shared.detach(this);
      this.#join(token);
    }
  }

  /** The state of a session (this watcher's own session by default), or null. */
  get(sessionId = this.#sessionId) {
    return this.#records.get(sessionId)?.state ?? null;
  }

  /** Every known session's state, by session id. */
  sessions() {
    return new Map(Array.from(this.#records, ([id, record]) => [id, record.state]));
  }

  /** Forget every state and where to resume from; later events start afresh. */
  reset() {
    this.#forgetAll();
    this.#resumeFrom = null;
    this.#emit(null, null);
  }

  /** Stop watching: leave the shared socket (closed once no watcher is on it) and drop this watcher's listeners. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#shared.detach(this);
    for (const timer of this.#evictions.values()) clearTimeout(timer);
    this.#evictions.clear();
    this.#setStatus("closed");
    this.#listeners.clear();
    this.#statusListeners.clear();
    this.#errorListeners.clear();
  }

  /**
   * Ask the worker running a session to stop; resolves to the gateway's answer.
   * A gateway with credentials wants a `token` with the cancel claim (watching
   * alone is refused with 403) or a publisher key.
   */
  cancel(sessionId = this.#sessionId) {
    if (!sessionId) return Promise.reject(new TypeError("cancel() needs a session id"));
    return this.#request(`api/workflows/sessions/${encodeURIComponent(sessionId)}/cancel`, {
      method: "POST",
    });
  }

  /** Every retained event of a session, oldest first, shaped like event frames. */
  async history(sessionId = this.#sessionId) {
    const events = [];
    const path = `api/workflows/sessions/${encodeURIComponent(sessionId)}/events`;
    for (;;) {
      const query = new URLSearchParams({ limit: HISTORY_PAGE });
      if (events.length) query.set("since", events[events.length - 1].id);
      const page = await this.#read(`${path}?${query}`);
      events.push(...page);
      if (page.length < HISTORY_PAGE) return events;
    }
  }

  // --- what the shared socket calls ---------------------------------------

  /** The subscribe frame: resume where we were when we can, else start from the current state. */
  subscription() {
    const frame = { action: "subscribe", workflow_type: this.#workflowType };
    if (this.#sessionId) frame.session_id = this.#sessionId;
    // `since` needs one workflow type. A session watcher on "*" learns its
    // session's type from the first event and can resume in that type.
    const resumeType =
      this.#workflowType !== ANY_TYPE ? this.#workflowType : this.get()?.workflowType;
    this.#resumed = Boolean(this.#resumeFrom && resumeType);
    if (this.#resumed) {
      frame.workflow_type = resumeType;
      frame.since = this.#resumeFrom;
    } else if (!this.#sessionId && (this.#snapshot || this.#connectedBefore)) {
      // Reconnecting without a resume point: events were missed, so start
      // again from the current state. (A session subscription gets its
      // session's latest event anyway.)
      frame.snapshot = true;
    }
    return frame;
  }

  /** The shared socket's status changed: connecting, reconnecting, or a refused token. */
  socketStatus(status) {
    if (!this.#closed) this.#setStatus(status);
  }

  fail(error) {
    if (this.#errorListeners.size === 0) console.warn(`relay: ${error.code}: ${error.message}`);
    for (const callback of [...this.#errorListeners]) guarded(callback, error);
  }

  onSubscribed(frame) {
    const firstTime = !this.#connectedBefore;
    this.#connectedBefore = true;
    this.#setStatus("live");
    // Load the state over HTTP when the subscription cannot tell us all of it:
    // its history did not reach back to `since`, or we started from the
    // current state (where only HTTP knows when a session started, and which
    // sessions ended while we were away).
    const fromState = !this.#resumed && (this.#sessionId || this.#snapshot || !firstTime);
    if (frame.recovered === false || fromState) this.#refetch();
  }

  /** The gateway found a type's history lost or rewritten: treat it like `recovered: false`. */
  onReset(frame) {
    const type =
      this.#workflowType !== ANY_TYPE ? this.#workflowType : this.get()?.workflowType;
    if (type && frame.workflow_type !== type) return;
    if (!type && this.#sessionId) return; // a session watcher that has not seen its session's type
    // Ids from before the reset mean nothing now, and what we built from them
    // may be wrong: drop it and take the gateway's rebuilt state instead.
    this.#resumeFrom = null;
    for (const [sessionId, record] of this.#records) {
      if (record.state.workflowType === frame.workflow_type) this.#forget(sessionId);
    }
    this.#emit(null, null);
    this.#refetch();
  }

  onEvent(frame) {
    const data = frame.data;
    if (!data) return;
    // A child's event moves its parent's bar, if we hold the parent.
    this.#fromChild(data);
    // The socket carries other watchers' events: take only this watcher's.
    if (this.#sessionId && data.session_id !== this.#sessionId) return;
    if (this.#workflowType !== ANY_TYPE && data.workflow_type !== this.#workflowType) return;
    if (compareIds(frame.id, this.#resumeFrom) > 0) this.#resumeFrom = frame.id;
    const previous = this.#records.get(data.session_id);
    const record = recordFromEvent(previous, frame, this.#typical.get(data.workflow_type) ?? null);
    if (record) this.#store(record, frame);
  }

  // --- inside -------------------------------------------------------------

  /**
   * A child's event carries its parent's figures after it, as the gateway
   * worked them out (`parent_progress`, `parent_children_count`,
   * `parent_children_completed`): the parent's record takes them. The child's
   * id is of another stream, so the parent's own last event id stays.
   */
  #fromChild(data) {
    if (data.parent_id == null || data.parent_progress == null) return;
    const parent = this.#records.get(data.parent_id);
    if (!parent || !parent.state.isInProgress) return;
    const fields = {
      ...parent.state,
      overallProgress: data.parent_progress,
      childrenCount: data.parent_children_count ?? parent.state.childrenCount,
      childrenCompleted: data.parent_children_completed ?? parent.state.childrenCompleted,
      updatedAt: Math.max(parent.state.updatedAt, data.ts ?? 0),
    };
    this.#store(projected(fields, parent.firstProgress), null);
  }

  /** Ride on the shared socket for `credential` (a token or a getToken function). */
  #join(credential) {
    this.#shared = socketFor(this.#wsUrl, credential);
    this.#setStatus(this.#shared.joiningStatus);
    this.#shared.attach(this);
  }

  #setStatus(status) {
    if (status === this.#status) return;
    this.#status = status;
    for (const callback of [...this.#statusListeners]) guarded(callback, status);
  }

  async #refetch() {
    let states;
    try {
      if (this.#sessionId) {
        states = [
          await this.#read(`api/workflows/sessions/${encodeURIComponent(this.#sessionId)}`),
        ];
      } else {
        const query = new URLSearchParams({ limit: this.#limit });
        if (this.#workflowType !== ANY_TYPE) query.set("workflow_type", this.#workflowType);
        states = await this.#read(`api/workflows/sessions?${query}`);
      }
    } catch (error) {
      // A session the gateway does not know yet has no state to load, and a
      // refused token shows in the status; other failures leave the state as
      // the events made it.
      if (!(error instanceof RelayError && [401, 404].includes(error.status))) {
        this.fail(error instanceof RelayError ? error : new RelayError(null, "fetch_failed", String(error)));
      }
      return;
    }
    if (this.#closed) return;
    for (const server of states) {
      if (this.#sessionId && server.session_id !== this.#sessionId) continue;
      if (server.typical_duration != null) this.#typical.set(server.workflow_type, server.typical_duration);
      this.#store(recordFromServer(this.#records.get(server.session_id), server), null);
    }
  }

  #store(record, frame) {
    const { sessionId, isInProgress } = record.state;
    this.#records.set(sessionId, record);
    if (!isInProgress && Number.isFinite(this.#keepEnded) && !this.#evictions.has(sessionId)) {
      const evict = () => {
        this.#forget(sessionId);
        this.#emit(null, null);
      };
      this.#evictions.set(sessionId, setTimeout(evict, this.#keepEnded));
    }
    this.#emit(record.state, frame);
  }

  #forget(sessionId) {
    clearTimeout(this.#evictions.get(sessionId));
    this.#evictions.delete(sessionId);
    this.#records.delete(sessionId);
  }

  #forgetAll() {
    for (const sessionId of [...this.#records.keys()]) this.#forget(sessionId);
  }

  #emit(state, frame) {
    for (const callback of [...this.#listeners]) guarded(callback, state, frame);
  }

  /**
   * A GET of what the token may watch. Its 401 refuses the token as the socket's
   * 4001/4002 does; a refused cancel does not, since watching may need no
   * credential where cancelling does.
   */
  async #read(path) {
    try {
      return await this.#request(path);
    } catch (error) {
      if (error instanceof RelayError && error.status === 401 && !this.#closed) {
        this.#shared.refuse(error.message === EXPIRED_MESSAGE ? "expired" : "unauthorized");
      }
      throw error;
    }
  }

  async #request(path, init = {}) {
    const token = this.#shared.token;
    const headers = token ? { authorization: `Bearer ${token}` } : {};
    const response = await fetch(new URL(path, this.#base), { ...init, headers });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const message = body?.message ?? `${response.status} ${response.statusText}`;
      throw new RelayError(response.status, body?.error ?? "http_error", message);
    }
    return body;
  }
}

/** One listener's exception must not keep the others from hearing about a change. */
function guarded(callback, ...args) {
  try {
    callback(...args);
  } catch (error) {
    (globalThis.reportError ?? console.error)(error);
  }
}

// --- session state --------------------------------------------------------
//
// A record is { state, firstProgress }: the public, frozen state object, and
// the overall progress of the first event known of the session, which with
// `state.startTime` is the point the average progress rate is measured from.
// The gateway's answers carry both (`first_progress`, `started_at`) and its
// own time remaining; live events are folded in by the gateway's rule.

function makeState(fields) {
  const status = fields.status ?? "running";
  return Object.freeze({
    ...fields,
    status,
    isComplete: status === "completed",
    isFailed: status === "failed",
    isCancelled: status === "cancelled",
    isInProgress: !TERMINAL.has(status),
  });
}

/** The worker's own time remaining (`metadata.estimated_time_remaining`), if it gave a valid one. */
function reportedEta(metadata) {
  const reported = metadata?.[ETA_METADATA_KEY];
  return typeof reported === "number" && reported >= 0 ? reported : null;
}

// The share of work done at which a session's own rate and the typical
// duration of its type weigh the same (RATE_WEIGHT_HALF in progress.py).
const RATE_WEIGHT_HALF = 0.1;

/**
 * Seconds a session has left as of its latest event, by the gateway's rule
 * (relay/protocol/progress.py; a test runs both on one table of cases):
 * 0 once completed; null once failed or cancelled; else the worker's own
 * figure in `metadata`; else, without a learned figure, the average rate
 * from the first event (`firstProgress` at `startedAt`, in ms) to the latest
 * (`progress` at `updatedAt`) projected to 100, null while there is no rate
 * yet; with one, before the session moved, the learned figure less the time
 * elapsed (null once used up), and after, the rate and the learned time left
 * blended by the work done. The learned figure is per step when
 * `typicalStepDurations` (seconds per step of the plan, null where unknown)
 * knows the current step (`stepIndex`, 1-based, at `stepProgress`) and every
 * later one, else `typicalDuration` (seconds sessions of its type typically
 * take). In whole milliseconds.
 */
export function estimatedTimeRemaining({
  status,
  progress,
  metadata,
  firstProgress,
  startedAt,
  updatedAt,
  typicalDuration = null,
  typicalStepDurations = null,
  stepIndex = null,
  stepProgress = 0,
}) {
  if (status === "completed") return 0;
  if (TERMINAL.has(status)) return null;
  const reported = reportedEta(metadata);
  if (reported !== null) return reported;
  const elapsedMs = updatedAt - startedAt;
  const gained = progress - firstProgress;
  const moved = elapsedMs > 0 && gained > 0;
  const learned = learnedMs(progress, typicalDuration, typicalStepDurations, stepIndex, stepProgress);
  let leftMs;
  if (learned === null) {
    if (!moved) return null;
    leftMs = ((100 - progress) * elapsedMs) / gained;
  } else if (!moved) {
    leftMs = learned[0] - Math.max(elapsedMs, 0);
    if (!(leftMs > 0)) return null;
  } else {
    leftMs = blended(((100 - progress) * elapsedMs) / gained, learned[1], progress, firstProgress);
  }
  return Math.floor(leftMs + 0.5) / 1000;
}

/** What was learned of the session's time, in ms: [before it moves, from its latest event], or null. */
function learnedMs(progress, typicalDuration, typicalStepDurations, stepIndex, stepProgress) {
  const ahead = stepsLeftMs(typicalStepDurations, stepIndex, stepProgress);
  if (ahead !== null) return [ahead, ahead];
  const typicalMs = typicalDuration == null ? null : typicalDuration * 1000;
  if (typicalMs === null || !(typicalMs > 0)) return null;
  return [typicalMs, (typicalMs * (100 - progress)) / 100];
}

/** Typical ms: the steps still to run, the current by its share left; null if one is unknown. */
function stepsLeftMs(typicalStepDurations, stepIndex, stepProgress) {
  if (typicalStepDurations == null || stepIndex == null) return null;
  if (!(stepIndex >= 1 && stepIndex <= typicalStepDurations.length)) return null;
  const left = typicalStepDurations.slice(stepIndex - 1);
  if (!left.every((seconds) => typeof seconds === "number" && seconds > 0)) return null;
  // Summed first to last, as progress.py does, for the same rounding.
  let laterMs = 0;
  for (const seconds of left.slice(1)) laterMs += seconds * 1000;
  return left[0] * 1000 * (1 - stepProgress / 100) + laterMs;
}

/** The rate's projection and the learned time left, weighted by the work done. */
function blended(rateMs, learnedLeftMs, progress, firstProgress) {
  const done = (progress - firstProgress) / (100 - firstProgress);
  const weight = done / (done + RATE_WEIGHT_HALF);
  return weight * rateMs + (1 - weight) * learnedLeftMs;
}

/** A record whose time remaining is worked out here, from its first point (overall figures). */
function projected(fields, firstProgress) {
  const point = {
    ...fields,
    progress: fields.overallProgress,
    stepProgress: fields.progress,
    firstProgress,
    startedAt: fields.startTime,
  };
  const state = makeState({ ...fields, estimatedTimeRemaining: estimatedTimeRemaining(point) });
  return { state, firstProgress };
}

/** The record after an event frame, or null when the event changes nothing. */
function recordFromEvent(previous, frame, typicalDuration) {
  const data = frame.data;
  if (previous) {
    if (compareIds(frame.id, previous.state.lastEventId) <= 0) return null; // seen already
    // An ended session stays ended; a stray late report does not revive it.
    if (!previous.state.isInProgress && !TERMINAL.has(data.status)) return null;
  }
  const fields = {
    sessionId: data.session_id,
    workflowType: data.workflow_type,
    step: data.step,
    progress: data.progress,
    status: data.status ?? "running",
    metadata: data.metadata ?? {},
    error: data.error ?? null,
    // Reports that do not say keep the attempt and error a retry announced.
    attempt: data.attempt ?? previous?.state.attempt ?? 1,
    lastError: data.error ?? previous?.state.lastError ?? null,
    // The gateway puts the session's owner in every event of an owned session.
    owner: data.owner ?? previous?.state.owner ?? null,
    parentId: data.parent_id ?? previous?.state.parentId ?? null,
    // A parent's events routed live carry its children's counts.
    childrenCount: data.children_count ?? previous?.state.childrenCount ?? 0,
    childrenCompleted: data.children_completed ?? previous?.state.childrenCompleted ?? 0,
    ...planFields(previous, data),
    startTime: previous?.state.startTime ?? data.ts,
    updatedAt: data.ts,
    typicalDuration: previous?.state.typicalDuration ?? typicalDuration,
    // Only a state from the gateway gives them, for the plan it had; a plan
    // declared since may list other steps.
    typicalStepDurations: data.plan == null ? previous?.state.typicalStepDurations ?? null : null,
    lastEventId: frame.id,
  };
  return projected(fields, previous?.firstProgress ?? fields.overallProgress);
}

/**
 * Where an event frame stands in its session's plan. The gateway adds
 * `overall_progress`, `step_index` and `step_count` to the events of a
 * session with a plan (null overall for a step the plan does not list: the
 * figure stays where it was); without them, overall progress is the progress,
 * unless the gateway gave a parent's children's aggregate as `overall_progress`.
 */
function planFields(previous, data) {
  if (data.step_count == null) {
    return { overallProgress: data.overall_progress ?? data.progress, stepIndex: null, stepCount: null };
  }
  return {
    overallProgress: data.overall_progress ?? previous?.state.overallProgress ?? 0,
    stepIndex: data.step_index ?? null,
    stepCount: data.step_count,
  };
}

/** The record after a state from the HTTP API, which says how the gateway sees the session. */
function recordFromServer(previous, server) {
  if (previous && compareIds(server.last_event_id, previous.state.lastEventId) < 0) {
    // Our events are newer; take only what the gateway knows better: the
    // session's first point, from which its rate is measured.
    const known = {
      startTime: server.started_at,
      typicalDuration: server.typical_duration ?? null,
      typicalStepDurations: server.typical_step_durations ?? null,
    };
    return projected({ ...previous.state, ...known }, server.first_overall_progress ?? server.first_progress);
  }
  const state = makeState({
    sessionId: server.session_id,
    workflowType: server.workflow_type,
    step: server.step,
    progress: server.progress,
    status: server.status,
    metadata: server.metadata ?? {},
    error: server.error ?? null,
    attempt: server.attempt ?? 1,
    lastError: server.last_error ?? null,
    owner: server.owner ?? null,
    parentId: server.parent_id ?? null,
    childrenCount: server.children_count ?? 0,
    childrenCompleted: server.children_completed ?? 0,
    overallProgress: server.overall_progress ?? server.progress,
    stepIndex: server.step_index ?? null,
    stepCount: server.step_count ?? null,
    startTime: server.started_at,
    updatedAt: server.updated_at,
    typicalDuration: server.typical_duration ?? null,
    typicalStepDurations: server.typical_step_durations ?? null,
    estimatedTimeRemaining: server.estimated_time_remaining,
    lastEventId: server.last_event_id,
  });
  return { state, firstProgress: server.first_overall_progress ?? server.first_progress };
}
