// What the gateway's Anthropic dialect needs beyond its protocol module: the beta features a
// caller turned on, forwarded with a request that passes through to an Anthropic service, and the
// model objects of GET /v1/models asked with an anthropic-version header.
#include <event2/http.h>
#include <memory>
#include <optional>

#include "anthropic.h"
#include "gateway_internal.h"
#include "redact.h"
#include "translate_util.h"

namespace pgi::gateway {

namespace {

using json = nlohmann::json;

// Anthropic model objects carry a creation date; services have none worth exposing.
constexpr const char *kModelCreatedAt = "2025-01-01T00:00:00Z";

}  // namespace

void forward_dialect_headers(const Exchange &ex, translate::UpstreamRequest &request) {
    if (ex.context.dialect != &protocols::anthropic_module())
        return;
    // Beta features the caller turned on (Claude Code sends several) go with its body.
    evkeyvalq *in = evhttp_request_get_input_headers(ex.req);
    const char *beta = evhttp_find_header(in, "anthropic-beta");
    if (beta != nullptr && std::string_view(beta).find_first_of("\r\n") == std::string::npos)
        request.headers.push_back(std::string("anthropic-beta: ") + beta);
}

json anthropic_model_object(const std::string &name) {
    return json{
        {"type", "model"}, {"id", name}, {"display_name", name}, {"created_at", kModelCreatedAt}};
}

json anthropic_model_list(const std::vector<std::string> &names) {
    json data = json::array();
    for (const std::string &name : names)
        data.push_back(anthropic_model_object(name));
    return json{{"data", std::move(data)},
                {"has_more", false},
                {"first_id", names.empty() ? json(nullptr) : json(names.front())},
                {"last_id", names.empty() ? json(nullptr) : json(names.back())}};
}

}  // namespace pgi::gateway
