/**
 * The relay dashboard: recent sessions grouped by workflow type, live.
 *
 * It uses nothing but the browser client and the gateway's public API. Events
 * can arrive by the hundred per second, so it never touches the page per
 * event: changed states collect in `pending` and are drawn once per animation
 * frame, each session's row updated in place (rows are keyed by session id,
 * never rebuilt, and move only when they learn when their session started).
 *
 * The list stays bounded: an ended session leaves it a while after it ended
 * (the "Keep ended" select, 10 minutes unless `?keep_ended=<seconds>` says
 * otherwise), and only the counts still speak of it.
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
const layoutEl = byId("layout");
const filterEl = byId("filter");
const keepEndedEl = byId("keep-ended");
const hideEndedEl = byId("hide-ended");
const groupTemplate = byId("group-template");
const rowTemplate = byId("row-template");

const STATUS_LABELS = {
  running: "running",
  retrying: "retrying",
  cancel_requested: "cancelling",
  stalled: "stalled",
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

// What the page remembers across visits (localStorage, unlike the token).
const HIDE_ENDED_KEY = "relay.hideEnded";
const KEEP_ENDED_KEY = "relay.keepEnded";
const FILTER_FIELDS = ["type", "id", "status", "owner"];

const known = new Map(); // session id -> newest state, listed or not
const rows = new Map(); // session id -> row (its elements and the state drawn)
const groups = new Map(); // workflow type -> group (its elements)
const pending = new Map(); // session id -> newest state not drawn yet
let frameRequested = false;
let clockDue = false;
let keepEndedMs = readKeepEnded();
let hideEnded = localStorage.getItem(HIDE_ENDED_KEY) === "true";
let filterTerms = [];
hideEndedEl.checked = hideEnded;

// The open history panel: which session, whether its history has loaded, the
// newest event shown, and live events waiting to be appended.
const detail = { sessionId: null, loaded: false, lastId: null, queue: [] };

watcher.onChange((state, event) => {
  if (state === null) {
    // The watcher dropped what it knew (its history was reset): start over from what it has now.
    known.clear();
    for (const row of [...rows.values()]) removeRow(row);
    for (const fresh of watcher.sessions().values()) remember(fresh);
    scheduleDraw();
    return;
  }
  remember(state);
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

function remember(state) {
  known.set(state.sessionId, state);
  pending.set(state.sessionId, state);
}

function scheduleDraw() {
  if (frameRequested) return;
  frameRequested = true;
  requestAnimationFrame(draw);
}

function draw() {
  frameRequested = false;
  const now = Date.now();
  for (const state of pending.values()) {
    const listedRow = rows.get(state.sessionId);
    if (!isListed(state, now)) {
      if (listedRow) removeRow(listedRow);
      continue;
    }
    const row = listedRow ?? createRow(state.sessionId);
    const moved = row.state?.startTime !== state.startTime;
    drawRow(row, state, now);
    if (moved) place(row);
  }
  pending.clear();

  if (clockDue) {
    clockDue = false;
    for (const row of rows.values()) {
      if (row.state.isInProgress) drawTimes(row, now);
      else if (!isListed(row.state, now)) removeRow(row);
    }
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
  // The column may cut a long id short; the whole of it, and whom it runs for, show on hover.
  const title = state.owner ? `${state.sessionId} (for ${state.owner})` : state.sessionId;
  if (row.name.title !== title) row.name.title = title;
  el.toggleAttribute("data-ended", !state.isInProgress);
  // A child's row is indented under its workflow type's, and says whose child it is.
  el.toggleAttribute("data-child", state.parentId != null);
  // The bar is the whole workflow's: with a plan, the gateway's overall figure.
  const overall = state.overallProgress ?? state.progress;
  const progress = String(overall);
  if (row.bar.getAttribute("aria-valuenow") !== progress) {
    row.bar.setAttribute("aria-valuenow", progress);
    row.fill.style.width = `${overall}%`;
    row.pct.textContent = `${formatNumber(overall)}%`;
  }
  const step = stepText(state);
  setText(row.step, step);
  if (row.step.title !== step) row.step.title = step;
  const retrying = state.status === "retrying";
  setText(row.status, retrying ? retryText(state) : (STATUS_LABELS[state.status] ?? state.status));
  // Any session not yet ended may be cancelled, but only once.
  row.cancel.hidden = !state.isInProgress || state.status === "cancel_requested";
  if (changedStatus) row.cancel.disabled = false;
  // A retry's error is already in its status text.
  showError(row.error, retrying ? null : state.error, state.isFailed);
  drawTimes(row, now);
  drawVisibility(row);
}

/**
 * "step 2 of 3: generating 50%" with a plan; the step alone without one. A
 * parent's says "3 of 5 children done" first, a child's "child of <parent>" last.
 */
function stepText(state) {
  let text = state.step;
  if (state.stepCount != null) {
    const place =
      state.stepIndex == null ? "unplanned step" : `step ${state.stepIndex} of ${state.stepCount}`;
    text = `${place}: ${state.step} ${formatNumber(state.progress)}%`;
  }
  if (state.childrenCount) {
    text = `${state.childrenCompleted} of ${state.childrenCount} children done · ${text}`;
  }
  return state.parentId == null ? text : `${text} · child of ${state.parentId}`;
}

/** "retrying (attempt 2): <error>": which attempt runs now, and why the one before failed. */
function retryText(state) {
  const text = `${STATUS_LABELS.retrying} (attempt ${state.attempt})`;
  return state.error ? `${text}: ${state.error}` : text;
}

/** Only a failed session's error is a failure; on any other it is a warning the worker gave. */
function showError(el, text, isFailure) {
  el.hidden = !text;
  el.dataset.level = isFailure ? "error" : "warning";
  setText(el, text ?? "");
}

function drawTimes(row, now) {
  const { state } = row;
  let elapsed = "";
  if (state.startTime && state.isInProgress) {
    elapsed = `${duration((now - state.startTime) / 1000)} elapsed`;
  } else if (state.startTime) {
    // An ended session's clock stopped at its last event.
    elapsed = `took ${duration((state.updatedAt - state.startTime) / 1000)}`;
  }
  setText(row.elapsed, elapsed);
  let eta = "";
  let stalled = false;
  if (state.isComplete) {
    eta = "done";
  } else if (state.status === "stalled") {
    // The gateways said so: the worker has sent nothing for the stall time.
    stalled = true;
    eta = "stalled";
  } else if (state.isInProgress && state.estimatedTimeRemaining != null) {
    // The estimate holds as of the last event; count down from there. Once it
    // has run out without news the session is late, and no figure is honest.
    const left = state.estimatedTimeRemaining - (now - state.updatedAt) / 1000;
    stalled = left <= 0;
    eta = stalled ? "stalled" : `~${duration(Math.ceil(left))} left`;
  }
  setText(row.eta, eta);
  row.el.toggleAttribute("data-stalled", stalled);
}

/** Whether a session has a row: running ones always, ended ones for `keepEndedMs` after they ended. */
function isListed(state, now) {
  return state.isInProgress || now - state.updatedAt < keepEndedMs;
}

/** A listed row shows unless the filter or "Hide ended" leaves it out. */
function drawVisibility(row) {
  const hidden = (hideEnded && !row.state.isInProgress) || !matchesFilter(row.state);
  if (row.el.hidden !== hidden) row.el.hidden = hidden;
}

function removeRow(row) {
  const { sessionId, workflowType } = row.state;
  row.el.remove();
  rows.delete(sessionId);
  const group = groups.get(workflowType);
  if (!group.rowsEl.querySelector(".session")) {
    group.el.remove();
    groups.delete(workflowType);
  }
  if (sessionId === detail.sessionId) anchorDetail();
}

// --- filter ------------------------------------------------------------------

/**
 * The filter is words that must all match: a bare word matches a session
 * whose type, id, status (or its label) or owner contains it; `type:`, `id:`,
 * `status:` or `owner:` before a word narrows it to that one. Case does not matter.
 */
function parseFilter(text) {
  return text
    .toLowerCase()
    .split(/\s+/)
    .filter(Boolean)
    .map((word) => {
      const colon = word.indexOf(":");
      const field = word.slice(0, colon);
      if (colon > 0 && FILTER_FIELDS.includes(field)) {
        return { fields: [field], value: word.slice(colon + 1) };
      }
      return { fields: FILTER_FIELDS, value: word };
    });
}

function matchesFilter(state) {
  if (!filterTerms.length) return true;
  const values = {
    type: state.workflowType.toLowerCase(),
    id: state.sessionId.toLowerCase(),
    status: `${state.status} ${STATUS_LABELS[state.status] ?? ""}`,
    owner: (state.owner ?? "").toLowerCase(),
  };
  return filterTerms.every(({ fields, value }) =>
    fields.some((field) => values[field].includes(value)),
  );
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
  for (const el of rowsEl.querySelectorAll(":scope > .session")) {
    if (el !== row.el && (rows.get(el.dataset.session).state.startTime ?? 0) < startTime) {
      before = el;
      break;
    }
  }
  if (before !== row.el.nextElementSibling || row.el.parentNode !== rowsEl) {
    rowsEl.insertBefore(row.el, before);
    if (row.state.sessionId === detail.sessionId) anchorDetail();
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

/**
 * The counts: per group its listed rows; on top, of the sessions the filter
 * lets through, those running, the ended ones shown, and all the page knows
 * of (ended ones that left the list included).
 */
function drawSummary() {
  const byType = new Map();
  let endedShown = 0;
  for (const { el, state } of rows.values()) {
    const counts = byType.get(state.workflowType) ?? { all: 0, active: 0, shown: 0 };
    counts.all += 1;
    if (state.isInProgress) counts.active += 1;
    if (!el.hidden) counts.shown += 1;
    if (!el.hidden && !state.isInProgress) endedShown += 1;
    byType.set(state.workflowType, counts);
  }
  for (const [type, counts] of byType) {
    const group = groups.get(type);
    setText(group.countEl, `${counts.active} active · ${counts.all} total`);
    group.el.hidden = counts.shown === 0;
  }
  let running = 0;
  let matching = 0;
  let runningAll = 0;
  for (const state of known.values()) {
    if (state.isInProgress) runningAll += 1;
    if (!matchesFilter(state)) continue;
    matching += 1;
    if (state.isInProgress) running += 1;
  }
  setText(summaryEl, `${running} running · ${endedShown} ended shown · ${matching} total`);
  emptyEl.hidden = known.size > 0 || !signInEl.hidden;
  document.title = runningAll ? `(${runningAll}) relay` : "relay";
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
    if (row) showError(row.error, `Cancel failed: ${error.message}`, true);
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

hideEndedEl.addEventListener("change", () => {
  hideEnded = hideEndedEl.checked;
  localStorage.setItem(HIDE_ENDED_KEY, String(hideEnded));
  redrawVisibility();
});

filterEl.addEventListener("input", () => {
  filterTerms = parseFilter(filterEl.value);
  redrawVisibility();
});

keepEndedEl.addEventListener("change", () => {
  keepEndedMs = Number(keepEndedEl.value) * 1000;
  localStorage.setItem(KEEP_ENDED_KEY, keepEndedEl.value);
  // Sessions gone from the list come back if the new time still covers them.
  for (const state of known.values()) pending.set(state.sessionId, state);
  scheduleDraw();
});

function redrawVisibility() {
  for (const row of rows.values()) drawVisibility(row);
  scheduleDraw();
}

/**
 * How long ended sessions stay listed, in ms: `?keep_ended=<seconds>` in the
 * address (which gets its own choice in the select if it is not one of them),
 * else the choice made last time, else the select's default.
 */
function readKeepEnded() {
  const asked = Number(new URLSearchParams(location.search).get("keep_ended") ?? NaN);
  const offered = (value) => [...keepEndedEl.options].some((option) => option.value === value);
  if (asked >= 0) {
    const value = String(asked);
    if (!offered(value)) keepEndedEl.append(new Option(duration(asked), value));
    keepEndedEl.value = value;
  } else {
    const stored = localStorage.getItem(KEEP_ENDED_KEY);
    if (offered(stored)) keepEndedEl.value = stored;
  }
  return Number(keepEndedEl.value) * 1000;
}

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
  detailTitleEl.title = sessionId;
  anchorDetail();
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
  anchorDetail();
}

/**
 * Where the history panel sits: beside the list on a wide screen, but where
 * the stylesheet puts it in the flow (a narrow screen) right under its
 * session's row, so a tap opens it where the finger is, not below every group.
 */
function anchorDetail() {
  const row = rows.get(detail.sessionId);
  const inFlow = getComputedStyle(detailEl).position === "static";
  if (row && inFlow && !detailEl.hidden) {
    if (row.el.nextElementSibling !== detailEl) row.el.after(detailEl);
  } else if (detailEl.parentNode !== layoutEl) {
    layoutEl.append(detailEl);
  }
}
addEventListener("resize", anchorDetail);

function drawDetail() {
  const state = known.get(detail.sessionId);
  if (state) {
    const started = state.startTime ? `started ${new Date(state.startTime).toLocaleString()}` : "";
    const metadata = Object.keys(state.metadata).length ? JSON.stringify(state.metadata) : "";
    const owner = state.owner ? `for ${state.owner}` : "";
    const parts = [state.workflowType, STATUS_LABELS[state.status], owner, started, metadata];
    detailMetaEl.textContent = parts
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
    showError(error, data.error, data.status === "failed");
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
