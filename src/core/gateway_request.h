// What the gateway reads from a caller's request before anything reaches an upstream: the route,
// the access key, the content type, pass-through paths that must not leave their service. Pure
// functions of strings, so every rule is unit-tested without a socket.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "protocol.h"

namespace pgi::gateway {

// ASCII case-insensitive equality, for header names and auth schemes.
bool iequals(std::string_view a, std::string_view b);
// Without the spaces, tabs and carriage returns around a header value.
std::string_view trim(std::string_view s);

enum class Endpoint {
    kUnknown,
    kHealth,       // GET /health
    kMetrics,      // GET /metrics
    kModels,       // GET /v1/models
    kModel,        // GET /v1/models/{id}
    kChat,         // POST /v1/chat/completions
    kMessages,     // POST /v1/messages (the Anthropic Messages dialect)
    kCountTokens,  // POST /v1/messages/count_tokens (Anthropic)
    kResponses,    // POST /v1/responses (OpenAI's Responses API)
    kCompletions,  // POST /v1/completions (OpenAI's legacy completions)
    kEmbeddings,   // POST /v1/embeddings
    kRerank,       // POST /v1/rerank
    kRanking,      // POST /v1/ranking
    kPassthrough,  // ANY /inferenceservices/{name}/{path...}
    // The Gemini dialect, under /v1beta/ (the @google/genai SDK's default) or /v1/:
    kGeminiModels,    // GET /v1beta/models
    kGeminiModel,     // GET /v1beta/models/{model}
    kGenerate,        // POST /v1beta/models/{model}:generateContent
    kStreamGenerate,  // POST /v1beta/models/{model}:streamGenerateContent
    kGeminiCount,     // POST /v1beta/models/{model}:countTokens
    kEmbedContent,    // POST /v1beta/models/{model}:embedContent
    kBatchEmbed,      // POST /v1beta/models/{model}:batchEmbedContents
};

// Which of kDialectLabels (gateway.h) an endpoint's callers speak.
int dialect_of(Endpoint endpoint);

// Method bits, the same values as libevent's evhttp_cmd_type.
enum Method : unsigned {
    kGet = 1u << 0,
    kPost = 1u << 1,
    kHead = 1u << 2,
    kPut = 1u << 3,
    kDelete = 1u << 4,
    kOptions = 1u << 5,
    kTrace = 1u << 6,
    kConnect = 1u << 7,
    kPatch = 1u << 8,
};

struct Route {
    Endpoint endpoint = Endpoint::kUnknown;
    unsigned allowed = 0;   // methods the endpoint serves (for 405 and Allow)
    std::string model_id;   // kModel and the Gemini routes: the percent-decoded model (service)
    std::string service;    // kPassthrough: the percent-decoded service name
    std::string rest;       // kPassthrough: the path after the name, still encoded, "/" at least
    bool bad_path = false;  // kPassthrough: rest leads out of the service, or is not decodable
};

// Routes a raw (still percent-encoded) path without its query string.
Route route(std::string_view raw_path);

// "GET, HEAD" for the Allow header.
std::string allow_header(unsigned methods);
const char *method_name(unsigned method);

// %XX decoding (no '+' rule: paths, not forms); nullopt for a malformed escape or a NUL.
std::optional<std::string> percent_decode(std::string_view text);

// Whether a pass-through path stays below its service: no "." or ".." segment once decoded,
// no encoded '/' or '\\', no control characters. rest starts with '/'.
bool safe_subpath(std::string_view rest);

// The shape of the usage a pass-through answer on this path (Route::rest, still encoded) carries,
// or nullopt when the gateway cannot read it: OpenAI for .../chat/completions, .../completions and
// .../embeddings; Anthropic for .../messages; Gemini for
// ...:generateContent and ...:streamGenerateContent.
std::optional<Protocol> passthrough_usage_shape(std::string_view rest);

// The access key from "Authorization: Bearer <key>" (scheme case-insensitive) or, failing
// that, "X-API-Key: <key>". Empty when neither carries one.
std::string_view access_key(const char *authorization, const char *x_api_key);

// Whether the route is one of the Gemini dialect's.
bool is_gemini_route(const Route &r);

// The key a Gemini caller puts in the query ("?key=<key>", percent-decoded), read only on the
// Gemini routes; empty when there is none.
std::string gemini_query_key(const Route &r, const char *query);

enum class BodyType { kJson, kUnsupported };
// Content types a JSON endpoint accepts: none, anything naming json (application/json with or
// without charset, application/*+json), text/plain, and the form type that `curl -d` sends when
// the body is a JSON object. Others (multipart, XML, octet-stream, ...) are refused with 415.
BodyType json_body_type(const char *content_type, std::string_view body);

// The status a caller sees for an upstream's error status. The caller's own mistakes pass
// through (400, 404, 409, 413, 422 ...), as do 429 and the retryable 5xx. 401 and 403 become
// 502: the gateway's upstream credentials were refused, which is not the caller's fault and
// must not look like a bad access key. 408 becomes 504, 529 becomes 503, other codes 502.
int caller_status(long upstream_status);

// OpenAI's error "type" for a status the gateway answers with.
const char *error_type(int status);

// The end user a request body names for per-user limits: OpenAI's `user` or
// `safety_identifier`, else Anthropic's `metadata.user_id`; empty when none is a string.
std::string end_user_in_body(const nlohmann::json &body);
// The longest end user id the gateway takes (bytes); a longer one is refused with 400.
constexpr std::size_t kMaxEndUser = 256;
// Why the gateway refuses an end user id (empty when it takes it): longer than kMaxEndUser,
// not UTF-8, or with control characters. The id is kept as text in the usage ledger.
std::string end_user_problem(std::string_view user);

}  // namespace pgi::gateway
