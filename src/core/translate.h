// The translation layer between the shapes that callers use (SQL functions and the gateway
// alike) and each upstream protocol. Everything under pgi::translate is pure: JSON or bytes in,
// JSON or bytes out, no I/O, so the SQL path and the gateway cannot drift apart.
//
// This header holds what every translation shares; embeddings and rerank are in
// translate_embeddings.h and translate_rerank.h, chat in the protocol modules (chat_call.h,
// protocols/) and chat_prompt.h.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "error.h"
#include "protocol.h"

namespace pgi::translate {

// One HTTP call to make upstream. url is the service's base_url plus the protocol's path;
// headers are "Name: value" lines (credentials included, so never log them).
struct UpstreamRequest {
    std::string method;
    std::string url;
    std::vector<std::string> headers;
    std::string body;

    // The header lines carry the key: wiped when the request goes.
    UpstreamRequest() = default;
    UpstreamRequest(std::string m, std::string u, std::vector<std::string> h, std::string b)
        : method(std::move(m)), url(std::move(u)), headers(std::move(h)), body(std::move(b)) {}
    UpstreamRequest(const UpstreamRequest &) = default;
    UpstreamRequest(UpstreamRequest &&) = default;
    UpstreamRequest &operator=(const UpstreamRequest &) = default;
    UpstreamRequest &operator=(UpstreamRequest &&) = default;
    ~UpstreamRequest();
};

// Token counts in OpenAI's terms. present is false when the upstream reported none, which the
// ledger must not confuse with a call that used zero tokens. cached_tokens are the prompt tokens
// the upstream read from its prompt cache (part of prompt_tokens, priced apart): OpenAI's
// prompt_tokens_details.cached_tokens, Anthropic's cache_read_input_tokens, Gemini's
// cachedContentTokenCount.
struct Usage {
    long long prompt_tokens = 0;
    long long completion_tokens = 0;
    long long total_tokens = 0;
    bool present = false;
    long long cached_tokens = 0;
};

// Adds the counts of b to a (saturating), for a call made of several answers; a is present when
// either was.
void add_usage(Usage &a, const Usage &b);

// The top-level "usage" of an OpenAI-shaped response body (chat or embeddings), found without
// building a DOM of the whole body: the gateway forwards OpenAI upstream bodies unchanged and
// needs nothing else from them. Absent or unreadable usage gives present == false.
Usage usage_from_openai_body(std::string_view body);

// The usage a whole (not streamed) answer body reports, in the shape of `shape`: OpenAI's
// "usage", Anthropic's "usage" (input_tokens/output_tokens), Gemini's "usageMetadata" (of the
// last element that has one when the body is a streamed JSON array). Used for answers the
// gateway passes through unread. Absent or unreadable usage gives present == false.
Usage usage_from_answer_body(Protocol shape, std::string_view body);

// What a stream is charged: the usage the upstream reported when the stream ended with it
// (`complete`), else what was reported with at least one completion token per 4 characters
// streamed, so that a caller who leaves early, or a stream that breaks off, pays for what was
// generated.
Usage charged_usage(const Usage &reported, bool complete, std::size_t streamed_chars);

// The error for an upstream answer with a non-2xx status: `service "<name>" returned HTTP
// <status>: <provider message>`, with a SQLSTATE from the status (401 PI401, 403 PI403, 404
// PI404, 429 PI429, 5xx PI500, others PI400; Gemini's 400 API_KEY_INVALID counts as 401) and a
// hint saying what to do. The service's key is scrubbed from the text should the body echo it.
Error upstream_failure(const ServiceEndpoint &service, long status, const std::string &body);

// OpenAI's error object, {"error":{"message","type","param","code"}}, serialised. An empty
// code or param is written as null. Used for mid-stream errors and by the gateway for its own
// errors.
std::string openai_error_json(std::string_view message, std::string_view type,
                              std::string_view code = {}, std::string_view param = {});

}  // namespace pgi::translate
