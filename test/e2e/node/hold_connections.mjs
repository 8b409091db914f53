// Holds many idle TCP connections open against a server, for the fault-injection test.
//
//   node hold_connections.mjs --port P [--host 127.0.0.1] [--count 5000]
//        [--keepalive-fraction 0.5] [--max-seconds 60] [--connect-timeout-ms 2000]
//        [--settle-seconds 10]
//
// A fraction of the connections first sends one `GET /health` and reads the answer (an idle
// keep-alive connection after a request); the rest send nothing at all (an idle fresh
// connection). Once every connection is either open or has failed (or --settle-seconds pass,
// whichever is first, so a server that cannot accept does not stall the caller), it prints
//   {"event":"held","open":N,"failed":F,"pending":P,"ms":T}
// then holds them, sending nothing, until SIGTERM/SIGINT or --max-seconds, and prints
//   {"event":"done","open":N,"closed_by_server":C,"held_ms":T}
// before closing everything and exiting 0. The caller raises the descriptor limit (ulimit -n).
// Node built-ins only.
import net from 'node:net';

function args() {
    const a = { host: '127.0.0.1', port: 0, count: 5000, keepaliveFraction: 0.5,
                maxSeconds: 60, connectTimeoutMs: 2000, settleSeconds: 10 };
    const v = process.argv.slice(2);
    for (let i = 0; i < v.length; i += 2) {
        const [k, val] = [v[i], v[i + 1]];
        if (k === '--host') a.host = val;
        else if (k === '--port') a.port = parseInt(val, 10);
        else if (k === '--count') a.count = parseInt(val, 10);
        else if (k === '--keepalive-fraction') a.keepaliveFraction = parseFloat(val);
        else if (k === '--max-seconds') a.maxSeconds = parseFloat(val);
        else if (k === '--connect-timeout-ms') a.connectTimeoutMs = parseInt(val, 10);
        else if (k === '--settle-seconds') a.settleSeconds = parseFloat(val);
        else { console.error(`unknown argument ${k}`); process.exit(2); }
    }
    if (!a.port) { console.error('--port is required'); process.exit(2); }
    return a;
}

const opt = args();
const sockets = new Set();
let open = 0, failed = 0, settled = 0, closedByServer = 0, holding = false, heldAt = 0;
const started = Date.now();
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

// Connects in batches so the kernel's accept queues are not flooded all at once (a dropped SYN
// costs a one-second retransmit, which would only measure the client).
const kBatch = 500;
let next = 0;

function settle(ok) {
    settled++;
    if (ok) open++; else failed++;
    if (settled === opt.count) {
        reportHeld();
    } else if (settled === next) {
        launchBatch();
    }
}

function reportHeld() {
    if (holding) return;
    holding = true;
    heldAt = Date.now();
    out({ event: 'held', open, failed, pending: opt.count - settled, ms: heldAt - started });
}

function connectOne(i) {
    const keepalive = i < opt.count * opt.keepaliveFraction;
    const s = net.connect({ host: opt.host, port: opt.port });
    let done = false, buf = '';
    const finish = (ok) => { if (!done) { done = true; clearTimeout(t); settle(ok); } };
    const t = setTimeout(() => { sockets.delete(s); s.destroy(); finish(false); }, opt.connectTimeoutMs);
    s.setNoDelay(true);
    s.on('connect', () => {
        sockets.add(s);
        if (!keepalive) return finish(true);
        s.write(`GET /health HTTP/1.1\r\nHost: ${opt.host}:${opt.port}\r\nConnection: keep-alive\r\n\r\n`);
    });
    s.on('data', (d) => {
        if (done) return;
        buf += d.toString('latin1');
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const m = /content-length:\s*(\d+)/i.exec(buf.slice(0, end));
        if (!m || buf.length - end - 4 >= parseInt(m[1], 10)) finish(true);
    });
    s.on('error', () => {});
    s.on('close', () => {
        const was = sockets.delete(s);
        if (!done) return finish(false);
        if (was) { open--; if (holding) closedByServer++; }
    });
}

function launchBatch() {
    const end = Math.min(next + kBatch, opt.count);
    for (; next < end; next++) connectOne(next);
}

let stopping = false;
function stop() {
    if (stopping) return;
    stopping = true;
    out({ event: 'done', open, failed, closed_by_server: closedByServer,
          held_ms: holding ? Date.now() - heldAt : 0 });
    for (const s of sockets) s.destroy();
    process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
setTimeout(stop, opt.maxSeconds * 1000);
setTimeout(reportHeld, opt.settleSeconds * 1000);
launchBatch();
