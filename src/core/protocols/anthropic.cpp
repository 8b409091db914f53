#include "anthropic.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <map>
#include <optional>

#include "redact.h"
#include "saturating.h"
#include "translate_util.h"

namespace pgi::protocols::anthropic {

namespace {

using nlohmann::json;
using translate::Usage;
using translate::detail::append_json_string;
using translate::detail::member;
using translate::detail::string_member;

constexpr const char *kRequestHint =
    "An Anthropic Messages request looks like {\"model\":\"...\",\"max_tokens\":1024,"
    "\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}]}.";
constexpr const char *kBlockHint =
    "Content blocks are objects like {\"type\":\"text\",\"text\":\"...\"}; the types are text, "
    "image, tool_use and tool_result.";

// Anthropic block indexes are small; a larger one is a broken upstream, not a reason to allocate
// without bound.
constexpr std::size_t kMaxBlocks = 4096;

[[noreturn]] void invalid(const std::string &message, const std::string &hint = kRequestHint) {
    throw Error(sqlstate::kInvalidParameterValue, message, hint);
}

// A known Anthropic feature the internal form has no place for: only a request forwarded to an
// Anthropic service unchanged can keep it.
[[noreturn]] void not_carried(const std::string &what) {
    throw Error(sqlstate::kFeatureNotSupported,
                what + " cannot be translated for a service of another protocol",
                "Send the request to an ANTHROPIC_V1 service, which receives it unchanged, or "
                "leave this part out.");
}

// A part of the form the Anthropic protocol cannot express.
[[noreturn]] void unsupported(const ServiceEndpoint &s, const std::string &what,
                              const std::string &hint = {}) {
    throw Error(sqlstate::kFeatureNotSupported, "service \"" + s.name + "\" cannot take " + what,
                hint.empty() ? std::string("The ANTHROPIC_V1 protocol has no counterpart for it; "
                                           "a service of another protocol may take it.")
                             : hint);
}

// A member that is present and not null.
const json *given(const json &object, const char *key) {
    const json *v = member(object, key);
    return v == nullptr || v->is_null() ? nullptr : v;
}

std::optional<long long> integer(const json &object, const char *key, long long min,
                                 const char *what) {
    const json *v = given(object, key);
    if (v == nullptr)
        return std::nullopt;
    if (!v->is_number_integer() ||
        (v->is_number_unsigned() && v->get<unsigned long long>() > LLONG_MAX) ||
        v->get<long long>() < min) {
        invalid(std::string("\"") + key + "\" must be " + what);
    }
    return v->get<long long>();
}

std::optional<double> number(const json &object, const char *key) {
    const json *v = given(object, key);
    if (v == nullptr)
        return std::nullopt;
    if (!v->is_number())
        invalid(std::string("\"") + key + "\" must be a number");
    return v->get<double>();
}

const std::string &required_string(const json &object, const char *key, const std::string &where) {
    const json *v = given(object, key);
    if (v == nullptr || !v->is_string() || v->get_ref<const std::string &>().empty())
        invalid(where + " needs a non-empty string \"" + key + "\"", kBlockHint);
    return v->get_ref<const std::string &>();
}

// A fresh "msg_<24 random alphanumerics>", for answers whose upstream gave no id.
std::string message_id() {
    static constexpr std::size_t kPrefix = sizeof("chatcmpl-") - 1;
    return "msg_" + translate::detail::completion_id().substr(kPrefix);
}

// ---- reading a request ----

bool is_server_block(const std::string &type) {
    static constexpr std::string_view kSuffix = "_tool_result";
    return type == "server_tool_use" || type == "mcp_tool_use" || type == "document" ||
           type == "search_result" || type == "container_upload" ||
           (type.size() > kSuffix.size() &&
            type.compare(type.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0 &&
            type != "tool_result");
}

std::string block_type(const json &block, const std::string &where) {
    const json *type = member(block, "type");
    if (!block.is_object() || type == nullptr || !type->is_string())
        invalid(where + " must be an object with a \"type\"", kBlockHint);
    return type->get<std::string>();
}

std::string image_url(const json &block, const std::string &where) {
    const json *source = given(block, "source");
    if (source == nullptr || !source->is_object())
        invalid(where + " (image) needs a \"source\" object", kBlockHint);
    std::string type = string_member(*source, "type");
    if (type == "base64") {
        return "data:" + required_string(*source, "media_type", where + ".source") + ";base64," +
               required_string(*source, "data", where + ".source");
    }
    if (type == "url")
        return required_string(*source, "url", where + ".source");
    if (type == "file")
        not_carried("an image given by file_id");
    invalid(where + ".source.type must be \"base64\" or \"url\"", kBlockHint);
}

// A tool result's content: a string, or text blocks (joined as paragraphs).
std::string tool_result_text(const json &block, const std::string &where) {
    const json *content = given(block, "content");
    if (content == nullptr)
        return {};
    if (content->is_string())
        return content->get<std::string>();
    if (!content->is_array())
        invalid(where + ".content must be a string or an array of text blocks", kBlockHint);
    std::string text;
    for (std::size_t i = 0; i < content->size(); ++i) {
        const json &part = (*content)[i];
        std::string at = where + ".content[" + std::to_string(i) + "]";
        std::string type = block_type(part, at);
        if (type == "image" || is_server_block(type))
            not_carried("a tool_result holding " + type + " blocks");
        if (type != "text")
            invalid(at + " has an unknown type \"" + type + "\"", kBlockHint);
        const json *t = given(part, "text");
        if (t == nullptr || !t->is_string())
            invalid(at + ".text must be a string", kBlockHint);
        if (!text.empty())
            text += "\n\n";
        text += t->get_ref<const std::string &>();
    }
    return text;
}

// One content block as the form's, or nullopt for a block the form leaves out.
std::optional<chat::Block> read_block(const json &block, const std::string &where, chat::Role role,
                                      std::map<std::string, std::string> &tool_names) {
    std::string type = block_type(block, where);
    chat::Block b;
    if (type == "text") {
        const json *text = given(block, "text");
        if (text == nullptr || !text->is_string())
            invalid(where + ".text must be a string", kBlockHint);
        b.kind = chat::Block::Kind::kText;
        b.text = text->get<std::string>();
    } else if (type == "image") {
        b.kind = chat::Block::Kind::kImage;
        b.image_url = image_url(block, where);
    } else if (type == "tool_use") {
        if (role != chat::Role::kAssistant)
            invalid(where + ": tool_use blocks belong in assistant turns", kBlockHint);
        b.kind = chat::Block::Kind::kToolUse;
        b.tool_id = required_string(block, "id", where);
        b.tool_name = required_string(block, "name", where);
        if (const json *input = given(block, "input")) {
            if (!input->is_object())
                invalid(where + ".input must be a JSON object", kBlockHint);
            b.input = *input;
        }
        tool_names[b.tool_id] = b.tool_name;
    } else if (type == "tool_result") {
        if (role != chat::Role::kUser)
            invalid(where + ": tool_result blocks belong in user turns", kBlockHint);
        b.kind = chat::Block::Kind::kToolResult;
        b.tool_id = required_string(block, "tool_use_id", where);
        // Gemini answers a call by name: the name of the call this result answers, if known.
        if (auto name = tool_names.find(b.tool_id); name != tool_names.end())
            b.tool_name = name->second;
        b.text = tool_result_text(block, where);
        if (const json *e = given(block, "is_error")) {
            if (!e->is_boolean())
                invalid(where + ".is_error must be a boolean", kBlockHint);
            b.is_error = e->get<bool>();
        }
    } else if (type == "thinking" || type == "redacted_thinking") {
        // The model's own earlier reasoning, signed for Anthropic alone: another provider can
        // neither check nor use it.
        return std::nullopt;
    } else if (is_server_block(type)) {
        not_carried("content blocks of type \"" + type + "\"");
    } else {
        invalid(where + " has an unknown type \"" + type + "\"", kBlockHint);
    }
    return b;
}

std::string read_system(const json &body) {
    const json *system = given(body, "system");
    if (system == nullptr)
        return {};
    if (system->is_string())
        return system->get<std::string>();
    if (!system->is_array())
        invalid("\"system\" must be a string or an array of text blocks");
    // Blocks are separate pieces of the instructions: kept apart as paragraphs.
    std::string text;
    for (std::size_t i = 0; i < system->size(); ++i) {
        const json &block = (*system)[i];
        std::string where = "system[" + std::to_string(i) + "]";
        if (block_type(block, where) != "text")
            invalid(where + " must be a text block", kBlockHint);
        const json *t = given(block, "text");
        if (t == nullptr || !t->is_string())
            invalid(where + ".text must be a string", kBlockHint);
        if (t->get_ref<const std::string &>().empty())
            continue;
        if (!text.empty())
            text += "\n\n";
        text += t->get_ref<const std::string &>();
    }
    return text;
}

std::vector<chat::Message> read_messages(const json &body) {
    const json *messages = given(body, "messages");
    if (messages == nullptr)
        invalid("the Messages request has no \"messages\"");
    if (!messages->is_array() || messages->empty())
        invalid("\"messages\" must be a non-empty array");
    std::vector<chat::Message> out;
    out.reserve(messages->size());
    std::map<std::string, std::string> tool_names;
    for (std::size_t i = 0; i < messages->size(); ++i) {
        const json &m = (*messages)[i];
        std::string where = "messages[" + std::to_string(i) + "]";
        if (!m.is_object())
            invalid(where + " must be an object with \"role\" and \"content\"");
        std::string role = string_member(m, "role");
        chat::Message message;
        if (role == "user") {
            message.role = chat::Role::kUser;
        } else if (role == "assistant") {
            message.role = chat::Role::kAssistant;
        } else {
            invalid(where + ".role must be \"user\" or \"assistant\"",
                    "System text goes in the top-level \"system\", not in a message.");
        }
        const json *content = given(m, "content");
        if (content != nullptr && content->is_string()) {
            chat::Block text;
            text.text = content->get<std::string>();
            message.content.push_back(std::move(text));
        } else if (content != nullptr && content->is_array()) {
            for (std::size_t k = 0; k < content->size(); ++k) {
                std::string at = where + ".content[" + std::to_string(k) + "]";
                if (auto b = read_block((*content)[k], at, message.role, tool_names))
                    message.content.push_back(std::move(*b));
            }
        } else {
            invalid(where + ".content must be a string or an array of content blocks");
        }
        out.push_back(std::move(message));
    }
    return out;
}

std::vector<chat::Tool> read_tools(const json &body) {
    std::vector<chat::Tool> tools;
    const json *list = given(body, "tools");
    if (list == nullptr)
        return tools;
    if (!list->is_array())
        invalid("\"tools\" must be an array");
    static constexpr const char *kToolHint =
        "A tool looks like {\"name\":\"get_weather\",\"description\":\"...\","
        "\"input_schema\":{\"type\":\"object\",\"properties\":{}}}.";
    for (std::size_t i = 0; i < list->size(); ++i) {
        const json &t = (*list)[i];
        std::string where = "tools[" + std::to_string(i) + "]";
        if (!t.is_object())
            invalid(where + " must be an object", kToolHint);
        // Anthropic's own tools (web search, bash, computer use) run at Anthropic.
        if (const json *type = given(t, "type"); type != nullptr && *type != "custom") {
            not_carried("tools of type " + type->dump());
        }
        chat::Tool tool;
        const json *name = given(t, "name");
        if (name == nullptr || !name->is_string() || name->get_ref<const std::string &>().empty())
            invalid(where + " needs a non-empty string \"name\"", kToolHint);
        tool.name = name->get<std::string>();
        if (const json *d = given(t, "description")) {
            if (!d->is_string())
                invalid(where + ".description must be a string", kToolHint);
            tool.description = d->get<std::string>();
        }
        const json *schema = given(t, "input_schema");
        if (schema == nullptr || !schema->is_object())
            invalid(where + " needs an \"input_schema\" object (a JSON Schema)", kToolHint);
        tool.parameters = *schema;
        tools.push_back(std::move(tool));
    }
    return tools;
}

std::optional<chat::ToolChoice> read_tool_choice(const json &body) {
    const json *v = given(body, "tool_choice");
    if (v == nullptr)
        return std::nullopt;
    std::string type = v->is_object() ? string_member(*v, "type") : std::string();
    chat::ToolChoice choice;
    if (type == "auto") {
        choice.mode = chat::ToolChoice::Mode::kAuto;
    } else if (type == "any") {
        choice.mode = chat::ToolChoice::Mode::kRequired;
    } else if (type == "none") {
        choice.mode = chat::ToolChoice::Mode::kNone;
    } else if (type == "tool" && !string_member(*v, "name").empty()) {
        choice.mode = chat::ToolChoice::Mode::kNamed;
        choice.name = string_member(*v, "name");
    } else {
        invalid(
            "\"tool_choice\" must be {\"type\":\"auto\"}, {\"type\":\"any\"}, "
            "{\"type\":\"none\"} or {\"type\":\"tool\",\"name\":...}");
    }
    return choice;
}

std::vector<std::string> read_stop(const json &body) {
    std::vector<std::string> stop;
    const json *v = given(body, "stop_sequences");
    if (v == nullptr)
        return stop;
    if (!v->is_array() ||
        !std::all_of(v->begin(), v->end(), [](const json &s) { return s.is_string(); })) {
        invalid("\"stop_sequences\" must be an array of strings");
    }
    for (const json &s : *v)
        stop.push_back(s.get<std::string>());
    return stop;
}

// output_config.format, or the beta's top-level output_format: {type:"json_schema", schema}.
chat::OutputFormat read_format(const json &body) {
    chat::OutputFormat format;
    const json *spec = nullptr;
    const char *where = "output_config.format";
    if (const json *config = given(body, "output_config")) {
        if (!config->is_object())
            invalid("\"output_config\" must be an object");
        spec = given(*config, "format");
    }
    if (spec == nullptr) {
        spec = given(body, "output_format");
        where = "output_format";
    }
    if (spec == nullptr)
        return format;
    const json *schema = spec->is_object() ? given(*spec, "schema") : nullptr;
    if (string_member(*spec, "type") != "json_schema" || schema == nullptr || !schema->is_object())
        invalid(std::string("\"") + where +
                "\" must be {\"type\":\"json_schema\",\"schema\":{...}}");
    format.kind = chat::OutputFormat::Kind::kJsonSchema;
    format.schema = *schema;
    // Anthropic decodes under the schema's constraints: the answer always matches it.
    format.strict = true;
    return format;
}

// ---- writing requests and reading answers ----

const char *stop_reason_name(chat::StopReason r) {
    switch (r) {
        case chat::StopReason::kMaxTokens:
            return "max_tokens";
        case chat::StopReason::kStopSequence:
            return "stop_sequence";
        case chat::StopReason::kToolUse:
            return "tool_use";
        case chat::StopReason::kContentFilter:
            return "refusal";
        case chat::StopReason::kEndTurn:
        case chat::StopReason::kOther:
            break;
    }
    return "end_turn";
}

chat::StopReason stop_reason_of(const json *v) {
    if (v == nullptr || !v->is_string())
        return chat::StopReason::kEndTurn;
    const std::string &r = v->get_ref<const std::string &>();
    if (r == "end_turn")
        return chat::StopReason::kEndTurn;
    if (r == "max_tokens" || r == "model_context_window_exceeded")
        return chat::StopReason::kMaxTokens;
    if (r == "stop_sequence")
        return chat::StopReason::kStopSequence;
    if (r == "tool_use")
        return chat::StopReason::kToolUse;
    if (r == "refusal")
        return chat::StopReason::kContentFilter;
    return chat::StopReason::kOther;  // pause_turn, and reasons added later
}

int status_of_error_type(std::string_view type) {
    static constexpr struct {
        std::string_view type;
        int status;
    } kTypes[] = {{"invalid_request_error", 400}, {"authentication_error", 401},
                  {"billing_error", 402},         {"permission_error", 403},
                  {"not_found_error", 404},       {"request_too_large", 413},
                  {"rate_limit_error", 429},      {"api_error", 500},
                  {"timeout_error", 504},         {"overloaded_error", 529}};
    for (const auto &t : kTypes) {
        if (t.type == type)
            return t.status;
    }
    return 500;
}

json image_block(const ServiceEndpoint &s, const std::string &url) {
    static constexpr std::string_view kData = "data:";
    static constexpr std::string_view kBase64 = ";base64,";
    if (url.compare(0, kData.size(), kData) == 0) {
        std::size_t at = url.find(kBase64);
        if (at == std::string::npos)
            unsupported(s, "an image data: URL that is not base64");
        return {{"type", "image"},
                {"source",
                 {{"type", "base64"},
                  {"media_type", url.substr(kData.size(), at - kData.size())},
                  {"data", url.substr(at + kBase64.size())}}}};
    }
    return {{"type", "image"}, {"source", {{"type", "url"}, {"url", url}}}};
}

json content_block(const ServiceEndpoint &s, const chat::Block &b) {
    switch (b.kind) {
        case chat::Block::Kind::kText:
            return {{"type", "text"}, {"text", b.text}};
        case chat::Block::Kind::kImage:
            return image_block(s, b.image_url);
        case chat::Block::Kind::kToolUse:
            return {{"type", "tool_use"},
                    {"id", b.tool_id},
                    {"name", b.tool_name},
                    {"input", b.input.is_object() ? b.input : json::object()}};
        case chat::Block::Kind::kToolResult: {
            json result = {{"type", "tool_result"}, {"tool_use_id", b.tool_id}};
            if (!b.text.empty())
                result["content"] = b.text;
            if (b.is_error)
                result["is_error"] = true;
            return result;
        }
    }
    return json();
}

json turns_of(const ServiceEndpoint &s, const std::vector<chat::Message> &messages) {
    json turns = json::array();
    bool previous_only_results = false;
    for (const chat::Message &m : messages) {
        json blocks = json::array();
        bool only_results = true;
        for (const chat::Block &b : m.content) {
            // Anthropic refuses empty text blocks; they say nothing.
            if (b.kind == chat::Block::Kind::kText && b.text.empty())
                continue;
            only_results = only_results && b.kind == chat::Block::Kind::kToolResult;
            blocks.push_back(content_block(s, b));
        }
        if (blocks.empty())
            continue;
        only_results = only_results && m.role == chat::Role::kUser;
        // Results of one round of parallel calls arrive from OpenAI callers as one message
        // each; Anthropic wants them in the one user turn after the calls.
        if (only_results && previous_only_results) {
            for (json &b : blocks)
                turns.back()["content"].push_back(std::move(b));
            continue;
        }
        previous_only_results = only_results;
        json content = blocks.size() == 1 && blocks[0]["type"] == "text"
                           ? std::move(blocks[0]["text"])
                           : std::move(blocks);
        turns.push_back({{"role", m.role == chat::Role::kUser ? "user" : "assistant"},
                         {"content", std::move(content)}});
    }
    return turns;
}

// ---- streams ----

void event_head(std::string &out, std::string_view name) {
    out += "event: ";
    out += name;
    out += "\ndata: ";
}

// An answer's usage, in Anthropic's terms: input_tokens leaves out the prompt tokens read from
// the cache.
json usage_object(const Usage &u) {
    json o = {{"input_tokens", u.prompt_tokens - u.cached_tokens},
              {"output_tokens", u.completion_tokens}};
    if (u.cached_tokens > 0)
        o["cache_read_input_tokens"] = u.cached_tokens;
    return o;
}

void usage_members(std::string &out, const Usage &u, bool with_input) {
    if (with_input) {
        // Anthropic's input_tokens leaves out the prompt tokens read from the cache.
        out += "\"input_tokens\":";
        out += std::to_string(u.prompt_tokens - u.cached_tokens);
        out += ',';
        if (u.cached_tokens > 0) {
            out += "\"cache_read_input_tokens\":";
            out += std::to_string(u.cached_tokens);
            out += ',';
        }
    }
    out += "\"output_tokens\":";
    out += std::to_string(u.completion_tokens);
}

}  // namespace

// ---- caller side ----

chat::Request read_request(const json &body) {
    if (!body.is_object())
        invalid("the Messages request must be a JSON object");
    chat::Request req;
    if (const json *model = given(body, "model"); model != nullptr && !model->is_string())
        invalid("\"model\" must be a string");
    if (given(body, "max_tokens") == nullptr) {
        invalid("the Messages request has no \"max_tokens\"",
                "Anthropic's Messages API requires it: add the most tokens the answer may have, "
                "for instance \"max_tokens\": 1024.");
    }
    req.max_tokens = integer(body, "max_tokens", 1, "a positive integer");
    req.system = read_system(body);
    req.messages = read_messages(body);
    req.tools = read_tools(body);
    req.tool_choice = read_tool_choice(body);
    if (const json *choice = given(body, "tool_choice")) {
        if (const json *v = given(*choice, "disable_parallel_tool_use")) {
            if (!v->is_boolean())
                invalid("tool_choice.disable_parallel_tool_use must be a boolean");
            req.parallel_tool_calls = !v->get<bool>();
        }
    }
    req.stop = read_stop(body);
    req.temperature = number(body, "temperature");
    req.top_p = number(body, "top_p");
    req.top_k = integer(body, "top_k", 0, "a non-negative integer");
    if (const json *metadata = given(body, "metadata")) {
        const json *user = metadata->is_object() ? given(*metadata, "user_id") : nullptr;
        if (!metadata->is_object() || (user != nullptr && !user->is_string()))
            invalid("\"metadata\" must be an object like {\"user_id\": \"...\"}");
        if (user != nullptr)
            req.user = user->get<std::string>();
    }
    if (const json *stream = given(body, "stream")) {
        if (!stream->is_boolean())
            invalid("\"stream\" must be a boolean");
        req.stream = stream->get<bool>();
    }
    // An Anthropic stream always reports usage, in message_start and message_delta.
    req.stream_usage = req.stream;
    req.format = read_format(body);
    return req;
}

json write_response(const chat::Response &r) {
    json content = json::array();
    for (const chat::Block &b : r.content) {
        if (b.kind == chat::Block::Kind::kText) {
            content.push_back({{"type", "text"}, {"text", b.text}});
        } else if (b.kind == chat::Block::Kind::kToolUse) {
            content.push_back({{"type", "tool_use"},
                               {"id", b.tool_id},
                               {"name", b.tool_name},
                               {"input", b.input.is_object() ? b.input : json::object()}});
        }
        // An answer has no tool results, and Anthropic messages no generated images.
    }
    json stop_sequence;
    if (r.stop_reason == chat::StopReason::kStopSequence && !r.stop_sequence.empty())
        stop_sequence = r.stop_sequence;
    return {{"id", r.id.empty() ? message_id() : r.id},
            {"type", "message"},
            {"role", "assistant"},
            {"model", r.model},
            {"content", std::move(content)},
            {"stop_reason", stop_reason_name(r.stop_reason)},
            {"stop_sequence", std::move(stop_sequence)},
            {"usage", usage_object(r.usage)}};
}

const char *error_type(int status) {
    switch (status) {
        case 400:
            return "invalid_request_error";
        case 401:
            return "authentication_error";
        case 402:
            return "billing_error";
        case 403:
            return "permission_error";
        case 404:
            return "not_found_error";
        case 408:
        case 504:
            return "timeout_error";
        case 413:
            return "request_too_large";
        case 429:
            return "rate_limit_error";
        case 503:
        case 529:
            return "overloaded_error";
        default:
            break;
    }
    return status >= 400 && status < 500 ? "invalid_request_error" : "api_error";
}

std::string error_body(int status, std::string_view message) {
    std::string out = "{\"type\":\"error\",\"error\":{\"type\":\"";
    out += error_type(status);
    out += "\",\"message\":";
    append_json_string(out, message);
    out += "}}";
    return out;
}

void StreamWriter::start(const chat::Event *e, std::string &out) {
    started_ = true;
    const std::string id = e != nullptr && !e->id.empty() ? e->id : message_id();
    event_head(out, "message_start");
    out += "{\"type\":\"message_start\",\"message\":{\"id\":";
    append_json_string(out, id);
    out += ",\"type\":\"message\",\"role\":\"assistant\",\"model\":";
    append_json_string(out, e != nullptr ? e->model : std::string());
    out += ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{";
    usage_members(out, e != nullptr ? e->usage : Usage(), true);
    out += "}}}\n\n";
}

void StreamWriter::write(const chat::Event &e, std::string &out) {
    if (done_)
        return;
    if (e.kind == chat::Event::Kind::kError) {
        event_head(out, "error");
        out += error_body(e.error.status, e.error.message);
        out += "\n\n";
        done_ = true;
        return;
    }
    if (!started_)
        start(e.kind == chat::Event::Kind::kStart ? &e : nullptr, out);
    switch (e.kind) {
        case chat::Event::Kind::kStart:
        case chat::Event::Kind::kError:
            break;
        case chat::Event::Kind::kBlockStart:
            if (e.block.kind != chat::Block::Kind::kText &&
                e.block.kind != chat::Block::Kind::kToolUse) {
                break;
            }
            event_head(out, "content_block_start");
            out += "{\"type\":\"content_block_start\",\"index\":";
            out += std::to_string(e.index);
            if (e.block.kind == chat::Block::Kind::kText) {
                out += ",\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
            } else {
                out += ",\"content_block\":{\"type\":\"tool_use\",\"id\":";
                append_json_string(out, e.block.tool_id);
                out += ",\"name\":";
                append_json_string(out, e.block.tool_name);
                out += ",\"input\":{}}}\n\n";
            }
            break;
        case chat::Event::Kind::kTextDelta:
        case chat::Event::Kind::kToolInputDelta: {
            const bool text = e.kind == chat::Event::Kind::kTextDelta;
            event_head(out, "content_block_delta");
            out += "{\"type\":\"content_block_delta\",\"index\":";
            out += std::to_string(e.index);
            out += text ? ",\"delta\":{\"type\":\"text_delta\",\"text\":"
                        : ",\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":";
            append_json_string(out, e.text);
            out += "}}\n\n";
            break;
        }
        case chat::Event::Kind::kBlockStop:
            event_head(out, "content_block_stop");
            out += "{\"type\":\"content_block_stop\",\"index\":";
            out += std::to_string(e.index);
            out += "}\n\n";
            break;
        case chat::Event::Kind::kStop:
            stop_reason_ = e.stop_reason;
            stop_sequence_ = e.stop_sequence;
            break;
        case chat::Event::Kind::kUsage:
            usage_ = e.usage;
            break;
        case chat::Event::Kind::kEnd:
            // message_delta carries both the stop reason and the usage, which the form sends
            // apart: it is written once both are known.
            event_head(out, "message_delta");
            out += "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"";
            out += stop_reason_name(stop_reason_);
            out += "\",\"stop_sequence\":";
            if (stop_reason_ == chat::StopReason::kStopSequence && !stop_sequence_.empty()) {
                append_json_string(out, stop_sequence_);
            } else {
                out += "null";
            }
            // Input tokens too: an upstream that reports them only at the end (OpenAI) left
            // message_start without them, and the SDKs take them from here.
            out += "},\"usage\":{";
            usage_members(out, usage_, usage_.present);
            out += "}}\n\n";
            event_head(out, "message_stop");
            out += "{\"type\":\"message_stop\"}\n\n";
            done_ = true;
            break;
    }
}

// ---- upstream side ----

translate::UpstreamRequest write_request(const ServiceEndpoint &s, const chat::Request &r,
                                         const chat::Defaults &d) {
    json turns = turns_of(s, r.messages);
    if (turns.empty())
        invalid("the chat request has no user or assistant message");
    json body = {{"model", s.model},
                 {"messages", std::move(turns)},
                 {"max_tokens", r.max_tokens.value_or(d.default_max_tokens)}};
    if (!r.system.empty())
        body["system"] = r.system;
    if (r.temperature) {
        // OpenAI's range is 0-2, Anthropic's 0-1: the top of one is the top of the other.
        body["temperature"] = std::min(*r.temperature, 1.0);
    }
    if (r.top_p)
        body["top_p"] = *r.top_p;
    if (r.top_k)
        body["top_k"] = *r.top_k;
    if (!r.stop.empty())
        body["stop_sequences"] = r.stop;
    if (!r.user.empty())
        body["metadata"] = {{"user_id", r.user}};
    if (!r.tools.empty()) {
        json tools = json::array();
        for (const chat::Tool &t : r.tools) {
            json tool = {{"name", t.name}};
            if (!t.description.empty())
                tool["description"] = t.description;
            // Anthropic requires a schema; a function without parameters takes none.
            tool["input_schema"] = t.parameters.is_object() && !t.parameters.empty()
                                       ? t.parameters
                                       : json{{"type", "object"}, {"properties", json::object()}};
            tools.push_back(std::move(tool));
        }
        body["tools"] = std::move(tools);
        // Without tools a choice means nothing, and Anthropic refuses one.
        if (r.tool_choice) {
            switch (r.tool_choice->mode) {
                case chat::ToolChoice::Mode::kAuto:
                    body["tool_choice"] = {{"type", "auto"}};
                    break;
                case chat::ToolChoice::Mode::kNone:
                    body["tool_choice"] = {{"type", "none"}};
                    break;
                case chat::ToolChoice::Mode::kRequired:
                    body["tool_choice"] = {{"type", "any"}};
                    break;
                case chat::ToolChoice::Mode::kNamed:
                    body["tool_choice"] = {{"type", "tool"}, {"name", r.tool_choice->name}};
                    break;
            }
        }
        // One call at a time is a flag of the tool choice, "auto" unless another was asked.
        if (r.parallel_tool_calls && !*r.parallel_tool_calls &&
            (!r.tool_choice || r.tool_choice->mode != chat::ToolChoice::Mode::kNone)) {
            if (!body.contains("tool_choice"))
                body["tool_choice"] = {{"type", "auto"}};
            body["tool_choice"]["disable_parallel_tool_use"] = true;
        }
    }
    switch (r.format.kind) {
        case chat::OutputFormat::Kind::kText:
            break;
        case chat::OutputFormat::Kind::kJsonObject:
            unsupported(s, "a JSON answer format without a schema",
                        "Anthropic constrains answers only to a JSON Schema: give one "
                        "(response_format {\"type\":\"json_schema\",...}), or ask for JSON in "
                        "the prompt.");
        case chat::OutputFormat::Kind::kJsonSchema:
            body["output_config"] = {
                {"format", {{"type", "json_schema"}, {"schema", r.format.schema}}}};
            break;
    }
    if (r.stream)
        body["stream"] = true;
    return translate::detail::post_json(s, "/v1/messages", r.stream,
                                        translate::detail::serialise(body));
}

chat::Response read_response(const ServiceEndpoint &s, std::string_view body) {
    json j = translate::detail::parse_upstream_body(s, body, "chat");
    const json *content = member(j, "content");
    if (content == nullptr || !content->is_array())
        translate::detail::bad_response(s, "chat", "the body has no \"content\" array");
    chat::Response r;
    for (const json &block : *content) {
        std::string type = string_member(block, "type");
        chat::Block b;
        if (type == "text") {
            b.text = string_member(block, "text");
        } else if (type == "tool_use") {
            b.kind = chat::Block::Kind::kToolUse;
            b.tool_id = string_member(block, "id");
            b.tool_name = string_member(block, "name");
            if (const json *input = member(block, "input"); input != nullptr && input->is_object())
                b.input = *input;
        } else {
            continue;  // thinking and server-tool blocks are Anthropic's alone
        }
        r.content.push_back(std::move(b));
    }
    r.id = string_member(j, "id");
    if (r.id.empty())
        r.id = message_id();
    r.model = string_member(j, "model");
    if (r.model.empty())
        r.model = s.model;
    r.stop_reason = stop_reason_of(member(j, "stop_reason"));
    r.stop_sequence = string_member(j, "stop_sequence");
    const json *usage = member(j, "usage");
    r.usage = translate::detail::usage_from_anthropic(usage != nullptr ? *usage : json());
    return r;
}

StreamReader::StreamReader(const ServiceEndpoint &service) : service_(service) {}

void StreamReader::read(std::string_view bytes, bool finishing, std::vector<chat::Event> &out) {
    auto too_long = read_events(parser_, bytes, finishing, done_,
                                [&](const SseEventView &e) { event(e, out); });
    // An event past the parser's cap; the events before it have been handed over.
    if (too_long && !done_)
        fail(502, "api_error", "service \"" + service_.name + "\": " + *too_long, out);
}

void StreamReader::feed(std::string_view bytes, std::vector<chat::Event> &out) {
    if (!done_)
        read(bytes, false, out);
}

void StreamReader::finish(std::vector<chat::Event> &out) {
    if (done_)
        return;
    read({}, true, out);
    if (done_)
        return;
    if (!stopped_) {
        fail(502, "api_error",
             "service \"" + service_.name + "\" ended the stream before the answer was complete",
             out);
        return;
    }
    close_blocks(out);
    chat::Event end;
    end.kind = chat::Event::Kind::kEnd;
    out.push_back(std::move(end));
    done_ = true;
}

void StreamReader::fail(int status, std::string type, std::string message,
                        std::vector<chat::Event> &out) {
    chat::Event e;
    e.kind = chat::Event::Kind::kError;
    e.error.status = status;
    e.error.type = std::move(type);
    e.error.message = std::move(message);
    out.push_back(std::move(e));
    done_ = true;
}

void StreamReader::ensure_started(std::vector<chat::Event> &out) {
    if (started_)
        return;
    started_ = true;
    chat::Event e;
    e.kind = chat::Event::Kind::kStart;
    e.id = message_id();
    e.model = service_.model;
    out.push_back(std::move(e));
}

void StreamReader::close_blocks(std::vector<chat::Event> &out) {
    std::vector<long> open;
    for (long &b : blocks_) {
        if (b >= 0)
            open.push_back(b);
        b = -1;
    }
    std::sort(open.begin(), open.end());
    for (long index : open) {
        chat::Event e;
        e.kind = chat::Event::Kind::kBlockStop;
        e.index = static_cast<std::size_t>(index);
        out.push_back(std::move(e));
    }
}

void StreamReader::event(const SseEventView &sse, std::vector<chat::Event> &out) {
    json j = json::parse(sse.data, nullptr, false);
    if (!j.is_object()) {
        fail(502, "api_error", "service \"" + service_.name + "\" sent a malformed stream event",
             out);
        return;
    }
    // The event name is authoritative (the SDKs dispatch on it); data.type backs it up.
    const std::string type = sse.event.empty() ? string_member(j, "type") : std::string(sse.event);
    // The block an event names: its upstream index, or nullopt when malformed.
    auto block_index = [&]() -> std::optional<std::size_t> {
        const json *v = member(j, "index");
        if (v == nullptr || !v->is_number_unsigned() || v->get<std::size_t>() >= kMaxBlocks) {
            fail(502, "api_error",
                 "service \"" + service_.name + "\" sent a stream event with a bad block index",
                 out);
            return std::nullopt;
        }
        return v->get<std::size_t>();
    };
    if (type == "message_start") {
        if (started_)
            return;
        started_ = true;
        const json *message = member(j, "message");
        chat::Event e;
        e.kind = chat::Event::Kind::kStart;
        e.id = message != nullptr ? string_member(*message, "id") : std::string();
        if (e.id.empty())
            e.id = message_id();
        e.model = message != nullptr ? string_member(*message, "model") : std::string();
        if (e.model.empty())
            e.model = service_.model;
        if (const json *u = message != nullptr ? member(*message, "usage") : nullptr;
            u != nullptr && u->is_object()) {
            usage_ = translate::detail::usage_from_anthropic(*u);
        }
        e.usage = usage_;
        out.push_back(std::move(e));
    } else if (type == "content_block_start") {
        auto at = block_index();
        if (!at)
            return;
        ensure_started(out);
        if (blocks_.size() <= *at)
            blocks_.resize(*at + 1, -1);
        blocks_[*at] = -1;
        const json *block = member(j, "content_block");
        std::string kind = block != nullptr ? string_member(*block, "type") : std::string();
        chat::Event e;
        e.kind = chat::Event::Kind::kBlockStart;
        std::string first;  // content the start event already carries
        if (kind == "text") {
            first = string_member(*block, "text");
        } else if (kind == "tool_use") {
            e.block.kind = chat::Block::Kind::kToolUse;
            e.block.tool_id = string_member(*block, "id");
            e.block.tool_name = string_member(*block, "name");
            const json *input = member(*block, "input");
            if (input != nullptr && input->is_object() && !input->empty())
                first = input->dump();
        } else {
            return;  // thinking and server-tool blocks are Anthropic's alone
        }
        e.index = next_index_++;
        blocks_[*at] = static_cast<long>(e.index);
        out.push_back(e);
        if (!first.empty()) {
            chat::Event delta;
            delta.kind =
                kind == "text" ? chat::Event::Kind::kTextDelta : chat::Event::Kind::kToolInputDelta;
            delta.index = e.index;
            delta.text = std::move(first);
            out.push_back(std::move(delta));
        }
    } else if (type == "content_block_delta") {
        auto at = block_index();
        if (!at || *at >= blocks_.size() || blocks_[*at] < 0)
            return;
        const json *delta = member(j, "delta");
        std::string kind = delta != nullptr ? string_member(*delta, "type") : std::string();
        chat::Event e;
        if (kind == "text_delta") {
            e.kind = chat::Event::Kind::kTextDelta;
            e.text = string_member(*delta, "text");
        } else if (kind == "input_json_delta") {
            e.kind = chat::Event::Kind::kToolInputDelta;
            e.text = string_member(*delta, "partial_json");
        } else {
            return;  // citations and the like
        }
        if (e.text.empty())
            return;
        e.index = static_cast<std::size_t>(blocks_[*at]);
        out.push_back(std::move(e));
    } else if (type == "content_block_stop") {
        auto at = block_index();
        if (!at || *at >= blocks_.size() || blocks_[*at] < 0)
            return;
        chat::Event e;
        e.kind = chat::Event::Kind::kBlockStop;
        e.index = static_cast<std::size_t>(blocks_[*at]);
        blocks_[*at] = -1;
        out.push_back(std::move(e));
    } else if (type == "message_delta") {
        ensure_started(out);
        close_blocks(out);
        const json *delta = member(j, "delta");
        const json *stop = delta != nullptr ? given(*delta, "stop_reason") : nullptr;
        if (stop != nullptr && !stopped_) {
            stopped_ = true;
            chat::Event e;
            e.kind = chat::Event::Kind::kStop;
            e.stop_reason = stop_reason_of(stop);
            e.stop_sequence = string_member(*delta, "stop_sequence");
            out.push_back(std::move(e));
        }
        if (const json *u = member(j, "usage"); u != nullptr && u->is_object()) {
            // output_tokens is cumulative; input counts appear here only on newer API versions.
            Usage d = translate::detail::usage_from_anthropic(*u);
            usage_.completion_tokens = d.completion_tokens;
            if (member(*u, "input_tokens") != nullptr) {
                usage_.prompt_tokens = d.prompt_tokens;
                usage_.cached_tokens = d.cached_tokens;
            }
            usage_.total_tokens = add_counts(usage_.prompt_tokens, usage_.completion_tokens);
            usage_.present = true;
            chat::Event e;
            e.kind = chat::Event::Kind::kUsage;
            e.usage = usage_;
            out.push_back(std::move(e));
        }
    } else if (type == "message_stop") {
        ensure_started(out);
        close_blocks(out);
        if (!stopped_) {
            // An answer without message_delta still ended: the form wants its stop reason.
            stopped_ = true;
            chat::Event e;
            e.kind = chat::Event::Kind::kStop;
            out.push_back(std::move(e));
        }
        chat::Event e;
        e.kind = chat::Event::Kind::kEnd;
        out.push_back(std::move(e));
        done_ = true;
    } else if (type == "error") {
        const json *err = member(j, "error");
        std::string kind = err != nullptr ? string_member(*err, "type") : std::string();
        std::string message =
            err != nullptr ? redact_key(string_member(*err, "message"), service_) : std::string();
        if (message.empty())
            message = "service \"" + service_.name + "\" failed mid-stream";
        int status = status_of_error_type(kind);
        fail(status, kind.empty() ? std::string(error_type(status)) : redact_key(kind, service_),
             std::move(message), out);
    }
    // ping and event types added later carry nothing for the form.
}

// ---- the same protocol on both sides ----

chat::Passed pass_request(const ServiceEndpoint &service, json &body, std::string_view raw, bool) {
    if (!body.is_object())
        invalid("the Messages request must be a JSON object");
    chat::Passed call;
    auto s = body.find("stream");
    if (s != body.end() && !s->is_boolean() && !s->is_null())
        throw Error(sqlstate::kInvalidParameterValue, "\"stream\" must be a boolean");
    call.stream = s != body.end() && s->is_boolean() && s->get<bool>();
    std::string model;
    translate::detail::append_json_string(model, service.model);
    const translate::detail::MemberEdit edit = {"model", model};
    std::optional<std::string> text;
    if (!raw.empty())
        text = translate::detail::with_members(raw, &edit, 1);
    if (!text) {
        body["model"] = service.model;
        text = translate::detail::serialise(body);
    }
    call.request =
        translate::detail::post_json(service, "/v1/messages", call.stream, std::move(*text));
    return call;
}

}  // namespace pgi::protocols::anthropic
