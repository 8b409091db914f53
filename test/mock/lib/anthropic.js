'use strict';
// Anthropic Messages API: POST /v1/messages (JSON or named-event SSE), /v1/messages/count_tokens
// and the model routes, which share /v1/models with OpenAI and are told apart by Anthropic's
// headers.

const C = require('./common');
const E = require('./errors');

const MSG_ID = 'msg_mock';
const SSE = 'text/event-stream; charset=utf-8';

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// Text of a tool_result's content (a string or text blocks).
const resultText = (content) => (typeof content === 'string'
  ? content
  : Array.isArray(content) ? C.joinTexts(content.map((b) => (isObject(b) && b.type === 'text' ? b.text : null))) : '');

// Text of a message: its text blocks joined by a space; when it has none, its tool results'
// contents (so the answer to a tool round trip echoes the tool's output).
function messageText(content) {
  if (typeof content === 'string') return { text: content, fromTool: false };
  if (!Array.isArray(content)) return { text: '', fromTool: false };
  const texts = content.filter((b) => isObject(b) && b.type === 'text').map((b) => b.text);
  if (texts.length) return { text: C.joinTexts(texts), fromTool: false };
  const results = content.filter((b) => isObject(b) && b.type === 'tool_result');
  return { text: C.joinTexts(results.map((b) => resultText(b.content))), fromTool: results.length > 0 };
}

const systemText = (system) => (typeof system === 'string' ? system : resultText(system));

const badRequest = (ctx, message) => E.anthropicError(ctx, 400, 'invalid_request_error', message);

function checkAuth(ctx) {
  const key = E.requestKey(ctx, 'anthropic');
  if (!key || !key.startsWith('sk-test')) { E.anthropicAuthError(ctx, key); return false; }
  if (!ctx.headers['anthropic-version']) {
    badRequest(ctx, 'anthropic-version: header is required');
    return false;
  }
  return true;
}

async function handle(ctx) {
  const p = ctx.routePath;
  const known = p === '/v1/messages' || p === '/v1/messages/count_tokens' ? 'POST'
    : (p === '/v1/models' || p.startsWith('/v1/models/')) ? 'GET' : null;
  if (!known) return E.anthropicError(ctx, 404, 'not_found_error', 'Not Found');
  if (ctx.method !== known) {
    return E.anthropicError(ctx, 405, 'invalid_request_error', `Method ${ctx.method} not allowed`);
  }
  if (!checkAuth(ctx)) return;
  if (p === '/v1/models') {
    return C.sendJson(ctx, 200, { data: C.ANTHROPIC_MODELS, has_more: false,
      first_id: C.ANTHROPIC_MODELS[0].id, last_id: C.ANTHROPIC_MODELS.at(-1).id });
  }
  if (p.startsWith('/v1/models/')) {
    const id = E.safeDecode(p.slice('/v1/models/'.length));
    const model = C.findAnthropicModel(id);
    return model ? C.sendJson(ctx, 200, model) : E.anthropicError(ctx, 404, 'not_found_error', `model: ${id}`);
  }
  if (p === '/v1/messages/count_tokens') return countTokens(ctx);
  return messages(ctx);
}

const inputTokensOf = (body) => C.wordCount(systemText(body.system)) +
  body.messages.reduce((n, m) => n + C.wordCount(isObject(m) ? messageText(m.content).text : ''), 0);

// count_tokens takes what the model reads and nothing else, as Anthropic's does.
function countTokens(ctx) {
  const body = ctx.json;
  if (!isObject(body)) return badRequest(ctx, 'There was an error parsing the body of your request');
  for (const field of ['model', 'messages']) {
    if (body[field] === undefined) return badRequest(ctx, `${field}: Field required`);
  }
  const allowed = ['model', 'messages', 'system', 'tools', 'tool_choice', 'thinking', 'mcp_servers'];
  const extra = Object.keys(body).find((k) => !allowed.includes(k));
  if (extra) return badRequest(ctx, `${extra}: Extra inputs are not permitted`);
  if (!Array.isArray(body.messages)) return badRequest(ctx, 'messages: Input should be a valid list');
  if (!C.findAnthropicModel(body.model)) {
    return E.anthropicError(ctx, 404, 'not_found_error', `model: ${body.model}`);
  }
  C.sendJson(ctx, 200, { input_tokens: inputTokensOf(body) });
}

async function messages(ctx) {
  const body = ctx.json;
  if (!isObject(body)) return badRequest(ctx, 'There was an error parsing the body of your request');
  for (const field of ['model', 'max_tokens', 'messages']) {
    if (body[field] === undefined) return badRequest(ctx, `${field}: Field required`);
  }
  if (!Number.isInteger(body.max_tokens) || body.max_tokens < 1) {
    return badRequest(ctx, 'max_tokens: Input should be greater than or equal to 1');
  }
  if (!Array.isArray(body.messages) || body.messages.length === 0) {
    return badRequest(ctx, 'messages: at least one message is required');
  }
  if (!C.findAnthropicModel(body.model)) {
    return E.anthropicError(ctx, 404, 'not_found_error', `model: ${body.model}`);
  }

  const inputTokens = inputTokensOf(body);
  const lastUser = [...body.messages].reverse().find((m) => isObject(m) && m.role === 'user');
  const prompt = lastUser ? messageText(lastUser.content) : { text: '', fromTool: false };
  const tools = Array.isArray(body.tools) ? body.tools : [];
  const toolName = tools.length && isObject(tools[0]) ? tools[0].name : null;

  let answer;
  if (toolName && !prompt.fromTool && C.containsWeather(prompt.text)) {
    answer = { toolName, stop: 'tool_use', sequence: null, outputTokens: C.TOOL_CALL_TOKENS };
  } else {
    const r = C.shapeReply(`echo: ${prompt.text}`, Array.isArray(body.stop_sequences) ? body.stop_sequences : [],
      body.max_tokens);
    answer = { text: r.text, stop: r.reason === 'length' ? 'max_tokens' : r.reason === 'stop' ? 'end_turn' : 'stop_sequence',
      sequence: r.sequence, outputTokens: C.wordCount(r.text) };
  }

  // Anthropic's input_tokens leaves out the tokens read from the cache.
  const cached = C.cachedTokens(body.messages, inputTokens);
  const input = cached > 0 ? { input_tokens: inputTokens - cached, cache_read_input_tokens: cached }
    : { input_tokens: inputTokens };
  if (body.stream === true) return messagesStream(ctx, body, answer, input);

  C.sendJson(ctx, 200, {
    id: MSG_ID, type: 'message', role: 'assistant', model: body.model,
    content: [answer.toolName
      ? { type: 'tool_use', id: 'toolu_1', name: answer.toolName, input: C.TOOL_ARGS }
      : { type: 'text', text: answer.text }],
    stop_reason: answer.stop, stop_sequence: answer.sequence,
    usage: { ...input, output_tokens: answer.outputTokens },
  });
}

const event = (type, data) => `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;

async function messagesStream(ctx, body, answer, input) {
  const stream = C.openStream(ctx, SSE);
  const events = [
    event('message_start', { message: { id: MSG_ID, type: 'message', role: 'assistant', model: body.model,
      content: [], stop_reason: null, stop_sequence: null,
      usage: { ...input, output_tokens: 1 } } }),
  ];
  if (answer.toolName) {
    events.push(event('content_block_start', { index: 0,
      content_block: { type: 'tool_use', id: 'toolu_1', name: answer.toolName, input: {} } }));
    events.push(event('ping', {}));
    for (const f of C.TOOL_ARGS_FRAGMENTS) {
      events.push(event('content_block_delta', { index: 0, delta: { type: 'input_json_delta', partial_json: f } }));
    }
  } else {
    events.push(event('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }));
    events.push(event('ping', {}));
    for (const piece of C.pieces(answer.text)) {
      events.push(event('content_block_delta', { index: 0, delta: { type: 'text_delta', text: piece } }));
    }
  }

  if (ctx.scenario.name === 'stream_error') {
    // message_start, block start, ping, two deltas, then an error event after the 200.
    for (const e of events.slice(0, 5)) if (!(await stream.send(e))) return;
    await stream.send(event('error', { error: { type: 'overloaded_error', message: 'mock stream failure' } }));
    return stream.end();
  }

  events.push(event('content_block_stop', { index: 0 }));
  events.push(event('message_delta', { delta: { stop_reason: answer.stop, stop_sequence: answer.sequence },
    usage: { output_tokens: answer.outputTokens } }));
  events.push(event('message_stop', {}));
  for (const e of events) if (!(await stream.send(e))) return;
  stream.end();
}

module.exports = { handle };
