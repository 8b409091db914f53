'use strict';
// The table and the checks of test/bench/dialects.sh from its load_client runs (one JSON line
// each, labelled "ROW STREAM ROUND"): medians over the rounds; CPU per request of the gateway's
// listeners; added latency against direct calls to the same upstream shape.
//   node dialects_report.js RUNS.jsonl OUT.json
const fs = require('fs');

const [runsFile, outFile] = process.argv.slice(2);
const runs = fs.readFileSync(runsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const median = (xs) => {
  const v = xs.filter((x) => x !== null && Number.isFinite(x)).sort((a, b) => a - b);
  return v.length ? v[Math.floor((v.length - 1) / 2)] : null;
};
const rowsOf = (row, stream) => runs.filter((r) => {
  const [name, s] = r.label.split(' ');
  return name === row && s === String(stream);
});
const summary = {};
const ROWS = ['direct-chat', 'direct-msg', 'chat', 'msg-fast', 'msg-x', 'resp-x', 'route'];
for (const row of ROWS) {
  for (const stream of [false, true]) {
    const mine = rowsOf(row, stream);
    summary[`${row} ${stream}`] = {
      rps: median(mine.map((r) => r.rps)),
      p50_ms: median(mine.map((r) => r.latency_us.p50 / 1000)),
      p99_ms: median(mine.map((r) => r.latency_us.p99 / 1000)),
      ttfb50_ms: median(mine.map((r) => r.ttfb_us.p50 / 1000)),
      ttfb99_ms: median(mine.map((r) => r.ttfb_us.p99 / 1000)),
      cpu_us_per_req: median(mine.map((r) => (r.watch.proxy && r.requests ? (r.watch.proxy.cpu_s * 1e6) / r.requests : null))),
      errors: mine.reduce((n, r) => n + r.errors + r.incomplete_streams, 0),
    };
  }
}
const direct = (row) => (row === 'msg-fast' ? 'direct-msg' : 'direct-chat');
const f = (x, d = 3) => (x === null ? '-' : x.toFixed(d));
console.log('row       stream    req/s  p50 ms  p99 ms  +p99 ms  ttfb50  +ttfb50  +ttfb99  cpu us/req  x chat   err');
let ok = true;
const checks = [];
for (const stream of [false, true]) {
  const base = summary[`chat ${stream}`];
  for (const row of ROWS) {
    const s = summary[`${row} ${stream}`];
    const d = row.startsWith('direct') ? null : summary[`${direct(row)} ${stream}`];
    const ratio = s.cpu_us_per_req !== null && base.cpu_us_per_req ? s.cpu_us_per_req / base.cpu_us_per_req : null;
    s.added_p99_ms = d ? s.p99_ms - d.p99_ms : null;
    s.added_ttfb50_ms = d && stream ? s.ttfb50_ms - d.ttfb50_ms : null;
    s.added_ttfb99_ms = d && stream ? s.ttfb99_ms - d.ttfb99_ms : null;
    s.cpu_vs_chat = ratio;
    console.log(`${row.padEnd(9)} ${String(stream).padEnd(6)} ${f(s.rps, 0).padStart(8)} ${f(s.p50_ms).padStart(7)} ` +
      `${f(s.p99_ms).padStart(7)} ${f(s.added_p99_ms).padStart(8)} ${stream ? f(s.ttfb50_ms).padStart(7) : '      -'} ` +
      `${f(s.added_ttfb50_ms).padStart(8)} ${f(s.added_ttfb99_ms).padStart(8)} ${f(s.cpu_us_per_req, 1).padStart(11)} ` +
      `${f(ratio, 2).padStart(7)} ${String(s.errors).padStart(5)}`);
    if (s.errors > 0) ok = false;
    if (row === 'msg-x' || row === 'resp-x') {
      const pass = ratio !== null && ratio <= 1.5;
      checks.push(`${row} (${stream ? 'stream' : 'whole'}): CPU ${f(ratio, 2)} x the fast path (target <= 1.5): ${pass ? 'PASS' : 'FAIL'}`);
      ok = ok && pass;
    }
    if (stream && d) {
      const pass = s.added_ttfb50_ms !== null && s.added_ttfb50_ms <= 1.0;
      checks.push(`${row} stream: time to first byte ${f(s.added_ttfb50_ms)} ms after direct's (p50; target <= 1 ms): ${pass ? 'PASS' : 'FAIL'}`);
      ok = ok && pass;
    }
  }
  console.log('');
}
// The route's own cost, from the profile dialects.sh took of the route row (empty: not measured).
if (process.env.ROUTE_SHARE) {
  const share = Number(process.env.ROUTE_SHARE);
  const pass = share < 2;
  checks.push(`route: resolving a route takes ${share.toFixed(2)} % of the listeners' CPU (target < 2 %): ${pass ? 'PASS' : 'FAIL'}`);
  ok = ok && pass;
}
for (const c of checks) console.log(`RESULT ${c}`);
fs.writeFileSync(outFile, JSON.stringify({ summary, runs }, null, 1));
process.exit(ok ? 0 : 1);
