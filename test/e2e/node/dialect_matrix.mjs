// Every caller dialect (OpenAI chat, Anthropic Messages, OpenAI Responses, legacy completions,
// Gemini) against a service of every protocol (OpenAI, Anthropic, Gemini), streamed and not:
// the ledger's tokens equal what the mock counted, exactly (the model listing that waits for a
// new key is a request of no service, left out), cached prompt tokens included, and its cost is
// those tokens times the services' prices, exactly; x-ratelimit-* headers count down as
// for chat completions; an over-limit key gets 429 in the dialect's own error shape. Driven by
// test/e2e/46_dialect_matrix.sh. One PASS/FAIL line per check.

import { check, checkEq, finish, sleep, sql, words } from './common.mjs';

const GATEWAY = process.env.GATEWAY_URL;


// Each dialect: how its client sends a key and a prompt, and how its error body names a 429.
const dialects = {
  chat: {
    send: (key, model, prompt, stream) => ['/v1/chat/completions', { authorization: `Bearer ${key}` },
      { model, messages: [{ role: 'user', content: prompt }], stream }],
    limited: (b) => b?.error?.type === 'rate_limit_exceeded' || b?.error?.code === 'rate_limit_exceeded',
  },
  messages: {
    send: (key, model, prompt, stream) => ['/v1/messages', { 'x-api-key': key, 'anthropic-version': '2023-06-01' },
      { model, max_tokens: 200, messages: [{ role: 'user', content: prompt }], stream }],
    limited: (b) => b?.type === 'error' && b?.error?.type === 'rate_limit_error',
  },
  responses: {
    send: (key, model, prompt, stream) => ['/v1/responses', { authorization: `Bearer ${key}` },
      { model, input: prompt, stream }],
    limited: (b) => b?.error?.type === 'rate_limit_exceeded' || b?.error?.code === 'rate_limit_exceeded',
  },
  completions: {
    send: (key, model, prompt, stream) => ['/v1/completions', { authorization: `Bearer ${key}` },
      { model, prompt, max_tokens: 200, stream }],
    limited: (b) => b?.error?.type === 'rate_limit_exceeded' || b?.error?.code === 'rate_limit_exceeded',
  },
  gemini: {
    send: (key, model, prompt, stream) => [
      `/v1beta/models/${model}:${stream ? 'streamGenerateContent?alt=sse' : 'generateContent'}`,
      { 'x-goog-api-key': key }, { contents: [{ role: 'user', parts: [{ text: prompt }] }] }],
    limited: (b) => b?.error?.code === 429 && b?.error?.status === 'RESOURCE_EXHAUSTED',
  },
};
const services = ['gw-openai', 'gw-claude', 'gw-gemini'];
// Prices per million tokens, in cents so that the expected cost is an exact integer of
// 1e-8 dollars: input, output, cached input (null: the input price).
const prices = {
  'gw-openai': [250, 1000, 125],
  'gw-claude': [300, 1500, 30],
  'gw-gemini': [30, 250, null],
};
const dollars = (cents) => (cents === null ? 'NULL' : (cents / 100).toFixed(2));

async function send(dialect, key, model, prompt, stream) {
  const [path, headers, body] = dialects[dialect].send(key, model, prompt, stream);
  const r = await fetch(`${GATEWAY}${path}`, {
    method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body),
  });
  const text = await r.text();
  let parsed = null;
  try { parsed = JSON.parse(text); } catch { /* a stream */ }
  return { status: r.status, headers: r.headers, text, json: parsed };
}

function newKey(name, options) {
  sql(`DELETE FROM inference.access_key_store WHERE name = '${name}'`);
  sql(`DELETE FROM inference.usage_ledger WHERE key_name = '${name}'`);
  return sql(`SELECT inference.create_access_key('${name}'${options})`);
}
async function waitForKey(key) {
  for (let i = 0; i < 100; i++) {
    const r = await fetch(`${GATEWAY}/v1/models`, { headers: { authorization: `Bearer ${key}` } });
    if (r.status === 200) return true;
    await sleep(100);
  }
  return false;
}

// Prices first: the keys created next reach the listeners in the same catalog reload.
for (const [service, [input, output, cached]] of Object.entries(prices)) {
  sql(`SELECT inference.set_price('${service}', ${dollars(input)}, ${dollars(output)}, ${dollars(cached)})`);
}

// pg_inference_gateway_cost_total of a service (0 before its first priced request).
// Tried up to 3 times: a kept-alive connection the gateway closed after its client timeout
// (2 s in the suite) fails the request that reuses it.
async function costMetric(service) {
  let text = '';
  for (let i = 0; ; i++) {
    try { text = await (await fetch(`${GATEWAY}/metrics`)).text(); break; } catch (e) { if (i === 2) throw e; }
  }
  const line = text.split('\n').find((l) => l.startsWith(`pg_inference_gateway_cost_total{service="${service}",currency="USD"} `));
  return line ? Number(line.split(' ').pop()) : 0;
}

const keys = {};
for (const d of Object.keys(dialects)) {
  keys[d] = newKey(`mx-${d}`, ', requests_per_minute => 100, tokens_per_hour => 1000000');
  keys[`${d}-limited`] = newKey(`mx-${d}-limited`, ', requests_per_minute => 1, burst => 1');
}
for (const key of Object.values(keys)) check('a matrix key reaches the gateway', await waitForKey(key));

const gemini0 = await costMetric('gw-gemini');
const expected = {};  // dialect -> service -> {requests, prompt_tokens, completion_tokens, total_tokens}
const expectedCost = {};  // dialect -> service -> [cached tokens, cost in 1e-8 dollars]
for (const [d] of Object.entries(dialects)) {
  let remaining = 100;
  expected[d] = {};
  expectedCost[d] = {};
  for (const service of services) {
    const e = expected[d][service] = { requests: 0, prompt_tokens: 0, completion_tokens: 0, total_tokens: 0 };
    const cost = expectedCost[d][service] = [0, 0n];
    for (const stream of [false, true]) {
      // "cached": the mock reports half the prompt as read from its cache.
      const prompt = `count the ${d} words for ${service}${stream ? ' as a stream' : ''} from the cached prompt`;
      const r = await send(d, keys[d], service, prompt, stream);
      checkEq(`${d} -> ${service}${stream ? ' (stream)' : ''}: 200`, 200, r.status);
      check(`${d} -> ${service}${stream ? ' (stream)' : ''}: the answer echoes the prompt`,
            r.text.includes('echo') && r.text.includes('count'), r.text.slice(0, 300));
      remaining -= 1;
      checkEq(`${d} -> ${service}${stream ? ' (stream)' : ''}: x-ratelimit-*-requests`,
              ['100', String(remaining)],
              [r.headers.get('x-ratelimit-limit-requests'), r.headers.get('x-ratelimit-remaining-requests')]);
      check(`${d} -> ${service}${stream ? ' (stream)' : ''}: x-ratelimit-limit-tokens`,
            r.headers.get('x-ratelimit-limit-tokens') === '1000000');
      const p = words(prompt), c = words(`echo: ${prompt}`);
      e.requests += 1;
      e.prompt_tokens += p;
      e.completion_tokens += c;
      e.total_tokens += p + c;
      const h = Math.floor(p / 2);
      const [input, output, cachedInput] = prices[service];
      cost[0] += h;
      cost[1] += BigInt((p - h) * input + h * (cachedInput ?? input) + c * output);
    }
  }
  // Over the limit: 429, in the dialect's own shape, with the headers.
  const first = await send(d, keys[`${d}-limited`], 'gw-openai', 'once', false);
  const second = await send(d, keys[`${d}-limited`], 'gw-openai', 'twice', false);
  checkEq(`${d}: the limited key's first request passes`, 200, first.status);
  checkEq(`${d}: the next one is 429`, 429, second.status);
  check(`${d}: the 429 is in the dialect's error shape`, dialects[d].limited(second.json), second.text);
  checkEq(`${d}: the 429's x-ratelimit headers`, ['1', '0'],
          [second.headers.get('x-ratelimit-limit-requests'), second.headers.get('x-ratelimit-remaining-requests')]);
  check(`${d}: the 429 says when to retry`, Number(second.headers.get('retry-after')) > 0);
}

// The ledger (flushed every few seconds) holds exactly what the mock counted.
for (const d of Object.keys(dialects)) {
  const query = `SELECT coalesce(json_object_agg(service, json_build_object('requests', requests,
      'prompt_tokens', prompt_tokens, 'completion_tokens', completion_tokens, 'total_tokens', total_tokens)
      ORDER BY service), '{}') FROM inference.usage WHERE key_name = 'mx-${d}' AND service <> ''`;
  const want = Object.fromEntries(Object.entries(expected[d]).sort(([a], [b]) => (a < b ? -1 : 1)));
  let got = null;
  for (let i = 0; i < 150; i++) {
    got = JSON.parse(sql(query));
    if (JSON.stringify(got) === JSON.stringify(want)) break;
    await sleep(100);
  }
  checkEq(`${d}: the ledger's tokens for every protocol equal the mock's count`, want, got);
  // Cost, in 1e-8 dollars: (prompt - cached) x input + cached x cached input + completion x
  // output, per million tokens.
  const costs = sql(`SELECT coalesce(json_object_agg(service, json_build_array(cached_tokens,
      trim_scale(cost * 100000000)::text, currency) ORDER BY service), '{}')
      FROM inference.usage WHERE key_name = 'mx-${d}' AND service <> ''`);
  const wantCost = Object.fromEntries(Object.entries(expectedCost[d]).sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([service, [h, c]]) => [service, [h, c.toString(), 'USD']]));
  checkEq(`${d}: the ledger's cached tokens and cost for every protocol are exact`, wantCost, JSON.parse(costs));
}
// /metrics shows the same cost, as a float (only this script's keys used gw-gemini meanwhile).
const geminiCost = Object.values(expectedCost).reduce((n, byService) => n + Number(byService['gw-gemini'][1]), 0) / 1e8;
const geminiMetric = (await costMetric('gw-gemini')) - gemini0;
check(`pg_inference_gateway_cost_total of gw-gemini grew by the ledger's cost (${geminiMetric} for ${geminiCost})`,
      Math.abs(geminiMetric - geminiCost) <= 1e-9 * Math.max(1, geminiCost));
finish();
