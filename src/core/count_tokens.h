// Counting a request's input tokens in the caller's dialect: Anthropic's
// POST /v1/messages/count_tokens ({"input_tokens": N}) and Gemini's models/{m}:countTokens
// ({"totalTokens": N}), for a service of any protocol. An Anthropic or Gemini service counts
// itself, on its own counting route (the request translated through the chat form when it comes
// in the other dialect). OpenAI's API has no counting route, so for an OPENAI_V1 service the
// gateway estimates, by the method of estimate() (docs/dialects.md).
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "chat_form.h"
#include "modules.h"
#include "protocol.h"
#include "translate.h"

namespace pgi::count_tokens {

struct Plan {
    // The upstream's counting call; none when the answer is the estimate.
    std::optional<translate::UpstreamRequest> request;
    long long estimate = 0;
};

// The count for `body`, a counting request of the caller's dialect (the Anthropic or the Gemini
// module). Bad input is 22023, in the words of the caller's module.
Plan plan(const protocols::Module &caller, const ServiceEndpoint &service, nlohmann::json &body);

// The count in an upstream's 2xx answer (input_tokens or totalTokens); a body without it is PI400.
long long read_count(const ServiceEndpoint &service, std::string_view body);

// The caller's answer: {"input_tokens": N} for Anthropic, {"totalTokens": N} for Gemini.
std::string answer(const protocols::Module &caller, long long tokens);

// The estimate for a service that cannot count: one token per 4 UTF-8 characters of every text
// the model reads (system text, messages, tool results, tool call inputs and tool definitions as
// JSON), rounded up, plus 4 tokens per message and 3 for the answer's priming, as OpenAI's chat
// format frames them, and 85 per image (a low-detail image's cost).
long long estimate(const chat::Request &request);

}  // namespace pgi::count_tokens
