// Hostile callers for the gateway's end-to-end test. Node built-ins only. Each mode prints one
// JSON line with what it measured.
//
//   node hostile.mjs big-posts --port P --count 50 --mb 15
//       concurrent POSTs of --mb MB without a valid key: per request, the milliseconds from the
//       end of its headers to the first byte of the answer, its status, and the body bytes
//       the client managed to write before that.
//   node hostile.mjs slowloris --port P --count 200 --every-ms 5000 --max-seconds 30
//       connections sending a request's headers one byte every --every-ms: when each was closed.
//   node hostile.mjs slow-stream --port P --key K --model M --words N --rate-kb 100 --seconds 10
//       a chat stream read at --rate-kb KB/s for --seconds, then abandoned.
import net from 'node:net';

function args() {
    const a = { mode: process.argv[2], host: '127.0.0.1', port: 0, count: 50, mb: 15,
                everyMs: 5000, maxSeconds: 30, key: '', model: '', words: 300000, rateKb: 100,
                seconds: 10 };
    const v = process.argv.slice(3);
    for (let i = 0; i < v.length; i += 2) {
        const k = v[i].replace(/^--/, '').replace(/-(.)/g, (_, c) => c.toUpperCase());
        a[k] = typeof a[k] === 'number' ? parseFloat(v[i + 1]) : v[i + 1];
    }
    return a;
}
const opt = args();

function bigPost() {
    return new Promise((resolve) => {
        const s = net.connect(opt.port, opt.host);
        const head = 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n' +
            `Content-Type: application/json\r\nContent-Length: ${opt.mb * 1024 * 1024}\r\n\r\n`;
        const chunk = Buffer.alloc(64 * 1024, 'x');
        let sentAt = 0, written = 0, answered = false, status = 0, ms = -1, got = '';
        const finish = () => { s.destroy(); resolve({ status, ms, written }); };
        s.on('connect', () => {
            s.write(head, () => { sentAt = performance.now(); pump(); });
        });
        // One chunk per turn of the event loop, so that an answer is seen when it comes rather
        // than after this client has filled every socket buffer it can.
        const pump = () => {
            if (answered || written >= opt.mb * 1024 * 1024 || s.destroyed) return;
            written += chunk.length;
            if (s.write(chunk)) setImmediate(pump);
            else s.once('drain', pump);
        };
        s.on('data', (d) => {
            if (!answered) { answered = true; ms = performance.now() - sentAt; }
            got += d.toString('latin1');
            const m = /^HTTP\/1\.1 (\d+)/.exec(got);
            if (m) status = parseInt(m[1], 10);
            if (got.includes('}')) finish();
        });
        s.on('error', finish);
        s.on('close', finish);
        setTimeout(finish, 30000);
    });
}

function slowloris() {
    return new Promise((resolve) => {
        const s = net.connect(opt.port, opt.host);
        const head = 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n';
        let i = 0, started = 0, closedMs = -1, timer = null, got = '';
        const done = () => {
            if (closedMs < 0) closedMs = performance.now() - started;
            clearInterval(timer);
            s.destroy();
            resolve({ closedMs, got: got.slice(0, 12) });
        };
        s.on('connect', () => {
            started = performance.now();
            const one = () => { if (i < head.length) s.write(head[i++]); };
            one();
            timer = setInterval(one, opt.everyMs);
        });
        s.on('data', (d) => { got += d.toString('latin1'); });
        s.on('error', done);
        s.on('close', done);
        setTimeout(() => { closedMs = -1; clearInterval(timer); s.destroy(); resolve({ closedMs: -1 }); },
                   opt.maxSeconds * 1000);
    });
}

function slowStream() {
    return new Promise((resolve) => {
        const s = net.connect(opt.port, opt.host);
        const prompt = 'ab '.repeat(opt.words);
        const body = JSON.stringify({ model: opt.model, stream: true,
                                      messages: [{ role: 'user', content: prompt }] });
        let read = 0, first = Buffer.alloc(0);
        s.on('connect', () => {
            s.write('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n' +
                    `Authorization: Bearer ${opt.key}\r\nContent-Type: application/json\r\n` +
                    `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n` + body);
        });
        // Paused reading: take --rate-kb KB a second, a tenth every 100 ms, no more.
        s.pause();
        const tick = setInterval(() => {
            let budget = opt.rateKb * 102.4;
            s.read(0);  // a paused socket reads from the network only when asked
            while (budget > 0 && s.readableLength > 0) {
                const d = s.read(Math.min(budget, s.readableLength));
                if (d === null) break;
                if (read === 0) first = d;
                read += d.length;
                budget -= d.length;
            }
        }, 100);
        setTimeout(() => {
            clearInterval(tick);
            const head = first.toString('latin1').split('\r\n')[0];
            s.destroy();
            resolve({ read, head });
        }, opt.seconds * 1000);
        s.on('error', () => {});
    });
}

const t0 = performance.now();
if (opt.mode === 'big-posts') {
    const r = await Promise.all(Array.from({ length: opt.count }, bigPost));
    const ms = r.map((x) => x.ms).sort((a, b) => a - b);
    console.log(JSON.stringify({
        count: r.length, status401: r.filter((x) => x.status === 401).length,
        max_ms: Math.round(ms[ms.length - 1]), median_ms: Math.round(ms[ms.length >> 1]),
        max_written_mb: Math.max(...r.map((x) => x.written)) / 1048576,
        total_ms: Math.round(performance.now() - t0) }));
} else if (opt.mode === 'slowloris') {
    const r = await Promise.all(Array.from({ length: opt.count }, slowloris));
    const closed = r.filter((x) => x.closedMs >= 0).map((x) => x.closedMs);
    console.log(JSON.stringify({
        count: r.length, closed: closed.length,
        max_ms: Math.round(Math.max(0, ...closed)), min_ms: Math.round(Math.min(...closed)),
        answered408: r.filter((x) => (x.got || '').startsWith('HTTP/1.1 408')).length }));
} else if (opt.mode === 'slow-stream') {
    console.log(JSON.stringify(await slowStream()));
} else {
    console.error('mode: big-posts | slowloris | slow-stream');
    process.exit(2);
}
