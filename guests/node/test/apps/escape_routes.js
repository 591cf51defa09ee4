'use strict';
// One escape route: a hostile program trying to reach a server on the host's
// 127.0.0.1 that no --allow rule permits, by ROUTE:
//
//   node escape_routes.js ROUTE PORT [ARG]
//
// It prints one line, `route ROUTE: reached`, `route ROUTE: refused CODE (message)`,
// `route ROUTE: skipped WHY` (a tool it needs is missing) or another outcome, and exits 0
// either way, within a few seconds (a watchdog ends it). What the line says is the
// program's own view: whether the server really received anything is for the driver
// (crates/sidecar/tests/sandbox_escape.rs) to check. Under plain `node` every route
// reaches the server (so each really is a route); as a guest, none may.
//
// Routes (PORT is the server's; `inspector` listens on PORT instead):
//   net-connect    the patched net.connect
//   fetch          fetch() (undici over node:net)
//   tls-socket     new tls.TLSSocket(null).connect(PORT, '127.0.0.1')
//   tls-wrap       Node's own TLSSocket, require('_tls_wrap').TLSSocket, the same
//   proto-socket   Node's own net.Socket: Object.getPrototypeOf(tls.TLSSocket.prototype).constructor
//   proto-class    Node's own net.Socket: Object.getPrototypeOf(tls.TLSSocket)
//   tcp-wrap       process.binding('tcp_wrap'): a TCP handle's connect
//   worker         a worker thread doing net.connect
//   worker-env     the same, the worker started with `env: {}` (no NODE_OPTIONS)
//   child-node     child_process: `node -e` doing net.connect
//   child-python   child_process: python3 socket.create_connection
//   child-curl     child_process: curl
//   dns-resolver   new dns.Resolver() with setServers(['127.0.0.1:PORT']) (UDP)
//   dns-promises   new dns.promises.Resolver(), the same
//   dns-resolve    dns.setServers then dns.resolve4 (the module's resolver)
//   dlopen         process.dlopen(ARG): a shared library whose constructor connects to
//                  the port in PUSHNET_ESCAPE_PORT (escape_dlopen.c)
//   inspector      inspector.open(PORT): prints `listening`, then waits for stdin to end
//                  (the driver tries to connect meanwhile)
//   proc-scan      no port: ARG is a marker, hex-encoded (so that the command lines of
//                  this program and of `sidecar run` do not show it); reports whether any
//                  other process's /proc/PID/cmdline shows it

const net = require('net');
const tls = require('tls');
const dns = require('dns');
const fs = require('fs');
const { spawn } = require('child_process');

const [route, portText, arg] = process.argv.slice(2);
const port = Number(portText);
const LIMIT_MS = 4000;

let reported = false;
function report(outcome) {
  if (reported) return;
  reported = true;
  process.stdout.write(`route ${route}: ${outcome}\n`, () => process.exit(0));
}
const reached = () => report('reached');
function refused(err) {
  const code = (err && (err.code || (err.cause && err.cause.code) || err.name)) || 'error';
  const message = err && err.message ? ` (${String(err.message).split('\n')[0]})` : '';
  report(`refused ${code}${message}`);
}
setTimeout(() => report('timed out'), LIMIT_MS);

function socketRoute(socket) {
  socket.on('error', refused);
  socket.connect(port, '127.0.0.1', reached);
}

// A child process's outcome: its own line, relayed.
function childRoute(command, args, outcome) {
  let child;
  let out = '';
  try {
    child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  } catch (e) {
    return refused(e);
  }
  child.on('error', (e) => (e.code === 'ENOENT' ? report(`skipped ${command} is not on PATH`) : refused(e)));
  child.stdout.on('data', (b) => (out += b));
  child.on('close', (code, signal) => report(outcome(out.trim(), code, signal)));
  setTimeout(() => child.kill('SIGKILL'), LIMIT_MS - 500).unref();
  return undefined;
}

function resolverRoute(resolve) {
  resolve((err) => {
    if (!err) return reached();
    // The driver's server never answers: a query that went out times out.
    if (err.code === 'ETIMEOUT') return report('sent, no answer (ETIMEOUT)');
    return refused(err);
  });
}

const CHILD_NODE = `
const s = require('net').connect(Number(process.argv[1]), '127.0.0.1');
s.on('connect', () => { console.log('reached'); process.exit(0); });
s.on('error', (e) => { console.log('refused ' + e.code + ' (' + e.message + ')'); process.exit(0); });
setTimeout(() => { console.log('timed out'); process.exit(0); }, 2500);`;
const CHILD_PYTHON = `
import errno, socket, sys
try:
    socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=2.5).close()
    print('reached')
except OSError as e:
    print('refused %s (%s)' % (errno.errorcode.get(e.errno, type(e).__name__), e))`;
const WORKER = `
const { parentPort, workerData } = require('worker_threads');
const s = require('net').connect(workerData.port, '127.0.0.1');
s.on('connect', () => parentPort.postMessage({ reached: true }));
s.on('error', (e) => parentPort.postMessage({ code: e.code, message: e.message }));`;

function workerRoute(options) {
  const { Worker } = require('worker_threads');
  const worker = new Worker(WORKER, { eval: true, workerData: { port }, ...options });
  worker.on('message', (m) => (m.reached ? reached() : refused(m)));
  worker.on('error', refused);
}

const ROUTES = {
  'net-connect': () => socketRoute(new net.Socket()),
  fetch: () => {
    // The server never answers: the TCP connection is what counts.
    require('diagnostics_channel').channel('undici:client:connected').subscribe(reached);
    fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(LIMIT_MS - 1000) }).then(reached, refused);
  },
  'tls-socket': () => socketRoute(new tls.TLSSocket(null)),
  'tls-wrap': () => socketRoute(new (require('_tls_wrap').TLSSocket)(null)),
  'proto-socket': () => socketRoute(new (Object.getPrototypeOf(tls.TLSSocket.prototype).constructor)()),
  'proto-class': () => socketRoute(new (Object.getPrototypeOf(tls.TLSSocket))()),
  'tcp-wrap': () => {
    const { TCP, TCPConnectWrap, constants } = process.binding('tcp_wrap');
    const handle = new TCP(constants.SOCKET);
    const req = new TCPConnectWrap();
    req.oncomplete = (status) => (status === 0 ? reached() : refused({ code: `status ${status}` }));
    const err = handle.connect(req, '127.0.0.1', port);
    if (err) refused({ code: `error ${err}` });
  },
  worker: () => workerRoute({}),
  'worker-env': () => workerRoute({ env: {} }),
  'child-node': () => childRoute(process.execPath, ['-e', CHILD_NODE, String(port)], (out, code) => out || `exited ${code} saying nothing`),
  'child-python': () => childRoute('python3', ['-c', CHILD_PYTHON, String(port)], (out, code) => out || `exited ${code} saying nothing`),
  'child-curl': () =>
    childRoute('curl', ['-s', '-o', '/dev/null', '-m', '1', `http://127.0.0.1:${port}/`], (out, code) => {
      // 28: timed out waiting for the (never sent) answer, once connected; 7: no connection.
      if (code === 28) return 'reached (connected, no answer: curl exit 28)';
      return `refused curl exit ${code}`;
    }),
  'dns-resolver': () => {
    const resolver = new dns.Resolver({ timeout: 1000, tries: 1 });
    resolver.setServers([`127.0.0.1:${port}`]);
    resolverRoute((cb) => resolver.resolve4('escape.example', cb));
  },
  'dns-promises': () => {
    const resolver = new dns.promises.Resolver({ timeout: 1000, tries: 1 });
    resolver.setServers([`127.0.0.1:${port}`]);
    resolverRoute((cb) => resolver.resolve4('escape.example').then(() => cb(null), cb));
  },
  'dns-resolve': () => {
    dns.setServers([`127.0.0.1:${port}`]);
    resolverRoute((cb) => dns.resolve4('escape.example', cb));
  },
  dlopen: () => {
    process.env.PUSHNET_ESCAPE_PORT = String(port);
    try {
      process.dlopen({ exports: {} }, arg);
    } catch {
      // Not a Node addon: expected, once its constructor ran.
    }
    const result = process.env.PUSHNET_ESCAPE_RESULT;
    if (result === undefined) report('the library did not run');
    else if (result === 'connected') reached();
    else report(`refused ${result}`);
  },
  inspector: () => {
    try {
      require('inspector').open(port, '127.0.0.1');
    } catch (e) {
      return refused(e);
    }
    process.stdout.write(`route ${route}: listening\n`);
    process.stdin.resume();
    process.stdin.on('end', () => report('closed'));
    return undefined;
  },
  'proc-scan': () => {
    const marker = Buffer.from(arg, 'hex').toString();
    let visible = 0;
    for (const pid of fs.readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
      let cmdline;
      try {
        cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      } catch {
        continue; // gone, or not ours to read
      }
      visible += 1;
      if (pid !== String(process.pid) && cmdline.includes(marker)) return report(`reached (pid ${pid} shows the marker)`);
    }
    return report(`refused (no other process shows the marker; ${visible} processes visible)`);
  },
};

if (!ROUTES[route]) {
  console.log(`route ${route}: unknown (one of ${Object.keys(ROUTES).join(', ')})`);
  process.exit(2);
}
try {
  ROUTES[route]();
} catch (e) {
  refused(e);
}
