import { createApp } from "vue";
import { configureRelay } from "relay-progress-client/vue";
import App from "./App.vue";

configureRelay({ url: import.meta.env.VITE_RELAY_URL }); // unset: the page's own origin
createApp(App).mount("#app");
