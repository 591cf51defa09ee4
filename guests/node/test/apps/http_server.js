'use strict';
// An HTTP server for other programs to reach: listens on 127.0.0.1:<argv[2] or 0>,
// prints "listening <port>", answers GET /hello, and closes after answering GET /quit.
const http = require('http');

const server = http.createServer((req, res) => {
  if (req.url === '/quit') {
    res.end('bye', () => server.close(() => console.log('server closed')));
    return;
  }
  res.end(`hello from ${process.pid}`);
});
server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
