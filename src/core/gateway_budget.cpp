// The most a request may cost, reserved against its key's budgets before it is sent
// (docs/spend.md). Worked out only for keys with a budget: parsing the request once more is
// their price, not every caller's.
#include <algorithm>

#include "count_tokens.h"
#include "gateway_internal.h"
#include "modules.h"

namespace pgi::gateway {

namespace {

// The caller's module for the chat endpoints; null for the others.
const protocols::Module *chat_module(Endpoint endpoint) {
    switch (endpoint) {
        case Endpoint::kChat:
            return &protocols::module_for(Protocol::kOpenAiV1);
        case Endpoint::kMessages:
            return &protocols::anthropic_module();
        case Endpoint::kResponses:
            return &protocols::responses_module();
        case Endpoint::kCompletions:
            return &protocols::completions_module();
        case Endpoint::kGenerate:
        case Endpoint::kStreamGenerate:
            return &protocols::module_for(Protocol::kGeminiV1Beta);
        default:
            return nullptr;
    }
}

// The output limit a pass-through body names, in any provider's spelling.
std::optional<long long> passed_max_tokens(const nlohmann::json &body) {
    if (!body.is_object())
        return std::nullopt;
    for (const char *name : {"max_completion_tokens", "max_tokens", "max_output_tokens"}) {
        auto it = body.find(name);
        if (it != body.end() && it->is_number_integer())
            return it->get<long long>();
    }
    auto config = body.find("generationConfig");
    if (config != body.end() && config->is_object()) {
        auto it = config->find("maxOutputTokens");
        if (it != config->end() && it->is_number_integer())
            return it->get<long long>();
    }
    return std::nullopt;
}

struct Tokens {
    long long prompt = 0;
    long long output = 0;
};

Tokens worst_tokens(Endpoint endpoint, const nlohmann::json &body, std::size_t body_bytes,
                    long default_max_tokens) {
    // A token per 4 bytes of the whole body: more than the text it holds, so never too little.
    const long long by_bytes = static_cast<long long>((body_bytes + 3) / 4);
    switch (endpoint) {
        case Endpoint::kCountTokens:
        case Endpoint::kGeminiCount:
            return {};  // counting costs nothing
        case Endpoint::kEmbeddings:
        case Endpoint::kEmbedContent:
        case Endpoint::kBatchEmbed:
        case Endpoint::kRerank:
        case Endpoint::kRanking:
            return {by_bytes, 0};
        case Endpoint::kPassthrough:
            return {by_bytes, passed_max_tokens(body).value_or(default_max_tokens)};
        default:
            break;
    }
    const protocols::Module *module = chat_module(endpoint);
    if (module == nullptr)
        return {by_bytes, default_max_tokens};
    try {
        chat::Request request = module->read_request(body);
        return {count_tokens::estimate(request), request.max_tokens.value_or(default_max_tokens)};
    } catch (const std::exception &) {
        // The request will be refused by its planner; reserve as for an unread body.
        return {by_bytes, default_max_tokens};
    }
}

}  // namespace

int64_t worst_cost(const Snapshot &snapshot, const RequestContext &context, Endpoint endpoint,
                   const nlohmann::json &body, std::size_t body_bytes, long default_max_tokens,
                   std::string &currency) {
    const Tokens t = worst_tokens(endpoint, body, body_bytes, default_max_tokens);
    int64_t worst = 0;
    auto consider = [&](const ServiceEndpoint &service) {
        const int64_t cost = governance::worst_cost_nano(t.prompt, t.output, service.price);
        if (cost >= worst) {
            worst = cost;
            if (!service.price.currency.empty())
                currency = service.price.currency;
        }
    };
    if (context.route != nullptr) {
        // Any of the route's services may answer: the dearest is the worst case.
        for (const routing::Target &target : context.route->targets) {
            auto it = snapshot.services.find(target.service);
            if (it != snapshot.services.end())
                consider(it->second);
        }
    } else if (context.service != nullptr) {
        consider(*context.service);
    }
    return worst;
}

}  // namespace pgi::gateway
