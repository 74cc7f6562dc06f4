// Types of react.js, the React binding of relay-progress-client.

import type { ProgressActions, ProgressFields, RelayOptions } from "./progress.js";

export { configureRelay } from "./progress.js";
export type { ProgressFields, RelayOptions } from "./progress.js";

/** The fields, plus reset() and cancel(). */
export type WorkflowProgress = ProgressFields & ProgressActions;

/** Follow one session of a workflow type (or `sessionId` only); a changed argument watches again. */
export declare function useWorkflowProgress(
  workflowType: string,
  sessionId?: string | null,
  options?: RelayOptions,
): WorkflowProgress;
