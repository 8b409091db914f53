'use strict';
// OpenAI's legacy completions (POST /v1/completions), as vLLM, KServe and OME serve it: the same
// deterministic answer as chat, to the prompt, in text_completion objects and chunks.

const C = require('./common');
const E = require('./errors');

const SSE = 'text/event-stream; charset=utf-8';
const ID = 'cmpl-mock';
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

async function completions(ctx) {
  const body = ctx.json;
  if (!isObject(body)) return E.openaiError(ctx, 400, 'We could not parse the JSON body of your request.', 'invalid_request_error');
  if (typeof body.model !== 'string' || !C.findOpenAIModel(body.model)) {
    return E.openaiError(ctx, 404, `The model \`${body.model}\` does not exist.`, 'invalid_request_error', 'model_not_found', 'model');
  }
  const prompt = Array.isArray(body.prompt) && typeof body.prompt[0] === 'string' ? body.prompt[0] : body.prompt;
  if (typeof prompt !== 'string') {
    return E.openaiError(ctx, 400, "Missing required parameter: 'prompt'.", 'invalid_request_error', 'missing_required_parameter', 'prompt');
  }
  const stops = typeof body.stop === 'string' ? [body.stop] : Array.isArray(body.stop) ? body.stop : [];
  const r = C.shapeReply(`echo: ${prompt}`, stops, body.max_tokens ?? undefined);
  const finish = r.reason === 'length' ? 'length' : 'stop';
  const usage = { prompt_tokens: C.wordCount(prompt), completion_tokens: C.wordCount(r.text),
    total_tokens: C.wordCount(prompt) + C.wordCount(r.text) };
  const cached = C.cachedTokens(body.prompt, usage.prompt_tokens);
  if (cached > 0) usage.prompt_tokens_details = { cached_tokens: cached };
  const head = { id: ID, object: 'text_completion', created: C.CREATED, model: body.model };
  if (body.stream !== true) {
    return C.sendJson(ctx, 200, { ...head,
      choices: [{ index: 0, text: r.text, logprobs: null, finish_reason: finish }], usage });
  }
  const wantUsage = ctx.scenario.name !== 'no_usage' && isObject(body.stream_options) &&
    body.stream_options.include_usage === true;
  const out = C.openStream(ctx, SSE);
  const chunk = (text, reason) => `data: ${JSON.stringify({ ...head,
    choices: [{ index: 0, text, logprobs: null, finish_reason: reason }], ...(wantUsage ? { usage: null } : {}) })}\n\n`;
  const events = C.pieces(r.text).map((p) => chunk(p, null));
  events.push(chunk('', finish));
  if (wantUsage) events.push(`data: ${JSON.stringify({ ...head, choices: [], usage })}\n\n`);
  events.push('data: [DONE]\n\n');
  for (const e of events) if (!(await out.send(e))) return;
  out.end();
}

module.exports = { completions };
