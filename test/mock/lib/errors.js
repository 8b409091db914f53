'use strict';
// Provider-shaped error bodies, and the canned failures of the error scenarios. Each provider has
// its own envelope; clients must parse all three to report the upstream's own message.

const { sendJson, sendRaw } = require('./common');

const openaiBody = (message, type, code = null, param = null) =>
  ({ error: { message, type, param, code } });
const anthropicBody = (type, message) => ({ type: 'error', error: { type, message } });
const geminiBody = (code, status, message, details) =>
  ({ error: details ? { code, message, status, details } : { code, message, status } });

const GEMINI_JSON = 'application/json; charset=UTF-8';

function openaiError(ctx, status, message, type, code = null, param = null, headers = {}) {
  sendJson(ctx, status, openaiBody(message, type, code, param), headers);
}
function anthropicError(ctx, status, type, message, headers = {}) {
  sendJson(ctx, status, anthropicBody(type, message), headers);
}
function geminiError(ctx, status, grpcStatus, message, details, headers = {}) {
  sendJson(ctx, status, geminiBody(status, grpcStatus, message, details), headers, GEMINI_JSON);
}
// FastAPI's default 404 (vLLM, NIM).
function detailNotFound(ctx) { sendJson(ctx, 404, { detail: 'Not Found' }); }

// OpenAI shows a key's first characters only, so a test can check that a message never carries a
// whole key.
const maskKey = (key) => `${key.slice(0, 4)}***`;

const OPENAI_NO_KEY =
  "You didn't provide an API key. You need to provide your API key in an Authorization header " +
  'using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank ' +
  "username) if you're accessing the API from your browser and are prompted for a username. You " +
  'can obtain an API key from https://platform.openai.com/account/api-keys.';

// whole: quote the key back unmasked, as some OpenAI-compatible servers do.
function openaiAuthError(ctx, key, whole = false) {
  if (!key) return openaiError(ctx, 401, OPENAI_NO_KEY, 'invalid_request_error', null);
  openaiError(ctx, 401,
    `Incorrect API key provided: ${whole ? key : maskKey(key)}. You can find your API key at ` +
    'https://platform.openai.com/account/api-keys.',
    'invalid_request_error', 'invalid_api_key');
}

function anthropicAuthError(ctx, key) {
  anthropicError(ctx, 401, 'authentication_error',
    key ? 'invalid x-api-key' : 'x-api-key header is required');
}

const GEMINI_KEY_INVALID = [{
  '@type': 'type.googleapis.com/google.rpc.ErrorInfo',
  reason: 'API_KEY_INVALID',
  domain: 'googleapis.com',
  metadata: { service: 'generativelanguage.googleapis.com' },
}];

// Gemini answers a wrong key with 400 INVALID_ARGUMENT, and a missing one with 403.
function geminiAuthError(ctx, key) {
  if (!key) {
    return geminiError(ctx, 403, 'PERMISSION_DENIED',
      "Method doesn't allow unregistered callers (callers without established identity). " +
      'Please use API Key or other form of API consumer identity to call this API.');
  }
  geminiError(ctx, 400, 'INVALID_ARGUMENT', 'API key not valid. Please pass a valid API key.',
    GEMINI_KEY_INVALID);
}

// The key a request carries for its protocol (null when none). Anthropic takes x-api-key or,
// as its newer SDKs send it, a bearer token.
function requestKey(ctx, proto) {
  const h = ctx.headers;
  const m = /^Bearer\s+(.+)$/i.exec(h.authorization || '');
  const bearer = m ? m[1].trim() : null;
  if (proto === 'anthropic') return h['x-api-key'] || bearer;
  if (proto === 'gemini') return h['x-goog-api-key'] || ctx.query.get('key') || null;
  return bearer;
}

// The model a failing request was about, for messages that name it.
function requestModel(ctx) {
  const p = ctx.routePath;
  const g = /^\/v1beta\/models\/([^/:]+)/.exec(p);
  if (g) return decodeURIComponent(g[1]);
  if (p.startsWith('/v1/models/')) return safeDecode(p.slice('/v1/models/'.length));
  return (ctx.json && typeof ctx.json.model === 'string') ? ctx.json.model : 'unknown';
}
const safeDecode = (s) => { try { return decodeURIComponent(s); } catch { return s; } };

// A body past the mock's own cap (64 MB).
function tooLarge(ctx, proto) {
  if (proto === 'anthropic') return anthropicError(ctx, 413, 'request_too_large', 'Request exceeds the maximum allowed number of bytes.');
  if (proto === 'gemini') return geminiError(ctx, 400, 'INVALID_ARGUMENT', 'Request payload size exceeds the limit.');
  openaiError(ctx, 413, 'Request too large.', 'invalid_request_error', 'request_too_large');
}

const MOCK_FAILURE = 'mock internal failure';
const MOCK_UNAVAILABLE = 'mock service unavailable';

// Answers a request with the failure of an error scenario, shaped for its protocol.
// Returns false if name is not an error scenario.
function scenarioError(ctx, proto, name, arg) {
  const model = requestModel(ctx);
  const oa = (status, message, type, code, headers) =>
    openaiError(ctx, status, message, type, code, null, headers);
  const an = (status, type, message, headers) => anthropicError(ctx, status, type, message, headers);
  const ge = (status, grpc, message, headers) => geminiError(ctx, status, grpc, message, undefined, headers);
  const by = (o, a, g) => (proto === 'anthropic' ? a() : proto === 'gemini' ? g() : o());

  switch (name) {
    case 'bad_key':
      by(() => openaiAuthError(ctx, requestKey(ctx, proto) || 'sk-bad', arg === 'echo'),
        () => anthropicError(ctx, 401, 'authentication_error', 'invalid x-api-key'),
        () => geminiAuthError(ctx, 'bad'));
      return true;
    case 'forbidden':
      by(() => oa(403, 'Country, region, or territory not supported', 'request_forbidden',
        'unsupported_country_region_territory'),
      () => an(403, 'permission_error',
        'Your API key does not have permission to use the specified resource.'),
      () => ge(403, 'PERMISSION_DENIED', 'The caller does not have permission'));
      return true;
    case 'not_found':
      by(() => oa(404, `The model \`${model}\` does not exist or you do not have access to it.`,
        'invalid_request_error', 'model_not_found'),
      () => an(404, 'not_found_error', `model: ${model}`),
      () => ge(404, 'NOT_FOUND', `models/${model} is not found for API version v1beta, or is not ` +
        'supported for generateContent. Call ListModels to see the list of available models ' +
        'and their supported methods.'));
      return true;
    case 'rate_limited': {
      const secs = parseInt(arg, 10) >= 0 ? parseInt(arg, 10) : 1;
      const headers = {
        'retry-after': String(secs),
        'x-ratelimit-limit-requests': '3',
        'x-ratelimit-remaining-requests': '0',
        'x-ratelimit-reset-requests': `${secs}s`,
      };
      by(() => oa(429, `Rate limit reached for ${model} in organization org-mock on requests per ` +
        `min (RPM): Limit 3, Used 3, Requested 1. Please try again in ${secs}s.`,
      'requests', 'rate_limit_exceeded', headers),
      () => an(429, 'rate_limit_error', 'This request would exceed the rate limit for your ' +
        'organization of 3 requests per minute. Please try again later.', headers),
      () => ge(429, 'RESOURCE_EXHAUSTED', 'Resource has been exhausted (e.g. check quota).',
        headers));
      return true;
    }
    case 'quota':
      // Anthropic reports an empty credit balance as a 400, not a 429.
      by(() => oa(429, 'You exceeded your current quota, please check your plan and billing ' +
        'details. For more information on this error, read the docs: ' +
        'https://platform.openai.com/docs/guides/error-codes/api-errors.',
      'insufficient_quota', 'insufficient_quota'),
      () => an(400, 'invalid_request_error', 'Your credit balance is too low to access the ' +
        'Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.'),
      () => ge(429, 'RESOURCE_EXHAUSTED', 'You exceeded your current quota, please check your ' +
        'plan and billing details.'));
      return true;
    case 'server_error':
      by(() => oa(500, MOCK_FAILURE, 'server_error', null),
        () => an(500, 'api_error', MOCK_FAILURE),
        () => ge(500, 'INTERNAL', MOCK_FAILURE));
      return true;
    case 'unavailable':
    case 'flaky':
      by(() => oa(503, MOCK_UNAVAILABLE, 'server_error', null),
        () => an(503, 'api_error', MOCK_UNAVAILABLE),
        () => ge(503, 'UNAVAILABLE', MOCK_UNAVAILABLE));
      return true;
    case 'overloaded':
      by(() => oa(529, 'Overloaded', 'server_error', null),
        () => an(529, 'overloaded_error', 'Overloaded'),
        () => ge(529, 'UNAVAILABLE', 'The model is overloaded. Please try again later.'));
      return true;
    case 'bad_gateway':
      // What a reverse proxy in front of a provider sends: HTML, not the provider's JSON.
      sendRaw(ctx, 502, '<html><head><title>502 Bad Gateway</title></head><body><center>' +
        '<h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n',
      { 'content-type': 'text/html' });
      return true;
    case 'bad_json':
      sendRaw(ctx, 200, '{"id":"truncated","choices":[{', { 'content-type': 'application/json' });
      return true;
    default:
      return false;
  }
}

const ERROR_SCENARIOS = new Set(['bad_key', 'forbidden', 'not_found', 'rate_limited', 'quota',
  'server_error', 'unavailable', 'overloaded', 'bad_gateway', 'bad_json']);

module.exports = {
  openaiBody, openaiError, anthropicError, geminiError, detailNotFound, GEMINI_JSON,
  openaiAuthError, anthropicAuthError, geminiAuthError, requestKey, safeDecode, tooLarge,
  scenarioError, ERROR_SCENARIOS, MOCK_FAILURE,
};
