'use strict';
// Connects to <argv[2]>:<argv[3]>; prints "connected <first line received>" or
// "error <code>".
const net = require('net');

const socket = net.connect(Number(process.argv[3]), process.argv[2]);
socket.setEncoding('utf8');
socket.on('data', (text) => {
  console.log(`connected ${text.trim()}`);
  socket.end();
});
socket.on('error', (err) => console.log(`error ${err.code}`));
