'use strict';
// inspector.open() listens on a TCP port of the host's (under `sidecar run`'s sandbox:
// the sandbox's own loopback), outside the sidecar, and whoever connects to it can run
// any code in the program. In a guest it throws (ERR_PUSHNET_UNSUPPORTED), and so does
// process.binding('inspector'), unless the operator sets PUSHNET_ALLOW_INSPECTOR=1.
// `node --inspect` on the command line is the operator's choice and is left alone; so is
// SIGUSR1 (which starts the inspector on 127.0.0.1:9229 in Node 20 and cannot be turned
// off from JavaScript): the sandbox is what keeps that port from the host.

const { refuseBinding, refusal } = require('./native_net');

const WHY = 'pushnet: inspector.open() would listen on a host port outside the sidecar; set PUSHNET_ALLOW_INSPECTOR=1 to allow it (or start node with --inspect)';

function install() {
  if (process.env.PUSHNET_ALLOW_INSPECTOR === '1') return;
  refuseBinding('inspector', WHY);
  const open = function open() {
    throw refusal(WHY);
  };
  for (const name of ['inspector', 'inspector/promises']) {
    let module;
    try {
      module = require(name);
    } catch {
      continue; // a Node without the inspector, or without inspector/promises
    }
    module.open = open;
  }
}

module.exports = { install };
