// Compiled (never run) by `npm run typecheck`: the Vue and React bindings as an app uses them.
import { computed, ref, type Ref } from "vue";
import { configureRelay, useWorkflowProgress as useVueProgress } from "relay-progress-client/vue";
import {
  useWorkflowProgress as useReactProgress,
  type ProgressFields,
  type WorkflowProgress,
} from "relay-progress-client/react";

configureRelay({ url: "http://localhost:8080", getToken: async () => "token" });

const chosen = ref<string | null>("s1");
const vue = useVueProgress("map", chosen, { token: "t" });
const percent: Ref<number> = computed(() => vue.progress.value);
const left: number | null = vue.estimatedTimeRemaining.value;
const started: number | null = vue.startTime.value;
void vue.cancel().then((answer) => answer.session_id);
vue.reset();
useVueProgress(() => "map");

const react: WorkflowProgress = useReactProgress("map", null, { url: new URL("http://gw") });
const shown: ProgressFields = react;
const status: string | null = react.status;
const ended: boolean = react.isComplete && !react.isInProgress;
void react.cancel();
react.reset();
console.log(percent.value, left, started, shown.error, status, ended, react.metadata);

// @ts-expect-error: the fields of the Vue binding are refs
const raw: number = vue.progress;
// @ts-expect-error: the refs are read-only
vue.progress.value = 5;
// @ts-expect-error: the React hook takes plain values, not refs
useReactProgress(ref("map"));
console.log(raw);
