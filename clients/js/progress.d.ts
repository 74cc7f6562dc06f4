// Types of progress.js, the framework-independent part of the Vue and React
// bindings (vue.d.ts, react.d.ts).

import type { CancelAnswer, Status, Token } from "./index.js";

/** The gateway options of configureRelay() and of each useWorkflowProgress(). */
export interface RelayOptions {
  /** The gateway's base http(s) URL; the page's origin when unset. */
  url?: string | URL;
  /** Sent in an `auth` frame and as `Authorization: Bearer`. */
  token?: Token;
  /** Asked before every (re)connect and when the gateway refuses the token. */
  getToken?: (() => Token | undefined | PromiseLike<Token | undefined>) | null;
}

/** What is shown of the followed session. */
export interface ProgressFields {
  /** The followed session, null before one is. */
  readonly sessionId: string | null;
  readonly step: string | null;
  /** 0 to 100; 0 before any event. */
  readonly progress: number;
  readonly metadata: Readonly<Record<string, unknown>>;
  /** When the session started, ms since the epoch; null before any event. */
  readonly startTime: number | null;
  /** Seconds left: null when unknown, 0 once completed. */
  readonly estimatedTimeRemaining: number | null;
  readonly isComplete: boolean;
  /** Running or cancel requested. */
  readonly isInProgress: boolean;
  /** The session's status, null before any event. */
  readonly status: Status | null;
  /** The session's error, or why the gateway refused the token; else null. */
  readonly error: string | null;
}

/** What both bindings add to the fields. */
export interface ProgressActions {
  /** Forget the followed session (fields back to their initial values) and follow the next one. */
  reset(): void;
  /** Ask the worker of the followed session to stop; rejects when none is followed. */
  cancel(): Promise<CancelAnswer>;
}

/** A follower of one session of a type, as followProgress() returns it. */
export interface Follower extends ProgressActions {
  readonly fields: ProgressFields;
  close(): void;
}

/** Set the options every useWorkflowProgress() uses unless its own say otherwise; replaces earlier ones. */
export declare function configureRelay(options?: RelayOptions): void;

/** The fields before any event (of `sessionId`, when one is named). */
export declare function initialFields(sessionId?: string | null): ProgressFields;

/** Follow one session of `workflowType` (or `sessionId` only), calling `onUpdate` with its fields. */
export declare function followProgress(
  workflowType: string,
  sessionId?: string | null,
  options?: RelayOptions,
  onUpdate?: (fields: ProgressFields) => void,
): Follower;
