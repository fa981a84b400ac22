// cometd-nodejs-server (npm, long-polling only) on 127.0.0.1:PORT, Bayeux endpoint /cometd,
// for scripts/compare-peers.sh. Prints the same "listening" line as bayeux-server.
// Usage: node cometd-server.js [PORT]
'use strict';
const http = require('http');
const cometd = require('cometd-nodejs-server');

const port = Number(process.argv[2] || 0);
const cometdServer = cometd.createCometDServer({ timeout: 25000 });
const server = http.createServer((req, res) => {
  if (req.url === '/cometd' || req.url.startsWith('/cometd/')) {
    cometdServer.handle(req, res);
  } else {
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('not found\n');
  }
});
// Held connects last up to the CometD timeout: keep node's own request timeout above it.
server.requestTimeout = 120000;
server.keepAliveTimeout = 60000;
server.listen(port, '127.0.0.1', () => {
  const a = server.address();
  console.log(`cometd-nodejs-server listening on http://127.0.0.1:${a.port} (Bayeux endpoint /cometd)`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
