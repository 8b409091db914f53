#include "count_tokens.h"

#include "anthropic.h"
#include "gemini.h"
#include "translate_util.h"
#include "utf8.h"

namespace pgi::count_tokens {

namespace {

using nlohmann::json;
namespace detail = translate::detail;

constexpr long long kPerMessage = 4;
constexpr long long kPriming = 3;
constexpr long long kPerImage = 85;

bool is_anthropic(const protocols::Module &m) {
    return m.protocol == Protocol::kAnthropicV1;
}

// What Gemini's countTokens takes: the generateContent request itself, either at the top level
// or under generateContentRequest.
const json &gemini_request(const json &body) {
    const json *inner = detail::member(body, "generateContentRequest");
    return inner != nullptr && inner->is_object() ? *inner : body;
}

// The caller's counting request as the form. Anthropic's has no max_tokens (nothing is
// generated), which its module's reader requires of a Messages request.
chat::Request read(const protocols::Module &caller, const json &body) {
    if (is_anthropic(caller)) {
        json copy = body;
        if (copy.is_object() && detail::given(copy, "max_tokens") == nullptr)
            copy["max_tokens"] = 1;
        return protocols::anthropic::read_request(copy);
    }
    return protocols::gemini::read_request(gemini_request(body), false);
}

std::string counting_path_of(const ServiceEndpoint &service) {
    if (service.protocol == Protocol::kAnthropicV1)
        return "/v1/messages/count_tokens";
    return "/v1beta/models/" + std::string(detail::gemini_model(service)) + ":countTokens";
}

// A translated generateContent or Messages call turned into its counting call.
translate::UpstreamRequest counting_call(const ServiceEndpoint &service,
                                         translate::UpstreamRequest call) {
    json body = json::parse(call.body);
    json out;
    if (service.protocol == Protocol::kAnthropicV1) {
        // count_tokens takes only what the model reads.
        out = json::object();
        for (const char *key : {"model", "system", "messages", "tools", "tool_choice"}) {
            if (body.contains(key))
                out[key] = body[key];
        }
    } else {
        body["model"] = "models/" + std::string(detail::gemini_model(service));
        out = {{"generateContentRequest", std::move(body)}};
    }
    translate::UpstreamRequest r =
        detail::post_json(service, counting_path_of(service), false, detail::serialise(out));
    return r;
}

}  // namespace

Plan plan(const protocols::Module &caller, const ServiceEndpoint &service, json &body) {
    Plan p;
    if (service.protocol == Protocol::kOpenAiV1) {
        p.estimate = estimate(read(caller, body));
        return p;
    }
    if (service.protocol == caller.protocol) {
        // The service's own counting route, with the caller's request as it is but the model.
        read(caller, body);  // the same checks as a translated request
        if (is_anthropic(caller)) {
            body["model"] = service.model;
        } else if (json *inner = detail::member(body, "generateContentRequest") != nullptr
                                     ? &body["generateContentRequest"]
                                     : nullptr;
                   inner != nullptr && inner->is_object()) {
            (*inner)["model"] = "models/" + std::string(detail::gemini_model(service));
        }
        p.request =
            detail::post_json(service, counting_path_of(service), false, detail::serialise(body));
        return p;
    }
    chat::Defaults defaults;
    defaults.default_max_tokens = 1;
    p.request = counting_call(service, protocols::module_for(service.protocol)
                                           .write_request(service, read(caller, body), defaults));
    return p;
}

long long read_count(const ServiceEndpoint &service, std::string_view body) {
    json j = detail::parse_upstream_body(service, body, "count_tokens");
    const char *key = service.protocol == Protocol::kAnthropicV1 ? "input_tokens" : "totalTokens";
    const json *n = detail::member(j, key);
    if (n == nullptr && service.protocol == Protocol::kGeminiV1Beta)
        return 0;  // Gemini leaves a zero count out
    if (n == nullptr || !n->is_number_integer() || n->get<long long>() < 0)
        detail::bad_response(service, "count_tokens",
                             std::string("the body has no count \"") + key + "\"");
    return n->get<long long>();
}

std::string answer(const protocols::Module &caller, long long tokens) {
    return json{{is_anthropic(caller) ? "input_tokens" : "totalTokens", tokens}}.dump();
}

long long estimate(const chat::Request &request) {
    std::size_t chars = utf8_chars(request.system);
    long long fixed = kPriming;
    for (const chat::Message &m : request.messages) {
        fixed += kPerMessage;
        for (const chat::Block &b : m.content) {
            switch (b.kind) {
                case chat::Block::Kind::kText:
                case chat::Block::Kind::kToolResult:
                    chars += utf8_chars(b.text);
                    break;
                case chat::Block::Kind::kToolUse:
                    chars += utf8_chars(b.tool_name) + utf8_chars(detail::serialise(b.input));
                    break;
                case chat::Block::Kind::kImage:
                    fixed += kPerImage;
                    break;
            }
        }
    }
    for (const chat::Tool &t : request.tools) {
        chars += utf8_chars(t.name) + utf8_chars(t.description) +
                 utf8_chars(detail::serialise(t.parameters));
    }
    return fixed + static_cast<long long>((chars + 3) / 4);
}

}  // namespace pgi::count_tokens
