/**
 * Vue 3 binding of relay-progress-client: a composable following one session
 * of a workflow type (see progress.js for which one).
 *
 *   const { progress, step, status, cancel } = useWorkflowProgress("map");
 */

import { onScopeDispose, shallowRef, toValue, watch } from "vue";
import { followProgress, initialFields } from "./progress.js";

export { configureRelay } from "./progress.js";

/**
 * Refs of the followed session's fields, plus reset() and cancel(). Each
 * argument may be a value, a ref or a getter; a change of one watches again.
 * The watcher closes with the component (or effect scope) that called it.
 */
export function useWorkflowProgress(workflowType, sessionId = null, options = {}) {
  const refs = Object.fromEntries(
    Object.entries(initialFields(toValue(sessionId) ?? null)).map(([key, value]) => [key, shallowRef(value)]),
  );
  let follower = null;
  const show = (fields) => {
    for (const [key, value] of Object.entries(fields)) refs[key].value = value;
  };
  const stop = watch(
    [
      () => toValue(workflowType),
      () => toValue(sessionId) ?? null,
      () => toValue(options)?.url,
      () => toValue(options)?.token,
      () => toValue(options)?.getToken,
    ],
    ([type, id, url, token, getToken]) => {
      follower?.close();
      follower = followProgress(type, id, { url, token, getToken }, show);
    },
    { immediate: true },
  );
  onScopeDispose(() => {
    stop();
    follower?.close();
  });
  return {
    ...refs,
    reset: () => follower.reset(),
    cancel: () => follower.cancel(),
  };
}
