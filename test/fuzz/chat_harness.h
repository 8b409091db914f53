// Chat translation harnesses, one function per direction, each run for one protocol.
#pragma once

#include <cstddef>
#include <cstdint>

#include "protocol.h"

namespace pgi::fuzz {

// An OpenAI chat request (the input, as JSON) to the protocol's upstream request.
void chat_request_target(Protocol protocol, const uint8_t *data, std::size_t size);
// The protocol's upstream answer (the input) to an OpenAI chat.completion, and its text.
void chat_response_target(Protocol protocol, const uint8_t *data, std::size_t size);
// The protocol's upstream SSE stream (the input, fed whole and in pieces) to OpenAI chunks.
void chat_stream_target(Protocol protocol, const uint8_t *data, std::size_t size);

}  // namespace pgi::fuzz
