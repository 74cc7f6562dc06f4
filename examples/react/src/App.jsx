import { useWorkflowProgress } from "relay-progress-client/react";

export default function App() {
  const { progress, step, status, error, estimatedTimeRemaining, isInProgress, cancel } =
    useWorkflowProgress("map");
  return (
    <>
      <progress className="bar" max="100" value={progress} />
      <p className="step">{step ?? "waiting for a map"}</p>
      <p className="status">{status ?? "idle"}</p>
      {estimatedTimeRemaining !== null && (
        <p className="eta">{Math.ceil(estimatedTimeRemaining)} s left</p>
      )}
      {error && <p className="error">{error}</p>}
      <button disabled={!isInProgress} onClick={cancel}>Cancel</button>
    </>
  );
}
