#!/usr/bin/env node
'use strict';
// Mock upstream for pg_inference's tests and benchmarks: one process that imitates OpenAI,
// Anthropic, Gemini, NVIDIA NIM and vLLM closely enough (paths, auth headers, bodies, error
// shapes, SSE framing) that the extension cannot tell it from the real thing, with
// deterministic answers tests can assert exactly. Node built-ins only.
//
//   node test/mock/mock_upstream.js --port 18181 [--tls-port 18182 --tls-cert F --tls-key K
//        [--tls-client-ca CA]]
//        [--latency-ms 0] [--stream-delay-ms 0] [--max-records 10000] [--pid-file F]
//
// A base URL of http://127.0.0.1:PORT/s/<label> selects the behaviour ("scenario") for the
// services registered with it; see README.md.

const fs = require('fs');
const http = require('http');
const https = require('https');

const C = require('./lib/common');
const E = require('./lib/errors');
const openai = require('./lib/openai');
const anthropic = require('./lib/anthropic');
const gemini = require('./lib/gemini');

const HOST = '127.0.0.1';
const MAX_BODY = 64 * 1024 * 1024;

// Scenarios that change how a successful answer looks rather than failing it.
const BEHAVIOUR_SCENARIOS = ['ok', 'slow', 'hang', 'flaky', 'drop', 'vllm', 'nim', 'cohere',
  'no_usage', 'stream_error', 'floats_only', 'reject_base64'];
const SCENARIOS = new Set([...BEHAVIOUR_SCENARIOS, ...E.ERROR_SCENARIOS]);

// ---------------------------------------------------------------------------------------------
// Command line

function usage(msg) {
  if (msg) process.stderr.write(`mock_upstream: ${msg}\n`);
  process.stderr.write('usage: node mock_upstream.js --port N [--tls-port N --tls-cert FILE ' +
    '--tls-key FILE [--tls-client-ca FILE]] [--latency-ms MS] [--stream-delay-ms MS] [--max-records N] [--pid-file FILE]\n');
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { port: 18181, tlsPort: null, tlsCert: null, tlsKey: null, tlsClientCa: null,
    latencyMs: 0,
    streamDelayMs: 0, maxRecords: 10000, pidFile: null };
  const names = { '--port': 'port', '--tls-port': 'tlsPort', '--tls-cert': 'tlsCert',
    '--tls-key': 'tlsKey', '--tls-client-ca': 'tlsClientCa', '--latency-ms': 'latencyMs', '--stream-delay-ms': 'streamDelayMs',
    '--max-records': 'maxRecords', '--pid-file': 'pidFile' };
  const numeric = new Set(['port', 'tlsPort', 'latencyMs', 'streamDelayMs', 'maxRecords']);
  for (let i = 0; i < argv.length; i++) {
    let [flag, value] = argv[i].split(/=(.*)/s, 2);
    if (flag === '--help' || flag === '-h') usage();
    const name = names[flag];
    if (!name) usage(`unknown option ${flag}`);
    if (value === undefined) {
      if (i + 1 >= argv.length) usage(`${flag} needs a value`);
      value = argv[++i];
    }
    if (numeric.has(name)) {
      if (!/^\d+$/.test(value)) usage(`${flag} needs a non-negative integer`);
      opts[name] = Number(value);
    } else {
      opts[name] = value;
    }
  }
  if (opts.tlsPort !== null && (!opts.tlsCert || !opts.tlsKey)) {
    usage('--tls-port needs --tls-cert and --tls-key');
  }
  if (opts.tlsClientCa !== null && opts.tlsPort === null) usage('--tls-client-ca needs --tls-port');
  return opts;
}

// ---------------------------------------------------------------------------------------------
// State, all of it cleared by POST /_mock/reset (live in-flight counts excepted)

const state = {
  seq: 0,
  records: [],
  overrides: new Map(), // label → {name, arg} set through the control API
  flakyCounts: new Map(), // label → requests seen while flaky
  requests: 0,
  inFlight: 0,
  inFlightByLabel: new Map(),
  maxInFlight: 0,
  maxInFlightByLabel: {},
  connections: 0,
};

function reset() {
  state.seq = 0;
  state.records = [];
  state.overrides.clear();
  state.flakyCounts.clear();
  state.requests = 0;
  state.maxInFlight = 0;
  state.maxInFlightByLabel = {};
  state.connections = 0;
}

// The scenario for a label: a control-API override, else the label itself when it names a
// scenario (arg after the first ':'), else ok. A suffix such as flaky:2:a makes a label of its
// own (parseInt ignores the tail), so tests can keep counters apart without the control API.
function resolveScenario(label) {
  const o = state.overrides.get(label);
  if (o) return o;
  const i = label.indexOf(':');
  const name = i < 0 ? label : label.slice(0, i);
  if (SCENARIOS.has(name)) return { name, arg: i < 0 ? null : label.slice(i + 1) };
  return { name: 'ok', arg: null };
}

function describeScenario(label) {
  const { name, arg } = resolveScenario(label);
  return { label, scenario: name, arg };
}

// ---------------------------------------------------------------------------------------------
// Request plumbing

function queryObject(params) {
  const out = {};
  for (const [k, v] of params) {
    if (k in out) out[k] = [].concat(out[k], v);
    else out[k] = v;
  }
  return out;
}

// Reads the whole body; past MAX_BODY it keeps draining but stores nothing, and the text is
// null. Resolves null if the client aborted.
function readBody(req) {
  return new Promise((resolve) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size <= MAX_BODY) chunks.push(c);
    });
    req.on('end', () => resolve({ text: size > MAX_BODY ? null : Buffer.concat(chunks).toString('utf8') }));
    req.on('error', () => resolve(null));
    req.on('aborted', () => resolve(null));
  });
}

// Nesting deeper than this is refused as unparseable, as real APIs do: the mock would otherwise
// fail on it later (echoing it back overflows JSON.stringify's stack) with a 500 of its own.
const MAX_JSON_DEPTH = 512;

function jsonDepth(text) {
  let depth = 0, max = 0, inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) {
      inString = true;
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) max = depth;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return max;
}

function parseJson(text) {
  if (!text || jsonDepth(text) > MAX_JSON_DEPTH) return null;
  try { return JSON.parse(text); } catch { return null; }
}

// Which provider a request speaks, for the shape of its errors.
function protocolOf(routePath, headers) {
  if (routePath.startsWith('/v1beta/') || routePath === '/v1beta') return 'gemini';
  if (routePath === '/v1/messages' || routePath.startsWith('/v1/messages/')) return 'anthropic';
  if ((routePath === '/v1/models' || routePath.startsWith('/v1/models/')) &&
      (headers['anthropic-version'] !== undefined || headers['x-api-key'] !== undefined)) {
    return 'anthropic';
  }
  return 'openai';
}

function makeHandler(opts) {
  return async (req, res) => {
    const arrival = Date.now();
    const qAt = req.url.indexOf('?');
    const path = qAt < 0 ? req.url : req.url.slice(0, qAt);
    const rawQuery = qAt < 0 ? '' : req.url.slice(qAt + 1);
    const query = new URLSearchParams(rawQuery);
    try {
      if (path.startsWith('/_mock/')) {
        const body = await readBody(req);
        if (body !== null) control(req, res, path, query, body.text ?? '');
        return;
      }
      await upstream(req, res, opts, { arrival, path, query });
    } catch (err) {
      // A bug in the mock must show up as such, not as some provider's error.
      process.stderr.write(`mock_upstream: ${err.stack || err}\n`);
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: `mock bug: ${err.message}`, type: 'mock_error' } }));
      } else {
        res.destroy();
      }
    }
  };
}

async function upstream(req, res, opts, { arrival, path, query }) {
  // Strip /s/<label>; everything after it is what the "provider" sees.
  let label = 'default';
  let routePath = path;
  const m = /^\/s\/([^/]*)(.*)$/.exec(path);
  if (m) {
    label = E.safeDecode(m[1]);
    routePath = m[2] || '/';
  }

  state.requests++;
  state.inFlight++;
  state.maxInFlight = Math.max(state.maxInFlight, state.inFlight);
  const labelFlight = (state.inFlightByLabel.get(label) || 0) + 1;
  state.inFlightByLabel.set(label, labelFlight);
  state.maxInFlightByLabel[label] = Math.max(state.maxInFlightByLabel[label] || 0, labelFlight);

  const record = {
    seq: ++state.seq, time_ms: arrival, method: req.method, path, route_path: routePath,
    query: queryObject(query), label, headers: { ...req.headers }, body: '', json: null,
    in_flight: state.inFlight, status: null, conn: req.socket.mockId ?? null,
    tls: Boolean(req.socket.encrypted),
  };
  state.records.push(record);
  if (state.records.length > opts.maxRecords) state.records.splice(0, state.records.length - opts.maxRecords);

  const ctx = {
    req, res, opts, method: req.method, path, routePath, query, label, headers: req.headers,
    body: '', json: null, closed: false, scenario: resolveScenario(label),
    baseHeaders: { 'x-request-id': `req_mock_${record.seq}` },
  };
  // 'close' fires both after a complete response and when the client goes away; either way the
  // request stops counting as in flight.
  res.once('close', () => {
    ctx.closed = true;
    record.status = res.headersSent ? res.statusCode : null;
    state.inFlight--;
    state.inFlightByLabel.set(label, state.inFlightByLabel.get(label) - 1);
  });

  const body = await readBody(req);
  if (body === null) return;
  if (body.text === null) return E.tooLarge(ctx, protocolOf(routePath, req.headers));
  record.body = ctx.body = body.text;
  record.json = ctx.json = parseJson(body.text);

  if (opts.latencyMs > 0 && !(await C.sleep(ctx, opts.latencyMs))) return;
  await answer(ctx);
}

async function answer(ctx) {
  const { name, arg } = ctx.scenario;
  const proto = protocolOf(ctx.routePath, ctx.headers);
  switch (name) {
    case 'hang':
      return; // no timer: the request just waits until the client (or shutdown) closes it
    case 'drop':
      ctx.req.socket.destroy();
      return;
    case 'slow':
      if (!(await C.sleep(ctx, C.intArg(arg, 2000)))) return;
      break;
    case 'flaky': {
      const seen = (state.flakyCounts.get(ctx.label) || 0) + 1;
      state.flakyCounts.set(ctx.label, seen);
      if (seen <= C.intArg(arg, 2)) return E.scenarioError(ctx, proto, 'flaky', arg);
      break;
    }
    default:
      if (E.scenarioError(ctx, proto, name, arg)) return;
  }
  return route(ctx, proto);
}

function route(ctx, proto) {
  const p = ctx.routePath;
  if (p === '/echo' || p.startsWith('/echo/')) return echo(ctx);
  if (p === '/stream/count') return streamCount(ctx);
  if (ctx.scenario.name === 'vllm') return openai.handle(ctx); // vLLM speaks only OpenAI
  if (proto === 'gemini') return gemini.handle(ctx);
  if (proto === 'anthropic') return anthropic.handle(ctx);
  return openai.handle(ctx);
}

// For gateway pass-through tests: shows exactly what arrived.
function echo(ctx) {
  C.sendJson(ctx, 200, { method: ctx.method, path: ctx.path, route_path: ctx.routePath,
    query: queryObject(ctx.query), label: ctx.label, headers: ctx.headers, body: ctx.body,
    json: ctx.json });
}

// A plain SSE stream, to check that a proxy forwards events as they come instead of buffering.
async function streamCount(ctx) {
  const n = C.intArg(ctx.query.get('n'), 5);
  const interval = C.intArg(ctx.query.get('interval_ms'), 50);
  ctx.res.writeHead(200, { ...ctx.baseHeaders, 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  ctx.res.flushHeaders();
  for (let i = 1; i <= n; i++) {
    if (i > 1 && !(await C.sleep(ctx, interval))) return;
    if (ctx.closed) return;
    ctx.res.write(`data: ${i}\n\n`);
  }
  if (!ctx.closed) ctx.res.end();
}

// ---------------------------------------------------------------------------------------------
// Control API: unauthenticated, never recorded or delayed; single-line JSON answers.

function reply(res, status, obj) {
  const body = `${JSON.stringify(obj)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

function control(req, res, path, query, body) {
  const route = `${req.method} ${path}`;
  switch (route) {
    case 'GET /_mock/health':
      return reply(res, 200, { ok: true });
    case 'GET /_mock/requests': {
      let recs = state.records;
      const label = query.get('label');
      if (label !== null) recs = recs.filter((r) => r.label === label);
      const since = query.get('since');
      if (since !== null) recs = recs.filter((r) => r.seq > Number(since));
      const last = C.intArg(query.get('last'), null);
      if (last !== null) recs = last === 0 ? [] : recs.slice(-last);
      return reply(res, 200, recs);
    }
    case 'POST /_mock/reset':
      reset();
      return reply(res, 200, { ok: true });
    case 'POST /_mock/scenario': {
      const j = parseJson(body);
      if (!j || typeof j.label !== 'string' || j.label === '') {
        return reply(res, 400, { error: 'body must be {"label": "...", "scenario": "..."|null, "arg": ...}' });
      }
      if (j.scenario !== null && !SCENARIOS.has(j.scenario)) {
        return reply(res, 400, { error: `unknown scenario ${JSON.stringify(j.scenario)}`,
          scenarios: [...SCENARIOS] });
      }
      if (j.scenario === null) state.overrides.delete(j.label);
      else state.overrides.set(j.label, { name: j.scenario, arg: j.arg ?? null });
      state.flakyCounts.delete(j.label);
      return reply(res, 200, { ok: true, ...describeScenario(j.label) });
    }
    case 'GET /_mock/scenario': {
      const label = query.get('label') ?? 'default';
      return reply(res, 200, describeScenario(label));
    }
    case 'GET /_mock/stats': {
      const inFlightByLabel = {};
      for (const [l, n] of state.inFlightByLabel) if (n > 0) inFlightByLabel[l] = n;
      return reply(res, 200, { requests: state.requests, max_in_flight: state.maxInFlight,
        max_in_flight_by_label: state.maxInFlightByLabel, in_flight: state.inFlight,
        in_flight_by_label: inFlightByLabel, connections: state.connections });
    }
    case 'GET /_mock/embedding': {
      const text = query.get('text');
      const dims = C.intArg(query.get('dims'), 8);
      if (text === null || dims < 1 || dims > C.MAX_DIMS) {
        return reply(res, 400, { error: 'need text=... and 1 <= dims <= 4096' });
      }
      const v = C.embedding(text, dims);
      return reply(res, 200, { embedding: v, base64: C.floatsToBase64(v) });
    }
    case 'GET /_mock/rerank': {
      // /_mock/rerank?query=q&doc=a&doc=b → the scores both rerank routes would give.
      const q = query.get('query');
      const docs = query.getAll('doc');
      if (q === null || docs.length === 0) return reply(res, 400, { error: 'need query=... and doc=...' });
      return reply(res, 200, { results: C.rerankScores(q, docs) });
    }
    default:
      return reply(res, 404, { error: `unknown control endpoint ${route}` });
  }
}

// ---------------------------------------------------------------------------------------------
// Servers and lifecycle

let connectionIds = 0;

function configure(server) {
  // Providers keep idle connections far longer than Node's 5 s default; a short timeout would
  // make connection-reuse tests race with the server closing the socket.
  server.keepAliveTimeout = 65000;
  server.headersTimeout = 66000;
  server.requestTimeout = 0;
  // Numbering sockets (across both servers) lets tests check that a client reuses connections.
  server.on(server instanceof https.Server ? 'secureConnection' : 'connection', (socket) => {
    socket.mockId = ++connectionIds;
    state.connections++;
  });
  return server;
}

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, HOST, () => {
      server.off('error', reject);
      resolve(server.address().port);
    });
  });
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const handler = makeHandler(opts);
  const servers = [];
  const lines = [];
  try {
    const plain = configure(http.createServer(handler));
    servers.push(plain);
    lines.push(`mock upstream listening on ${await listen(plain, opts.port)}`);
    if (opts.tlsPort !== null) {
      const tlsOptions = { cert: fs.readFileSync(opts.tlsCert), key: fs.readFileSync(opts.tlsKey) };
      if (opts.tlsClientCa !== null) {
        // Mutual TLS: the handshake fails for a client without a certificate the CA signed.
        tlsOptions.ca = fs.readFileSync(opts.tlsClientCa);
        tlsOptions.requestCert = true;
        tlsOptions.rejectUnauthorized = true;
      }
      const tls = configure(https.createServer(tlsOptions, handler));
      servers.push(tls);
      lines.push(`mock upstream tls listening on ${await listen(tls, opts.tlsPort)}`);
    }
  } catch (err) {
    process.stderr.write(`mock_upstream: ${err.message}\n`);
    process.exit(1);
  }
  if (opts.pidFile) fs.writeFileSync(opts.pidFile, `${process.pid}\n`);

  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    for (const s of servers) {
      s.close();
      s.closeAllConnections(); // hung and keep-alive sockets would otherwise hold close() open
    }
    if (opts.pidFile) { try { fs.unlinkSync(opts.pidFile); } catch { /* already gone */ } }
    // Pending slow-scenario timers must not delay the exit.
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);

  // Printed last: a harness that waits for these lines can use every port at once.
  process.stdout.write(`${lines.join('\n')}\n`);
}

main();
