// Reading an upstream's error body. Each provider has its own error shape; this is
// the one place that knows them, used by the probe diagnosis, the SQL functions and the gateway.
#pragma once

#include <string>

#include "protocol.h"

namespace pgi {

struct UpstreamError {
    std::string message;  // the provider's own human-readable message, empty if none
    std::string type;     // OpenAI "type", Anthropic "error.type", Gemini "status"
    std::string code;     // OpenAI "code"; Gemini numeric code as text
    std::string reason;   // Gemini details[].reason (API_KEY_INVALID), empty otherwise
};

// Parses any of the shapes: OpenAI {"error":{message,type,param,code}}, Anthropic
// {"type":"error","error":{type,message}}, Gemini {"error":{code,message,status,details}},
// vLLM/FastAPI {"detail": "..."} and {"error": "text"}. Unparsable bodies give a message made of
// the body's first 200 characters, so a plain-text error still reaches the user.
UpstreamError parse_upstream_error(const std::string &body);

// The same error as it may be shown to anyone: every field with the service's key removed
// (redact_key). Compare parse_upstream_error's fields against known codes, put these in
// messages. An unparsable body is redacted before its first 200 characters are taken, so a key
// cut at the 200th character leaves no piece behind.
UpstreamError shown_upstream_error(const std::string &body, const ServiceEndpoint &service);

}  // namespace pgi
