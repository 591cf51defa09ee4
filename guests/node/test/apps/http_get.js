'use strict';
// GET http://127.0.0.1:<argv[2]><argv[3]> and print the body; on a connection error,
// print its code and exit 3.
const http = require('http');

http
  .get({ host: '127.0.0.1', port: Number(process.argv[2]), path: process.argv[3] || '/hello' }, (res) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (text) => (body += text));
    res.on('end', () => console.log(`status ${res.statusCode} body ${body}`));
  })
  .on('error', (err) => {
    console.log(`error ${err.code}`);
    process.exitCode = 3;
  });
