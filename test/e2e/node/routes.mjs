// Routes through the gateway's listeners, with the circuit breakers in shared memory: fallback
// from a failing service for the official openai and Anthropic SDKs, the breaker counted in the
// mock's request log (no request while open, exactly one half-open probe), the health worker
// opening a breaker, streams that fall back before their first byte and never after it, a 3:1
// weighted split over 10,000 requests, and the model header choosing the service for chat,
// embeddings and pass-through. Driven by test/e2e/48_routes.sh, which creates the
// services and routes. One PASS/FAIL line per check.
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';

import { check, checkEq, finish, sleep, sql } from './common.mjs';

const GATEWAY = process.env.GATEWAY_URL;
const KEY = process.env.GATEWAY_KEY;
const MOCK = process.env.MOCK_URL;

async function scenario(label, name) {
  await fetch(`${MOCK}/_mock/scenario`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ label, scenario: name }),
  });
}
// Chat requests the mock received for a label (health probes are GETs of models).
async function chatTries(label) {
  const all = await (await fetch(`${MOCK}/_mock/requests?label=${label}`)).json();
  return all.filter((r) => r.method === 'POST').length;
}
// Runs n calls of f, `width` at a time; returns their results.
async function pool(n, width, f) {
  const out = new Array(n);
  let next = 0;
  await Promise.all(Array.from({ length: width }, async () => {
    while (next < n) {
      const i = next++;
      try { out[i] = await f(i); } catch (e) { out[i] = e; }
    }
  }));
  return out;
}
async function chatRaw(model, stream = false) {
  const r = await fetch(`${GATEWAY}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
    body: JSON.stringify({ model, stream, messages: [{ role: 'user', content: 'hi' }] }),
  });
  return { status: r.status, service: r.headers.get('x-pg-inference-service'), text: await r.text() };
}

const openai = new OpenAI({ apiKey: KEY, baseURL: `${GATEWAY}/v1`, maxRetries: 0 });
const anthropic = new Anthropic({ apiKey: KEY, baseURL: GATEWAY, maxRetries: 0 });

// --- 1. A route over an Anthropic service answering 503 and an OpenAI service ----------------
await scenario('rtcl', 'unavailable');
for (let i = 0; i < 5; i++) await chatRaw('rt-mixed');
checkEq('mixed: after 3 failures in a row the breaker skips the failing service', 3,
        await chatTries('rtcl'));
const results = await pool(1000, 8, async (i) => {
  if (i % 2 === 0) {
    const r = await openai.chat.completions.create({
      model: 'rt-mixed', messages: [{ role: 'user', content: `hello ${i}` }] });
    return r.choices[0].message.content.includes(`hello ${i}`);
  }
  const r = await anthropic.messages.create({
    model: 'rt-mixed', max_tokens: 50, messages: [{ role: 'user', content: `hello ${i}` }] });
  return r.content[0].text.includes(`hello ${i}`);
});
const ok = results.filter((r) => r === true).length;
checkEq('mixed: 1,000 requests (openai and Anthropic SDKs alike) all succeed', 1000, ok);
const sqlOk = sql("SELECT count(*) FROM generate_series(1, 1000) g WHERE inference.chat('rt-mixed', 'hi ' || g) LIKE '%hi ' || g || '%'");
checkEq('mixed: 1,000 inference.chat calls through the route all succeed', '1000', sqlOk);
checkEq('mixed: the open breaker (shared by listeners and backends) sent no request to the failing service',
        3, await chatTries('rtcl'));
const viaRaw = await chatRaw('rt-mixed');
checkEq('mixed: the answer names the service that served it', 'rt-openai', viaRaw.service);

// --- 2. Half-open: exactly one probe after the cooldown ------------------------------------
await scenario('rtpa', 'unavailable');
for (let i = 0; i < 3; i++) await chatRaw('rt-probe');
checkEq('probe: three failures open the breaker', 3, await chatTries('rtpa'));
await sleep(2300);  // the route's cooldown is 2 s
const burst = await pool(20, 20, () => chatRaw('rt-probe'));
check('probe: 20 concurrent requests after the cooldown all succeed',
      burst.every((r) => r.status === 200), JSON.stringify(burst.map((r) => r.status)));
checkEq('probe: exactly one of them tried the failing service (half-open)', 4, await chatTries('rtpa'));
await pool(10, 5, () => chatRaw('rt-probe'));
checkEq('probe: the failed probe opened the breaker again', 4, await chatTries('rtpa'));
await scenario('rtpa', null);
await sleep(2300);
const healed = await chatRaw('rt-probe');
checkEq('probe: once the service works, the probe succeeds and it serves again', 'rt-pa', healed.service);
const after = await pool(10, 5, () => chatRaw('rt-probe'));
check('probe: the closed breaker lets every request to the first priority',
      after.every((r) => r.service === 'rt-pa'), JSON.stringify(after.map((r) => r.service)));

// --- 3. The health worker marking a service Failed opens its breaker ----------------------
await scenario('rthw', 'unavailable');
sql("ALTER SYSTEM SET inference.health_check_interval = '1s'");
sql('SELECT pg_reload_conf()');
let status = '';
for (let i = 0; i < 100 && status !== 'Failed'; i++) {
  await sleep(100);
  status = sql("SELECT status FROM inference.list_models() WHERE name = 'rt-hw'");
}
sql('ALTER SYSTEM RESET inference.health_check_interval');
sql('SELECT pg_reload_conf()');
checkEq('health: the health worker finds the service Failed', 'Failed', status);
const hw = await pool(20, 4, () => chatRaw('rt-health'));
check('health: requests through the route succeed', hw.every((r) => r.status === 200));
checkEq('health: the route sent no request to the service the health worker found Failed', 0,
        await chatTries('rthw'));
await scenario('rthw', null);

// --- 4. Streams ----------------------------------------------------------------------------
await scenario('rtsd', 'unavailable');
let text = '';
const stream = await openai.chat.completions.create({
  model: 'rt-stream', stream: true, messages: [{ role: 'user', content: 'stream me' }] });
for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
check('stream: a stream whose first target fails before sending anything falls back',
      text.includes('stream me'), text);
await scenario('rtmid', 'stream_error');
const mid = await chatRaw('rt-midway', true);
const events = mid.text.split('\n\n').filter((e) => e.startsWith('data: '));
check('stream: a stream that failed after its first byte ends with an error event',
      events.length > 0 && events.at(-1).includes('"error"') && !mid.text.includes('[DONE]'), mid.text);
checkEq('stream: and never gets a second answer from the next target', 0, await chatTries('rtoa2'));
await scenario('rtmid', null);

// --- 5. Weights 3:1 over 10,000 requests ---------------------------------------------------
const split = await pool(10000, 16, () => chatRaw('rt-weights'));
const first = split.filter((r) => r.service === 'rt-w1').length;
const second = split.filter((r) => r.service === 'rt-w2').length;
checkEq('weights: 10,000 requests all answered', 10000, first + second);
const share = (100 * first) / 10000;
check(`weights: the split is 75/25 within 3 points (${share.toFixed(1)}/${(100 - share).toFixed(1)})`,
      Math.abs(share - 75) <= 3);

// --- 6. The model header (inference.gateway_model_header, x-ai-eg-model) -------------------
async function lastRequest(label) {
  const all = await (await fetch(`${MOCK}/_mock/requests?label=${label}`)).json();
  return all[all.length - 1];
}
async function withHeader(path, model, body) {
  const r = await fetch(`${GATEWAY}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}`, 'x-ai-eg-model': model },
    body: JSON.stringify(body),
  });
  return { status: r.status, service: r.headers.get('x-pg-inference-service'), text: await r.text() };
}
await scenario('rtcl', null);
let h = await withHeader('/v1/chat/completions', 'rt-claude',
  { model: 'gw-openai', messages: [{ role: 'user', content: 'by header' }] });
checkEq('header: chat goes to the service the header names', [200, 'rt-claude'], [h.status, h.service]);
checkEq('header: the body\'s model is rewritten to the service\'s', 'claude-sonnet-4-5',
        (await lastRequest('rtcl'))?.json?.model);
h = await withHeader('/v1/embeddings', 'gw-embed', { model: 'gw-openai', input: 'by header' });
checkEq('header: embeddings go to the service the header names', [200, 'gw-embed'], [h.status, h.service]);
h = await withHeader('/inferenceservices/gw-openai/v1/chat/completions', 'rt-openai2',
  { model: 'not-a-model', messages: [{ role: 'user', content: 'by header' }] });
const passed = await lastRequest('rtoa2');
checkEq('header: pass-through goes to the service the header names, its model rewritten',
        [200, 'gpt-4o-mini'], [h.status, passed?.json?.model]);
check('header: the header itself is not forwarded', passed && !('x-ai-eg-model' in passed.headers));

finish();
