// Faye (npm `faye`) on 127.0.0.1:PORT, Bayeux endpoint /cometd (WebSocket and long-polling),
// for scripts/compare-peers.sh. Prints the same "listening" line as bayeux-server so one
// parser finds the port. Usage: node faye-server.js [PORT]
'use strict';
const http = require('http');
const faye = require('faye');

const port = Number(process.argv[2] || 0);
const bayeux = new faye.NodeAdapter({ mount: '/cometd', timeout: 25 });
const server = http.createServer((req, res) => {
  res.writeHead(404, { 'Content-Type': 'text/plain' });
  res.end('not found\n');
});
bayeux.attach(server);
server.listen(port, '127.0.0.1', () => {
  const a = server.address();
  console.log(`faye listening on http://127.0.0.1:${a.port} (Bayeux endpoint /cometd)`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
