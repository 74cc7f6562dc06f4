// Types of relay-progress-client, the browser client of a relay gateway
// (relay-client.js). The wire protocol is described in docs/protocol.md.

/** The workflow type that stands for every type. */
export declare const ANY_TYPE: "*";

/**
 * A session's status; the last three are terminal. `retrying`: an attempt
 * failed, the next runs. `stalled`: the worker fell silent.
 */
export type Status =
  | "running"
  | "retrying"
  | "cancel_requested"
  | "stalled"
  | "completed"
  | "failed"
  | "cancelled";

/** The statuses a session ends with; no later report revives it. */
export declare const TERMINAL_STATUSES: readonly ["completed", "failed", "cancelled"];

/** The metadata key under which a worker may give its own seconds-left figure. */
export declare const ETA_METADATA_KEY: "estimated_time_remaining";

/**
 * Watchers one WebSocket carries: the watchers of a page with the same
 * gateway and credential (token or getToken function) share sockets.
 */
export declare const WATCHERS_PER_SOCKET: 50;

/** The statuses in which the watcher waits for a token. */
export declare const AUTH_STATUSES: readonly ["unauthorized", "expired"];

/** The watcher's connection status. */
export type ConnectionStatus =
  | "connecting"
  | "live"
  | "reconnecting"
  | "closed"
  | (typeof AUTH_STATUSES)[number];

/** A token, or none. */
export type Token = string | null;

/**
 * Something that went wrong between the watcher and the gateway: an HTTP
 * answer that was not a success (`status`), a WebSocket closed by the gateway
 * or the network (`closeCode`), an error frame, or a getToken() that threw.
 */
export declare class RelayError extends Error {
  constructor(status: number | null, code: string, message: string, closeCode?: number | null);
  readonly name: "RelayError";
  /** The HTTP status, or null when the error did not come from an HTTP answer. */
  readonly status: number | null;
  /** What went wrong: the gateway's error code, "unauthorized", "token_expired", "connection_closed", "get_token_failed", ... */
  readonly code: string;
  /** The WebSocket close code (4001 unauthorized, 4002 token expired, ...), or null. */
  readonly closeCode: number | null;
}

/** A session's state, frozen. */
export interface SessionState {
  readonly sessionId: string;
  readonly workflowType: string;
  readonly step: string;
  /** 0 to 100, as reported: with a plan, the current step's own progress. */
  readonly progress: number;
  /**
   * The whole workflow's progress, 0 to 100: from the plan's weights when
   * the session declared one (as the gateway computed it), else `progress`.
   */
  readonly overallProgress: number;
  /** The current step's place in the plan, 1-based; null without a plan or for an unlisted step. */
  readonly stepIndex: number | null;
  /** How many steps the plan lists; null without a plan. */
  readonly stepCount: number | null;
  readonly status: Status;
  readonly metadata: Readonly<Record<string, unknown>>;
  readonly error: string | null;
  /** The attempt the worker is on: 1 until it reported `retrying`. */
  readonly attempt: number;
  /** The error of the latest event that had one, such as a failed attempt's. */
  readonly lastError: string | null;
  /** The user the session runs for, or null when no event named one. */
  readonly owner: string | null;
  /** The session's parent, or null. */
  readonly parentId: string | null;
  /**
   * Its children the gateway remembers, and those that completed. A parent
   * that reports no progress of its own shows their aggregate as
   * `overallProgress`, moved live by its children's events.
   */
  readonly childrenCount: number;
  readonly childrenCompleted: number;
  /** When the session started, ms since the epoch. */
  readonly startTime: number;
  /** When its latest report was made, ms since the epoch. */
  readonly updatedAt: number;
  /** Seconds sessions of its type typically take, as the gateway learned it; null when unknown. */
  readonly typicalDuration: number | null;
  /**
   * Seconds each step of its plan typically takes, in the plan's order (null where unknown), as
   * the gateway's state gave it; null without a plan, for a session first heard of live, and
   * once an event declares another plan.
   */
  readonly typicalStepDurations: ReadonlyArray<number | null> | null;
  /** Seconds left, from the overall progress and the typical durations; null when there is no estimate. */
  readonly estimatedTimeRemaining: number | null;
  /** The stream entry id of its latest event. */
  readonly lastEventId: string;
  readonly isComplete: boolean;
  readonly isFailed: boolean;
  readonly isCancelled: boolean;
  readonly isInProgress: boolean;
}

/** The data of an event frame: a worker's report. */
export interface EventData {
  session_id: string;
  workflow_type: string;
  step: string;
  progress: number;
  status?: Status;
  metadata?: Record<string, unknown>;
  error?: string | null;
  /** The attempt, once the session was retried (a `retrying` event names the one it starts). */
  attempt?: number;
  /** The user the session runs for; present in every event of an owned session. */
  owner?: string;
  ts: number;
  /**
   * True, with `status` "cancel_requested", from the cancel_requested event
   * until the session ends: the worker's ordinary reports meanwhile keep the
   * session cancelling. Absent otherwise.
   */
  cancel_requested?: true;
  /** The session's steps, when this report declares them (it replaces any earlier plan). */
  plan?: PlanStep[];
  /** Added by the gateway to the events of a session with a plan; null for an unlisted step. */
  overall_progress?: number | null;
  /** Added with a plan: the step's place in it, 1-based; null for an unlisted step. */
  step_index?: number | null;
  /** Added with a plan: how many steps it lists. */
  step_count?: number;
}

/** One step of a plan: its name as reports give it, and its weight (default 1). */
export interface PlanStep {
  step: string;
  weight?: number;
}

/** An event frame as the gateway sends it. */
export interface EventFrame {
  /** The stream, `workflow:progress:{type}`. */
  event: string;
  /** The stream entry id. */
  id: string;
  data: EventData;
}

/** What watchWorkflow() takes. */
export interface WatchOptions {
  /** The gateway's base http(s) URL; the page's origin when omitted. */
  url?: string | URL;
  /** The type watched, `"*"` (the default) for every type. */
  workflowType?: string;
  /** One session to watch instead of the whole type. */
  sessionId?: string | null;
  /** Sent in an `auth` frame and as `Authorization: Bearer`; never in a URL. */
  token?: Token;
  /**
   * Called before every (re)connect and when the gateway refuses the token;
   * a token other than the refused one connects again.
   */
  getToken?: (() => Token | undefined | PromiseLike<Token | undefined>) | null;
  /** For a type watcher: start from the type's current state. */
  snapshot?: boolean;
  /** How many recent sessions a type watcher loads over HTTP (1 to 1000). */
  limit?: number;
  /** Milliseconds an ended session is kept after it ended; for good when omitted. */
  keepEnded?: number;
}

/** A removal of the callback it was returned for. */
export type Unsubscribe = () => void;

/** The gateway's answer to a cancel request. */
export interface CancelAnswer {
  session_id: string;
  [key: string]: unknown;
}

/** A watcher of one session or of every session of a type. */
export interface Watcher {
  /**
   * Called after every change of a session's state, with the event frame that
   * caused it (null when it came over HTTP); with `(null, null)` when states
   * were dropped (reset(), a gateway reset, keepEnded).
   */
  onChange(callback: (state: SessionState | null, event: EventFrame | null) => void): Unsubscribe;
  /** Called whenever the connection status changes. */
  onStatus(callback: (status: ConnectionStatus) => void): Unsubscribe;
  /** Called for every closed socket, error frame, failed state load and failed getToken(). */
  onError(callback: (error: RelayError) => void): Unsubscribe;
  readonly status: ConnectionStatus;
  /**
   * Connect again with another token (null for none), resuming where the
   * watcher was; with getToken, for every watcher sharing that getToken.
   */
  setToken(token: Token): void;
  /** The state of a session (the watcher's own by default), or null. */
  get(sessionId?: string): SessionState | null;
  /** Every known session's state, by session id. */
  sessions(): Map<string, SessionState>;
  /** Forget every state and where to resume from. */
  reset(): void;
  /** Stop watching and drop the listeners; the shared socket closes once no watcher is on it. */
  close(): void;
  /** Ask the worker running a session to stop. */
  cancel(sessionId?: string): Promise<CancelAnswer>;
  /** Every retained event of a session, oldest first. */
  history(sessionId?: string): Promise<EventFrame[]>;
}

/** Watch one session (`sessionId`) or every session of a workflow type. */
export declare function watchWorkflow(options?: WatchOptions): Watcher;

/** Order two stream entry ids: negative, zero or positive; a missing id sorts first. */
export declare function compareIds(a: string | null | undefined, b: string | null | undefined): number;

/** What estimatedTimeRemaining() works from. */
export interface EtaPoint {
  status: Status;
  progress: number;
  metadata?: Record<string, unknown> | null;
  /** Progress of the session's first event. */
  firstProgress: number;
  /** When the first event was made, ms since the epoch. */
  startedAt: number;
  /** When the latest event was made, ms since the epoch. */
  updatedAt: number;
  /** Seconds sessions of its type typically take; null or absent when unknown. */
  typicalDuration?: number | null;
  /** Seconds each step of the plan typically takes (null where unknown); null or absent without. */
  typicalStepDurations?: ReadonlyArray<number | null> | null;
  /** The current step's place in the plan, 1-based; null or absent without a plan. */
  stepIndex?: number | null;
  /** The current step's own progress (0 when absent). */
  stepProgress?: number;
}

/** Seconds a session has left as of its latest event, by the gateway's rule; null when unknown. */
export declare function estimatedTimeRemaining(point: EtaPoint): number | null;
