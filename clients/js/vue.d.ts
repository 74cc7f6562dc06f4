// Types of vue.js, the Vue 3 binding of relay-progress-client.

import type { MaybeRefOrGetter, Ref } from "vue";
import type { ProgressActions, ProgressFields, RelayOptions } from "./progress.js";

export { configureRelay } from "./progress.js";
export type { ProgressFields, RelayOptions } from "./progress.js";

/** A read-only ref of each field, plus reset() and cancel(). */
export type WorkflowProgressRefs = {
  readonly [Key in keyof ProgressFields]: Readonly<Ref<ProgressFields[Key]>>;
} & ProgressActions;

/** Follow one session of a workflow type (or `sessionId` only); arguments may be refs or getters. */
export declare function useWorkflowProgress(
  workflowType: MaybeRefOrGetter<string>,
  sessionId?: MaybeRefOrGetter<string | null | undefined>,
  options?: MaybeRefOrGetter<RelayOptions>,
): WorkflowProgressRefs;
