#include "openai_chat_rules.h"

#include <algorithm>
#include <ctime>

#include "error.h"
#include "translate_util.h"

namespace pgi::protocols::openai_chat::rules {

namespace {

using nlohmann::json;
using translate::detail::given;
using translate::detail::member;
namespace detail = translate::detail;

[[noreturn]] void invalid(const std::string &message, const std::string &hint = kRequestHint) {
    throw Error(sqlstate::kInvalidParameterValue, message, hint);
}

std::string where(std::size_t i) {
    return "messages[" + std::to_string(i) + "]";
}

std::optional<long long> positive_integer(const json &req, const char *key) {
    const json *v = given(req, key);
    if (v == nullptr)
        return std::nullopt;
    if (!v->is_number_integer() || v->get<long long>() < 1) {
        invalid(std::string("\"") + key + "\" must be a positive integer");
    }
    return v->get<long long>();
}

void check_number(const json &req, const char *key) {
    const json *v = given(req, key);
    if (v != nullptr && !v->is_number())
        invalid(std::string("\"") + key + "\" must be a number");
}

// stop as an array of strings, whichever of its two forms the caller used.
json stops(const json &req) {
    const json *v = given(req, "stop");
    if (v == nullptr)
        return json();
    if (v->is_string())
        return json::array({*v});
    if (v->is_array() &&
        std::all_of(v->begin(), v->end(), [](const json &s) { return s.is_string(); })) {
        return *v;
    }
    invalid("\"stop\" must be a string or an array of strings");
}

bool is_function_call(const json &call) {
    const json *type = member(call, "type");
    return type == nullptr || *type == "function";
}

// Checks what every protocol relies on, so a bad request fails the same way everywhere.
void check(const json &req) {
    if (!req.is_object())
        invalid("the chat request must be a JSON object");
    const json *messages = given(req, "messages");
    if (messages == nullptr)
        invalid("the chat request has no \"messages\"");
    if (!messages->is_array() || messages->empty())
        invalid("\"messages\" must be a non-empty array");
    for (std::size_t i = 0; i < messages->size(); ++i) {
        const json &m = (*messages)[i];
        if (!m.is_object())
            invalid(where(i) + " must be an object with \"role\" and \"content\"");
        std::string role = detail::string_member(m, "role");
        if (role != "system" && role != "developer" && role != "user" && role != "assistant" &&
            role != "tool") {
            invalid(where(i) + " has an unknown role \"" + role + "\"",
                    "Valid roles are system, developer, user, assistant and tool.");
        }
        const json *content = given(m, "content");
        if (content != nullptr && !content->is_string() && !content->is_array()) {
            invalid(where(i) + ".content must be a string or an array of content parts");
        }
        if (content != nullptr && content->is_array()) {
            for (const json &part : *content) {
                if (!part.is_object() || !member(part, "type") || !part["type"].is_string()) {
                    invalid(where(i) + ".content parts must be objects with a \"type\"");
                }
            }
        }
        if (content == nullptr && role != "assistant")
            invalid(where(i) + " has no \"content\"");
        if (role == "tool" && detail::string_member(m, "tool_call_id").empty()) {
            invalid(where(i) + " (role tool) has no \"tool_call_id\"");
        }
        if (const json *calls = given(m, "tool_calls")) {
            if (role != "assistant")
                invalid(where(i) + ": only assistant messages have tool_calls");
            if (!calls->is_array())
                invalid(where(i) + ".tool_calls must be an array");
            for (const json &call : *calls) {
                // Other kinds of call (OpenAI's custom tools) pass through to OpenAI services;
                // the translating builders refuse them.
                if (!is_function_call(call))
                    continue;
                const json *fn = member(call, "function");
                if (detail::string_member(call, "id").empty() || fn == nullptr ||
                    detail::string_member(*fn, "name").empty()) {
                    invalid(where(i) + ".tool_calls entries need an \"id\" and a function name");
                }
                const json *args = given(*fn, "arguments");
                if (args != nullptr && !args->is_string()) {
                    invalid(where(i) + ".tool_calls[].function.arguments must be a JSON string");
                }
            }
        }
    }
    if (const json *v = given(req, "stream"); v != nullptr && !v->is_boolean()) {
        invalid("\"stream\" must be a boolean");
    }
    if (const json *v = given(req, "stream_options"); v != nullptr) {
        const json *usage = given(*v, "include_usage");
        if (!v->is_object() || (usage != nullptr && !usage->is_boolean())) {
            invalid("\"stream_options\" must be an object like {\"include_usage\": true}");
        }
    }
    positive_integer(req, "max_tokens");
    positive_integer(req, "max_completion_tokens");
    positive_integer(req, "n");
    for (const char *key : {"temperature", "top_p", "presence_penalty", "frequency_penalty"}) {
        check_number(req, key);
    }
    if (const json *v = given(req, "seed"); v != nullptr && !v->is_number_integer()) {
        invalid("\"seed\" must be an integer");
    }
    stops(req);
    if (const json *v = given(req, "tools"); v != nullptr && !v->is_array()) {
        invalid("\"tools\" must be an array");
    }
}

}  // namespace

void validate(const json &request) {
    check(request);
}

std::optional<long long> max_tokens(const json &req) {
    if (auto v = positive_integer(req, "max_completion_tokens"))
        return v;
    return positive_integer(req, "max_tokens");
}

json stop_sequences(const json &request) {
    return stops(request);
}

bool streaming(const json &req) {
    const json *v = given(req, "stream");
    return v != nullptr && v->is_boolean() && v->get<bool>();
}

bool stream_usage_asked(const json &req) {
    const json *options = given(req, "stream_options");
    const json *asked = options != nullptr ? given(*options, "include_usage") : nullptr;
    return asked != nullptr && asked->is_boolean() && asked->get<bool>();
}

std::optional<ToolChoice> tool_choice(const json &req) {
    const json *v = given(req, "tool_choice");
    if (v == nullptr)
        return std::nullopt;
    if (v->is_string()) {
        const std::string &mode = v->get_ref<const std::string &>();
        if (mode == "auto" || mode == "none" || mode == "required")
            return ToolChoice{mode, {}};
    } else if (const json *fn = member(*v, "function")) {
        std::string name = detail::string_member(*fn, "name");
        if (!name.empty())
            return ToolChoice{"function", name};
    }
    invalid(
        "\"tool_choice\" must be \"auto\", \"none\", \"required\" or "
        "{\"type\":\"function\",\"function\":{\"name\":...}}");
}

// Arguments arrive as a JSON string; the other protocols want the object itself.
json tool_arguments(const json &call, std::size_t i) {
    const json *args = given(call["function"], "arguments");
    if (args == nullptr || args->get_ref<const std::string &>().empty())
        return json::object();
    json parsed = json::parse(args->get_ref<const std::string &>(), nullptr, false);
    if (!parsed.is_object()) {
        invalid(where(i) + ": tool call \"" + call["id"].get<std::string>() +
                "\" has arguments that are not a JSON object");
    }
    return parsed;
}

json completion(std::string id, std::string model, std::string text, json tool_calls,
                const char *finish_reason, const translate::Usage &usage) {
    json message = {{"role", "assistant"}};
    // OpenAI gives null content, not "", when the reply is only tool calls.
    message["content"] = text.empty() && !tool_calls.empty() ? json() : json(std::move(text));
    if (!tool_calls.empty())
        message["tool_calls"] = std::move(tool_calls);
    json choice = {{"index", 0},
                   {"message", std::move(message)},
                   {"finish_reason", finish_reason},
                   {"logprobs", nullptr}};
    return {{"id", std::move(id)},
            {"object", "chat.completion"},
            {"created", static_cast<long long>(std::time(nullptr))},
            {"model", std::move(model)},
            {"choices", json::array({std::move(choice)})},
            {"usage", detail::usage_json(usage)}};
}

}  // namespace pgi::protocols::openai_chat::rules
