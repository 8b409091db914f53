#include "translate_chat.h"

#include <algorithm>
#include <ctime>
#include <map>
#include <optional>

#include "translate_util.h"

namespace pgi::translate {

namespace {

using detail::given;
using detail::member;
using nlohmann::json;

constexpr const char *kRequestHint = detail::kOpenAiChatRequestHint;

[[noreturn]] void invalid(const std::string &message, const std::string &hint = kRequestHint) {
    throw Error(sqlstate::kInvalidParameterValue, message, hint);
}

[[noreturn]] void unsupported(const ServiceEndpoint &s, const std::string &what) {
    throw Error(sqlstate::kFeatureNotSupported, "service \"" + s.name + "\" cannot take " + what,
                std::string("The ") + protocol_name(s.protocol) +
                    " protocol has no counterpart for it; an OPENAI_V1 service passes it through.");
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
json stop_sequences(const json &req) {
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
void validate(const json &req) {
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
    stop_sequences(req);
    if (const json *v = given(req, "tools"); v != nullptr && !v->is_array()) {
        invalid("\"tools\" must be an array");
    }
}

std::optional<long long> max_tokens(const json &req) {
    if (auto v = positive_integer(req, "max_completion_tokens"))
        return v;
    return positive_integer(req, "max_tokens");
}

bool streaming(const json &req) {
    const json *v = given(req, "stream");
    return v != nullptr && v->get<bool>();
}

bool stream_usage_asked(const json &req) {
    const json *options = given(req, "stream_options");
    const json *asked = options != nullptr ? given(*options, "include_usage") : nullptr;
    return asked != nullptr && asked->get<bool>();
}

// ---- pieces shared by the Anthropic and Gemini builders ----

// The text of a message's content; parts are pieces of one message, so they join with nothing.
std::string text_of(const ServiceEndpoint &s, const json *content) {
    if (content == nullptr)
        return {};
    if (content->is_string())
        return content->get<std::string>();
    std::string text;
    for (const json &part : *content) {
        const std::string &type = part["type"].get_ref<const std::string &>();
        if (type != "text")
            unsupported(s, "content parts of type \"" + type + "\"");
        text += detail::string_member(part, "text");
    }
    return text;
}

// Arguments arrive as a JSON string; Anthropic and Gemini want the object itself.
json arguments_object(const json &call, std::size_t i) {
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

struct FunctionTool {
    const json *name;
    const json *description;
    const json *parameters;
};

std::vector<FunctionTool> function_tools(const ServiceEndpoint &s, const json &req) {
    std::vector<FunctionTool> tools;
    const json *list = given(req, "tools");
    if (list == nullptr)
        return tools;
    for (const json &tool : *list) {
        std::string type = detail::string_member(tool, "type");
        if (type != "function")
            unsupported(s, "tools of type \"" + type + "\"");
        const json *fn = member(tool, "function");
        if (fn == nullptr || detail::string_member(*fn, "name").empty()) {
            invalid("every entry of \"tools\" needs function.name");
        }
        tools.push_back({&(*fn)["name"], given(*fn, "description"), given(*fn, "parameters")});
    }
    return tools;
}

using ToolChoice = detail::OpenAiToolChoice;

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

// Appends a turn, merging it into the previous one when the role repeats: tool results that
// follow each other must reach Anthropic as one user turn, and Gemini wants roles alternating.
void append_turn(json &turns, const char *role, const char *content_key, json content) {
    if (!turns.empty() && turns.back()["role"] == role) {
        json &previous = turns.back()[content_key];
        if (previous.is_string())
            previous = json::array({{{"type", "text"}, {"text", previous}}});
        if (content.is_string()) {
            if (!content.get_ref<const std::string &>().empty()) {
                previous.push_back({{"type", "text"}, {"text", std::move(content)}});
            }
        } else {
            for (json &block : content)
                previous.push_back(std::move(block));
        }
        return;
    }
    turns.push_back({{"role", role}, {content_key, std::move(content)}});
}

// Both Anthropic and Gemini take the system text apart from the turns: system and developer
// messages join into it, in order, and every other message goes to `turn` as (index, message,
// role, content or nullptr).
template <typename Turn>
std::string split_system(const ServiceEndpoint &s, const json &messages, Turn turn) {
    std::string system;
    for (std::size_t i = 0; i < messages.size(); ++i) {
        const json &m = messages[i];
        const std::string &role = m["role"].get_ref<const std::string &>();
        const json *content = given(m, "content");
        if (role == "system" || role == "developer") {
            if (!system.empty())
                system += "\n\n";
            system += text_of(s, content);
        } else {
            turn(i, m, role, content);
        }
    }
    return system;
}

// ---- Anthropic Messages ----

json anthropic_content(const ServiceEndpoint &s, const json &content) {
    if (content.is_string())
        return content;
    json blocks = json::array();
    for (const json &part : content) {
        const std::string &type = part["type"].get_ref<const std::string &>();
        if (type != "text")
            unsupported(s, "content parts of type \"" + type + "\"");
        blocks.push_back({{"type", "text"}, {"text", detail::string_member(part, "text")}});
    }
    return blocks;
}

std::string anthropic_body(const ServiceEndpoint &s, const json &req, const ChatDefaults &d,
                           bool stream) {
    json turns = json::array();
    std::string system = split_system(
        s, req["messages"],
        [&](std::size_t i, const json &m, const std::string &role, const json *content) {
            if (role == "user") {
                append_turn(turns, "user", "content", anthropic_content(s, *content));
            } else if (role == "assistant") {
                const json *calls = given(m, "tool_calls");
                if (calls == nullptr || calls->empty()) {
                    if (content != nullptr) {
                        append_turn(turns, "assistant", "content", anthropic_content(s, *content));
                    }
                    return;
                }
                json blocks = json::array();
                std::string text = text_of(s, content);
                if (!text.empty())
                    blocks.push_back({{"type", "text"}, {"text", std::move(text)}});
                for (const json &call : *calls) {
                    if (!is_function_call(call))
                        unsupported(s, "tool calls that are not functions");
                    blocks.push_back({{"type", "tool_use"},
                                      {"id", call["id"]},
                                      {"name", call["function"]["name"]},
                                      {"input", arguments_object(call, i)}});
                }
                append_turn(turns, "assistant", "content", std::move(blocks));
            } else {  // tool
                json result = {{"type", "tool_result"},
                               {"tool_use_id", m["tool_call_id"]},
                               {"content", text_of(s, content)}};
                append_turn(turns, "user", "content", json::array({std::move(result)}));
            }
        });
    if (turns.empty())
        invalid("the chat request has no user or assistant message");

    json body = {{"model", s.model}, {"messages", std::move(turns)}};
    if (!system.empty())
        body["system"] = std::move(system);
    body["max_tokens"] = max_tokens(req).value_or(d.default_max_tokens);
    if (const json *t = given(req, "temperature")) {
        // OpenAI's range is 0-2, Anthropic's 0-1: the top of one is the top of the other.
        body["temperature"] = std::min(t->get<double>(), 1.0);
    }
    if (const json *p = given(req, "top_p"))
        body["top_p"] = *p;
    if (json stop = stop_sequences(req); !stop.is_null())
        body["stop_sequences"] = std::move(stop);
    if (auto n = positive_integer(req, "n"); n && *n > 1)
        unsupported(s, "\"n\" greater than 1");

    std::vector<FunctionTool> tools = function_tools(s, req);
    if (!tools.empty()) {
        json list = json::array();
        for (const FunctionTool &t : tools) {
            json tool = {{"name", *t.name}};
            if (t.description != nullptr)
                tool["description"] = *t.description;
            // Anthropic requires a schema; a function without parameters takes none.
            tool["input_schema"] = t.parameters != nullptr
                                       ? *t.parameters
                                       : json{{"type", "object"}, {"properties", json::object()}};
            list.push_back(std::move(tool));
        }
        body["tools"] = std::move(list);
        json choice = {{"type", "auto"}};
        if (auto c = tool_choice(req)) {
            if (c->mode == "none") {
                choice = {{"type", "none"}};
            } else if (c->mode == "required") {
                choice = {{"type", "any"}};
            } else if (c->mode == "function") {
                choice = {{"type", "tool"}, {"name", c->function}};
            }
        }
        const json *parallel = given(req, "parallel_tool_calls");
        if (parallel != nullptr && parallel->is_boolean() && !parallel->get<bool>() &&
            choice["type"] != "none") {
            choice["disable_parallel_tool_use"] = true;
        }
        if (given(req, "tool_choice") != nullptr || choice.size() > 1) {
            body["tool_choice"] = std::move(choice);
        }
    }
    if (stream)
        body["stream"] = true;
    return detail::serialise(body);
}

// ---- Gemini generateContent ----

json gemini_parts(const ServiceEndpoint &s, const json &content) {
    if (content.is_string())
        return json::array({{{"text", content}}});
    json parts = json::array();
    for (const json &part : content) {
        const std::string &type = part["type"].get_ref<const std::string &>();
        if (type != "text")
            unsupported(s, "content parts of type \"" + type + "\"");
        parts.push_back({{"text", detail::string_member(part, "text")}});
    }
    return parts;
}

// Gemini parts merge without the text-block wrapping Anthropic needs.
void append_gemini_turn(json &contents, const char *role, json parts) {
    if (!contents.empty() && contents.back()["role"] == role) {
        for (json &part : parts)
            contents.back()["parts"].push_back(std::move(part));
        return;
    }
    contents.push_back({{"role", role}, {"parts", std::move(parts)}});
}

std::string gemini_body(const ServiceEndpoint &s, const json &req) {
    json contents = json::array();
    // Gemini answers a function call by name, OpenAI by call id: remember which is which. A later
    // call with the same id (generated ids restart every response) replaces the earlier one.
    std::map<std::string, std::string> call_names;
    std::string system = split_system(
        s, req["messages"],
        [&](std::size_t i, const json &m, const std::string &role, const json *content) {
            if (role == "user") {
                append_gemini_turn(contents, "user", gemini_parts(s, *content));
            } else if (role == "assistant") {
                json parts = json::array();
                std::string text = text_of(s, content);
                if (!text.empty())
                    parts.push_back({{"text", std::move(text)}});
                if (const json *calls = given(m, "tool_calls")) {
                    for (const json &call : *calls) {
                        if (!is_function_call(call))
                            unsupported(s, "tool calls that are not functions");
                        const std::string &name =
                            call["function"]["name"].get_ref<const std::string &>();
                        call_names[call["id"].get<std::string>()] = name;
                        json part = {{"functionCall",
                                      {{"name", name}, {"args", arguments_object(call, i)}}}};
                        // Gemini refuses a replayed function call without the signature it issued;
                        // chat_response hands it out where Google's own OpenAI layer does.
                        const json *extra = given(call, "extra_content");
                        const json *google = extra ? given(*extra, "google") : nullptr;
                        const json *signature =
                            google ? given(*google, "thought_signature") : nullptr;
                        if (signature != nullptr && signature->is_string()) {
                            part["thoughtSignature"] = *signature;
                        }
                        parts.push_back(std::move(part));
                    }
                }
                if (!parts.empty())
                    append_gemini_turn(contents, "model", std::move(parts));
            } else {  // tool
                const std::string &id = m["tool_call_id"].get_ref<const std::string &>();
                auto name = call_names.find(id);
                if (name == call_names.end()) {
                    invalid(where(i) + " answers tool_call_id \"" + id +
                                "\", which no earlier assistant message called",
                            "Each tool message must follow the assistant message whose tool_calls "
                            "include its tool_call_id.");
                }
                std::string text = text_of(s, content);
                json response = json::parse(text, nullptr, false);
                if (!response.is_object())
                    response = {{"content", std::move(text)}};
                json part = {{"functionResponse",
                              {{"name", name->second}, {"response", std::move(response)}}}};
                append_gemini_turn(contents, "user", json::array({std::move(part)}));
            }
        });
    if (contents.empty())
        invalid("the chat request has no user or assistant message");

    json body = {{"contents", std::move(contents)}};
    if (!system.empty())
        body["systemInstruction"] = {{"parts", {{{"text", std::move(system)}}}}};

    json config = json::object();
    if (auto n = max_tokens(req))
        config["maxOutputTokens"] = *n;
    if (const json *v = given(req, "temperature"))
        config["temperature"] = *v;
    if (const json *v = given(req, "top_p"))
        config["topP"] = *v;
    if (json stop = stop_sequences(req); !stop.is_null())
        config["stopSequences"] = std::move(stop);
    if (auto n = positive_integer(req, "n"))
        config["candidateCount"] = *n;
    if (const json *v = given(req, "seed"))
        config["seed"] = *v;
    if (const json *v = given(req, "presence_penalty"))
        config["presencePenalty"] = *v;
    if (const json *v = given(req, "frequency_penalty"))
        config["frequencyPenalty"] = *v;
    if (const json *format = given(req, "response_format")) {
        std::string type = detail::string_member(*format, "type");
        if (type == "json_object" || type == "json_schema") {
            config["responseMimeType"] = "application/json";
        }
        const json *spec = given(*format, "json_schema");
        const json *schema = spec ? given(*spec, "schema") : nullptr;
        if (type == "json_schema" && schema != nullptr)
            config["responseJsonSchema"] = *schema;
    }
    if (!config.empty())
        body["generationConfig"] = std::move(config);

    std::vector<FunctionTool> tools = function_tools(s, req);
    if (!tools.empty()) {
        json declarations = json::array();
        for (const FunctionTool &t : tools) {
            json fn = {{"name", *t.name}};
            if (t.description != nullptr)
                fn["description"] = *t.description;
            if (t.parameters != nullptr)
                fn["parameters"] = *t.parameters;
            declarations.push_back(std::move(fn));
        }
        body["tools"] = json::array({{{"functionDeclarations", std::move(declarations)}}});
        if (auto c = tool_choice(req)) {
            json calling;
            if (c->mode == "auto") {
                calling = {{"mode", "AUTO"}};
            } else if (c->mode == "none") {
                calling = {{"mode", "NONE"}};
            } else if (c->mode == "required") {
                calling = {{"mode", "ANY"}};
            } else {
                calling = {{"mode", "ANY"}, {"allowedFunctionNames", {c->function}}};
            }
            body["toolConfig"] = {{"functionCallingConfig", std::move(calling)}};
        }
    }
    return detail::serialise(body);
}

std::string gemini_model_path(const ServiceEndpoint &s) {
    return "/v1beta/models/" + std::string(detail::gemini_model(s));
}

// ---- responses ----

json message_json(std::string text, json tool_calls) {
    json message = {{"role", "assistant"}};
    // OpenAI gives null content, not "", when the reply is only tool calls.
    message["content"] = text.empty() && !tool_calls.empty() ? json() : json(std::move(text));
    if (!tool_calls.empty())
        message["tool_calls"] = std::move(tool_calls);
    return message;
}

json choice_json(json index, json message, const char *finish_reason) {
    return {{"index", std::move(index)},
            {"message", std::move(message)},
            {"finish_reason", finish_reason},
            {"logprobs", nullptr}};
}

json completion_json(std::string id, std::string model, json choices, const Usage &usage) {
    return {{"id", std::move(id)},
            {"object", "chat.completion"},
            {"created", static_cast<long long>(std::time(nullptr))},
            {"model", std::move(model)},
            {"choices", std::move(choices)},
            {"usage", detail::usage_json(usage)}};
}

std::string or_default(std::string value, const std::string &fallback) {
    return value.empty() ? fallback : value;
}

json openai_response(const ServiceEndpoint &s, std::string_view body) {
    json j = detail::parse_upstream_body(s, body, "chat");
    const json *choices = member(j, "choices");
    if (choices == nullptr || !choices->is_array()) {
        detail::bad_response(s, "chat", "the body has no \"choices\" array");
    }
    return j;
}

json anthropic_response(const ServiceEndpoint &s, std::string_view body) {
    json j = detail::parse_upstream_body(s, body, "chat");
    const json *content = member(j, "content");
    if (content == nullptr || !content->is_array()) {
        detail::bad_response(s, "chat", "the body has no \"content\" array");
    }
    std::string text;
    json tool_calls = json::array();
    for (const json &block : *content) {
        std::string type = detail::string_member(block, "type");
        if (type == "text") {
            text += detail::string_member(block, "text");
        } else if (type == "tool_use") {
            const json *input = member(block, "input");
            tool_calls.push_back(
                {{"id", detail::string_member(block, "id")},
                 {"type", "function"},
                 {"function",
                  {{"name", detail::string_member(block, "name")},
                   {"arguments", input != nullptr ? input->dump() : std::string("{}")}}}});
        }
        // thinking and server-tool blocks have no place in an OpenAI message.
    }
    const json *stop = member(j, "stop_reason");
    json choices = json::array(
        {choice_json(0, message_json(std::move(text), std::move(tool_calls)),
                     detail::anthropic_finish_reason(stop != nullptr ? *stop : json()))});
    const json *usage = member(j, "usage");
    return completion_json(or_default(detail::string_member(j, "id"), detail::completion_id()),
                           or_default(detail::string_member(j, "model"), s.model),
                           std::move(choices),
                           detail::usage_from_anthropic(usage != nullptr ? *usage : json()));
}

json gemini_response(const ServiceEndpoint &s, std::string_view body) {
    json j = detail::parse_upstream_body(s, body, "chat");
    if (!j.is_object())
        detail::bad_response(s, "chat", "the body is not a JSON object");
    json choices = json::array();
    int next_call = 0;
    const json *candidates = member(j, "candidates");
    if (candidates != nullptr && candidates->is_array()) {
        for (std::size_t pos = 0; pos < candidates->size(); ++pos) {
            const json &c = (*candidates)[pos];
            std::string text;
            json tool_calls = json::array();
            const json *content = member(c, "content");
            const json *parts = content != nullptr ? member(*content, "parts") : nullptr;
            if (parts != nullptr && parts->is_array()) {
                for (const json &part : *parts) {
                    const json *thought = member(part, "thought");
                    if (thought != nullptr && thought->is_boolean() && thought->get<bool>())
                        continue;
                    if (const json *t = member(part, "text"); t != nullptr && t->is_string()) {
                        text += t->get_ref<const std::string &>();
                    }
                    if (const json *call = member(part, "functionCall")) {
                        tool_calls.push_back(detail::gemini_tool_call(*call, part, next_call++));
                    }
                }
            }
            const json *index = member(c, "index");
            const json *reason = member(c, "finishReason");
            bool has_calls = !tool_calls.empty();
            choices.push_back(choice_json(
                index != nullptr && index->is_number_integer() ? *index : json(pos),
                message_json(std::move(text), std::move(tool_calls)),
                detail::gemini_finish_reason(reason != nullptr ? *reason : json(), has_calls)));
        }
    }
    if (choices.empty()) {
        // A prompt Gemini blocks outright gets no candidate at all, only promptFeedback.
        const json *feedback = member(j, "promptFeedback");
        if (feedback == nullptr || member(*feedback, "blockReason") == nullptr) {
            detail::bad_response(s, "chat", "the body has no candidates");
        }
        choices.push_back(choice_json(0, message_json({}, json::array()), "content_filter"));
    }
    const json *usage = member(j, "usageMetadata");
    return completion_json(
        or_default(detail::string_member(j, "responseId"), detail::completion_id()),
        or_default(detail::string_member(j, "modelVersion"), s.model), std::move(choices),
        detail::usage_from_gemini(usage != nullptr ? *usage : json()));
}

}  // namespace

namespace detail {

void validate_openai_chat(const json &request) {
    validate(request);
}

std::optional<long long> openai_max_tokens(const json &request) {
    return max_tokens(request);
}

json openai_stop_sequences(const json &request) {
    return stop_sequences(request);
}

std::optional<OpenAiToolChoice> openai_tool_choice(const json &request) {
    return tool_choice(request);
}

json openai_chat_completion(std::string id, std::string model, std::string text, json tool_calls,
                            const char *finish_reason, const Usage &usage) {
    json choices = json::array(
        {choice_json(0, message_json(std::move(text), std::move(tool_calls)), finish_reason)});
    return completion_json(std::move(id), std::move(model), std::move(choices), usage);
}

json openai_tool_arguments(const json &call, std::size_t message_index) {
    return arguments_object(call, message_index);
}

bool openai_stream_usage_asked(const json &request) {
    return stream_usage_asked(request);
}

}  // namespace detail

ChatCall chat_request(const ServiceEndpoint &s, json req, const ChatDefaults &defaults,
                      std::string_view raw) {
    validate(req);
    ChatCall call;
    call.stream = streaming(req);
    switch (s.protocol) {
        case Protocol::kOpenAiV1: {
            if (call.stream)
                call.caller_wants_usage = stream_usage_asked(req);
            // The caller's bytes with the model set: serialising the document again would cost
            // as much as parsing it. A caller's own stream_options is edited in the document.
            std::optional<std::string> body;
            if (!raw.empty() && (!call.stream || given(req, "stream_options") == nullptr)) {
                std::string model;
                detail::append_json_string(model, s.model);
                const detail::MemberEdit edits[] = {{"model", model},
                                                    {"stream_options", "{\"include_usage\":true}"}};
                body = detail::with_members(raw, edits, call.stream ? 2 : 1);
            }
            if (!body) {
                req["model"] = s.model;
                if (call.stream) {
                    json &options = req["stream_options"];
                    if (!options.is_object())
                        options = json::object();
                    options["include_usage"] = true;
                }
                body = detail::serialise(req);
            }
            call.request =
                detail::post_json(s, "/v1/chat/completions", call.stream, std::move(*body));
            break;
        }
        case Protocol::kAnthropicV1:
            call.caller_wants_usage = stream_usage_asked(req);
            call.request = detail::post_json(s, "/v1/messages", call.stream,
                                             anthropic_body(s, req, defaults, call.stream));
            break;
        case Protocol::kGeminiV1Beta:
            call.caller_wants_usage = stream_usage_asked(req);
            call.request = detail::post_json(
                s,
                gemini_model_path(s) +
                    (call.stream ? ":streamGenerateContent?alt=sse" : ":generateContent"),
                call.stream, gemini_body(s, req));
            break;
    }
    return call;
}

json chat_response(const ServiceEndpoint &s, std::string_view body) {
    switch (s.protocol) {
        case Protocol::kAnthropicV1:
            return anthropic_response(s, body);
        case Protocol::kGeminiV1Beta:
            return gemini_response(s, body);
        case Protocol::kOpenAiV1:
            break;
    }
    return openai_response(s, body);
}

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
