'use strict';
// The `signal` option: aborting a connected socket's signal destroys it with an
// AbortError (code ABORT_ERR), then 'close' (hadError); aborting a listening server's
// signal closes it; a signal that is not an AbortSignal is refused.
const net = require('net');
const assert = require('assert');

function expectAbort(err) {
  assert.strictEqual(err.name, 'AbortError');
  assert.strictEqual(err.code, 'ABORT_ERR');
}

const server = net.createServer((s) => s.resume());
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  assert.throws(() => net.connect({ port, host: '127.0.0.1', signal: {} }), { code: 'ERR_INVALID_ARG_TYPE' });
  {
    const controller = new AbortController();
    const after = net.connect({ port, host: '127.0.0.1', signal: controller.signal }, () => controller.abort());
    let afterFailed = false;
    after.on('error', (err) => {
      expectAbort(err);
      afterFailed = true;
    });
    after.on('close', (hadError) => {
      assert.ok(afterFailed);
      assert.strictEqual(hadError, true);
      listening();
    });
  }
});

function listening() {
  const controller = new AbortController();
  const other = net.createServer();
  other.on('close', () => {
    assert.strictEqual(other.listening, false);
    server.close(() => console.log('abort signal ok'));
  });
  other.listen({ port: 0, host: '127.0.0.1', signal: controller.signal }, () => controller.abort());
}
