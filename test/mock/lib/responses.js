'use strict';
// OpenAI's Responses API (POST /v1/responses) as OpenAI serves it: the same deterministic answer
// as chat completions, in `response` objects and the named-event stream. Stored responses are
// remembered by id (the last 1000), so previous_response_id works as it does upstream.

const C = require('./common');
const E = require('./errors');

const SSE = 'text/event-stream; charset=utf-8';
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

const stored = new Map(); // id -> true, oldest first
let nextId = 1;

function badRequest(ctx, message, param = null, code = null) {
  E.openaiError(ctx, 400, message, 'invalid_request_error', code, param);
}

function partsText(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return C.joinTexts(content.map((p) => (isObject(p) && typeof p.text === 'string' ? p.text : null)));
  }
  return '';
}

// Every item's words (for the usage) and the prompt: the last user message or tool output.
function readInput(input) {
  if (typeof input === 'string') return { words: C.wordCount(input), text: input, fromTool: false };
  let words = 0;
  let prompt = { text: '', fromTool: false };
  for (const item of input) {
    if (!isObject(item)) continue;
    const type = item.type ?? 'message';
    if (type === 'message') {
      const text = partsText(item.content);
      words += C.wordCount(text);
      if (item.role === 'user') prompt = { text, fromTool: false };
    } else if (type === 'function_call_output') {
      const text = partsText(item.output);
      words += C.wordCount(text);
      prompt = { text, fromTool: true };
    }
  }
  return { words, ...prompt };
}

function responses(ctx) {
  const body = ctx.json;
  if (!isObject(body)) return badRequest(ctx, 'We could not parse the JSON body of your request.');
  if (typeof body.model !== 'string' || !C.findOpenAIModel(body.model)) {
    return E.openaiError(ctx, 400, `The requested model '${body.model}' does not exist.`,
      'invalid_request_error', 'model_not_found', 'model');
  }
  if (body.input === undefined || !(typeof body.input === 'string' || Array.isArray(body.input))) {
    return badRequest(ctx, "Missing required parameter: 'input'.", 'input', 'missing_required_parameter');
  }
  if (body.previous_response_id != null && !stored.has(body.previous_response_id)) {
    return badRequest(ctx, `Previous response with id '${body.previous_response_id}' not found.`,
      'previous_response_id', 'previous_response_not_found');
  }
  const maxTokens = body.max_output_tokens;
  const input = readInput(body.input);
  const promptTokens = input.words + C.wordCount(typeof body.instructions === 'string' ? body.instructions : '');
  const tools = Array.isArray(body.tools) ? body.tools : [];
  const toolName = tools.length && isObject(tools[0]) && tools[0].type === 'function' ? tools[0].name : null;

  let answer;
  if (toolName && !input.fromTool && C.containsWeather(input.text)) {
    answer = { toolName, completionTokens: C.TOOL_CALL_TOKENS, incomplete: false };
  } else {
    const r = C.shapeReply(`echo: ${input.text}`, [], maxTokens ?? undefined);
    answer = { text: r.text, completionTokens: C.wordCount(r.text), incomplete: r.reason === 'length' };
  }
  const id = `resp_mock_${nextId++}`;
  stored.set(id, true);
  if (stored.size > 1000) stored.delete(stored.keys().next().value);

  const usage = { input_tokens: promptTokens,
    input_tokens_details: { cached_tokens: C.cachedTokens(body.input, promptTokens) },
    output_tokens: answer.completionTokens, output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: promptTokens + answer.completionTokens };
  const item = answer.toolName
    ? { type: 'function_call', id: 'fc_mock', call_id: 'call_1', name: answer.toolName,
      arguments: C.TOOL_ARGS_JSON, status: 'completed' }
    : { type: 'message', id: 'msg_mock', status: 'completed', role: 'assistant',
      content: [{ type: 'output_text', text: answer.text, annotations: [] }] };
  const response = (status, output, u) => ({
    id, object: 'response', created_at: C.CREATED, status, error: null,
    incomplete_details: status === 'incomplete' ? { reason: 'max_output_tokens' } : null,
    instructions: body.instructions ?? null, model: body.model, output,
    previous_response_id: body.previous_response_id ?? null, usage: u,
  });
  const status = answer.incomplete ? 'incomplete' : 'completed';
  if (body.stream !== true) return C.sendJson(ctx, 200, response(status, [item], usage));
  return stream(ctx, response, status, item, answer, usage);
}

async function stream(ctx, response, status, item, answer, usage) {
  const out = C.openStream(ctx, SSE);
  let seq = 0;
  const ev = (type, data) => `event: ${type}\ndata: ${JSON.stringify({ type, sequence_number: seq++, ...data })}\n\n`;
  const events = [
    ev('response.created', { response: response('in_progress', [], null) }),
    ev('response.in_progress', { response: response('in_progress', [], null) }),
  ];
  if (answer.toolName) {
    events.push(ev('response.output_item.added', { output_index: 0,
      item: { ...item, arguments: '', status: 'in_progress' } }));
    for (const f of C.TOOL_ARGS_FRAGMENTS) {
      events.push(ev('response.function_call_arguments.delta', { item_id: item.id, output_index: 0, delta: f }));
    }
    events.push(ev('response.function_call_arguments.done', { item_id: item.id, output_index: 0,
      arguments: item.arguments }));
  } else {
    events.push(ev('response.output_item.added', { output_index: 0,
      item: { ...item, status: 'in_progress', content: [] } }));
    const part = { type: 'output_text', text: '', annotations: [] };
    events.push(ev('response.content_part.added', { item_id: item.id, output_index: 0, content_index: 0, part }));
    for (const piece of C.pieces(answer.text)) {
      events.push(ev('response.output_text.delta', { item_id: item.id, output_index: 0,
        content_index: 0, delta: piece, logprobs: [] }));
    }
    events.push(ev('response.output_text.done', { item_id: item.id, output_index: 0,
      content_index: 0, text: answer.text, logprobs: [] }));
    events.push(ev('response.content_part.done', { item_id: item.id, output_index: 0,
      content_index: 0, part: { ...part, text: answer.text } }));
  }
  events.push(ev('response.output_item.done', { output_index: 0, item }));
  if (ctx.scenario.name === 'stream_error') {
    for (const e of events.slice(0, 4)) if (!(await out.send(e))) return;
    await out.send(ev('error', { code: 'server_error', message: 'mock stream failure', param: null }));
    return out.end();
  }
  const final = status === 'completed' ? 'response.completed' : 'response.incomplete';
  events.push(ev(final, { response: response(status, [item], usage) }));
  for (const e of events) if (!(await out.send(e))) return;
  out.end();
}

module.exports = { responses };
