// The Hocuspocus peer of `cargo xtask bench` (spike-loadgen): a stock @hocuspocus/server with no
// extensions (documents live in memory only, as y-websocket-server without YPERSISTENCE).
// Usage: HOST=127.0.0.1 PORT=1234 node bench-hocuspocus.mjs
// Prints "listening on <port>" once it accepts connections.
import { Server } from "@hocuspocus/server";

const server = new Server({
  address: process.env.HOST || "127.0.0.1",
  port: Number.parseInt(process.env.PORT || "1234", 10),
  quiet: true,
  stopOnSignals: true,
});
await server.listen();
console.log(`listening on ${server.address.port}`);
