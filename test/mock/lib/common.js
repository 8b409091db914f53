'use strict';
// Helpers shared by every provider: the deterministic "model" (reply text, token counts,
// embeddings, rerank scores), the known-model catalog, and response writers that notice when the
// client has gone away.

const crypto = require('crypto');

// ---------------------------------------------------------------------------------------------
// Known models. Each provider only knows its own family, so a Gemini model sent to an OpenAI
// route gets the OpenAI 404, as it would upstream.

const CREATED = 1700000000; // fixed so answers are byte-for-byte reproducible

const OPENAI_MODELS = [
  ['gpt-4o-mini', 'system'],
  ['text-embedding-3-small', 'system'],
  ['meta/llama-3.1-8b-instruct', 'meta'],
  ['nvidia/nv-embedqa-e5-v5', 'nvidia'],
  ['nvidia/nv-rerankqa-mistral-4b-v3', 'nvidia'],
  ['BAAI/bge-reranker-v2-m3', 'BAAI'],
].map(([id, owner]) => ({ id, object: 'model', created: CREATED, owned_by: owner }));

const ANTHROPIC_MODELS = [
  { type: 'model', id: 'claude-sonnet-4-5', display_name: 'Claude Sonnet 4.5',
    created_at: '2025-09-29T00:00:00Z' },
  { type: 'model', id: 'claude-haiku-4-5', display_name: 'Claude Haiku 4.5',
    created_at: '2025-10-15T00:00:00Z' },
];

const GEMINI_MODELS = [
  { name: 'models/gemini-2.0-flash', version: '2.0', displayName: 'Gemini 2.0 Flash',
    inputTokenLimit: 1048576, outputTokenLimit: 8192,
    supportedGenerationMethods: ['generateContent', 'countTokens'] },
  { name: 'models/text-embedding-004', version: '004', displayName: 'Text Embedding 004',
    inputTokenLimit: 2048, outputTokenLimit: 1,
    supportedGenerationMethods: ['embedContent'] },
];

const findOpenAIModel = (id) => OPENAI_MODELS.find((m) => m.id === id);
const findAnthropicModel = (id) => ANTHROPIC_MODELS.find((m) => m.id === id);
const findGeminiModel = (id) => GEMINI_MODELS.find((m) => m.name === `models/${id}`);

// ---------------------------------------------------------------------------------------------
// Text and token accounting. A "token" is a whitespace-separated word everywhere, so tests can
// predict usage numbers without a tokenizer.

const words = (text) => String(text ?? '').split(/\s+/).filter(Boolean);
const wordCount = (text) => words(text).length;

// The reply split into stream pieces: each word with the whitespace after it, so the pieces
// concatenate back to exactly the reply.
const pieces = (text) => String(text).match(/\S+\s*/g) || [];

// Parts of message content are joined with one space (documented in README.md).
const joinTexts = (texts) => texts.filter((t) => typeof t === 'string').join(' ');

const containsWeather = (text) => /weather/i.test(text);

// Prompt caching: a request whose input holds the word "cached" anywhere is reported as having
// read half its prompt tokens (rounded down) from the provider's prompt cache, in each
// provider's own usage fields. Tests predict the share from the word counts.
const cachedTokens = (input, promptTokens) =>
  (/\bcached\b/.test(JSON.stringify(input ?? null)) ? Math.floor(promptTokens / 2) : 0);

// Applies the stop sequences, then the token limit, to the reply, and says why it ended.
// Returns {text, reason: 'stop'|'stop_sequence'|'length', sequence}.
function shapeReply(reply, stops, maxTokens) {
  let text = reply;
  let reason = 'stop';
  let sequence = null;
  let cut = -1;
  for (const s of stops || []) {
    if (typeof s !== 'string' || s === '') continue;
    const at = text.indexOf(s);
    if (at >= 0 && (cut < 0 || at < cut)) { cut = at; sequence = s; }
  }
  if (cut >= 0) { text = text.slice(0, cut); reason = 'stop_sequence'; }
  if (Number.isInteger(maxTokens) && maxTokens < wordCount(text)) {
    text = pieces(text).slice(0, maxTokens).join('').trimEnd();
    reason = 'length';
    sequence = null;
  }
  return { text, reason, sequence };
}

const TOOL_ARGS = { city: 'Paris' };
const TOOL_ARGS_JSON = JSON.stringify(TOOL_ARGS); // {"city":"Paris"}
const TOOL_CALL_TOKENS = 5;
// Argument fragments for streamed tool calls; they concatenate to TOOL_ARGS_JSON.
const TOOL_ARGS_FRAGMENTS = ['{"city":', '"Paris"', '}'];

// ---------------------------------------------------------------------------------------------
// Embeddings.
//
// embedding(text, dims)[i] = fround(B[i] / 255), where B is the byte stream
//   sha256(utf8(text)) || sha256(sha256(utf8(text))) || ...   (each block hashes the previous one)
// so the first 32 values come from sha256(text) directly. fround = rounding to float32; the
// JSON numbers are those float32 values printed as doubles. Vectors are not normalised.
// GET /_mock/embedding?text=..&dims=N returns the same vector.

const MAX_DIMS = 4096;

function embedding(text, dims) {
  const out = new Array(dims);
  let block = crypto.createHash('sha256').update(String(text), 'utf8').digest();
  for (let i = 0; i < dims; i++) {
    if (i > 0 && i % 32 === 0) block = crypto.createHash('sha256').update(block).digest();
    out[i] = Math.fround(block[i % 32] / 255);
  }
  return out;
}

// The little-endian float32 bytes of a vector, base64-encoded (OpenAI's encoding_format base64).
function floatsToBase64(values) {
  const buf = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => buf.writeFloatLE(v, i * 4));
  return buf.toString('base64');
}

// ---------------------------------------------------------------------------------------------
// Rerank.
//
// terms(s) = the set of maximal runs of Unicode letters/digits in lower-cased s.
// hits(q, d) = number of distinct terms of the query that are also terms of document d.
// logit(d_i) = hits(q, d_i) - 0.01 * i          (i = 0-based position in the request)
// relevance_score = 1 / (1 + exp(-logit))
// Sorted by logit descending; the index penalty makes ties impossible (earlier wins).

const terms = (s) => new Set(String(s).toLowerCase().match(/[\p{L}\p{N}]+/gu) || []);

function rerankScores(query, docs) {
  const q = terms(query);
  return docs
    .map((doc, index) => {
      const d = terms(doc);
      let hits = 0;
      for (const t of q) if (d.has(t)) hits++;
      const logit = hits - 0.01 * index;
      return { index, logit, relevance_score: 1 / (1 + Math.exp(-logit)) };
    })
    .sort((a, b) => b.logit - a.logit);
}

// ---------------------------------------------------------------------------------------------
// Response writers. ctx.closed turns true once the response is finished or the client has gone;
// every wait checks it so an abandoned request leaves no timer behind.

function sendRaw(ctx, status, body, headers = {}) {
  if (ctx.closed || ctx.res.headersSent) return;
  const buf = Buffer.from(body);
  ctx.res.writeHead(status, { ...ctx.baseHeaders, 'content-length': buf.length, ...headers });
  ctx.res.end(buf);
}

function sendJson(ctx, status, obj, headers = {}, contentType = 'application/json') {
  sendRaw(ctx, status, JSON.stringify(obj), { 'content-type': contentType, ...headers });
}

// Resolves true after ms, or false as soon as the client is gone (clearing the timer).
function sleep(ctx, ms) {
  return new Promise((resolve) => {
    if (ctx.closed) return resolve(false);
    const onClose = () => { clearTimeout(timer); resolve(false); };
    const timer = setTimeout(() => {
      ctx.res.off('close', onClose);
      resolve(!ctx.closed);
    }, ms);
    ctx.res.once('close', onClose);
  });
}

// Yields to the event loop so each chunk leaves in its own write (and TCP segment, with
// noDelay), which is what exercises a client's reassembly of split events.
const tick = () => new Promise((resolve) => setImmediate(resolve));

// A chunked streaming response. send() returns false once the client has gone away, so
// producers stop early.
function openStream(ctx, contentType, status = 200) {
  ctx.res.writeHead(status, {
    ...ctx.baseHeaders, 'content-type': contentType, 'cache-control': 'no-cache',
  });
  ctx.res.flushHeaders();
  let first = true;
  return {
    async send(text) {
      if (ctx.closed) return false;
      // Pause between chunks, not before the first one, so latency stays what --latency-ms says.
      if (!first) {
        if (ctx.opts.streamDelayMs > 0) { if (!(await sleep(ctx, ctx.opts.streamDelayMs))) return false; }
        else await tick();
        if (ctx.closed) return false;
      }
      first = false;
      ctx.res.write(text);
      return true;
    },
    end() { if (!ctx.closed) ctx.res.end(); },
  };
}

// Parses a query parameter as a non-negative integer, falling back to def.
function intArg(value, def) {
  const n = parseInt(value, 10);
  return Number.isFinite(n) && n >= 0 ? n : def;
}

module.exports = {
  CREATED, OPENAI_MODELS, ANTHROPIC_MODELS, GEMINI_MODELS,
  findOpenAIModel, findAnthropicModel, findGeminiModel,
  words, wordCount, pieces, joinTexts, containsWeather, cachedTokens, shapeReply,
  TOOL_ARGS, TOOL_ARGS_JSON, TOOL_CALL_TOKENS, TOOL_ARGS_FRAGMENTS,
  MAX_DIMS, embedding, floatsToBase64, rerankScores,
  sendRaw, sendJson, sleep, openStream, intArg,
};
