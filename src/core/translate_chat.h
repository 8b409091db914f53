// Chat completions: an OpenAI chat request to each protocol's request, and each protocol's
// answer back to an OpenAI chat.completion. Streams are read with ChatStream
// (translate_stream.h).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "protocol.h"
#include "translate.h"

namespace pgi::translate {

struct ChatDefaults {
    // Anthropic refuses a request without max_tokens; this fills it when the caller gave none
    // (inference.default_max_tokens). The other protocols get no limit the caller did not set.
    long default_max_tokens = 1024;
};

struct ChatCall {
    UpstreamRequest request;
    bool stream = false;  // "stream": true: read the answer with ChatStream
    // The caller's own stream_options.include_usage. OpenAI-protocol streams always ask the
    // upstream for usage (the ledger needs it); ChatStream hides that chunk when this is false.
    bool caller_wants_usage = false;
};

// Validates an OpenAI chat request and builds the upstream call. The request's "model" is
// ignored: the service decides the upstream model. Bad input is a 22023 error saying what to fix;
// a feature the protocol cannot express (n > 1 on Anthropic, non-text content parts on Anthropic
// or Gemini) is 0A000. Fields a protocol has no counterpart for (seed or user on Anthropic, for
// instance) are dropped. Taken by value so the OpenAI path can edit the caller's JSON in place.
// raw is the request's own text when the caller has it (the gateway): an OpenAI upstream then
// gets those bytes with only "model" (and for streams "stream_options") set, not a
// re-serialisation of the document.
ChatCall chat_request(const ServiceEndpoint &service, nlohmann::json openai_request,
                      const ChatDefaults &defaults, std::string_view raw = {});

// Turns the upstream's 2xx body into an OpenAI chat.completion. OpenAI bodies come back as they
// are. For the others, `model` is the model the upstream reports (Anthropic's model, Gemini's
// modelVersion; the service's model when absent) and `id` is the upstream's own id when it has
// one, so a reply can be traced in the provider's logs. A malformed body is a PI400 error.
nlohmann::json chat_response(const ServiceEndpoint &service, std::string_view upstream_body);

// The OpenAI request behind inference.chat(service, prompt, options). Options: system (text),
// max_tokens (positive integer), temperature and top_p (numbers), stop (text or array of text),
// seed (integer). Anything else, or a wrong type, is a 22023 error naming the valid options.
nlohmann::json chat_request_from_prompt(const std::string &prompt, const nlohmann::json &options);

// The text of the first choice, for inference.chat. A reply made only of tool calls cannot be
// returned as text: that is a 0A000 error pointing to inference.chat_completion. A reply with no
// choices is a PI400 error; a choice with null content gives "".
std::string chat_text(const ServiceEndpoint &service, const nlohmann::json &openai_response);

}  // namespace pgi::translate
