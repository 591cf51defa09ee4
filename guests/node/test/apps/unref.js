'use strict';
// Unref'd handles do not keep the process alive: a listening server and a bound UDP
// socket, both unref'd, and the program still ends by itself. 'beforeExit' proves the
// loop ran dry.
const net = require('net');
const dgram = require('dgram');

const server = net.createServer().listen(0, '127.0.0.1');
server.unref();
const udp = dgram.createSocket('udp4');
udp.bind(0, '127.0.0.1', () => udp.unref());
process.on('beforeExit', () => {
  if (!server.listening) throw new Error('the server stopped listening');
  console.log('unref ok');
});
