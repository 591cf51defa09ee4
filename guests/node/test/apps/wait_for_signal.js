'use strict';
// Listens (so it stays alive) and prints "ready"; ends only by a signal.
require('net').createServer().listen(0, '127.0.0.1', () => console.log('ready'));
