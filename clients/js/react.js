/**
 * React binding of relay-progress-client: a hook following one session of a
 * workflow type (see progress.js for which one).
 *
 *   const { progress, step, status, cancel } = useWorkflowProgress("map");
 */

import { useCallback, useEffect, useRef, useState } from "react";
import { followProgress, initialFields } from "./progress.js";

export { configureRelay } from "./progress.js";

/**
 * The followed session's fields, plus reset() and cancel(). A change of an
 * argument watches again (so give a getToken that keeps its identity across
 * renders); the watcher closes when the component unmounts.
 */
export function useWorkflowProgress(workflowType, sessionId = null, options = {}) {
  const { url, token, getToken } = options;
  const [fields, setFields] = useState(() => initialFields(sessionId));
  const follower = useRef(null);
  useEffect(() => {
    const following = followProgress(workflowType, sessionId, { url, token, getToken }, setFields);
    follower.current = following;
    return () => {
      following.close();
      if (follower.current === following) follower.current = null;
    };
  }, [workflowType, sessionId, url, token, getToken]);
  const reset = useCallback(() => follower.current?.reset(), []);
  const cancel = useCallback(
    () => follower.current?.cancel() ?? Promise.reject(new Error("cancel(): not mounted")),
    [],
  );
  return { ...fields, reset, cancel };
}
