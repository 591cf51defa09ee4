'use strict';
// The runtime's call channel with PUSHNET_DEBUG=1, on fd 3 (a socket whose other end is
// the test, standing in for the sidecar): a hello with a secret and an event channel
// token, a reply with a token, a noreply write. The test reads what was written (the
// credentials intact) and checks stderr (the debug lines, credentials redacted).
// Argument: the secret.
const { CallChannel } = require('../../lib/channel');

const secret = process.argv[2];
const channel = new CallChannel(3);
const { result } = channel.call('hello', { version: 1, vm: 'a', secret, event_channel_token: `token-${secret}` });
channel.send('net.write', { socket: 1 }, Buffer.from('some bytes'));
console.log(`debug redaction ok: session ${result.session}`);
