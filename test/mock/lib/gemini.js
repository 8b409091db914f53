'use strict';
// Gemini v1beta: GET /v1beta/models[/{m}] and POST /v1beta/models/{m}:{method} for
// generateContent, streamGenerateContent (SSE with alt=sse, else a streamed JSON array),
// countTokens, embedContent and batchEmbedContents.

const C = require('./common');
const E = require('./errors');

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const THOUGHT = { text: '(thinking)', thought: true };

// Which supportedGenerationMethods entry a method needs.
const NEEDS = {
  generateContent: 'generateContent', streamGenerateContent: 'generateContent',
  countTokens: 'countTokens', embedContent: 'embedContent', batchEmbedContents: 'embedContent',
};

const invalid = (ctx, message) => E.geminiError(ctx, 400, 'INVALID_ARGUMENT', message);

const notFound = (ctx, model, method) => E.geminiError(ctx, 404, 'NOT_FOUND',
  `models/${model} is not found for API version v1beta, or is not supported for ${method}. ` +
  'Call ListModels to see the list of available models and their supported methods.');

// Text of a content's parts: text parts (thoughts excluded) joined by a space; when there are
// none, its function responses as JSON, so a tool round trip echoes the tool's output.
function contentText(content) {
  const parts = isObject(content) && Array.isArray(content.parts) ? content.parts.filter(isObject) : [];
  const texts = parts.filter((p) => typeof p.text === 'string' && !p.thought).map((p) => p.text);
  if (texts.length) return { text: C.joinTexts(texts), fromTool: false };
  const responses = parts.filter((p) => isObject(p.functionResponse));
  return { text: C.joinTexts(responses.map((p) => JSON.stringify(p.functionResponse.response ?? {}))),
    fromTool: responses.length > 0 };
}

async function handle(ctx) {
  const p = ctx.routePath;
  if (p === '/v1beta/models' && ctx.method === 'GET') {
    if (!checkAuth(ctx)) return;
    return C.sendJson(ctx, 200, { models: C.GEMINI_MODELS }, {}, E.GEMINI_JSON);
  }
  const m = /^\/v1beta\/models\/([^/]+)$/.exec(p);
  if (!m) return E.geminiError(ctx, 404, 'NOT_FOUND', `Requested entity was not found: ${ctx.method} ${p}`);
  const seg = E.safeDecode(m[1]);
  const colon = seg.indexOf(':');
  const model = colon < 0 ? seg : seg.slice(0, colon);
  const method = colon < 0 ? null : seg.slice(colon + 1);

  if (method === null) {
    if (ctx.method !== 'GET') return E.geminiError(ctx, 405, 'INVALID_ARGUMENT', `Method ${ctx.method} not allowed`);
    if (!checkAuth(ctx)) return;
    const info = C.findGeminiModel(model);
    return info ? C.sendJson(ctx, 200, info, {}, E.GEMINI_JSON) : notFound(ctx, model, 'get');
  }
  if (!NEEDS[method]) return E.geminiError(ctx, 404, 'NOT_FOUND', `Method not found: ${method}`);
  if (ctx.method !== 'POST') return E.geminiError(ctx, 405, 'INVALID_ARGUMENT', `Method ${ctx.method} not allowed`);
  if (!checkAuth(ctx)) return;
  const info = C.findGeminiModel(model);
  if (!info || !info.supportedGenerationMethods.includes(NEEDS[method])) return notFound(ctx, model, method);
  if (!isObject(ctx.json)) return invalid(ctx, 'Invalid JSON payload received.');

  switch (method) {
    case 'embedContent': return embedContent(ctx, model);
    case 'batchEmbedContents': return batchEmbedContents(ctx, model);
    case 'countTokens': return countTokens(ctx);
    default: return generate(ctx, model, method === 'streamGenerateContent');
  }
}

function checkAuth(ctx) {
  const key = E.requestKey(ctx, 'gemini');
  if (key && key.startsWith('sk-test')) return true;
  E.geminiAuthError(ctx, key);
  return false;
}

function promptTokens(body) {
  const contents = Array.isArray(body.contents) ? body.contents : [];
  return C.wordCount(contentText(body.systemInstruction).text) +
    contents.reduce((n, c) => n + C.wordCount(contentText(c).text), 0);
}

// The request to count comes as it is or under generateContentRequest.
function countTokens(ctx) {
  const body = isObject(ctx.json.generateContentRequest) ? ctx.json.generateContentRequest : ctx.json;
  C.sendJson(ctx, 200, { totalTokens: promptTokens(body) }, {}, E.GEMINI_JSON);
}

// ---------------------------------------------------------------------------------------------
// generateContent / streamGenerateContent

async function generate(ctx, model, streaming) {
  const body = ctx.json;
  if (!Array.isArray(body.contents) || body.contents.length === 0) {
    return invalid(ctx, '* GenerateContentRequest.contents: contents is not specified\n');
  }
  const cfg = isObject(body.generationConfig) ? body.generationConfig : {};
  if (cfg.maxOutputTokens !== undefined && !(Number.isInteger(cfg.maxOutputTokens) && cfg.maxOutputTokens >= 1)) {
    return invalid(ctx, '* GenerateContentRequest.generation_config.max_output_tokens: must be positive\n');
  }
  const lastUser = [...body.contents].reverse()
    .find((c) => isObject(c) && (c.role === undefined || c.role === 'user' || c.role === 'function'));
  const prompt = lastUser ? contentText(lastUser) : { text: '', fromTool: false };
  const decls = Array.isArray(body.tools)
    ? body.tools.flatMap((t) => (isObject(t) && Array.isArray(t.functionDeclarations) ? t.functionDeclarations : []))
    : [];
  const toolName = decls.length && isObject(decls[0]) ? decls[0].name : null;

  let answer;
  if (toolName && !prompt.fromTool && C.containsWeather(prompt.text)) {
    answer = { part: { functionCall: { name: toolName, args: C.TOOL_ARGS } }, finish: 'STOP',
      tokens: C.TOOL_CALL_TOKENS };
  } else {
    const r = C.shapeReply(`echo: ${prompt.text}`, Array.isArray(cfg.stopSequences) ? cfg.stopSequences : [],
      cfg.maxOutputTokens);
    answer = { text: r.text, finish: r.reason === 'length' ? 'MAX_TOKENS' : 'STOP', tokens: C.wordCount(r.text) };
  }
  const input = promptTokens(body);
  const usageMetadata = { promptTokenCount: input, candidatesTokenCount: answer.tokens,
    totalTokenCount: input + answer.tokens };
  const cached = C.cachedTokens(body.contents, input);
  if (cached > 0) usageMetadata.cachedContentTokenCount = cached;
  const response = (parts, finish, usage) => {
    const cand = { content: { role: 'model', parts }, index: 0 };
    if (finish) cand.finishReason = finish;
    const r = { candidates: [cand] };
    if (usage) r.usageMetadata = usage;
    r.modelVersion = model;
    r.responseId = 'mock-response';
    return r;
  };

  if (!streaming) {
    const part = answer.part || { text: answer.text };
    return C.sendJson(ctx, 200, response([THOUGHT, part], answer.finish, usageMetadata), {}, E.GEMINI_JSON);
  }

  // One event for the thought, then one per word; the last carries finishReason and usage.
  const chunks = [response([THOUGHT])];
  if (answer.part) {
    chunks.push(response([answer.part], answer.finish, usageMetadata));
  } else {
    const ps = C.pieces(answer.text);
    if (ps.length === 0) ps.push('');
    ps.forEach((piece, i) => chunks.push(i === ps.length - 1
      ? response([{ text: piece }], answer.finish, usageMetadata)
      : response([{ text: piece }])));
  }
  const failing = ctx.scenario.name === 'stream_error';
  const error = { error: { code: 500, message: 'mock stream failure', status: 'INTERNAL' } };
  const sent = failing ? [...chunks.slice(0, 3), error] : chunks;

  if (ctx.query.get('alt') === 'sse') {
    // Gemini frames its events with CRLF line endings.
    const stream = C.openStream(ctx, 'text/event-stream');
    for (const c of sent) if (!(await stream.send(`data: ${JSON.stringify(c)}\r\n\r\n`))) return;
    return stream.end();
  }
  // Without alt=sse Gemini streams one JSON array, element by element.
  const stream = C.openStream(ctx, E.GEMINI_JSON);
  for (let i = 0; i < sent.length; i++) {
    if (!(await stream.send(`${i === 0 ? '[' : ',\r\n'}${JSON.stringify(sent[i])}`))) return;
  }
  if (!failing) await stream.send(']');
  stream.end();
}

// ---------------------------------------------------------------------------------------------
// Embeddings

// Returns the vector for one EmbedContentRequest, or a string saying what is wrong with it.
function embedOne(req, where) {
  if (!isObject(req) || !isObject(req.content)) return `* ${where}.content: content is required\n`;
  const { text } = contentText(req.content);
  if (text === '') return `* ${where}.content.parts: contents are required\n`;
  const dims = req.outputDimensionality ?? 8;
  if (!Number.isInteger(dims) || dims < 1 || dims > C.MAX_DIMS) {
    return `* ${where}.output_dimensionality: invalid value ${JSON.stringify(dims)}\n`;
  }
  return C.embedding(text, dims);
}

function embedContent(ctx) {
  const v = embedOne(ctx.json, 'EmbedContentRequest');
  if (typeof v === 'string') return invalid(ctx, v);
  C.sendJson(ctx, 200, { embedding: { values: v } }, {}, E.GEMINI_JSON);
}

function batchEmbedContents(ctx, model) {
  const reqs = ctx.json.requests;
  if (!Array.isArray(reqs) || reqs.length === 0) {
    return invalid(ctx, '* BatchEmbedContentsRequest.requests: requests is required\n');
  }
  const out = [];
  for (let i = 0; i < reqs.length; i++) {
    const where = `BatchEmbedContentsRequest.requests[${i}]`;
    // Each request names its model; Gemini refuses one that differs from the URL's.
    const m = isObject(reqs[i]) ? reqs[i].model : undefined;
    if (m !== undefined && m !== `models/${model}` && m !== model) {
      return invalid(ctx, `* ${where}.model: Model names in the requests must match the model in the URL (models/${model})\n`);
    }
    const v = embedOne(reqs[i], where);
    if (typeof v === 'string') return invalid(ctx, v);
    out.push({ values: v });
  }
  C.sendJson(ctx, 200, { embeddings: out }, {}, E.GEMINI_JSON);
}

module.exports = { handle };
