#include "fuzz_common.h"

#include <nlohmann/json.hpp>

namespace pgi::fuzz {

ServiceEndpoint endpoint(Protocol protocol) {
    switch (protocol) {
        case Protocol::kAnthropicV1:
            return {"claude", "claude-sonnet-4-5", "http://up:2", protocol, "sk-ant-fuzz", false};
        case Protocol::kGeminiV1Beta:
            return {"gem", "gemini-2.5-flash", "http://up:3", protocol, "AIza-fuzz", false};
        case Protocol::kOpenAiV1:
            break;
    }
    return {"oai", "gpt-4o-mini", "http://up:1", protocol, "sk-fuzz", false};
}

bool valid_json(std::string_view text) {
    return nlohmann::json::accept(text.begin(), text.end());
}

std::vector<std::size_t> cut_lengths(FuzzedDataProvider &in) {
    std::vector<std::size_t> cuts(in.ConsumeIntegralInRange<std::size_t>(0, 8));
    for (std::size_t &c : cuts)
        c = in.ConsumeIntegralInRange<std::size_t>(0, 96);
    return cuts;
}

std::vector<std::string_view> split(std::string_view text, const std::vector<std::size_t> &cuts) {
    std::vector<std::string_view> pieces;
    for (std::size_t c : cuts) {
        std::size_t n = std::min(c, text.size());
        pieces.push_back(text.substr(0, n));
        text.remove_prefix(n);
    }
    pieces.push_back(text);
    return pieces;
}

bool same_events(const std::vector<StreamEvent> &a, const std::vector<StreamEvent> &b,
                 void (*scrub)(nlohmann::json &)) {
    if (a.size() != b.size())
        return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (a[i].name != b[i].name)
            return false;
        if (a[i].data == b[i].data)
            continue;
        nlohmann::json x = nlohmann::json::parse(a[i].data, nullptr, false);
        nlohmann::json y = nlohmann::json::parse(b[i].data, nullptr, false);
        if (x.is_discarded() || y.is_discarded())
            return false;
        scrub(x);
        scrub(y);
        if (x.dump() != y.dump())
            return false;
    }
    return true;
}

}  // namespace pgi::fuzz
