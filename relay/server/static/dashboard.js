/**
 * The relay dashboard: recent sessions grouped by workflow type, live.
 *
 * It uses nothing but the browser client and the gateway's public API. Events
 * can arrive by the hundred per second, so it never touches the page per
 * event: changed states collect in `pending` and are drawn once per animation
 * frame, each session's row updated in place (rows are keyed by session id,
 * never rebuilt, and move only when they learn when their session started).
 */
import { AUTH_STATUSES, compareIds, watchWorkflow } from "./relay-client.js";

// A gateway that needs a token gets it from the page address, `/#token=...`
// (what `relay token --dashboard` prints; a fragment never reaches server
// logs or Referer headers) or `/?token=...`, or from the sign-in form. It is
// kept for this tab only, in sessionStorage, and taken out of the address so
// it is not bookmarked or shared with the link. The watcher sends it on the
// socket and on every HTTP request, cancelling included, so the Cancel
// buttons work once the token carries the cancel claim.
const TOKEN_KEY = "relay.token";
takeTokenFromAddress();

// Every type, starting from the current state; the watcher also loads the
// 200 most recent sessions over HTTP so ended ones show too.
const watcher = watchWorkflow({
  workflowType: "*",
  snapshot: true,
  limit: 200,
  token: sessionStorage.getItem(TOKEN_KEY),
});

const byId = (id) => document.getElementById(id);
const signInEl = byId("sign-in");
const signInMessageEl = byId("sign-in-message");
const tokenInputEl = byId("token");
const signOutEl = byId("sign-out");
const groupsEl = byId("groups");
const emptyEl = byId("empty");
const summaryEl = byId("summary");
const connectionEl = byId("connection");
const detailEl = byId("detail");
const detailTitleEl = byId("detail-title");
const detailMetaEl = byId("detail-meta");
const timelineEl = byId("timeline");
const groupTemplate = byId("group-template");
const rowTemplate = byId("row-template");

const STATUS_LABELS = {
  running: "running",
  cancel_requested: "cancelling",
  completed: "completed",
  failed: "failed",
  cancelled: "cancelled",
};
const CONNECTION_LABELS = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  closed: "closed",
  unauthorized: "authentication required",
  expired: "token expired",
};
const SIGN_IN_MESSAGES = {
  unauthorized: "This gateway needs a token to show its sessions.",
  expired: "The token expired. Sign in with a new one.",
};

const rows = new Map(); // session id -> row (its elements and the state drawn)
const groups = new Map(); // workflow type -> group (its elements)
const pending = new Map(); // session id -> newest state not drawn yet
let frameRequested = false;
let clockDue = false;

// The open history panel: which session, whether its history has loaded, the
// newest event shown, and live events waiting to be appended.
const detail = { sessionId: null, loaded: false, lastId: null, queue: [] };

watcher.onChange((state, event) => {
  pending.set(state.sessionId, state);
  if (event && state.sessionId === detail.sessionId) detail.queue.push(event);
  scheduleDraw();
});

watcher.onStatus((status) => {
  connectionEl.dataset.state = status;
  connectionEl.textContent = CONNECTION_LABELS[status];
  const refused = AUTH_STATUSES.includes(status);
  if (refused) {
    // A refused token stays refused: forget it, and ask for another.
    sessionStorage.removeItem(TOKEN_KEY);
    signInMessageEl.textContent = SIGN_IN_MESSAGES[status];
  }
  signInEl.hidden = !refused;
  if (refused) tokenInputEl.focus();
  drawSignOut();
  scheduleDraw();
});
drawSignOut();

// Elapsed times and ETAs move on their own between events.
setInterval(() => {
  clockDue = true;
  scheduleDraw();
}, 1000);

function scheduleDraw() {
  if (frameRequested) return;
  frameRequested = true;
  requestAnimationFrame(draw);
}

function draw() {
  frameRequested = false;
  const now = Date.now();
  for (const state of pending.values()) {
    const row = rows.get(state.sessionId) ?? createRow(state.sessionId);
    const moved = row.state?.startTime !== state.startTime;
    drawRow(row, state, now);
    if (moved) place(row);
  }
  pending.clear();

  if (clockDue) {
    clockDue = false;
    for (const row of rows.values()) if (row.state.isInProgress) drawTimes(row, now);
  }
  if (detail.sessionId) drawDetail();
  drawSummary();
}

// --- session rows ----------------------------------------------------------

function createRow(sessionId) {
  const el = rowTemplate.content.firstElementChild.cloneNode(true);
  el.dataset.session = sessionId;
  const part = (selector) => el.querySelector(selector);
  const row = {
    el,
    state: null,
    name: part(".name"),
    bar: part(".bar"),
    fill: part(".fill"),
    pct: part(".pct"),
    step: part(".step"),
    elapsed: part(".elapsed"),
    eta: part(".eta"),
    status: part(".status"),
    cancel: part(".cancel"),
    error: part(".error"),
  };
  row.name.textContent = sessionId;
  if (sessionId === detail.sessionId) el.classList.add("selected");
  rows.set(sessionId, row);
  return row;
}

function drawRow(row, state, now) {
  const { el } = row;
  const changedStatus = row.state?.status !== state.status;
  row.state = state;
  el.dataset.status = state.status;
  el.toggleAttribute("data-ended", !state.isInProgress);
  const progress = String(state.progress);
  if (row.bar.getAttribute("aria-valuenow") !== progress) {
    row.bar.setAttribute("aria-valuenow", progress);
    row.fill.style.width = `${state.progress}%`;
    row.pct.textContent = `${formatNumber(state.progress)}%`;
  }
  setText(row.step, state.step);
  setText(row.status, STATUS_LABELS[state.status] ?? state.status);
  row.cancel.hidden = state.status !== "running";
  if (changedStatus) row.cancel.disabled = false;
  row.error.hidden = !state.error;
  setText(row.error, state.error ?? "");
  drawTimes(row, now);
}

function drawTimes(row, now) {
  const { state } = row;
  // An ended session's clock stops at its last event.
  const until = state.isInProgress ? now : state.updatedAt;
  setText(
    row.elapsed,
    state.startTime ? `${duration((until - state.startTime) / 1000)} elapsed` : "",
  );
  let eta = "";
  if (state.isComplete) {
    eta = "done";
  } else if (state.isInProgress && state.estimatedTimeRemaining != null) {
    // The estimate holds as of the last event; count down from there.
    const left = state.estimatedTimeRemaining - (now - state.updatedAt) / 1000;
    eta = `~${duration(left)} left`;
  }
  setText(row.eta, eta);
}

/**
 * Put a row where it belongs in its group: the latest started on top. Rows
 * only move when they appear or learn their real start time (a snapshot event
 * gives way to the gateway's state), so the list stays still while it updates.
 */
function place(row) {
  const { rowsEl } = groupFor(row.state.workflowType);
  const startTime = row.state.startTime ?? 0;
  let before = null;
  for (const el of rowsEl.children) {
    if (el !== row.el && (rows.get(el.dataset.session).state.startTime ?? 0) < startTime) {
      before = el;
      break;
    }
  }
  if (before !== row.el.nextElementSibling || row.el.parentNode !== rowsEl) {
    rowsEl.insertBefore(row.el, before);
  }
}

function groupFor(workflowType) {
  let group = groups.get(workflowType);
  if (group) return group;
  const el = groupTemplate.content.firstElementChild.cloneNode(true);
  el.dataset.type = workflowType;
  el.querySelector(".type").textContent = workflowType;
  group = { el, rowsEl: el.querySelector(".rows"), countEl: el.querySelector(".count") };
  groups.set(workflowType, group);
  // Groups stay in alphabetical order of type.
  const next = [...groups.keys()].sort().find((type) => type > workflowType);
  groupsEl.insertBefore(el, next ? groups.get(next).el : null);
  return group;
}

function drawSummary() {
  const byStatus = {};
  const byType = new Map();
  for (const { state } of rows.values()) {
    byStatus[state.status] = (byStatus[state.status] ?? 0) + 1;
    const counts = byType.get(state.workflowType) ?? { all: 0, active: 0 };
    counts.all += 1;
    if (state.isInProgress) counts.active += 1;
    byType.set(state.workflowType, counts);
  }
  for (const [type, counts] of byType) {
    setText(groups.get(type).countEl, `${counts.active} active · ${counts.all} total`);
  }
  const parts = Object.entries(STATUS_LABELS)
    .filter(([status]) => byStatus[status])
    .map(([status, label]) => `${byStatus[status]} ${label}`);
  setText(summaryEl, parts.join(" · "));
  emptyEl.hidden = rows.size > 0 || !signInEl.hidden;
  const running = (byStatus.running ?? 0) + (byStatus.cancel_requested ?? 0);
  document.title = running ? `(${running}) relay` : "relay";
}

// --- actions ---------------------------------------------------------------

groupsEl.addEventListener("click", (click) => {
  const el = click.target.closest(".session");
  if (!el) return;
  const cancelButton = click.target.closest(".cancel");
  if (cancelButton) cancelSession(el.dataset.session, cancelButton);
  else openHistory(el.dataset.session);
});

async function cancelSession(sessionId, button) {
  button.disabled = true;
  try {
    await watcher.cancel(sessionId);
    // The cancel_requested event comes back through the watcher and redraws the row.
  } catch (error) {
    button.disabled = false;
    const row = rows.get(sessionId);
    row.error.hidden = false;
    row.error.textContent = `Cancel failed: ${error.message}`;
  }
}

signInEl.addEventListener("submit", (submit) => {
  submit.preventDefault();
  const token = tokenInputEl.value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  tokenInputEl.value = "";
  signInEl.hidden = true;
  watcher.setToken(token);
});

// Signing out starts the page afresh, without a token and what it showed.
signOutEl.addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.reload();
});

function drawSignOut() {
  signOutEl.hidden = sessionStorage.getItem(TOKEN_KEY) === null;
}

/** Keep a token given in the address for this tab, and take it out of the address. */
function takeTokenFromAddress() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const query = new URLSearchParams(location.search);
  const token = fragment.get("token") ?? query.get("token");
  if (token === null) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  fragment.delete("token");
  query.delete("token");
  const search = String(query);
  const hash = String(fragment);
  const address = `${location.pathname}${search && `?${search}`}${hash && `#${hash}`}`;
  history.replaceState(history.state, "", address);
}

byId("hide-ended").addEventListener("change", (change) => {
  document.body.classList.toggle("hide-ended", change.target.checked);
});

byId("detail-close").addEventListener("click", closeHistory);
document.addEventListener("keydown", (key) => {
  if (key.key === "Escape") closeHistory();
});

// --- history panel -----------------------------------------------------------

async function openHistory(sessionId) {
  rows.get(detail.sessionId)?.el.classList.remove("selected");
  rows.get(sessionId)?.el.classList.add("selected");
  Object.assign(detail, { sessionId, loaded: false, lastId: null, queue: [] });
  detailEl.hidden = false;
  detailTitleEl.textContent = sessionId;
  timelineEl.replaceChildren(note("Loading history…"));
  drawDetail();
  let events;
  try {
    events = await watcher.history(sessionId);
  } catch (error) {
    if (detail.sessionId === sessionId) {
      timelineEl.replaceChildren(note(`Could not load: ${error.message}`));
    }
    return;
  }
  if (detail.sessionId !== sessionId) return; // another session was opened meanwhile
  timelineEl.replaceChildren();
  detail.loaded = true;
  // Live events that came while loading wait in the queue; drawDetail skips
  // the ones the history already holds.
  detail.queue.unshift(...events);
  drawDetail();
}

function closeHistory() {
  rows.get(detail.sessionId)?.el.classList.remove("selected");
  Object.assign(detail, { sessionId: null, loaded: false, lastId: null, queue: [] });
  detailEl.hidden = true;
}

function drawDetail() {
  const state = rows.get(detail.sessionId)?.state;
  if (state) {
    const started = state.startTime ? `started ${new Date(state.startTime).toLocaleString()}` : "";
    const metadata = Object.keys(state.metadata).length ? JSON.stringify(state.metadata) : "";
    detailMetaEl.textContent = [state.workflowType, STATUS_LABELS[state.status], started, metadata]
      .filter(Boolean)
      .join(" · ");
  }
  if (!detail.loaded) return;
  for (const event of detail.queue) {
    if (compareIds(event.id, detail.lastId) <= 0) continue;
    timelineEl.append(timelineItem(event));
    detail.lastId = event.id;
  }
  detail.queue = [];
  if (!timelineEl.firstChild) timelineEl.append(note("No retained events."));
}

function timelineItem({ id, data }) {
  const item = document.createElement("li");
  item.dataset.id = id;
  item.dataset.status = data.status ?? "running";
  const time = document.createElement("time");
  time.dateTime = new Date(data.ts).toISOString();
  time.textContent = new Date(data.ts).toLocaleTimeString();
  item.append(
    time,
    span("step", data.step),
    span("pct", `${formatNumber(data.progress)}%`),
    span("status", STATUS_LABELS[data.status] ?? data.status ?? "running"),
  );
  if (data.error) {
    const error = document.createElement("p");
    error.className = "error";
    error.textContent = data.error;
    item.append(error);
  }
  return item;
}

// --- helpers -----------------------------------------------------------------

function span(className, text) {
  const el = document.createElement("span");
  el.className = className;
  el.textContent = text;
  return el;
}

function note(text) {
  const item = document.createElement("li");
  item.className = "note";
  item.textContent = text;
  return item;
}

/** Writing the same text again still costs a DOM mutation; skip it. */
function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function formatNumber(value) {
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}

function duration(seconds) {
  const total = Math.max(0, Math.round(seconds));
  if (total < 60) return `${total}s`;
  const minutes = Math.floor(total / 60);
  if (minutes < 60) return `${minutes}m ${String(total % 60).padStart(2, "0")}s`;
  return `${Math.floor(minutes / 60)}h ${String(minutes % 60).padStart(2, "0")}m`;
}
