#include "chat_prompt.h"

#include <algorithm>

#include "error.h"
#include "translate_util.h"

namespace pgi::translate {

namespace {

using detail::given;
using detail::member;
using nlohmann::json;

}  // namespace

json chat_request_from_prompt(const std::string &prompt, const json &options) {
    static constexpr const char *kHint =
        "Valid options are system, max_tokens, temperature, top_p, stop and seed.";
    if (!options.is_null() && !options.is_object()) {
        throw Error(sqlstate::kInvalidParameterValue, "chat options must be a JSON object", kHint);
    }
    json req = json::object();
    json messages = json::array();
    if (options.is_object()) {
        for (const auto &item : options.items()) {
            // Named, not a structured binding: lambdas capture those only from C++20 (clang
            // refuses it in C++17, and the fuzz build uses clang).
            const std::string &key = item.key();
            const json &value = item.value();
            if (value.is_null())
                continue;
            auto wrong = [&](const char *expected) {
                throw Error(sqlstate::kInvalidParameterValue,
                            "chat option \"" + key + "\" must be " + expected, kHint);
            };
            if (key == "system") {
                if (!value.is_string())
                    wrong("a string");
                messages.push_back({{"role", "system"}, {"content", value}});
            } else if (key == "max_tokens") {
                if (!value.is_number_integer() || value.get<long long>() < 1) {
                    wrong("a positive integer");
                }
                req[key] = value;
            } else if (key == "temperature" || key == "top_p") {
                if (!value.is_number())
                    wrong("a number");
                req[key] = value;
            } else if (key == "stop") {
                bool ok =
                    value.is_string() ||
                    (value.is_array() && std::all_of(value.begin(), value.end(),
                                                     [](const json &v) { return v.is_string(); }));
                if (!ok)
                    wrong("a string or an array of strings");
                req[key] = value;
            } else if (key == "seed") {
                if (!value.is_number_integer())
                    wrong("an integer");
                req[key] = value;
            } else {
                throw Error(sqlstate::kInvalidParameterValue, "unknown chat option \"" + key + "\"",
                            kHint);
            }
        }
    }
    messages.push_back({{"role", "user"}, {"content", prompt}});
    req["messages"] = std::move(messages);
    return req;
}

std::string chat_text(const ServiceEndpoint &s, const json &response) {
    const json *choices = member(response, "choices");
    if (choices == nullptr || !choices->is_array() || choices->empty()) {
        throw Error(sqlstate::kUpstreamBadResponse,
                    "service \"" + s.name + "\" returned no choices");
    }
    const json *message = member((*choices)[0], "message");
    const json *content = message != nullptr ? given(*message, "content") : nullptr;
    if (content != nullptr && content->is_string() &&
        !content->get_ref<const std::string &>().empty()) {
        return content->get<std::string>();
    }
    if (content != nullptr && content->is_array()) {
        std::string text;
        for (const json &part : *content)
            text += detail::string_member(part, "text");
        return text;
    }
    const json *calls = message != nullptr ? given(*message, "tool_calls") : nullptr;
    if (calls != nullptr && calls->is_array() && !calls->empty()) {
        throw Error(sqlstate::kFeatureNotSupported,
                    "service \"" + s.name + "\" answered with tool calls, not text",
                    "Use inference.chat_completion to send tools and read tool calls.");
    }
    return {};
}

}  // namespace pgi::translate
