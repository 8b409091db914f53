// Mutated requests against every route of the gateway, for a bounded time. Node built-ins only.
//
//   node mutate_gateway.mjs --port P --key K [--seconds 60] [--concurrency 8] [--seed N]
//
// Starts from a valid request per route (the bodies the other gateway tests send) and mutates it
// structurally (members deleted, duplicated, swapped, retyped; huge numbers, deep nesting, long
// strings, lone surrogates, NULs, model/stream/n/max_tokens overrides) and byte-wise (truncation,
// flips, invalid UTF-8, control bytes), and at the HTTP level (method, path, Content-Type,
// missing, invalid, duplicate or huge headers, chunked bodies). Requests go over raw sockets so
// that anything can be sent, one request per connection unless the run picks keep-alive for a
// pair of requests.
//
// Every answer must be a complete HTTP response with a 2xx or 4xx status, or 502/504 (an
// upstream's failure as the gateway reports it); gateway error bodies must be JSON with an
// "error" member. A reset, an early close, a time-out, any other 5xx or a non-JSON error body
// is a violation: at most 20 are printed in full. The seed is printed first; PGI_MUTATE_SEED (or
// --seed) replays a run. PGI_MUTATE_SECONDS (or --seconds) sets its length.
//
// The last line is a JSON summary: {"seed", "sent", "by_status", "by_route", "violations", ...}.
import net from 'node:net';

function args() {
    const a = {
        host: '127.0.0.1', port: 0, key: '',
        seconds: parseFloat(process.env.PGI_MUTATE_SECONDS || '60'),
        concurrency: 8,
        seed: process.env.PGI_MUTATE_SEED !== undefined && process.env.PGI_MUTATE_SEED !== ''
            ? Number(process.env.PGI_MUTATE_SEED) >>> 0
            : (Date.now() ^ (process.pid << 16)) >>> 0,
        timeoutMs: 30000,
    };
    const v = process.argv.slice(2);
    for (let i = 0; i < v.length; i += 2) {
        const k = v[i].replace(/^--/, '').replace(/-(.)/g, (_, c) => c.toUpperCase());
        a[k] = typeof a[k] === 'number' ? Number(v[i + 1]) : v[i + 1];
    }
    a.seed >>>= 0;
    return a;
}
const opt = args();

// ---------------------------------------------------------------------------------------------
// Deterministic PRNG (mulberry32). Each request draws its own generator from the run's, so a
// request's content does not depend on the order in which answers came back.
function mulberry32(seed) {
    let s = seed >>> 0;
    return () => {
        s = (s + 0x6d2b79f5) >>> 0;
        let t = s;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}
class Rng {
    constructor(seed) { this.next = mulberry32(seed); }
    int(n) { return Math.floor(this.next() * n); }           // 0 .. n-1
    range(a, b) { return a + this.int(b - a + 1); }          // a .. b
    chance(p) { return this.next() < p; }
    pick(list) { return list[this.int(list.length)]; }
    // A size skewed towards small values, up to max.
    size(max) { return Math.floor(Math.pow(this.next(), 3) * max); }
}

// ---------------------------------------------------------------------------------------------
// Seeds: one valid request per route, as the other gateway tests send them.
const msgs = (text) => [{ role: 'user', content: text }];
const SEEDS = [
    { route: 'GET /health', method: 'GET', path: '/health', auth: false },
    { route: 'GET /metrics', method: 'GET', path: '/metrics', auth: false },
    { route: 'GET /v1/models', method: 'GET', path: '/v1/models' },
    { route: 'GET /v1/models/{id}', method: 'GET', path: '/v1/models/gw-openai' },
    { route: 'POST /v1/chat/completions openai', method: 'POST', path: '/v1/chat/completions',
      body: { model: 'gw-openai', messages: msgs('hello there'), max_tokens: 16, temperature: 0.2 } },
    { route: 'POST /v1/chat/completions openai stream', method: 'POST', path: '/v1/chat/completions',
      body: { model: 'gw-openai', messages: msgs('stream me'), stream: true,
              stream_options: { include_usage: true } } },
    { route: 'POST /v1/chat/completions anthropic', method: 'POST', path: '/v1/chat/completions',
      body: { model: 'gw-claude', messages: [{ role: 'system', content: 'be brief' }, ...msgs('hi claude')],
              max_tokens: 32, stop: ['\n\n'] } },
    { route: 'POST /v1/chat/completions anthropic stream', method: 'POST', path: '/v1/chat/completions',
      body: { model: 'gw-claude', messages: msgs('stream claude'), stream: true, max_tokens: 32 } },
    { route: 'POST /v1/chat/completions gemini', method: 'POST', path: '/v1/chat/completions',
      body: { model: 'gw-gemini', messages: msgs('hi gemini'), top_p: 0.9, n: 1 } },
    { route: 'POST /v1/chat/completions gemini stream', method: 'POST', path: '/v1/chat/completions',
      body: { model: 'gw-gemini', messages: msgs('stream gemini'), stream: true } },
    { route: 'POST /v1/chat/completions tools', method: 'POST', path: '/v1/chat/completions',
      body: { model: 'gw-openai', messages: msgs('weather?'), tool_choice: 'auto', tools: [{
          type: 'function', function: { name: 'get_weather', description: 'weather',
              parameters: { type: 'object', properties: { city: { type: 'string' } } } } }],
              response_format: { type: 'json_object' } } },
    { route: 'POST /v1/embeddings openai', method: 'POST', path: '/v1/embeddings',
      body: { model: 'gw-embed', input: ['alpha', 'beta'], encoding_format: 'float' } },
    { route: 'POST /v1/embeddings base64', method: 'POST', path: '/v1/embeddings',
      body: { model: 'gw-floats', input: 'gamma', encoding_format: 'base64' } },
    { route: 'POST /v1/embeddings gemini', method: 'POST', path: '/v1/embeddings',
      body: { model: 'gw-gembed', input: ['delta', 'epsilon'], dimensions: 8 } },
    { route: 'POST /v1/rerank', method: 'POST', path: '/v1/rerank',
      body: { model: 'gw-nim', query: 'which is red', documents: ['apple', 'sky', 'cherry'], top_n: 2 } },
    { route: 'POST /v1/ranking', method: 'POST', path: '/v1/ranking',
      body: { model: 'gw-cohere', query: { text: 'which is red' },
              passages: [{ text: 'apple' }, { text: 'sky' }, { text: 'cherry' }] } },
    { route: 'PASS openai chat', method: 'POST', path: '/inferenceservices/gw-openai/v1/chat/completions',
      body: { model: 'gpt-4o-mini', messages: msgs('through'), max_tokens: 8 } },
    { route: 'PASS openai chat stream', method: 'POST', path: '/inferenceservices/gw-openai/v1/chat/completions',
      body: { model: 'gpt-4o-mini', messages: msgs('through stream'), stream: true,
              stream_options: { include_usage: true } } },
    { route: 'PASS openai embeddings', method: 'POST', path: '/inferenceservices/gw-embed/v1/embeddings',
      body: { model: 'text-embedding-3-small', input: 'through' } },
    { route: 'PASS openai models', method: 'GET', path: '/inferenceservices/gw-openai/v1/models' },
    { route: 'PASS openai echo', method: 'POST', path: '/inferenceservices/gw-openai/echo/a/b?x=1',
      body: { anything: [1, 2, 3] } },
    { route: 'PASS stream count', method: 'GET', path: '/inferenceservices/gw-openai/stream/count?n=3&interval_ms=1' },
    { route: 'PASS rerank', method: 'POST', path: '/inferenceservices/gw-cohere/v1/rerank',
      body: { model: 'BAAI/bge-reranker-v2-m3', query: 'red', documents: ['apple', 'sky'] } },
    { route: 'PASS anthropic messages', method: 'POST', path: '/inferenceservices/gw-claude/v1/messages',
      headers: [['anthropic-version', '2023-06-01']],
      body: { model: 'claude-sonnet-4-5', max_tokens: 32, messages: msgs('through claude') } },
    { route: 'PASS anthropic messages stream', method: 'POST', path: '/inferenceservices/gw-claude/v1/messages',
      headers: [['anthropic-version', '2023-06-01']],
      body: { model: 'claude-sonnet-4-5', max_tokens: 32, stream: true, system: 'brief',
              messages: msgs('through claude stream') } },
    { route: 'PASS gemini generateContent', method: 'POST',
      path: '/inferenceservices/gw-gemini/v1beta/models/gemini-2.0-flash:generateContent',
      body: { contents: [{ role: 'user', parts: [{ text: 'through gemini' }] }],
              generationConfig: { maxOutputTokens: 16, temperature: 0.1 } } },
    { route: 'PASS gemini streamGenerateContent', method: 'POST',
      path: '/inferenceservices/gw-gemini/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse',
      body: { contents: [{ role: 'user', parts: [{ text: 'through gemini stream' }] }] } },
    { route: 'PASS gemini countTokens', method: 'POST',
      path: '/inferenceservices/gw-gemini/v1beta/models/gemini-2.0-flash:countTokens',
      body: { contents: [{ parts: [{ text: 'count these' }] }] } },
    { route: 'PASS gemini embedContent', method: 'POST',
      path: '/inferenceservices/gw-gembed/v1beta/models/text-embedding-004:embedContent',
      body: { content: { parts: [{ text: 'embed me' }] } } },
    { route: 'PASS gemini batchEmbedContents', method: 'POST',
      path: '/inferenceservices/gw-gembed/v1beta/models/text-embedding-004:batchEmbedContents',
      body: { requests: [{ model: 'models/text-embedding-004', content: { parts: [{ text: 'a' }] } }] } },
    { route: 'unknown path', method: 'GET', path: '/v2/whatever' },
];

const SERVICES = ['gw-openai', 'gw-claude', 'gw-gemini', 'gw-embed', 'gw-floats', 'gw-gembed',
                  'gw-nim', 'gw-cohere'];
const METHODS = ['GET', 'POST', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'TRACE', 'CONNECT',
                 'BREW', 'post', 'GET\u00ff'];

// ---------------------------------------------------------------------------------------------
// JSON values with raw parts: a Raw holds bytes written as they are (invalid JSON, invalid UTF-8,
// deep nesting) where a value would go.
class Raw {
    constructor(bytes) { this.bytes = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes, 'latin1'); }
}
// A member written twice: {"a": 1, "a": "x"} (JSON.stringify cannot).
class Dup {
    constructor(first, second) { this.first = first; this.second = second; }
}

function serialize(value, out) {
    if (value instanceof Raw) { out.push(value.bytes); return; }
    if (value instanceof Dup) { serialize(value.first, out); return; }
    if (Array.isArray(value)) {
        out.push(Buffer.from('['));
        value.forEach((v, i) => { if (i) out.push(Buffer.from(',')); serialize(v, out); });
        out.push(Buffer.from(']'));
        return;
    }
    if (value !== null && typeof value === 'object') {
        out.push(Buffer.from('{'));
        let first = true;
        for (const [k, v] of Object.entries(value)) {
            const entries = v instanceof Dup ? [v.first, v.second] : [v];
            for (const e of entries) {
                if (!first) out.push(Buffer.from(','));
                first = false;
                out.push(Buffer.from(JSON.stringify(k)), Buffer.from(':'));
                serialize(e, out);
            }
        }
        out.push(Buffer.from('}'));
        return;
    }
    out.push(Buffer.from(value === undefined ? 'null' : JSON.stringify(value)));
}
const toBytes = (value) => { const out = []; serialize(value, out); return Buffer.concat(out); };

// Every container (object or array) of a value, for structural mutations.
function containers(value, list = []) {
    if (value instanceof Raw || value instanceof Dup || value === null || typeof value !== 'object')
        return list;
    list.push(value);
    for (const v of Array.isArray(value) ? value : Object.values(value)) containers(v, list);
    return list;
}

function deep(rng, depth) {
    const open = rng.chance(0.5) ? '[' : '{"a":';
    const close = open === '[' ? ']' : '}';
    return new Raw(open.repeat(depth) + (rng.chance(0.5) ? '1' : '') + close.repeat(depth));
}

const HUGE_NUMBERS = ['1e400', '-1e400', '1e308', '18446744073709551616', '-9223372036854775809',
    '9223372036854775807', '4294967296', '2147483648', '-2147483649', '0.0000000000000000000001',
    '1e-400', '-0', '123456789012345678901234567890', '1.7976931348623157e309', 'NaN',
    'Infinity', '-Infinity', '0x10', '01', '+1', '.5', '1.', '1e', '--1'];
const LONE = ['"\\ud800"', '"\\udc00"', '"x\\ud83d"', '"\\ud800\\u0041"', '"\\udfff\\ud800"',
    '"\\u0000"', '"a\\u0000b"', '"\\u001f\\u007f"', '"\\uZZZZ"', '"\\u12"', '"\\x41"', '"\\"',
    '"\\ud83d\\ude00"'];
const BAD_UTF8 = [[0xff], [0xfe, 0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xed, 0xbf, 0xbf],
    [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82], [0x80], [0xc3], [0xf0, 0x9f, 0x98]];

function randomScalar(rng) {
    switch (rng.int(12)) {
        case 0: return null;
        case 1: return rng.chance(0.5);
        case 2: return rng.range(-5, 5);
        case 3: return rng.next() * 1e6 - 5e5;
        case 4: return new Raw(rng.pick(HUGE_NUMBERS));
        case 5: return '';
        case 6: return 'x'.repeat(rng.size(200000));
        case 7: return new Raw(rng.pick(LONE));
        case 8: return new Raw(Buffer.concat([Buffer.from('"a'), Buffer.from(rng.pick(BAD_UTF8)), Buffer.from('b"')]));
        case 9: return new Raw(Buffer.from([0x22, rng.int(32), 0x22]));  // raw control byte in a string
        case 10: return rng.pick(SERVICES);
        default: return String.fromCodePoint(rng.pick([0x20, 0xe9, 0x4e2d, 0x1f600, 0xfeff])).repeat(rng.range(1, 50));
    }
}
function randomValue(rng, depth = 0) {
    const k = rng.int(depth > 2 ? 8 : 10);
    if (k === 8) return Array.from({ length: rng.int(4) }, () => randomValue(rng, depth + 1));
    if (k === 9) {
        const o = {};
        for (let i = rng.int(4); i > 0; i--) o[rng.pick(['role', 'content', 'type', 'text', 'model', 'x'])] = randomValue(rng, depth + 1);
        return o;
    }
    return randomScalar(rng);
}

// Fields the translators read, with values that stress them.
function overrideField(rng, body) {
    const field = rng.pick(['model', 'stream', 'n', 'max_tokens', 'max_completion_tokens',
        'temperature', 'top_p', 'stop', 'messages', 'input', 'encoding_format', 'dimensions',
        'documents', 'query', 'top_n', 'passages', 'stream_options', 'tools', 'tool_choice',
        'response_format', 'logprobs', 'user', 'seed', 'contents', 'system', 'return_documents']);
    let v;
    switch (field) {
        case 'model':
            v = rng.pick([...SERVICES, 'nope', '', ' gw-openai', 'gw-openai\u0000', 'GW-OPENAI',
                'gw-openai/../gw-claude', 'x'.repeat(rng.size(70000)), 'gpt-4o-mini', 7, null,
                ['gw-openai'], { id: 'gw-openai' }]);
            break;
        case 'stream': v = rng.pick([true, false, 'true', 1, 0, null, {}, []]); break;
        case 'n': case 'max_tokens': case 'max_completion_tokens': case 'top_n': case 'dimensions':
        case 'seed':
            v = rng.chance(0.5) ? rng.pick([-1, 0, 1, 2, 128, 1000000, -2147483648, 2.5, '5', null, true])
                                : new Raw(rng.pick(HUGE_NUMBERS));
            break;
        case 'messages':
            v = rng.pick([[], null, 'hi', [null], [{}], [{ role: 'user' }], [{ role: 'wizard', content: 'x' }],
                [{ role: 'user', content: [{ type: 'text', text: 'part' }, { type: 'image_url', image_url: { url: 'data:,x' } }] }],
                [{ role: 'user', content: [{ type: 'nope' }] }], [{ role: 'tool', content: 'r', tool_call_id: 7 }],
                [{ role: 'assistant', content: null, tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{bad' } }] }],
                Array.from({ length: rng.size(3000) }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: `m${i}` }))]);
            break;
        case 'input':
            v = rng.pick([[], '', null, [1, 2, 3], [[1, 2], [3]], [''], [null], { a: 1 },
                Array.from({ length: rng.size(5000) }, (_, i) => `w${i}`)]);
            break;
        case 'documents': case 'passages':
            v = rng.pick([[], null, 'doc', [null], [{}], [{ text: 5 }], [1, 2],
                Array.from({ length: rng.size(3000) }, (_, i) => (rng.chance(0.5) ? `d${i}` : { text: `d${i}` }))]);
            break;
        default:
            v = randomValue(rng);
    }
    body[field] = v;
}

function mutateStructure(rng, body) {
    const ops = rng.range(1, 4);
    for (let i = 0; i < ops; i++) {
        const all = containers(body);
        const c = all.length ? rng.pick(all) : body;
        const keys = Array.isArray(c) ? c.map((_, j) => j) : Object.keys(c);
        const key = keys.length ? rng.pick(keys) : null;
        switch (rng.int(11)) {
            case 0:  // delete a member / element
                if (key === null) break;
                if (Array.isArray(c)) c.splice(key, 1); else delete c[key];
                break;
            case 1:  // duplicate a member (the same key twice) or an element
                if (key === null) break;
                if (Array.isArray(c)) c.splice(key, 0, c[key]);
                else c[key] = new Dup(c[key], rng.chance(0.5) ? c[key] : randomValue(rng));
                break;
            case 2: {  // swap two members' values
                if (keys.length < 2) break;
                const other = rng.pick(keys);
                [c[key], c[other]] = [c[other], c[key]];
                break;
            }
            case 3:  // change a type
                if (key !== null) c[key] = randomValue(rng);
                break;
            case 4:  // deep nesting
                if (key !== null) c[key] = deep(rng, rng.chance(0.2) ? rng.range(1000, 10000) : rng.range(2, 600));
                break;
            case 5:  // a long string
                if (key !== null) c[key] = 'y'.repeat(rng.size(400000));
                break;
            case 6:  // a new member
                if (!Array.isArray(c)) c[rng.pick(['extra', '', '\u0000', 'model', 'stream', '__proto__x'])] = randomValue(rng);
                else c.push(randomValue(rng));
                break;
            default:
                overrideField(rng, body);
        }
    }
}

function mutateBytes(rng, buf) {
    let b = Buffer.from(buf);
    const ops = rng.range(1, 3);
    for (let i = 0; i < ops; i++) {
        switch (rng.int(6)) {
            case 0:  // truncate
                b = b.subarray(0, rng.int(b.length + 1));
                break;
            case 1:  // flip bytes
                for (let j = rng.range(1, 8); j > 0 && b.length; j--) b[rng.int(b.length)] = rng.int(256);
                break;
            case 2: {  // insert invalid UTF-8 / control bytes
                const at = rng.int(b.length + 1);
                const ins = Buffer.from(rng.chance(0.5) ? rng.pick(BAD_UTF8) : [rng.int(32)]);
                b = Buffer.concat([b.subarray(0, at), ins, b.subarray(at)]);
                break;
            }
            case 3: {  // delete a range
                const at = rng.int(b.length + 1);
                b = Buffer.concat([b.subarray(0, at), b.subarray(at + rng.range(1, 32))]);
                break;
            }
            case 4: {  // duplicate a range
                const at = rng.int(b.length + 1);
                const piece = b.subarray(at, at + rng.range(1, 64));
                b = Buffer.concat([b.subarray(0, at), piece, b.subarray(at)]);
                break;
            }
            default:  // NUL bytes
                b = Buffer.concat([b, Buffer.alloc(rng.range(1, 4))]);
        }
    }
    return b;
}

function mutatePath(rng, seed) {
    let path = seed.path;
    switch (rng.int(14)) {
        case 0: return path + (path.includes('?') ? '&' : '?') + 'q=%ff%00&x=' + 'z'.repeat(rng.size(3000));
        case 1: return path + '/';
        case 2: return path.replace(/[a-z]/, (c) => `%${c.charCodeAt(0).toString(16)}`);
        case 3: return path.replace('/v1/', '//v1/');
        case 4: return `/inferenceservices/${rng.pick(['gw-openai', '%2e%2e', '..', 'nope', '%ff', '%00', 'gw%2Fopenai', '', 'a%'])}/${rng.pick(['..', '%2e%2e/x', 'v1/%2F', 'v1/models', 'echo/%0a', 'echo/%ZZ', 'a\\b'])}`;
        case 5: return '/v1/models/' + rng.pick(['%ff', '%00', 'gw-openai%2Fx', '%', 'nope', 'gw-claude', 'x'.repeat(rng.size(5000))]);
        case 6: return rng.pick(['*', '', 'http://127.0.0.1/v1/models', '/v1/models#frag', '/%', '/\u00ff', '/v1/chat/completions?', '/../health']);
        case 7: return path.toUpperCase();
        default: return path;
    }
}

const CONTENT_TYPES = ['application/json', 'application/json; charset=utf-8', 'text/plain',
    'application/x-www-form-urlencoded', 'application/xml', 'multipart/form-data; boundary=x',
    'application/octet-stream', '', 'json', 'application/vnd.api+json', ';', 'APPLICATION/JSON',
    'x'.repeat(3000), 'application/json; charset=latin1'];

// One request: method, path, headers (a list, duplicates allowed), body bytes, framing.
function makeRequest(rng) {
    const seed = rng.pick(SEEDS);
    const req = { route: seed.route, method: seed.method, path: seed.path, headers: [], body: null,
                  chunked: false, http10: false, keepAlive: false, bodyCorrupted: false };
    let body = seed.body ? JSON.parse(JSON.stringify(seed.body)) : null;
    const plain = rng.chance(0.08);  // some requests unmutated, to see the routes serve
    if (!plain) {
        if (body && rng.chance(0.85)) mutateStructure(rng, body);
        if (!body && rng.chance(0.15)) body = randomValue(rng);
    }
    let bytes = body === null ? null : toBytes(body);
    if (!plain && bytes && rng.chance(0.25)) { bytes = mutateBytes(rng, bytes); req.bodyCorrupted = true; }
    if (!plain && rng.chance(0.05)) bytes = Buffer.from(rng.pick(['', 'null', '[]', '"x"', '1', '{', '}', '{"model":}', '\u0000']));
    req.body = bytes;
    if (!plain && rng.chance(0.08)) req.method = rng.pick(METHODS);
    if (!plain && rng.chance(0.12)) req.path = mutatePath(rng, seed);

    // Authentication: mostly the valid key.
    const a = plain ? 0 : rng.int(40);
    if (seed.auth !== false || a > 30) {
        if (a <= 30) req.headers.push(['Authorization', `Bearer ${opt.key}`]);
        else if (a === 31) req.headers.push(['X-API-Key', opt.key]);
        else if (a === 32) { /* none */ }
        else if (a === 33) req.headers.push(['Authorization', 'Bearer sk-pgi-invalid']);
        else if (a === 34) req.headers.push(['Authorization', 'Bearer']);
        else if (a === 35) req.headers.push(['Authorization', `Basic ${Buffer.from(`u:${opt.key}`).toString('base64')}`]);
        else if (a === 36) req.headers.push(['Authorization', 'Bearer x'], ['Authorization', `Bearer ${opt.key}`]);
        else if (a === 37) req.headers.push(['Authorization', `Bearer ${'k'.repeat(rng.size(20000))}`]);
        else if (a === 38) req.headers.push(['Authorization', `bearer   ${opt.key}  `]);
        else req.headers.push(['X-API-Key', `${opt.key}\u00ff`]);
    }
    for (const h of seed.headers || []) req.headers.push(h);
    if (bytes !== null) {
        const ct = plain || rng.chance(0.8) ? 'application/json' : rng.pick(CONTENT_TYPES);
        if (plain || !rng.chance(0.05)) req.headers.push(['Content-Type', ct]);
        if (!plain && rng.chance(0.05)) req.headers.push(['Content-Type', rng.pick(CONTENT_TYPES)]);
        req.chunked = !plain && rng.chance(0.15);
    }
    if (!plain) {
        const extra = rng.int(30);
        if (extra === 0) req.headers.push(['X-Filler', 'f'.repeat(rng.size(80000))]);  // past 64 kB at times
        else if (extra === 1) for (let i = rng.range(10, 300); i > 0; i--) req.headers.push([`X-Many-${i}`, 'v']);
        else if (extra === 2) req.headers.push(['Expect', '100-continue']);
        else if (extra === 3) req.headers.push(['X-Bytes', Buffer.from([0x61, 0xff, 0xfe, 0x01, 0x62]).toString('latin1')]);
        else if (extra === 4) req.headers.push(['Accept-Encoding', 'gzip, br']);
        else if (extra === 5) req.headers.push(['anthropic-version', rng.pick(['', 'nope', '2023-06-01'])], ['x-goog-api-key', 'caller-key']);
        else if (extra === 6) req.headers.push(['Host', 'a'], ['Host', 'b']);
        else if (extra === 7) req.headers.push(['Connection', 'upgrade'], ['Upgrade', 'websocket']);
        else if (extra === 8) req.headers.push(['Transfer-Encoding', 'identity']);
        req.http10 = rng.chance(0.03);
        req.keepAlive = !req.http10 && rng.chance(0.1);
    }
    return req;
}

function encode(req) {
    const lines = [`${req.method} ${req.path} HTTP/1.${req.http10 ? 0 : 1}`];
    const hasHost = req.headers.some(([k]) => k.toLowerCase() === 'host');
    if (!hasHost) lines.push('Host: 127.0.0.1');
    for (const [k, v] of req.headers) lines.push(`${k}: ${v}`);
    const parts = [];
    if (req.body !== null) {
        if (req.chunked) {
            lines.push('Transfer-Encoding: chunked');
            let at = 0;
            const b = req.body;
            // Chunk sizes from the body's own bytes, so the framing is valid and deterministic.
            while (at < b.length) {
                const n = Math.min(b.length - at, 1 + ((b[at] * 7919 + at) % 4096));
                parts.push(Buffer.from(`${n.toString(16)}\r\n`), b.subarray(at, at + n), Buffer.from('\r\n'));
                at += n;
            }
            parts.push(Buffer.from('0\r\n\r\n'));
        } else {
            lines.push(`Content-Length: ${req.body.length}`);
            parts.push(req.body);
        }
    }
    return { head: Buffer.from(`${lines.join('\r\n')}\r\n`, 'latin1'), parts };
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.x response reader over a raw socket.
function parseResponse(buf, method) {
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) return null;
    const head = buf.subarray(0, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(head[0]);
    if (!m) return { status: -1, complete: true, headers: {}, body: buf.subarray(0, 300), rest: Buffer.alloc(0) };
    const status = Number(m[1]);
    const headers = {};
    for (const line of head.slice(1)) {
        const c = line.indexOf(':');
        if (c > 0) headers[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim();
    }
    const start = end + 4;
    if (status === 100) {
        const rest = parseResponse(buf.subarray(start), method);
        return rest;
    }
    if (method === 'HEAD' || status === 204 || status === 304)
        return { status, headers, body: Buffer.alloc(0), complete: true, rest: buf.subarray(start) };
    if (/chunked/i.test(headers['transfer-encoding'] || '')) {
        const body = [];
        let at = start;
        for (;;) {
            const eol = buf.indexOf('\r\n', at);
            if (eol < 0) return { status, headers, complete: false };
            const n = parseInt(buf.subarray(at, eol).toString('latin1'), 16);
            if (Number.isNaN(n)) return { status, headers, complete: false, bad: 'chunk size' };
            if (n === 0) {
                const fin = buf.indexOf('\r\n', eol + 2);
                if (fin < 0) return { status, headers, complete: false };
                return { status, headers, body: Buffer.concat(body), complete: true, rest: buf.subarray(fin + 2) };
            }
            if (buf.length < eol + 2 + n + 2) return { status, headers, complete: false };
            body.push(buf.subarray(eol + 2, eol + 2 + n));
            at = eol + 2 + n + 2;
        }
    }
    if (headers['content-length'] !== undefined) {
        const n = Number(headers['content-length']);
        if (buf.length < start + n) return { status, headers, complete: false };
        return { status, headers, body: buf.subarray(start, start + n), complete: true, rest: buf.subarray(start + n) };
    }
    return { status, headers, body: buf.subarray(start), complete: false, untilClose: true };
}

// Sends one or (keep-alive) two copies of a request on one connection; resolves with the
// outcome of each.
function send(req) {
    return new Promise((resolve) => {
        const copies = req.keepAlive ? 2 : 1;
        const { head, parts } = encode(req);
        const close = Buffer.from(`Connection: ${req.keepAlive ? 'keep-alive' : 'close'}\r\n\r\n`);
        let got = Buffer.alloc(0), done = false, results = [];
        const s = net.connect(opt.port, opt.host);
        const finish = (error) => {
            if (done) return;
            done = true;
            clearTimeout(timer);
            s.destroy();
            // What was read so far, for the answers not yet counted.
            while (results.length < copies) {
                // An answer that closes the connection leaves the next copy unanswered.
                if (results.length && /close/i.test(results[results.length - 1].headers?.connection || '')) break;
                const r = parseResponse(got, req.method);
                if (r && (r.complete || r.untilClose) && !error) {
                    results.push({ status: r.status, headers: r.headers, body: r.body });
                    got = r.rest || Buffer.alloc(0);
                } else {
                    results.push({ error: error || (r ? 'closed before the answer was complete' : 'closed without an answer'),
                                   status: r ? r.status : 0 });
                    break;
                }
            }
            resolve(results);
        };
        const timer = setTimeout(() => finish('time-out'), opt.timeoutMs);
        s.on('connect', () => {
            for (let i = 0; i < copies; i++) {
                s.write(head);
                s.write(i === copies - 1 ? Buffer.from('Connection: close\r\n\r\n') : close);
                for (const p of parts) s.write(p);
            }
        });
        s.on('data', (d) => {
            got = Buffer.concat([got, d]);
            // Answers that are complete by their framing are taken as they come.
            for (;;) {
                if (results.length >= copies) break;
                const r = parseResponse(got, req.method);
                if (!r || !r.complete) break;
                results.push({ status: r.status, headers: r.headers, body: r.body });
                got = r.rest;
                // The gateway may answer and close before reading a refused body: stop writing.
                if (results.length >= copies || /close/i.test(r.headers.connection || '')) { finish(null); return; }
            }
        });
        s.on('error', (e) => {
            // A reset after every answer arrived is the kernel's, for bytes the gateway did not
            // need to read (a refused body); one before is a violation.
            finish(results.length >= copies ? null : e.code || String(e));
        });
        s.on('end', () => finish(null));
        s.on('close', () => finish(null));
    });
}

// ---------------------------------------------------------------------------------------------
const MAX_EXAMPLES = 20;
const summary = { seed: opt.seed, seconds: opt.seconds, concurrency: opt.concurrency, sent: 0,
                  answered: 0, by_status: {}, by_route: {}, violations: 0, examples: [] };
const ACCEPTED_5XX = new Set([502, 504]);

const examplesByKind = new Map();
function violation(req, why, status) {
    summary.violations++;
    // At most 3 examples of a kind, so that one frequent kind does not hide the others.
    const kind = `${status} ${why.slice(0, 24)}`;
    const seen = examplesByKind.get(kind) || 0;
    if (summary.examples.length >= MAX_EXAMPLES || seen >= 3) return;
    examplesByKind.set(kind, seen + 1);
    const body = req.body ? req.body.subarray(0, 200).toString('latin1') : '';
    summary.examples.push({ route: req.route, method: req.method, path: req.path.slice(0, 200),
        headers: req.headers.map(([k, v]) => `${k}: ${v.length > 60 ? `${v.slice(0, 60)}...(${v.length})` : v}`),
        chunked: req.chunked, keep_alive: req.keepAlive, http10: req.http10,
        body_bytes: req.body ? req.body.length : 0, body: JSON.stringify(body), status, why });
}

function judge(req, r) {
    const route = (summary.by_route[req.route] ||= {});
    const key = r.error ? 'error' : String(r.status);
    route[key] = (route[key] || 0) + 1;
    summary.by_status[key] = (summary.by_status[key] || 0) + 1;
    if (r.error) return violation(req, `no complete answer: ${r.error}`, r.status);
    summary.answered++;
    const s = r.status;
    if (!((s >= 200 && s <= 299) || (s >= 400 && s <= 499) || ACCEPTED_5XX.has(s)))
        return violation(req, `status ${s}: ${JSON.stringify(r.body.subarray(0, 300).toString('latin1'))}`, s);
    // Errors the gateway makes are OpenAI-shaped JSON; the mock's own (through pass-through) are
    // JSON too, in their provider's shape.
    if (s >= 400 && req.method !== 'HEAD' && r.body.length > 0) {
        let j = null;
        try { j = JSON.parse(r.body.toString('utf8')); } catch { /* not JSON */ }
        if (j === null || typeof j !== 'object' || (j.error === undefined && j.detail === undefined))
            return violation(req, `error body is not a JSON error: ${r.body.subarray(0, 200).toString('latin1')}`, s);
    }
    if (!req.path.startsWith('/inferenceservices/') && r.body.includes('sk-test-gw'))
        return violation(req, 'an upstream key appears in the answer', s);
    return undefined;
}

async function worker(master, deadline) {
    while (performance.now() < deadline) {
        const req = makeRequest(new Rng(master()));
        summary.sent += req.keepAlive ? 2 : 1;
        const results = await send(req);
        summary.sent -= (req.keepAlive ? 2 : 1) - results.length;
        for (const r of results) judge(req, r);
    }
}

async function main() {
    if (!opt.port || !opt.key) {
        console.error('usage: node mutate_gateway.mjs --port P --key K [--seconds S] [--concurrency N] [--seed N]');
        process.exit(2);
    }
    console.log(`mutate_gateway: seed ${opt.seed} (replay with PGI_MUTATE_SEED=${opt.seed}), ` +
                `${opt.seconds} s, ${opt.concurrency} in flight, ${SEEDS.length} routes`);
    const master = mulberry32(opt.seed);
    const next = () => Math.floor(master() * 4294967296) >>> 0;
    const deadline = performance.now() + opt.seconds * 1000;
    await Promise.all(Array.from({ length: opt.concurrency }, () => worker(next, deadline)));
    for (const e of summary.examples) console.log(`VIOLATION ${JSON.stringify(e)}`);
    const routes = Object.keys(summary.by_route).sort();
    for (const r of routes) console.log(`  ${r}: ${JSON.stringify(summary.by_route[r])}`);
    summary.routes = SEEDS.map((s) => s.route);
    console.log(JSON.stringify(summary));
}
main();
