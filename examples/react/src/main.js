import { createElement } from "react";
import { createRoot } from "react-dom/client";
import { configureRelay } from "relay-progress-client/react";
import App from "./App.jsx";

configureRelay({ url: import.meta.env.VITE_RELAY_URL }); // unset: the page's own origin
createRoot(document.getElementById("app")).render(createElement(App));
