// The official openai SDK against the pg_inference gateway: models, chat (plain and streamed)
// against OpenAI-, Anthropic- and Gemini-protocol services, and embeddings (the SDK's default
// base64 and float). Values are checked against what the mock upstream answers. Prints one
// PASS/FAIL line per check, like test/lib/check.sh.
import OpenAI from 'openai';

import { check, checkEq, finish, words } from './common.mjs';

const GATEWAY = process.env.GATEWAY_URL;  // http://127.0.0.1:PORT
const KEY = process.env.GATEWAY_KEY;
const MOCK = process.env.MOCK_URL;

async function mock(path) {
  return (await fetch(`${MOCK}${path}`)).json();
}
async function lastRequest(label) {
  const all = await mock(`/_mock/requests?label=${label}`);
  return all[all.length - 1];
}

const client = new OpenAI({ apiKey: KEY, baseURL: `${GATEWAY}/v1`, maxRetries: 0 });

// --- models -------------------------------------------------------------------------------
const models = [];
for await (const m of client.models.list()) models.push(m);
const ids = models.map((m) => m.id).sort();
check('models.list returns the registered services',
      ['gw-claude', 'gw-embed', 'gw-floats', 'gw-gembed', 'gw-gemini', 'gw-openai']
        .every((id) => ids.includes(id)), `got ${ids}`);
check('models are OpenAI model objects', models.every((m) => m.object === 'model'));
const one = await client.models.retrieve('gw-claude');
checkEq('models.retrieve', { id: 'gw-claude', object: 'model' }, { id: one.id, object: one.object });
try {
  await client.models.retrieve('no-such-service');
  check('models.retrieve of an unknown id is 404', false, 'no error');
} catch (e) {
  checkEq('models.retrieve of an unknown id is 404', [404, 'model_not_found'], [e.status, e.code]);
}

// --- chat, for each protocol ---------------------------------------------------------------
const services = [
  ['gw-openai', 'gwoa', '/v1/chat/completions', 'authorization', 'Bearer sk-test-gw-openai'],
  ['gw-claude', 'gwcl', '/v1/messages', 'x-api-key', 'sk-test-gw-anthropic'],
  ['gw-gemini', 'gwgem', '/v1beta/models/gemini-2.0-flash:generateContent', 'x-goog-api-key', 'sk-test-gw-gemini'],
];
for (const [service, label, path, header, upstreamKey] of services) {
  const prompt = `hello from the sdk to ${service}`;
  const r = await client.chat.completions.create({
    model: service,
    messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: prompt }],
    max_tokens: 50,
  });
  const reply = `echo: ${prompt}`;
  checkEq(`${service}: chat content`, reply, r.choices[0].message.content);
  checkEq(`${service}: finish_reason`, 'stop', r.choices[0].finish_reason);
  checkEq(`${service}: usage as the mock counted it`,
          { prompt_tokens: words('be brief') + words(prompt), completion_tokens: words(reply),
            total_tokens: words('be brief') + words(prompt) + words(reply) },
          { prompt_tokens: r.usage.prompt_tokens, completion_tokens: r.usage.completion_tokens,
            total_tokens: r.usage.total_tokens });
  const seen = await lastRequest(label);
  checkEq(`${service}: upstream got its own protocol`, path, seen.route_path);
  checkEq(`${service}: upstream got the service key`, upstreamKey, seen.headers[header]);
  check(`${service}: upstream never got the caller's key`,
        !JSON.stringify(seen.headers).includes(KEY) && !seen.body.includes(KEY));
  check(`${service}: the caller never got the upstream key`, !JSON.stringify(r).includes(upstreamKey));

  // Streamed: SSE translated event by event.
  const stream = await client.chat.completions.create({
    model: service, stream: true, stream_options: { include_usage: true },
    messages: [{ role: 'user', content: prompt }],
  });
  let text = '', finish = null, usage = null, chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices ?? []) {
      if (c.delta?.content) text += c.delta.content;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  checkEq(`${service}: streamed content`, reply, text);
  check(`${service}: streamed in several chunks (${chunks})`, chunks > 3);
  checkEq(`${service}: stream finish_reason`, 'stop', finish);
  checkEq(`${service}: stream usage`, { prompt_tokens: words(prompt), completion_tokens: words(reply) },
          usage && { prompt_tokens: usage.prompt_tokens, completion_tokens: usage.completion_tokens });

  // Without include_usage, no usage chunk reaches the caller.
  const quiet = await client.chat.completions.create({
    model: service, stream: true, messages: [{ role: 'user', content: prompt }],
  });
  let usageChunks = 0;
  for await (const chunk of quiet) if (chunk.usage) usageChunks++;
  checkEq(`${service}: no usage chunk unless asked`, 0, usageChunks);
}

// --- embeddings ----------------------------------------------------------------------------
for (const [service, label] of [['gw-embed', 'gwemb'], ['gw-floats', 'floats_only'], ['gw-gembed', 'gwgemb']]) {
  const input = ['the first text', 'the second text'];
  const expected = await Promise.all(input.map(async (t) =>
    (await mock(`/_mock/embedding?dims=8&text=${encodeURIComponent(t)}`)).embedding));
  const asBase64 = await client.embeddings.create({ model: service, input });  // SDK default: base64
  checkEq(`${service}: embeddings (SDK default base64) equal the mock's`,
          expected.map((v) => v.map(Math.fround)), asBase64.data.map((d) => Array.from(d.embedding)));
  const asFloats = await client.embeddings.create({ model: service, input, encoding_format: 'float' });
  // As float32 values: the gateway writes floats in their shortest float32 form.
  checkEq(`${service}: embeddings (float) equal the mock's`, expected.map((v) => v.map(Math.fround)),
          asFloats.data.map((d) => d.embedding.map(Math.fround)));
  checkEq(`${service}: indexes in order`, [0, 1], asFloats.data.map((d) => d.index));
  const seen = await lastRequest(label);
  check(`${service}: upstream never got the caller's key`, !JSON.stringify(seen.headers).includes(KEY));
}

// --- errors --------------------------------------------------------------------------------
const stranger = new OpenAI({ apiKey: 'pgi_not_a_key', baseURL: `${GATEWAY}/v1`, maxRetries: 0 });
try {
  await stranger.chat.completions.create({ model: 'gw-openai', messages: [{ role: 'user', content: 'x' }] });
  check('an unknown key is refused with 401', false, 'no error');
} catch (e) {
  checkEq('an unknown key is refused with 401', 401, e.status);
}
try {
  await client.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }] });
  check('an unknown model is 404', false, 'no error');
} catch (e) {
  checkEq('an unknown model is 404', [404, 'model_not_found'], [e.status, e.code]);
}
finish();
