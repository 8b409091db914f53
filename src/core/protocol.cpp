#include "protocol.h"

#include <algorithm>
#include <cctype>

#include "crypto.h"
#include "http_client.h"

namespace pgi {

std::optional<Protocol> parse_protocol(const std::string &text) {
    std::string upper(text);
    std::transform(upper.begin(), upper.end(), upper.begin(),
                   [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    if (upper == "OPENAI_V1")
        return Protocol::kOpenAiV1;
    if (upper == "GEMINI_V1_BETA")
        return Protocol::kGeminiV1Beta;
    if (upper == "ANTHROPIC_V1")
        return Protocol::kAnthropicV1;
    return std::nullopt;
}

const char *protocol_name(Protocol p) {
    switch (p) {
        case Protocol::kOpenAiV1:
            return "OPENAI_V1";
        case Protocol::kGeminiV1Beta:
            return "GEMINI_V1_BETA";
        case Protocol::kAnthropicV1:
            return "ANTHROPIC_V1";
    }
    return "OPENAI_V1";
}

ServiceEndpoint::~ServiceEndpoint() {
    crypto::wipe(api_key);
}

std::vector<std::string> auth_headers(const ServiceEndpoint &service) {
    std::vector<std::string> headers;
    switch (service.protocol) {
        case Protocol::kOpenAiV1:
            if (!service.api_key.empty())
                headers.push_back("Authorization: Bearer " + service.api_key);
            break;
        case Protocol::kGeminiV1Beta:
            if (!service.api_key.empty())
                headers.push_back("x-goog-api-key: " + service.api_key);
            break;
        case Protocol::kAnthropicV1:
            if (!service.api_key.empty())
                headers.push_back("x-api-key: " + service.api_key);
            headers.push_back("anthropic-version: 2023-06-01");
            break;
    }
    return headers;
}

void set_transport(const ServiceEndpoint &service, http::Request &request) {
    request.insecure = service.allow_insecure;
    request.tls = service.tls;
    request.blocked_networks = service.blocked_networks;
}

}  // namespace pgi
