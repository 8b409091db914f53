// The official Google Gen AI SDK (@google/genai) against the pg_inference gateway's Gemini
// dialect (models/{model}:generateContent and :streamGenerateContent, GET models): Gemini services
// get the caller's bytes, OpenAI and Anthropic services are translated; answers, streams, usage
// and errors come back in Google's shapes. Values are checked against what the mock upstream
// answers. One PASS/FAIL line per check.
import { GoogleGenAI } from '@google/genai';

import { check, checkEq, finish, words } from './common.mjs';

const GATEWAY = process.env.GATEWAY_URL;  // http://127.0.0.1:PORT
const KEY = process.env.GATEWAY_KEY;
const MOCK = process.env.MOCK_URL;

async function lastRequest(label) {
  const all = await (await fetch(`${MOCK}/_mock/requests?label=${label}`)).json();
  return all[all.length - 1];
}

// The SDK sends the key as x-goog-api-key and adds /v1beta itself.
const client = new GoogleGenAI({ apiKey: KEY, httpOptions: { baseUrl: GATEWAY } });

// --- models --------------------------------------------------------------------------------
const listed = [];
for await (const m of await client.models.list()) listed.push(m);
const names = listed.map((m) => m.name);
check('models.list returns the registered services as models/<service>',
      ['models/gw-claude', 'models/gw-gemini', 'models/gw-openai'].every((n) => names.includes(n)),
      `got ${names}`);
const one = await client.models.get({ model: 'gw-openai' });
checkEq('models.get names the service', 'models/gw-openai', one.name);

// --- generateContent, for each protocol ----------------------------------------------------
const services = [
  ['gw-gemini', 'gwgem', '/v1beta/models/gemini-2.0-flash:generateContent',
   '/v1beta/models/gemini-2.0-flash:streamGenerateContent'],
  ['gw-openai', 'gwoa', '/v1/chat/completions', '/v1/chat/completions'],
  ['gw-claude', 'gwcl', '/v1/messages', '/v1/messages'],
];
for (const [service, label, path, streamPath] of services) {
  const prompt = `hello from the genai sdk to ${service}`;
  const reply = `echo: ${prompt}`;
  const r = await client.models.generateContent({
    model: service, contents: prompt,
    config: { systemInstruction: 'be brief', maxOutputTokens: 50 },
  });
  checkEq(`${service}: answer text`, reply, r.text);
  checkEq(`${service}: finishReason`, 'STOP', r.candidates?.[0]?.finishReason);
  checkEq(`${service}: output tokens as the mock counted them`, words(reply),
          r.usageMetadata?.candidatesTokenCount);
  const seen = await lastRequest(label);
  checkEq(`${service}: upstream got its own protocol`, path, seen.route_path);
  check(`${service}: upstream never got the caller's key`,
        !JSON.stringify(seen.headers).includes(KEY) && !seen.body.includes(KEY));

  // Streamed: the SDK reads alt=sse events, each a whole GenerateContentResponse.
  let text = '';
  let last = null;
  for await (const chunk of await client.models.generateContentStream({
    model: service, contents: prompt, config: { maxOutputTokens: 50 },
  })) {
    text += chunk.text ?? '';
    last = chunk;
  }
  checkEq(`${service}: streamed text`, reply, text);
  checkEq(`${service}: streamed finishReason`, 'STOP', last?.candidates?.[0]?.finishReason);
  checkEq(`${service}: streamed output tokens`, words(reply),
          last?.usageMetadata?.candidatesTokenCount);
  const streamed = await lastRequest(label);
  checkEq(`${service}: the stream's upstream route`, streamPath, streamed.route_path);

  // countTokens: the service counts, or for an OpenAI service the gateway estimates (3 + 4 per
  // message + one per 4 characters of text; docs/dialects.md).
  const counted = await client.models.countTokens({ model: service, contents: prompt });
  checkEq(`${service}: countTokens`,
          service === 'gw-openai' ? 3 + 4 + Math.ceil(prompt.length / 4) : words(prompt),
          counted.totalTokens);
  if (service !== 'gw-openai') {
    const seen = await lastRequest(label);
    check(`${service}: countTokens reached the service's counting route`,
          /count_tokens|:countTokens/.test(seen.route_path), seen.route_path);
  }
}

// --- embedContent: several inputs go to :batchEmbedContents ----------------------------------
for (const [service, label, path] of [
  ['gw-gembed', 'gwgemb', '/v1beta/models/text-embedding-004:batchEmbedContents'],
  ['gw-embed', 'gwemb', '/v1/embeddings'],
]) {
  const inputs = ['the first text', 'the second text'];
  const expected = await Promise.all(inputs.map(async (t) =>
    (await (await fetch(`${MOCK}/_mock/embedding?dims=8&text=${encodeURIComponent(t)}`)).json()).embedding));
  const many = await client.models.embedContent({ model: service, contents: inputs });
  checkEq(`${service}: embedContent with several inputs equals the mock's vectors`,
          expected.map((v) => v.map(Math.fround)),
          (many.embeddings ?? []).map((e) => e.values.map(Math.fround)));
  checkEq(`${service}: the upstream route`, path, (await lastRequest(label)).route_path);
  const single = await client.models.embedContent({ model: service, contents: 'the first text' });
  checkEq(`${service}: embedContent with one input`, [expected[0].map(Math.fround)],
          (single.embeddings ?? []).map((e) => e.values.map(Math.fround)));
}

// --- Gemini-only fields reach a Gemini service unchanged -------------------------------------
await client.models.generateContent({
  model: 'gw-gemini', contents: 'safety please',
  config: { safetySettings: [{ category: 'HARM_CATEGORY_HARASSMENT', threshold: 'BLOCK_NONE' }] },
});
const sent = JSON.parse((await lastRequest('gwgem')).body);
checkEq('safetySettings reach a Gemini service as sent',
        [{ category: 'HARM_CATEGORY_HARASSMENT', threshold: 'BLOCK_NONE' }], sent.safetySettings);

// --- errors in Google's shape ----------------------------------------------------------------
async function expectError(name, status, call) {
  try {
    await call();
    check(name, false, 'no error');
  } catch (e) {
    let body = null;
    try { body = JSON.parse(e.message.slice(e.message.indexOf('{'))); } catch { /* not JSON */ }
    checkEq(name, [status, status, true], [e.status, body?.error?.code,
                                           typeof body?.error?.status === 'string']);
  }
}
await expectError('an unknown model is 404 in Google\'s error shape', 404,
  () => client.models.generateContent({ model: 'no-such-service', contents: 'hi' }));
const stranger = new GoogleGenAI({ apiKey: 'not-a-key', httpOptions: { baseUrl: GATEWAY } });
await expectError('a bad key is 401 in Google\'s error shape', 401,
  () => stranger.models.generateContent({ model: 'gw-gemini', contents: 'hi' }));

// The ?key= form of Google's REST examples.
const byQuery = await fetch(`${GATEWAY}/v1beta/models/gw-openai:generateContent?key=${KEY}`, {
  method: 'POST', headers: { 'Content-Type': 'application/json' },
  body: JSON.stringify({ contents: [{ role: 'user', parts: [{ text: 'by query key' }] }] }),
});
checkEq('a key in ?key= is accepted', 200, byQuery.status);

finish();
