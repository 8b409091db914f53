#include "openai_responses.h"

#include <climits>
#include <ctime>
#include <map>
#include <optional>

#include "gateway_request.h"
#include "openai_chat.h"
#include "redact.h"
#include "request_members.h"
#include "saturating.h"
#include "translate_util.h"

namespace pgi::protocols::openai_responses {

namespace {

using chat::Block;
using chat::Event;
using nlohmann::json;
using translate::Usage;
using translate::detail::given;
using translate::detail::member;
using translate::detail::string_member;

constexpr const char *kRequestHint =
    "A Responses request looks like {\"model\":\"...\",\"input\":\"Hello\"} or "
    "{\"model\":\"...\",\"input\":[{\"role\":\"user\",\"content\":\"Hello\"}]}.";
constexpr const char *kItemHint =
    "input items are messages ({\"role\":\"user\",\"content\":\"...\"}), function_call items "
    "({\"type\":\"function_call\",\"call_id\":\"...\",\"name\":\"...\",\"arguments\":\"{}\"}) "
    "and function_call_output items ({\"type\":\"function_call_output\",\"call_id\":\"...\","
    "\"output\":\"...\"}).";

// Output items past this are a broken upstream, not a reason to allocate without bound.
constexpr std::size_t kMaxItems = 4096;

[[noreturn]] void invalid(const std::string &message, const std::string &hint = kRequestHint) {
    throw Error(sqlstate::kInvalidParameterValue, message, hint);
}

// A known Responses feature the internal form has no place for.
[[noreturn]] void not_carried(const std::string &what) {
    throw Error(sqlstate::kFeatureNotSupported,
                what + " cannot be translated for the service's protocol",
                "The gateway serves the Responses API by translating it; leave this part out, or "
                "call the provider's own API for it.");
}

std::optional<long long> integer(const json &object, const char *key, long long min) {
    return integer_member(object, key, min, kRequestHint);
}

std::optional<double> number(const json &object, const char *key) {
    return number_member(object, key, kRequestHint);
}

// A fresh id with the given prefix ("resp_", "msg_", "fc_"): the chat id's random part.
std::string fresh_id(const char *prefix) {
    static constexpr std::size_t kChat = sizeof("chatcmpl-") - 1;
    return prefix + translate::detail::completion_id().substr(kChat);
}

// ---- reading a request ----

std::string item_where(std::size_t i) {
    return "input[" + std::to_string(i) + "]";
}

// Text and images of a message's content: a string, or input_text / output_text / refusal /
// input_image parts.
std::vector<Block> read_content(const json &content, const std::string &where, bool &only_text) {
    std::vector<Block> blocks;
    only_text = true;
    if (content.is_string()) {
        Block b;
        b.text = content.get<std::string>();
        blocks.push_back(std::move(b));
        return blocks;
    }
    if (!content.is_array())
        invalid(where + ".content must be a string or an array of content parts", kItemHint);
    for (std::size_t j = 0; j < content.size(); ++j) {
        const json &part = content[j];
        const std::string at = where + ".content[" + std::to_string(j) + "]";
        const json *type = member(part, "type");
        if (!part.is_object() || type == nullptr || !type->is_string())
            invalid(at + " must be an object with a \"type\"", kItemHint);
        const std::string &t = type->get_ref<const std::string &>();
        Block b;
        if (t == "input_text" || t == "output_text" || t == "text") {
            const json *text = member(part, "text");
            if (text == nullptr || !text->is_string())
                invalid(at + " needs a string \"text\"", kItemHint);
            b.text = text->get<std::string>();
        } else if (t == "refusal") {
            b.text = string_member(part, "refusal");
        } else if (t == "input_image") {
            const json *url = given(part, "image_url");
            if (url == nullptr) {
                if (given(part, "file_id") != nullptr)
                    not_carried("an image given by file_id");
                invalid(at + " (input_image) needs an \"image_url\"", kItemHint);
            }
            if (!url->is_string() || url->get_ref<const std::string &>().empty())
                invalid(at + ".image_url must be a non-empty string (an https: or data: URL)",
                        kItemHint);
            b.kind = Block::Kind::kImage;
            b.image_url = url->get<std::string>();
            only_text = false;
        } else if (t == "input_file" || t == "input_audio") {
            not_carried("an " + t + " content part");
        } else {
            invalid(at + ".type \"" + t +
                        "\" is not a content part type (input_text, output_text, input_image)",
                    kItemHint);
        }
        blocks.push_back(std::move(b));
    }
    return blocks;
}

std::string joined_text(const std::vector<Block> &blocks) {
    std::string text;
    for (const Block &b : blocks)
        text += b.text;
    return text;
}

void append_system(chat::Request &req, const std::string &text) {
    if (text.empty())
        return;
    if (!req.system.empty())
        req.system += "\n\n";
    req.system += text;
}

// The message to add blocks of `role` to: the last one when it has that role (a turn's tool
// calls, or its results, are several items in a row), else a new one.
chat::Message &turn(chat::Request &req, chat::Role role) {
    if (req.messages.empty() || req.messages.back().role != role) {
        req.messages.emplace_back();
        req.messages.back().role = role;
    }
    return req.messages.back();
}

// An item's tool output: a string, or text parts.
std::string output_text(const json &output, const std::string &where) {
    if (output.is_string())
        return output.get<std::string>();
    if (output.is_array()) {
        bool only_text = true;
        std::vector<Block> blocks = read_content(output, where, only_text);
        if (!only_text)
            not_carried("an image in a function_call_output");
        return joined_text(blocks);
    }
    invalid(where + ".output must be a string or an array of input_text parts", kItemHint);
}

void read_input(const json &input, chat::Request &req) {
    if (input.is_string()) {
        chat::Message m;
        Block b;
        b.text = input.get<std::string>();
        m.content.push_back(std::move(b));
        req.messages.push_back(std::move(m));
        return;
    }
    if (!input.is_array())
        invalid("\"input\" must be a string or an array of items");
    std::map<std::string, std::string> call_names;  // call_id -> function name
    for (std::size_t i = 0; i < input.size(); ++i) {
        const json &item = input[i];
        const std::string where = item_where(i);
        if (!item.is_object())
            invalid(where + " must be an object", kItemHint);
        const json *type_v = given(item, "type");
        if (type_v != nullptr && !type_v->is_string())
            invalid(where + ".type must be a string", kItemHint);
        const std::string type = type_v != nullptr ? type_v->get<std::string>() : "message";
        if (type == "message") {
            const json *role = given(item, "role");
            const json *content = given(item, "content");
            if (role == nullptr || !role->is_string())
                invalid(where + " needs a \"role\" (user, assistant, system or developer)",
                        kItemHint);
            if (content == nullptr)
                invalid(where + " needs \"content\"", kItemHint);
            const std::string &r = role->get_ref<const std::string &>();
            bool only_text = true;
            std::vector<Block> blocks = read_content(*content, where, only_text);
            if (r == "system" || r == "developer") {
                if (!only_text)
                    invalid(where + ": a " + r + " message takes text only", kItemHint);
                append_system(req, joined_text(blocks));
            } else if (r == "user" || r == "assistant") {
                chat::Message &m =
                    turn(req, r == "user" ? chat::Role::kUser : chat::Role::kAssistant);
                for (Block &b : blocks)
                    m.content.push_back(std::move(b));
            } else {
                invalid(where + ".role must be user, assistant, system or developer", kItemHint);
            }
        } else if (type == "function_call") {
            Block b;
            b.kind = Block::Kind::kToolUse;
            b.tool_id = string_member(item, "call_id");
            b.tool_name = string_member(item, "name");
            if (b.tool_id.empty() || b.tool_name.empty())
                invalid(where + " (function_call) needs a \"call_id\" and a \"name\"", kItemHint);
            const json *args = given(item, "arguments");
            if (args != nullptr && !args->is_string())
                invalid(where + ".arguments must be a string of JSON", kItemHint);
            const std::string text = args != nullptr ? args->get<std::string>() : "{}";
            b.input = text.empty() ? json::object() : json::parse(text, nullptr, false);
            if (!b.input.is_object())
                invalid(where + ".arguments must be the JSON text of an object", kItemHint);
            call_names[b.tool_id] = b.tool_name;
            turn(req, chat::Role::kAssistant).content.push_back(std::move(b));
        } else if (type == "function_call_output") {
            Block b;
            b.kind = Block::Kind::kToolResult;
            b.tool_id = string_member(item, "call_id");
            if (b.tool_id.empty())
                invalid(where + " (function_call_output) needs a \"call_id\"", kItemHint);
            const json *output = given(item, "output");
            if (output == nullptr)
                invalid(where + " (function_call_output) needs an \"output\"", kItemHint);
            b.text = output_text(*output, where);
            auto name = call_names.find(b.tool_id);
            if (name != call_names.end())
                b.tool_name = name->second;
            turn(req, chat::Role::kUser).content.push_back(std::move(b));
        } else if (type == "reasoning") {
            // The model's own notes of an earlier turn: meaningless to another model.
        } else if (type == "item_reference") {
            not_carried("an item_reference (it names an item stored upstream)");
        } else {
            not_carried("an input item of type \"" + type + "\"");
        }
    }
}

std::vector<chat::Tool> read_tools(const json &body) {
    std::vector<chat::Tool> tools;
    const json *list = given(body, "tools");
    if (list == nullptr)
        return tools;
    if (!list->is_array())
        invalid("\"tools\" must be an array");
    for (std::size_t i = 0; i < list->size(); ++i) {
        const json &t = (*list)[i];
        const std::string where = "tools[" + std::to_string(i) + "]";
        const json *type = member(t, "type");
        if (!t.is_object() || type == nullptr || !type->is_string())
            invalid(where + " must be an object with a \"type\"");
        if (*type != "function")
            not_carried("a tool of type \"" + type->get<std::string>() + "\"");
        chat::Tool tool;
        tool.name = string_member(t, "name");
        if (tool.name.empty()) {
            invalid(where + " needs a \"name\"",
                    "Responses function tools are flat: {\"type\":\"function\",\"name\":\"...\","
                    "\"parameters\":{...}}.");
        }
        tool.description = string_member(t, "description");
        if (const json *p = given(t, "parameters")) {
            if (!p->is_object())
                invalid(where + ".parameters must be a JSON Schema object");
            tool.parameters = *p;
        }
        tools.push_back(std::move(tool));
    }
    return tools;
}

std::optional<chat::ToolChoice> read_tool_choice(const json &body) {
    const json *v = given(body, "tool_choice");
    if (v == nullptr)
        return std::nullopt;
    chat::ToolChoice c;
    if (v->is_string()) {
        const std::string &s = v->get_ref<const std::string &>();
        if (s == "auto")
            c.mode = chat::ToolChoice::Mode::kAuto;
        else if (s == "none")
            c.mode = chat::ToolChoice::Mode::kNone;
        else if (s == "required")
            c.mode = chat::ToolChoice::Mode::kRequired;
        else
            invalid(
                "\"tool_choice\" must be \"auto\", \"none\", \"required\" or "
                "{\"type\":\"function\",\"name\":\"...\"}");
        return c;
    }
    if (v->is_object() && string_member(*v, "type") == "function" &&
        !string_member(*v, "name").empty()) {
        c.mode = chat::ToolChoice::Mode::kNamed;
        c.name = string_member(*v, "name");
        return c;
    }
    if (v->is_object() && member(*v, "type") != nullptr && member(*v, "type")->is_string())
        not_carried("a tool_choice of type \"" + string_member(*v, "type") + "\"");
    invalid(
        "\"tool_choice\" must be \"auto\", \"none\", \"required\" or "
        "{\"type\":\"function\",\"name\":\"...\"}");
}

chat::OutputFormat read_format(const json &body) {
    chat::OutputFormat f;
    const json *text = given(body, "text");
    if (text == nullptr)
        return f;
    if (!text->is_object())
        invalid("\"text\" must be an object like {\"format\":{\"type\":\"json_schema\",...}}");
    const json *format = given(*text, "format");
    if (format == nullptr)
        return f;
    const std::string type = format->is_object() ? string_member(*format, "type") : "";
    if (type == "text")
        return f;
    if (type == "json_object") {
        f.kind = chat::OutputFormat::Kind::kJsonObject;
        return f;
    }
    if (type == "json_schema") {
        f.kind = chat::OutputFormat::Kind::kJsonSchema;
        f.name = string_member(*format, "name");
        const json *schema = given(*format, "schema");
        if (f.name.empty() || schema == nullptr || !schema->is_object()) {
            invalid("text.format of type json_schema needs a \"name\" and a \"schema\" object",
                    "For instance {\"type\":\"json_schema\",\"name\":\"answer\",\"schema\":"
                    "{\"type\":\"object\",...}}.");
        }
        f.schema = *schema;
        if (const json *strict = given(*format, "strict")) {
            if (!strict->is_boolean())
                invalid("text.format.strict must be a boolean");
            f.strict = strict->get<bool>();
        }
        return f;
    }
    invalid("text.format.type must be \"text\", \"json_object\" or \"json_schema\"");
}

// ---- writing an answer ----

const char *incomplete_reason(chat::StopReason r) {
    switch (r) {
        case chat::StopReason::kMaxTokens:
            return "max_output_tokens";
        case chat::StopReason::kContentFilter:
            return "content_filter";
        default:
            return nullptr;
    }
}

// Answers are written as JSON text, not built as documents: a stream writes its response
// object when it starts and again when it ends, and a document per answer was a tenth of a
// stream's cost. The whole answer is read back from the same text, so there is one writer.

void append_quoted(std::string &out, std::string_view text) {
    translate::detail::append_json_string(out, text);
}

void append_usage(std::string &out, const Usage &u) {
    out += "{\"input_tokens\":";
    out += std::to_string(u.prompt_tokens);
    out += ",\"input_tokens_details\":{\"cached_tokens\":";
    out += std::to_string(u.cached_tokens);
    out += "},\"output_tokens\":";
    out += std::to_string(u.completion_tokens);
    out += ",\"output_tokens_details\":{\"reasoning_tokens\":0},\"total_tokens\":";
    out += std::to_string(u.total_tokens);
    out += '}';
}

// An output item: a message whose text is `data`, or a function call whose arguments are.
// While in progress (not `done`) it is written without them.
struct ItemText {
    bool message = true;
    std::string_view id;
    std::string_view call_id;  // function calls
    std::string_view name;
    std::string_view data;
};

void append_item(std::string &out, const ItemText &item, bool done) {
    const char *status = done ? "\"completed\"" : "\"in_progress\"";
    if (item.message) {
        out += "{\"type\":\"message\",\"id\":";
        append_quoted(out, item.id);
        out += ",\"status\":";
        out += status;
        out += ",\"role\":\"assistant\",\"content\":[";
        if (done) {
            out += "{\"type\":\"output_text\",\"text\":";
            append_quoted(out, item.data);
            out += ",\"annotations\":[]}";
        }
        out += "]}";
        return;
    }
    out += "{\"type\":\"function_call\",\"id\":";
    append_quoted(out, item.id);
    out += ",\"call_id\":";
    append_quoted(out, item.call_id);
    out += ",\"name\":";
    append_quoted(out, item.name);
    out += ",\"arguments\":";
    append_quoted(out, done ? item.data : std::string_view());
    out += ",\"status\":";
    out += status;
    out += '}';
}

// A response object. `output` is the JSON text of its item array; the usage is written once
// the response is final (not in progress).
std::string response_text(std::string_view id, long long created, std::string_view model,
                          const char *status, std::string_view output, const Usage &usage,
                          chat::StopReason stop_reason) {
    const bool final = std::string_view(status) != "in_progress";
    const char *reason =
        std::string_view(status) == "incomplete" ? incomplete_reason(stop_reason) : nullptr;
    std::string out = "{\"id\":";
    append_quoted(out, id);
    out += ",\"object\":\"response\",\"created_at\":";
    out += std::to_string(created);
    out += ",\"status\":\"";
    out += status;
    out += "\",\"error\":null,\"incomplete_details\":";
    if (reason != nullptr) {
        out += "{\"reason\":\"";
        out += reason;
        out += "\"}";
    } else {
        out += "null";
    }
    out += ",\"model\":";
    append_quoted(out, model);
    out += ",\"output\":";
    out += output;
    out += ",\"parallel_tool_calls\":true,\"tool_choice\":\"auto\",\"tools\":[],\"usage\":";
    if (final)
        append_usage(out, usage);
    else
        out += "null";
    out += '}';
    return out;
}

const char *final_status(chat::StopReason r) {
    return incomplete_reason(r) != nullptr ? "incomplete" : "completed";
}

std::string dump(const json &j) {
    return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace

// ---- caller side ----

chat::Request read_request(const json &body) {
    if (!body.is_object())
        invalid("the Responses request must be a JSON object");
    if (const json *model = given(body, "model"); model != nullptr && !model->is_string())
        invalid("\"model\" must be a string");
    if (needs_upstream_state(body)) {
        invalid(
            "this service cannot continue a stored response: previous_response_id and "
            "conversation need an upstream that serves /v1/responses itself",
            "Send the whole conversation in \"input\" (the gateway keeps no responses), or "
            "call an OPENAI_V1 service whose upstream serves the Responses API.");
    }
    if (const json *background = given(body, "background");
        background != nullptr && *background == true) {
        not_carried("\"background\": true");
    }
    if (given(body, "prompt") != nullptr)
        not_carried("a stored prompt (\"prompt\")");
    chat::Request req;
    if (const json *instructions = given(body, "instructions")) {
        if (!instructions->is_string())
            invalid("\"instructions\" must be a string");
        req.system = instructions->get<std::string>();
    }
    const json *input = given(body, "input");
    if (input == nullptr)
        invalid("the Responses request has no \"input\"");
    read_input(*input, req);
    if (req.messages.empty())
        invalid("\"input\" has no user or assistant message");
    req.tools = read_tools(body);
    req.tool_choice = read_tool_choice(body);
    if (const json *v = given(body, "parallel_tool_calls")) {
        if (!v->is_boolean())
            invalid("\"parallel_tool_calls\" must be a boolean");
        req.parallel_tool_calls = v->get<bool>();
    }
    req.max_tokens = integer(body, "max_output_tokens", 1);
    req.temperature = number(body, "temperature");
    req.top_p = number(body, "top_p");
    req.format = read_format(body);
    for (const char *key : {"safety_identifier", "user"}) {
        if (const json *v = given(body, key)) {
            if (!v->is_string())
                invalid(std::string("\"") + key + "\" must be a string");
            if (req.user.empty())
                req.user = v->get<std::string>();
        }
    }
    if (const json *stream = given(body, "stream")) {
        if (!stream->is_boolean())
            invalid("\"stream\" must be a boolean");
        req.stream = stream->get<bool>();
    }
    // response.completed always carries the usage.
    req.stream_usage = req.stream;
    return req;
}

json write_response(const chat::Response &r) {
    std::string text;
    bool has_text = false;
    for (const Block &b : r.content) {
        if (b.kind == Block::Kind::kText) {
            text += b.text;
            has_text = true;
        }
    }
    std::string output = "[";
    if (has_text) {
        const std::string id = fresh_id("msg_");
        append_item(output, ItemText{true, id, {}, {}, text}, true);
    }
    for (const Block &b : r.content) {
        if (b.kind == Block::Kind::kToolUse) {
            const std::string id = fresh_id("fc_");
            const std::string arguments = dump(b.input.is_object() ? b.input : json::object());
            if (output.size() > 1)
                output += ',';
            append_item(output, ItemText{false, id, b.tool_id, b.tool_name, arguments}, true);
        }
    }
    output += ']';
    const std::string answer = response_text(
        r.id.empty() ? fresh_id("resp_") : r.id, static_cast<long long>(std::time(nullptr)),
        r.model, final_status(r.stop_reason), output, r.usage, r.stop_reason);
    // Text read from an upstream is UTF-8 (its parser checked it), so the answer parses.
    json parsed = json::parse(answer, nullptr, false);
    if (parsed.is_discarded())
        throw Error(sqlstate::kUpstreamBadResponse, "the answer holds text that is not UTF-8");
    return parsed;
}

std::string error_body(int status, std::string_view message) {
    return translate::openai_error_json(message, gateway::error_type(status));
}

void StreamWriter::emit(std::string &out, const char *type, json data) {
    data["type"] = type;
    data["sequence_number"] = sequence_++;
    out += "event: ";
    out += type;
    out += "\ndata: ";
    out += dump(data);
    out += "\n\n";
}

// The most frequent events, written without building a document: a stream is mostly deltas.
void StreamWriter::delta(std::string &out, const Item &item, long at, std::string_view text) {
    const char *type =
        item.text ? "response.output_text.delta" : "response.function_call_arguments.delta";
    out += "event: ";
    out += type;
    out += item.text ? "\ndata: {\"content_index\":0,\"delta\":" : "\ndata: {\"delta\":";
    translate::detail::append_json_string(out, text);
    out += ",\"item_id\":";
    translate::detail::append_json_string(out, item.id);
    out += item.text ? ",\"logprobs\":[],\"output_index\":" : ",\"output_index\":";
    out += std::to_string(at);
    out += ",\"sequence_number\":";
    out += std::to_string(sequence_++);
    out += ",\"type\":\"";
    out += type;
    out += "\"}\n\n";
}

void StreamWriter::emit_members(std::string &out, const char *type, const std::string &members) {
    out += "event: ";
    out += type;
    out += "\ndata: {";
    out += members;
    out += ",\"sequence_number\":";
    out += std::to_string(sequence_++);
    out += ",\"type\":\"";
    out += type;
    out += "\"}\n\n";
}

std::string StreamWriter::quoted(std::string_view text) {
    std::string out;
    append_quoted(out, text);
    return out;
}

std::string StreamWriter::part_members(const Item &item, long at) {
    return "\"item_id\":" + quoted(item.id) + ",\"output_index\":" + std::to_string(at) +
           ",\"content_index\":0";
}

// An item as JSON text: in progress (empty) when it is added, whole when it is done.
std::string StreamWriter::item_text(const Item &item, bool done) {
    std::string out;
    append_item(out, ItemText{item.text, item.id, item.call_id, item.name, item.data}, done);
    return out;
}

// Items are whole in a final response.
std::string StreamWriter::response(const char *status) const {
    const bool final = std::string_view(status) != "in_progress";
    std::string output = "[";
    for (const Item &item : items_) {
        if (output.size() > 1)
            output += ',';
        append_item(output, ItemText{item.text, item.id, item.call_id, item.name, item.data},
                    final);
    }
    output += ']';
    return response_text(id_, created_, model_, status, output, usage_, stop_reason_);
}

void StreamWriter::start(const Event *e, std::string &out) {
    started_ = true;
    id_ = e != nullptr && !e->id.empty() ? e->id : fresh_id("resp_");
    if (id_.compare(0, 5, "resp_") != 0)
        id_ = "resp_" + id_;
    model_ = e != nullptr ? e->model : std::string();
    created_ = static_cast<long long>(std::time(nullptr));
    if (e != nullptr)
        usage_ = e->usage;
    const std::string members = "\"response\":" + response("in_progress");
    emit_members(out, "response.created", members);
    emit_members(out, "response.in_progress", members);
}

void StreamWriter::write(const Event &e, std::string &out) {
    if (done_)
        return;
    if (e.kind == Event::Kind::kError) {
        emit(out, "error",
             {{"code", e.error.status == 429 ? "rate_limit_exceeded" : "server_error"},
              {"message", e.error.message},
              {"param", nullptr}});
        done_ = true;
        return;
    }
    if (!started_)
        start(e.kind == Event::Kind::kStart ? &e : nullptr, out);
    auto item_at = [&](std::size_t index) -> long {
        return index < item_of_block_.size() ? item_of_block_[index] : -1;
    };
    switch (e.kind) {
        case Event::Kind::kStart:
        case Event::Kind::kError:
            break;
        case Event::Kind::kBlockStart: {
            if ((e.block.kind != Block::Kind::kText && e.block.kind != Block::Kind::kToolUse) ||
                e.index >= kMaxItems) {
                break;
            }
            Item item;
            item.text = e.block.kind == Block::Kind::kText;
            item.id = fresh_id(item.text ? "msg_" : "fc_");
            item.call_id = e.block.tool_id;
            item.name = e.block.tool_name;
            if (item_of_block_.size() <= e.index)
                item_of_block_.resize(e.index + 1, -1);
            item_of_block_[e.index] = static_cast<long>(items_.size());
            const long at = static_cast<long>(items_.size());
            items_.push_back(std::move(item));
            const Item &added = items_.back();
            emit_members(
                out, "response.output_item.added",
                "\"output_index\":" + std::to_string(at) + ",\"item\":" + item_text(added, false));
            if (added.text) {
                emit_members(out, "response.content_part.added",
                             part_members(added, at) +
                                 ",\"part\":{\"type\":\"output_text\",\"text\":\"\","
                                 "\"annotations\":[]}");
            }
            break;
        }
        case Event::Kind::kTextDelta:
        case Event::Kind::kToolInputDelta: {
            const long at = item_at(e.index);
            if (at < 0)
                break;
            Item &item = items_[static_cast<std::size_t>(at)];
            item.data += e.text;
            delta(out, item, at, e.text);
            break;
        }
        case Event::Kind::kBlockStop: {
            const long at = item_at(e.index);
            if (at < 0)
                break;
            item_of_block_[e.index] = -1;
            const Item &item = items_[static_cast<std::size_t>(at)];
            std::string data;
            translate::detail::append_json_string(data, item.data);
            if (item.text) {
                emit_members(out, "response.output_text.done",
                             part_members(item, at) + ",\"text\":" + data + ",\"logprobs\":[]");
                emit_members(out, "response.content_part.done",
                             part_members(item, at) +
                                 ",\"part\":{\"type\":\"output_text\",\"text\":" + data +
                                 ",\"annotations\":[]}");
            } else {
                emit_members(out, "response.function_call_arguments.done",
                             "\"item_id\":" + quoted(item.id) + ",\"output_index\":" +
                                 std::to_string(at) + ",\"arguments\":" + data);
            }
            emit_members(
                out, "response.output_item.done",
                "\"output_index\":" + std::to_string(at) + ",\"item\":" + item_text(item, true));
            break;
        }
        case Event::Kind::kStop:
            stop_reason_ = e.stop_reason;
            break;
        case Event::Kind::kUsage:
            usage_ = e.usage;
            break;
        case Event::Kind::kEnd: {
            const char *status = final_status(stop_reason_);
            emit_members(out,
                         std::string_view(status) == "completed" ? "response.completed"
                                                                 : "response.incomplete",
                         "\"response\":" + response(status));
            done_ = true;
            break;
        }
    }
}

// ---- upstream side ----

bool needs_upstream_state(const json &body) {
    return given(body, "previous_response_id") != nullptr || given(body, "conversation") != nullptr;
}

chat::Passed pass_request(const ServiceEndpoint &service, json &body, std::string_view raw, bool) {
    if (!body.is_object())
        invalid("the Responses request must be a JSON object");
    chat::Passed call;
    if (const json *stream = given(body, "stream")) {
        if (!stream->is_boolean())
            invalid("\"stream\" must be a boolean");
        call.stream = stream->get<bool>();
    }
    call.stream_usage = call.stream;
    // Usage comes in response.completed: no stream_options to add.
    call.request = translate::detail::post_json(
        service, "/v1/responses", call.stream,
        openai_chat::passed_body(service, body, raw, /*ask_stream_usage=*/false));
    return call;
}

namespace {

long long count_member(const json &object, const char *key) {
    const json *v = member(object, key);
    return v != nullptr && v->is_number_integer() ? v->get<long long>() : 0;
}

Usage usage_from(const json *usage) {
    Usage u;
    if (usage == nullptr || !usage->is_object())
        return u;
    u.present = true;
    u.prompt_tokens = count_member(*usage, "input_tokens");
    u.completion_tokens = count_member(*usage, "output_tokens");
    u.total_tokens = add_counts(u.prompt_tokens, u.completion_tokens);
    if (const json *details = member(*usage, "input_tokens_details");
        details != nullptr && details->is_object()) {
        u.cached_tokens = cached_part(count_member(*details, "cached_tokens"), u.prompt_tokens);
    }
    return u;
}

chat::StopReason stop_of(const json &response) {
    if (string_member(response, "status") != "incomplete")
        return chat::StopReason::kEndTurn;
    const json *details = member(response, "incomplete_details");
    const std::string reason = details != nullptr ? string_member(*details, "reason") : "";
    return reason == "max_output_tokens" ? chat::StopReason::kMaxTokens
           : reason == "content_filter"  ? chat::StopReason::kContentFilter
                                         : chat::StopReason::kOther;
}

}  // namespace

chat::Response read_response(const ServiceEndpoint &service, std::string_view body) {
    json j = translate::detail::parse_upstream_body(service, body, "responses");
    const json *output = member(j, "output");
    if (!j.is_object() || output == nullptr || !output->is_array())
        translate::detail::bad_response(service, "responses", "the body has no \"output\" array");
    chat::Response r;
    r.id = string_member(j, "id");
    r.model = string_member(j, "model");
    if (r.model.empty())
        r.model = service.model;
    bool calls = false;
    for (const json &item : *output) {
        const std::string type = string_member(item, "type");
        if (type == "message") {
            const json *content = member(item, "content");
            if (content == nullptr || !content->is_array())
                continue;
            for (const json &part : *content) {
                if (string_member(part, "type") != "output_text")
                    continue;
                Block b;
                b.text = string_member(part, "text");
                r.content.push_back(std::move(b));
            }
        } else if (type == "function_call") {
            Block b;
            b.kind = Block::Kind::kToolUse;
            b.tool_id = string_member(item, "call_id");
            b.tool_name = string_member(item, "name");
            b.input = json::parse(string_member(item, "arguments"), nullptr, false);
            if (!b.input.is_object())
                b.input = json::object();
            r.content.push_back(std::move(b));
            calls = true;
        }
    }
    r.stop_reason = stop_of(j);
    if (calls && r.stop_reason == chat::StopReason::kEndTurn)
        r.stop_reason = chat::StopReason::kToolUse;
    r.usage = usage_from(member(j, "usage"));
    return r;
}

Usage answer_usage(std::string_view body) {
    static constexpr std::string_view kKeys[] = {"usage"};
    std::string_view value;
    if (!translate::detail::top_level_members(body, kKeys, &value, 1) || value.empty() ||
        value[0] != '{') {
        return {};
    }
    json usage = json::parse(value, nullptr, false);
    return usage_from(usage.is_discarded() ? nullptr : &usage);
}

StreamReader::StreamReader(const ServiceEndpoint &service) : service_(service) {}

void StreamReader::read(std::string_view bytes, bool finishing, std::vector<Event> &out) {
    auto too_long = read_events(parser_, bytes, finishing, done_,
                                [&](const SseEventView &e) { event(e, out); });
    // An event past the parser's cap; the events before it have been read.
    if (too_long && !done_)
        fail(502, "service \"" + service_.name + "\": " + *too_long, out);
}

void StreamReader::feed(std::string_view bytes, std::vector<Event> &out) {
    if (!done_)
        read(bytes, false, out);
}

void StreamReader::finish(std::vector<Event> &out) {
    if (done_)
        return;
    read({}, true, out);
    if (!done_) {
        fail(502,
             "service \"" + service_.name + "\" ended the stream before the answer was complete",
             out);
    }
}

void StreamReader::fail(int status, std::string message, std::vector<Event> &out) {
    Event e;
    e.kind = Event::Kind::kError;
    e.error.status = status;
    e.error.message = std::move(message);
    out.push_back(std::move(e));
    done_ = true;
}

void StreamReader::ensure_started(const json &response, std::vector<Event> &out) {
    if (started_)
        return;
    started_ = true;
    Event e;
    e.kind = Event::Kind::kStart;
    e.id = string_member(response, "id");
    e.model = string_member(response, "model");
    if (e.model.empty())
        e.model = service_.model;
    out.push_back(std::move(e));
}

void StreamReader::close_open(std::vector<Event> &out) {
    if (!open_)
        return;
    open_ = false;
    Event e;
    e.kind = Event::Kind::kBlockStop;
    e.index = next_block_ - 1;
    out.push_back(std::move(e));
}

void StreamReader::event(const SseEventView &sse, std::vector<Event> &out) {
    json j = json::parse(sse.data, nullptr, false);
    if (!j.is_object()) {
        fail(502, "service \"" + service_.name + "\" sent a stream event that is not a JSON object",
             out);
        return;
    }
    const std::string type = string_member(j, "type");
    const json *response = member(j, "response");
    const json none = json::object();
    if (type == "response.created" || type == "response.in_progress") {
        ensure_started(response != nullptr ? *response : none, out);
        return;
    }
    ensure_started(response != nullptr ? *response : none, out);
    if (type == "response.output_item.added") {
        const json *item = member(j, "item");
        const std::string kind = item != nullptr ? string_member(*item, "type") : "";
        if ((kind != "message" && kind != "function_call") || next_block_ >= kMaxItems)
            return;
        close_open(out);
        Event e;
        e.kind = Event::Kind::kBlockStart;
        e.index = next_block_++;
        if (kind == "function_call") {
            e.block.kind = Block::Kind::kToolUse;
            e.block.tool_id = string_member(*item, "call_id");
            e.block.tool_name = string_member(*item, "name");
            calls_ = true;
        }
        out.push_back(std::move(e));
        open_ = true;
    } else if (type == "response.output_text.delta" ||
               type == "response.function_call_arguments.delta") {
        if (!open_)
            return;
        Event e;
        e.kind = type == "response.output_text.delta" ? Event::Kind::kTextDelta
                                                      : Event::Kind::kToolInputDelta;
        e.index = next_block_ - 1;
        e.text = string_member(j, "delta");
        out.push_back(std::move(e));
    } else if (type == "response.output_item.done") {
        close_open(out);
    } else if (type == "response.completed" || type == "response.incomplete") {
        close_open(out);
        Event stop;
        stop.kind = Event::Kind::kStop;
        stop.stop_reason = stop_of(response != nullptr ? *response : none);
        if (calls_ && stop.stop_reason == chat::StopReason::kEndTurn)
            stop.stop_reason = chat::StopReason::kToolUse;
        out.push_back(std::move(stop));
        Event usage;
        usage.kind = Event::Kind::kUsage;
        usage.usage = usage_from(response != nullptr ? member(*response, "usage") : nullptr);
        if (usage.usage.present)
            out.push_back(std::move(usage));
        Event end;
        end.kind = Event::Kind::kEnd;
        out.push_back(std::move(end));
        done_ = true;
    } else if (type == "response.failed" || type == "error") {
        const json *err = response != nullptr ? member(*response, "error") : &j;
        std::string message = err != nullptr ? string_member(*err, "message") : std::string();
        if (message.empty())
            message = "service \"" + service_.name + "\" failed the response";
        fail(502, redact_key(message, service_), out);
    }
}

}  // namespace pgi::protocols::openai_responses
