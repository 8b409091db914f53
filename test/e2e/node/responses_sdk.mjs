// The official openai SDK's Responses API against the pg_inference gateway, for a service of
// each protocol: plain, with instructions, a function tool round trip, a JSON schema answer
// format and streamed; a request that continues a stored response, which goes to an
// OpenAI-protocol upstream's own /v1/responses; and legacy completions, streamed and not. Values are checked against what the mock
// upstream answers. Prints one PASS/FAIL line per check.
import OpenAI from 'openai';

import { check, checkEq, finish, words } from './common.mjs';

const GATEWAY = process.env.GATEWAY_URL;
const KEY = process.env.GATEWAY_KEY;
const MOCK = process.env.MOCK_URL;

async function lastRequest(label) {
  const all = await (await fetch(`${MOCK}/_mock/requests?label=${label}`)).json();
  return all[all.length - 1];
}

const client = new OpenAI({ apiKey: KEY, baseURL: `${GATEWAY}/v1`, maxRetries: 0 });
const weather = {
  type: 'function', name: 'get_weather', description: 'Weather of a city',
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

const services = [
  ['gw-openai', 'gwoa', '/v1/chat/completions'],
  ['gw-claude', 'gwcl', '/v1/messages'],
  ['gw-gemini', 'gwgem', '/v1beta/models/gemini-2.0-flash:generateContent'],
];
for (const [service, label, path] of services) {
  // Plain, with instructions.
  const prompt = `hello from the responses api to ${service}`;
  const r = await client.responses.create({ model: service, instructions: 'be brief', input: prompt });
  const reply = `echo: ${prompt}`;
  checkEq(`${service}: responses.create output_text`, reply, r.output_text);
  checkEq(`${service}: a response object, completed`, ['response', 'completed'], [r.object, r.status]);
  checkEq(`${service}: responses usage as the mock counted it`,
          { input_tokens: words('be brief') + words(prompt), output_tokens: words(reply),
            total_tokens: words('be brief') + words(prompt) + words(reply) },
          { input_tokens: r.usage.input_tokens, output_tokens: r.usage.output_tokens,
            total_tokens: r.usage.total_tokens });
  const seen = await lastRequest(label);
  checkEq(`${service}: the upstream got its own protocol`, path, seen.route_path);
  check(`${service}: instructions reached the upstream as its system text`,
        seen.body.includes('be brief'));

  // A function tool: the call, then its output, then the answer.
  const ask = [{ role: 'user', content: 'what is the weather in Paris?' }];
  const first = await client.responses.create({ model: service, input: ask, tools: [weather] });
  const call = first.output.find((o) => o.type === 'function_call');
  check(`${service}: a function_call item`, call && call.name === 'get_weather',
        JSON.stringify(first.output));
  checkEq(`${service}: its arguments`, { city: 'Paris' }, call && JSON.parse(call.arguments));
  const second = await client.responses.create({
    model: service, tools: [weather],
    input: [...ask, call, { type: 'function_call_output', call_id: call?.call_id, output: '18 C, sunny' }],
  });
  // The mock echoes the tool's output (Gemini gets it as a functionResponse object).
  check(`${service}: the answer after function_call_output`,
        second.output_text.startsWith('echo: ') && second.output_text.includes('18 C, sunny'),
        second.output_text);

  // A JSON schema answer format reaches the upstream in its own words.
  await client.responses.create({
    model: service, input: 'give me json',
    text: { format: { type: 'json_schema', name: 'answer', strict: true,
      schema: { type: 'object', properties: { a: { type: 'string' } }, required: ['a'],
        additionalProperties: false } } },
  });
  const fmt = (await lastRequest(label)).json;
  const schemaSent = fmt.response_format?.json_schema?.schema ?? fmt.output_config?.format?.schema ??
    fmt.generationConfig?.responseJsonSchema ?? fmt.generationConfig?.responseSchema;
  check(`${service}: text.format's schema reached the upstream`,
        schemaSent && JSON.stringify(schemaSent).includes('"a"'), JSON.stringify(fmt));

  // Streamed: the SDK's own events, and usage in response.completed.
  const stream = client.responses.stream({ model: service, input: prompt });
  let deltas = 0, text = '';
  stream.on('response.output_text.delta', (e) => { deltas++; text += e.delta; });
  const final = await stream.finalResponse();
  checkEq(`${service}: streamed text`, reply, text);
  check(`${service}: streamed in several deltas (${deltas})`, deltas > 3);
  checkEq(`${service}: response.completed carries the usage`,
          { input_tokens: words(prompt), output_tokens: words(reply) },
          { input_tokens: final.usage?.input_tokens, output_tokens: final.usage?.output_tokens });
  checkEq(`${service}: the final response's text`, reply, final.output_text);

  // create({stream: true}): the raw events in order.
  const raw = await client.responses.create({ model: service, input: prompt, stream: true });
  const types = [];
  let sequence = -1, ordered = true;
  for await (const e of raw) {
    types.push(e.type);
    if (e.sequence_number !== sequence + 1) ordered = false;
    sequence = e.sequence_number;
  }
  checkEq(`${service}: the stream's first and last events`,
          ['response.created', 'response.in_progress', 'response.completed'],
          [types[0], types[1], types[types.length - 1]]);
  check(`${service}: sequence numbers count up from 0`, ordered);
}

// Continuing a stored response: the gateway keeps none, an OpenAI upstream that serves
// /v1/responses does. The mock stores the responses it made.
const stored = await (await fetch(`${MOCK}/v1/responses`, {
  method: 'POST', headers: { authorization: 'Bearer sk-test-direct', 'content-type': 'application/json' },
  body: JSON.stringify({ model: 'gpt-4o-mini', input: 'remember this' }),
})).json();
const next = await client.responses.create({
  model: 'gw-openai', previous_response_id: stored.id, input: 'and then?',
});
checkEq('previous_response_id: answered by the upstream', 'echo: and then?', next.output_text);
const passed = await lastRequest('gwoa');
checkEq('previous_response_id: passed to the upstream\'s /v1/responses', '/v1/responses', passed.route_path);
checkEq('previous_response_id: with the service\'s model', 'gpt-4o-mini', passed.json.model);
try {
  await client.responses.create({ model: 'gw-claude', previous_response_id: stored.id, input: 'x' });
  check('previous_response_id to another protocol is 400', false, 'no error');
} catch (e) {
  check('previous_response_id to another protocol is 400', e.status === 400 &&
        /previous_response_id/.test(e.message), `${e.status} ${e.message}`);
}
try {
  await client.responses.create({ model: 'gw-claude', input: 'x', tools: [{ type: 'web_search' }] });
  check('a built-in tool crossing protocols is refused', false, 'no error');
} catch (e) {
  check('a built-in tool crossing protocols is refused', e.status === 400 && /web_search/.test(e.message),
        `${e.status} ${e.message}`);
}
// --- legacy completions ----------------------------------------------------------------------
for (const [service, label, path] of [...services.slice(0, 1).map(([s, l]) => [s, l, '/v1/completions']),
  ...services.slice(1)]) {
  const prompt = `once upon a time at ${service}`;
  const reply = `echo: ${prompt}`;
  const c = await client.completions.create({ model: service, prompt, max_tokens: 50 });
  checkEq(`${service}: completions.create text`, reply, c.choices[0].text);
  checkEq(`${service}: a text_completion, finished`, ['text_completion', 'stop'], [c.object, c.choices[0].finish_reason]);
  checkEq(`${service}: completions usage as the mock counted it`,
          { prompt_tokens: words(prompt), completion_tokens: words(reply) },
          { prompt_tokens: c.usage.prompt_tokens, completion_tokens: c.usage.completion_tokens });
  checkEq(`${service}: completions reached the upstream's route`, path, (await lastRequest(label)).route_path);
  const s = await client.completions.create({ model: service, prompt, stream: true,
    stream_options: { include_usage: true } });
  let text = '', finishReason = null, usage = null, chunks = 0;
  for await (const chunk of s) {
    chunks++;
    if (chunk.usage) usage = chunk.usage;
    for (const ch of chunk.choices ?? []) {
      text += ch.text ?? '';
      if (ch.finish_reason) finishReason = ch.finish_reason;
    }
  }
  checkEq(`${service}: streamed completion`, [reply, 'stop'], [text, finishReason]);
  check(`${service}: streamed in several chunks (${chunks})`, chunks > 3);
  checkEq(`${service}: streamed completion usage`, { prompt_tokens: words(prompt), completion_tokens: words(reply) },
          usage && { prompt_tokens: usage.prompt_tokens, completion_tokens: usage.completion_tokens });
}
try {
  await client.completions.create({ model: 'gw-claude', prompt: ['one', 'two'] });
  check('several prompts crossing protocols are refused', false, 'no error');
} catch (e) {
  check('several prompts crossing protocols are refused', e.status === 400 && /several prompts/.test(e.message),
        `${e.status} ${e.message}`);
}
finish();
