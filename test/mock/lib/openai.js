'use strict';
// OpenAI-protocol routes: /v1/models, /v1/chat/completions, /v1/completions, /v1/responses,
// /v1/embeddings, and the two rerank dialects (/v1/ranking from NIM, /v1/rerank from
// vLLM/Cohere/Jina). The vllm, nim and cohere scenarios change which of these exist and how
// auth and 404s look.

const C = require('./common');
const E = require('./errors');
const R = require('./responses');
const K = require('./completions');

const CHAT_ID = 'chatcmpl-mock';
const SSE = 'text/event-stream; charset=utf-8';

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// Text of one message's content: a string, or the text parts of an array, joined by a space.
function contentText(content) {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return C.joinTexts(content.map((p) => (isObject(p) && p.type === 'text' ? p.text : null)));
  }
  return '';
}

// The text the mock "answers": the last user or tool message. A tool message is the result of
// an earlier call, so it never triggers another call (agent loops terminate).
function promptOf(messages) {
  for (let i = messages.length - 1; i >= 0; i--) {
    const m = messages[i];
    if (isObject(m) && (m.role === 'user' || m.role === 'tool')) {
      return { text: contentText(m.content), fromTool: m.role === 'tool' };
    }
  }
  return { text: '', fromTool: false };
}

function badRequest(ctx, message, param = null, code = null) {
  E.openaiError(ctx, 400, message, 'invalid_request_error', code, param);
}

function modelNotFound(ctx, model) {
  if (ctx.scenario.name === 'vllm') {
    return E.openaiError(ctx, 404, `The model \`${model}\` does not exist.`, 'NotFoundError',
      404, 'model');
  }
  E.openaiError(ctx, 404, `The model \`${model}\` does not exist or you do not have access to it.`,
    'invalid_request_error', 'model_not_found');
}

// Route table: path (or prefix) → allowed methods and handler. Rerank routes depend on the
// flavour of server being imitated.
function routesFor(flavor) {
  const routes = [
    { path: '/v1/models', methods: ['GET'], run: listModels },
    { prefix: '/v1/models/', methods: ['GET'], run: getModel },
    { path: '/v1/chat/completions', methods: ['POST'], run: chat },
    { path: '/v1/completions', methods: ['POST'], run: K.completions },
    { path: '/v1/embeddings', methods: ['POST'], run: embeddings },
  ];
  // OpenAI serves the Responses API; the vllm scenario plays a server that does not.
  if (flavor !== 'vllm') routes.push({ path: '/v1/responses', methods: ['POST'], run: R.responses });
  if (flavor !== 'vllm' && flavor !== 'cohere') {
    routes.push({ path: '/v1/ranking', methods: ['POST'], run: ranking });
  }
  if (flavor !== 'nim') routes.push({ path: '/v1/rerank', methods: ['POST'], run: rerank });
  return routes;
}

async function handle(ctx) {
  const flavor = ctx.scenario.name;
  const vllm = flavor === 'vllm';
  const p = ctx.routePath;
  const route = routesFor(flavor).find((r) => (r.path ? p === r.path : p.startsWith(r.prefix)));

  if (!route) {
    // FastAPI-based servers (vLLM, NIM) answer unknown paths with their bare default body.
    if (vllm || flavor === 'nim') return E.detailNotFound(ctx);
    return E.openaiError(ctx, 404, `Unknown request URL: ${ctx.method} ${p}`,
      'invalid_request_error', 'unknown_url');
  }
  if (!route.methods.includes(ctx.method)) {
    if (vllm) return C.sendJson(ctx, 405, { detail: 'Method Not Allowed' });
    return E.openaiError(ctx, 405, `Invalid method for URL (${ctx.method} ${p})`,
      'invalid_request_error', 'method_not_supported');
  }

  const key = E.requestKey(ctx, 'openai');
  if (vllm) {
    // vLLM started with --api-key sk-test...: keyless callers are fine in this mock (no
    // --api-key), but a wrong key is refused with vLLM's terse body.
    if (key && !key.startsWith('sk-test')) return C.sendJson(ctx, 401, { error: 'Unauthorized' });
  } else if (!key || !key.startsWith('sk-test')) {
    return E.openaiAuthError(ctx, key);
  }
  return route.run(ctx);
}

// ---------------------------------------------------------------------------------------------
// Models

function listModels(ctx) {
  const data = ctx.scenario.name === 'vllm'
    ? C.OPENAI_MODELS.map((m) => ({ ...m, owned_by: 'vllm', root: m.id, parent: null,
      max_model_len: 8192 }))
    : C.OPENAI_MODELS;
  C.sendJson(ctx, 200, { object: 'list', data });
}

function getModel(ctx) {
  // vLLM has no per-model route; clients must fall back to the list.
  if (ctx.scenario.name === 'vllm') return E.detailNotFound(ctx);
  // The id may contain '/', sent raw or percent-encoded (the openai SDK encodes it).
  const id = E.safeDecode(ctx.routePath.slice('/v1/models/'.length));
  const model = C.findOpenAIModel(id);
  if (!model) return modelNotFound(ctx, id);
  C.sendJson(ctx, 200, model);
}

// Common checks of a JSON POST body; answers and returns null when it is not usable.
function jsonBody(ctx) {
  if (!isObject(ctx.json)) {
    badRequest(ctx, 'We could not parse the JSON body of your request. (HINT: This likely means ' +
      "you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but " +
      'what was sent was not valid JSON.)');
    return null;
  }
  return ctx.json;
}

function checkModel(ctx, body) {
  if (typeof body.model !== 'string' || body.model === '') {
    badRequest(ctx, 'you must provide a model parameter');
    return false;
  }
  if (!C.findOpenAIModel(body.model)) {
    modelNotFound(ctx, body.model);
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Chat completions

async function chat(ctx) {
  const body = jsonBody(ctx);
  if (!body) return;
  if (body.messages === undefined) {
    return badRequest(ctx, "Missing required parameter: 'messages'.", 'messages',
      'missing_required_parameter');
  }
  if (!Array.isArray(body.messages) || body.messages.length === 0) {
    return badRequest(ctx, "Invalid 'messages': empty array. Expected an array with minimum " +
      'length 1, but got an empty array instead.', 'messages', 'empty_array');
  }
  if (!checkModel(ctx, body)) return;
  const maxTokens = body.max_completion_tokens ?? body.max_tokens;
  if (maxTokens !== undefined && maxTokens !== null && !(Number.isInteger(maxTokens) && maxTokens >= 1)) {
    return badRequest(ctx, `Invalid 'max_tokens': integer below minimum value. Expected a value ` +
      `>= 1, but got ${JSON.stringify(maxTokens)} instead.`, 'max_tokens', 'integer_below_min_value');
  }

  const promptTokens = body.messages.reduce((n, m) => n + C.wordCount(isObject(m) ? contentText(m.content) : ''), 0);
  const prompt = promptOf(body.messages);
  const tools = Array.isArray(body.tools) ? body.tools : [];
  const toolName = tools.length && isObject(tools[0]) && isObject(tools[0].function) ? tools[0].function.name : null;

  let answer;
  if (toolName && !prompt.fromTool && C.containsWeather(prompt.text)) {
    answer = { toolName, finish: 'tool_calls', completionTokens: C.TOOL_CALL_TOKENS };
  } else {
    const stops = typeof body.stop === 'string' ? [body.stop] : Array.isArray(body.stop) ? body.stop : [];
    const r = C.shapeReply(`echo: ${prompt.text}`, stops, maxTokens ?? undefined);
    answer = { text: r.text, finish: r.reason === 'length' ? 'length' : 'stop',
      completionTokens: C.wordCount(r.text) };
  }
  const usage = { prompt_tokens: promptTokens, completion_tokens: answer.completionTokens,
    total_tokens: promptTokens + answer.completionTokens };
  const cached = C.cachedTokens(body.messages, promptTokens);
  if (cached > 0) usage.prompt_tokens_details = { cached_tokens: cached, audio_tokens: 0 };

  if (body.stream === true) return chatStream(ctx, body, answer, usage);

  const message = answer.toolName
    ? { role: 'assistant', content: null, tool_calls: [toolCall(answer.toolName)], refusal: null }
    : { role: 'assistant', content: answer.text, refusal: null };
  C.sendJson(ctx, 200, {
    id: CHAT_ID, object: 'chat.completion', created: C.CREATED, model: body.model,
    choices: [{ index: 0, message, logprobs: null, finish_reason: answer.finish }],
    usage, system_fingerprint: 'fp_mock',
  });
}

const toolCall = (name) => ({ id: 'call_1', type: 'function',
  function: { name, arguments: C.TOOL_ARGS_JSON } });

async function chatStream(ctx, body, answer, usage) {
  const flavor = ctx.scenario.name;
  const wantUsage = flavor !== 'no_usage' && isObject(body.stream_options) &&
    body.stream_options.include_usage === true;
  const stream = C.openStream(ctx, SSE);
  // Like OpenAI, every chunk carries "usage": null when usage was asked for.
  const chunk = (delta, finish = null) => {
    const c = { id: CHAT_ID, object: 'chat.completion.chunk', created: C.CREATED, model: body.model,
      system_fingerprint: 'fp_mock',
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }] };
    if (wantUsage) c.usage = null;
    return `data: ${JSON.stringify(c)}\n\n`;
  };

  const events = [];
  if (answer.toolName) {
    events.push(chunk({ role: 'assistant', content: null, tool_calls: [{ index: 0, id: 'call_1',
      type: 'function', function: { name: answer.toolName, arguments: '' } }] }));
    for (const f of C.TOOL_ARGS_FRAGMENTS) {
      events.push(chunk({ tool_calls: [{ index: 0, function: { arguments: f } }] }));
    }
  } else {
    events.push(chunk({ role: 'assistant', content: '', refusal: null }));
    for (const piece of C.pieces(answer.text)) events.push(chunk({ content: piece }));
  }

  if (flavor === 'stream_error') {
    // The role chunk, two content chunks, then an in-band error (after a 200) and no [DONE].
    for (const e of events.slice(0, 3)) if (!(await stream.send(e))) return;
    await stream.send(`data: ${JSON.stringify(E.openaiBody('mock stream failure', 'server_error'))}\n\n`);
    return stream.end();
  }

  events.push(chunk({}, answer.finish));
  if (wantUsage) {
    events.push(`data: ${JSON.stringify({ id: CHAT_ID, object: 'chat.completion.chunk',
      created: C.CREATED, model: body.model, system_fingerprint: 'fp_mock', choices: [], usage })}\n\n`);
  }
  events.push('data: [DONE]\n\n');
  for (const e of events) if (!(await stream.send(e))) return;
  stream.end();
}

// ---------------------------------------------------------------------------------------------
// Embeddings

const INVALID_INPUT = "'$.input' is invalid. Please check the API reference: " +
  'https://platform.openai.com/docs/api-reference.';

function embeddings(ctx) {
  const body = jsonBody(ctx);
  if (!body) return;
  if (body.input === undefined) {
    return badRequest(ctx, "Missing required parameter: 'input'.", 'input',
      'missing_required_parameter');
  }
  const inputs = typeof body.input === 'string' ? [body.input] : body.input;
  if (!Array.isArray(inputs) || inputs.length === 0 ||
      !inputs.every((s) => typeof s === 'string' && s !== '')) {
    return badRequest(ctx, INVALID_INPUT, 'input');
  }
  if (!checkModel(ctx, body)) return;
  // A content filter, for tests of inputs that always fail: the word "poison" is refused.
  if (inputs.some((s) => /\bpoison\b/.test(s))) {
    return badRequest(ctx, "Invalid 'input': the text contains a word this model refuses (\"poison\").",
      'input', 'invalid_value');
  }

  let dims = 8;
  if (body.dimensions !== undefined && body.dimensions !== null) {
    if (!Number.isInteger(body.dimensions) || body.dimensions < 1 || body.dimensions > C.MAX_DIMS) {
      return badRequest(ctx, `Invalid value for 'dimensions': ${JSON.stringify(body.dimensions)}.`,
        'dimensions', 'invalid_value');
    }
    dims = body.dimensions;
  }
  const format = body.encoding_format ?? 'float';
  if (format !== 'float' && format !== 'base64') {
    return badRequest(ctx, `Invalid value for 'encoding_format': ${JSON.stringify(format)}. ` +
      "Supported values are: 'float' and 'base64'.", 'encoding_format', 'invalid_value');
  }
  if (format === 'base64' && ctx.scenario.name === 'reject_base64') {
    return badRequest(ctx, "Invalid value for 'encoding_format': 'base64'. Supported values " +
      "are: 'float'.", 'encoding_format', 'invalid_value');
  }
  // floats_only imitates servers that ignore encoding_format (a client asking for base64 must
  // cope with arrays).
  const base64 = format === 'base64' && ctx.scenario.name !== 'floats_only';

  const tokens = inputs.reduce((n, s) => n + C.wordCount(s), 0);
  C.sendJson(ctx, 200, {
    object: 'list',
    data: inputs.map((text, index) => {
      const v = C.embedding(text, dims);
      return { object: 'embedding', index, embedding: base64 ? C.floatsToBase64(v) : v };
    }),
    model: body.model,
    usage: { prompt_tokens: tokens, total_tokens: tokens },
  });
}

// ---------------------------------------------------------------------------------------------
// Rerank

function ranking(ctx) {
  const body = jsonBody(ctx);
  if (!body) return;
  if (!isObject(body.query) || typeof body.query.text !== 'string' || body.query.text === '') {
    return badRequest(ctx, "'query.text' is required", 'query');
  }
  if (!Array.isArray(body.passages) || body.passages.length === 0 ||
      !body.passages.every((p) => isObject(p) && typeof p.text === 'string')) {
    return badRequest(ctx, "'passages' must be a non-empty array of {text}", 'passages');
  }
  if (!checkModel(ctx, body)) return;
  const scores = C.rerankScores(body.query.text, body.passages.map((p) => p.text));
  C.sendJson(ctx, 200, { rankings: scores.map(({ index, logit }) => ({ index, logit })) });
}

function rerank(ctx) {
  const body = jsonBody(ctx);
  if (!body) return;
  if (typeof body.query !== 'string' || body.query === '') {
    return badRequest(ctx, "'query' must be a non-empty string", 'query');
  }
  // Cohere v2 also accepts {text} objects as documents.
  const docs = Array.isArray(body.documents)
    ? body.documents.map((d) => (typeof d === 'string' ? d : isObject(d) ? d.text : undefined))
    : null;
  if (!docs || docs.length === 0 || !docs.every((d) => typeof d === 'string')) {
    return badRequest(ctx, "'documents' must be a non-empty array of strings", 'documents');
  }
  if (body.top_n !== undefined && body.top_n !== null &&
      !(Number.isInteger(body.top_n) && body.top_n >= 1)) {
    return badRequest(ctx, "'top_n' must be a positive integer", 'top_n');
  }
  if (!checkModel(ctx, body)) return;
  let scores = C.rerankScores(body.query, docs);
  if (body.top_n) scores = scores.slice(0, body.top_n);
  const tokens = C.wordCount(body.query) + docs.reduce((n, d) => n + C.wordCount(d), 0);
  C.sendJson(ctx, 200, {
    id: 'rerank-mock',
    model: body.model,
    results: scores.map(({ index, relevance_score }) => (body.return_documents
      ? { index, relevance_score, document: { text: docs[index] } }
      : { index, relevance_score })),
    usage: { total_tokens: tokens },
  });
}

module.exports = { handle };
