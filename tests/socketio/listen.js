// Connects an unchanged socket.io-client to a gateway and prints what it receives.
// Usage: node listen.js <url> [token] [websocket]
// Prints one JSON line per happening: {"kind":"connect","transport","recovered"},
// {"kind":"connect_error","message"}, {"kind":"event","name","data","offset"} (offset: the
// trailing string argument, if any) and {"kind":"disconnect","reason"}; stdin closing ends it.
const { io } = require("socket.io-client");

const [url, token, transport] = process.argv.slice(2);
const options = {};
if (token) options.auth = { token };
if (transport === "websocket") options.transports = ["websocket"];

const socket = io(url, options);
const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");

socket.on("connect", () =>
  print({ kind: "connect", transport: socket.io.engine.transport.name, recovered: socket.recovered }),
);
socket.io.on("open", () => {
  socket.io.engine.on("upgrade", (t) => print({ kind: "upgrade", transport: t.name }));
});
socket.on("connect_error", (error) => print({ kind: "connect_error", message: error.message }));
socket.on("disconnect", (reason) => print({ kind: "disconnect", reason }));
socket.onAny((name, data, ...rest) => {
  const last = rest[rest.length - 1];
  print({ kind: "event", name, data, offset: typeof last === "string" ? last : null });
});

process.stdin.on("data", (chunk) => {
  for (const line of chunk.toString().split("\n").filter(Boolean)) {
    const [name, payload] = JSON.parse(line);
    socket.emit(name, payload);
  }
});
process.stdin.on("end", () => {
  socket.close();
  process.exit(0);
});
