// Harnesses for the gateway's caller dialects besides OpenAI chat (Anthropic Messages, Gemini,
// OpenAI Responses, legacy completions), each run for one dialect against a service of every
// protocol: the input's first byte picks the protocol.
#pragma once

#include <cstddef>
#include <cstdint>

#include "modules.h"

namespace pgi::fuzz {

// A caller's request (JSON) planned for the service: translated or passed through, and for the
// Anthropic and Gemini dialects also counted (count_tokens) and, for Gemini, embedded.
void dialect_request_target(const protocols::Module &caller, const uint8_t *data, std::size_t size);
// The service's upstream answer (the input) to the caller's answer.
void dialect_response_target(const protocols::Module &caller, const uint8_t *data,
                             std::size_t size);
// The service's upstream stream (the input, whole and in pieces) to the caller's stream.
void dialect_stream_target(const protocols::Module &caller, const uint8_t *data, std::size_t size);

}  // namespace pgi::fuzz
