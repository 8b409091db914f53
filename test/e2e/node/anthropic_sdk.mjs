// The official Anthropic SDK against the pg_inference gateway's Anthropic dialect
// (POST /v1/messages, GET /v1/models): Anthropic services get the caller's bytes, OpenAI and
// Gemini services are translated; answers, streams, usage and errors come back in Anthropic's
// shapes. Values are checked against what the mock upstream answers. One PASS/FAIL line per check.
import Anthropic from '@anthropic-ai/sdk';

import { check, checkEq, finish, words } from './common.mjs';

const GATEWAY = process.env.GATEWAY_URL;  // http://127.0.0.1:PORT
const KEY = process.env.GATEWAY_KEY;
const MOCK = process.env.MOCK_URL;

async function lastRequest(label) {
  const all = await (await fetch(`${MOCK}/_mock/requests?label=${label}`)).json();
  return all[all.length - 1];
}

// The SDK adds /v1 itself.
const client = new Anthropic({ apiKey: KEY, baseURL: GATEWAY, maxRetries: 0 });

// --- models --------------------------------------------------------------------------------
const models = [];
for await (const m of client.models.list()) models.push(m);
const ids = models.map((m) => m.id);
check('models.list returns the registered services',
      ['gw-claude', 'gw-gemini', 'gw-openai'].every((id) => ids.includes(id)), `got ${ids}`);
check('models are Anthropic model objects', models.every((m) => m.type === 'model' && m.display_name));

// --- messages, for each protocol -----------------------------------------------------------
const services = [
  ['gw-claude', 'gwcl', '/v1/messages'],
  ['gw-openai', 'gwoa', '/v1/chat/completions'],
  ['gw-gemini', 'gwgem', '/v1beta/models/gemini-2.0-flash:generateContent'],
];
for (const [service, label, path] of services) {
  const prompt = `hello from the anthropic sdk to ${service}`;
  const reply = `echo: ${prompt}`;
  const r = await client.messages.create({
    model: service, max_tokens: 50, system: 'be brief',
    messages: [{ role: 'user', content: prompt }],
  });
  checkEq(`${service}: message content`, [{ type: 'text', text: reply }],
          r.content.map((b) => ({ type: b.type, text: b.text })));
  checkEq(`${service}: stop_reason`, 'end_turn', r.stop_reason);
  checkEq(`${service}: output tokens as the mock counted them`, words(reply), r.usage.output_tokens);
  const seen = await lastRequest(label);
  checkEq(`${service}: upstream got its own protocol`, path, seen.route_path);
  check(`${service}: upstream never got the caller's key`,
        !JSON.stringify(seen.headers).includes(KEY) && !seen.body.includes(KEY));

  // Streamed: the SDK's own event reader assembles the message.
  const stream = client.messages.stream({
    model: service, max_tokens: 50, messages: [{ role: 'user', content: prompt }],
  });
  let text = '';
  stream.on('text', (t) => { text += t; });
  const final = await stream.finalMessage();
  checkEq(`${service}: streamed text`, reply, text);
  checkEq(`${service}: streamed stop_reason`, 'end_turn', final.stop_reason);
  checkEq(`${service}: streamed output tokens`, words(reply), final.usage.output_tokens);

  // A tool_use, then its tool_result, then the answer.
  const tools = [{ name: 'get_weather', description: 'Weather of a city',
    input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } }];
  const ask = [{ role: 'user', content: 'what is the weather in Paris?' }];
  const first = await client.messages.create({ model: service, max_tokens: 50, tools, messages: ask });
  const use = first.content.find((b) => b.type === 'tool_use');
  checkEq(`${service}: a tool_use block`, ['get_weather', { city: 'Paris' }, 'tool_use'],
          [use?.name, use?.input, first.stop_reason]);
  const second = await client.messages.create({
    model: service, max_tokens: 50, tools,
    messages: [...ask, { role: 'assistant', content: first.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: use?.id, content: '18 C, sunny' }] }],
  });
  const answer = second.content.filter((b) => b.type === 'text').map((b) => b.text).join('');
  check(`${service}: the answer after the tool_result`,
        answer.startsWith('echo: ') && answer.includes('18 C, sunny'), answer);

  // countTokens: the service counts, or (OpenAI has no counting route) the gateway estimates:
  // 3 + 4 per message + one per 4 characters of text (docs/dialects.md).
  const counted = await client.messages.countTokens({
    model: service, system: 'be brief', messages: [{ role: 'user', content: prompt }],
  });
  const expected = service === 'gw-openai'
    ? 3 + 4 + Math.ceil(('be brief' + prompt).length / 4)
    : words('be brief') + words(prompt);
  checkEq(`${service}: countTokens`, expected, counted.input_tokens);
  if (service !== 'gw-openai') {
    const seen = await lastRequest(label);
    check(`${service}: countTokens reached the service's counting route`,
          /count_tokens|:countTokens/.test(seen.route_path), seen.route_path);
  }
}

// --- Anthropic-only fields reach an Anthropic service unchanged ------------------------------
const thinking = { type: 'enabled', budget_tokens: 1024 };
const cached = [{ type: 'text', text: 'a long shared prefix', cache_control: { type: 'ephemeral' } }];
await client.messages.create({ model: 'gw-claude', max_tokens: 2048, thinking,
  messages: [{ role: 'user', content: cached }] });
const passedBody = (await lastRequest('gwcl')).json;
checkEq('thinking reaches an Anthropic service as sent', thinking, passedBody.thinking);
checkEq('cache_control reaches an Anthropic service as sent', cached, passedBody.messages[0].content);

// --- errors in Anthropic's shape -----------------------------------------------------------
async function expectError(name, status, type, call) {
  try {
    await call();
    check(name, false, 'no error');
  } catch (e) {
    checkEq(name, [status, type], [e.status, e.error?.error?.type]);
  }
}
await expectError('an unknown model is 404 not_found_error', 404, 'not_found_error',
  () => client.messages.create({ model: 'no-such-service', max_tokens: 5,
                                 messages: [{ role: 'user', content: 'hi' }] }));
const stranger = new Anthropic({ apiKey: 'not-a-key', baseURL: GATEWAY, maxRetries: 0 });
await expectError('a bad key is 401 authentication_error', 401, 'authentication_error',
  () => stranger.messages.create({ model: 'gw-claude', max_tokens: 5,
                                   messages: [{ role: 'user', content: 'hi' }] }));

const limited = new Anthropic({ apiKey: process.env.LIMITED_KEY, baseURL: GATEWAY, maxRetries: 0 });
await limited.messages.create({ model: 'gw-claude', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] });
try {
  await limited.messages.create({ model: 'gw-claude', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] });
  check('an over-limit key gets the SDK\'s RateLimitError', false, 'no error');
} catch (e) {
  check('an over-limit key gets the SDK\'s RateLimitError',
        e instanceof Anthropic.RateLimitError && e.error?.error?.type === 'rate_limit_error',
        `${e.constructor.name} ${e.status} ${JSON.stringify(e.error)}`);
}

finish();
