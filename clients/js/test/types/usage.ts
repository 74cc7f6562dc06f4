// Compiled (never run) by `npm run typecheck`: the declarations cover how an app uses the package.
import {
  ANY_TYPE,
  AUTH_STATUSES,
  RelayError,
  compareIds,
  estimatedTimeRemaining,
  watchWorkflow,
  type ConnectionStatus,
  type SessionState,
} from "relay-progress-client";

const watcher = watchWorkflow({
  url: "http://localhost:8080",
  workflowType: ANY_TYPE,
  snapshot: true,
  keepEnded: 60_000,
  getToken: async () => "token",
});
const stop: () => void = watcher.onChange((state: SessionState | null, event) => {
  if (state?.isInProgress) console.log(state.progress.toFixed(1), event?.id);
});
watcher.onStatus((status: ConnectionStatus) => {
  if ((AUTH_STATUSES as readonly string[]).includes(status)) watcher.setToken(null);
});
watcher.onError((error: RelayError) => console.log(error.closeCode ?? error.status, error.code));
const states: Map<string, SessionState> = watcher.sessions();
const left: number | null = estimatedTimeRemaining({
  status: "running",
  progress: 40,
  firstProgress: 0,
  startedAt: 0,
  updatedAt: 4000,
});
const order: number = compareIds("1-0", null);
void watcher.cancel("s1").then((answer) => answer.session_id);
void watcher.history("s1").then((events) => events.map((frame) => frame.data.progress));
const retried = watcher.get("s1");
if (retried?.status === "retrying") console.log(retried.attempt.toFixed(0), retried.lastError);
console.log(states.size, left, order, watcher.get()?.status);
stop();
watcher.close();

// @ts-expect-error: a status the client never has
const wrong: ConnectionStatus = "open";
// @ts-expect-error: keepEnded is milliseconds
watchWorkflow({ keepEnded: "1m" });
console.log(wrong);
