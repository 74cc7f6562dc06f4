"""The gateway: streams in, WebSocket and SSE out, with its HTTP API, auth, metrics, dashboard."""
