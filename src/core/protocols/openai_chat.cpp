#include "openai_chat.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdlib>
#include <ctime>
#include <map>
#include <optional>

#include "gateway_request.h"
#include "openai_chat_rules.h"
#include "redact.h"
#include "translate_util.h"
#include "upstream_error.h"

namespace pgi::protocols::openai_chat {

namespace {

using chat::Block;
using chat::Event;
using nlohmann::json;
using translate::detail::given;
using translate::detail::member;
using translate::detail::string_member;

// A tool call index past this is a broken upstream, not a reason to allocate without bound.
constexpr std::size_t kMaxCalls = 4096;

[[noreturn]] void invalid(const std::string &message,
                          const std::string &hint = rules::kRequestHint) {
    throw Error(sqlstate::kInvalidParameterValue, message, hint);
}

// What the form cannot carry: this caller side only runs when the call crosses to another
// protocol, so the caller is told where the feature does work.
[[noreturn]] void cannot_cross(const std::string &what) {
    throw Error(sqlstate::kFeatureNotSupported, what + " cannot be translated to another protocol",
                "Only a service of the OPENAI_V1 protocol takes it; call one, or leave it out.");
}

[[noreturn]] void unsupported(const ServiceEndpoint &s, const std::string &what) {
    throw Error(sqlstate::kFeatureNotSupported, "service \"" + s.name + "\" cannot take " + what,
                "The OPENAI_V1 protocol has no counterpart for it; leave it out of the request.");
}

std::string where(std::size_t i) {
    return "messages[" + std::to_string(i) + "]";
}

// ---- reading a request ----

// The text of system, developer, assistant and tool content: a string, or text parts joined
// with nothing (they are pieces of one message). An assistant's refusal parts are its text.
std::string text_of(const json *content) {
    if (content == nullptr)
        return {};
    if (content->is_string())
        return content->get<std::string>();
    std::string text;
    for (const json &part : *content) {
        const std::string &type = part["type"].get_ref<const std::string &>();
        if (type == "text") {
            text += string_member(part, "text");
        } else if (type == "refusal") {
            text += string_member(part, "refusal");
        } else {
            cannot_cross("content parts of type \"" + type + "\" outside user messages");
        }
    }
    return text;
}

std::vector<Block> user_blocks(const json &content, std::size_t i) {
    std::vector<Block> blocks;
    if (content.is_string()) {
        Block b;
        b.text = content.get<std::string>();
        blocks.push_back(std::move(b));
        return blocks;
    }
    for (const json &part : content) {
        const std::string &type = part["type"].get_ref<const std::string &>();
        Block b;
        if (type == "text") {
            b.text = string_member(part, "text");
        } else if (type == "image_url") {
            const json *image = member(part, "image_url");
            b.image_url = image != nullptr ? string_member(*image, "url") : std::string();
            if (b.image_url.empty()) {
                invalid(where(i) + ".content image_url parts need image_url.url",
                        "An image part looks like "
                        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://...\"}}.");
            }
            b.kind = Block::Kind::kImage;
        } else {
            cannot_cross("content parts of type \"" + type + "\"");
        }
        blocks.push_back(std::move(b));
    }
    return blocks;
}

// Gemini's thought signature on an OpenAI tool call, where Google's own OpenAI-compatible API
// puts it (extra_content.google.thought_signature): a Gemini thinking model refuses a replayed
// call without the signature it gave, so it must survive a round trip through OpenAI's shape.
std::string signature_of(const json &call) {
    const json *extra = member(call, "extra_content");
    const json *google = extra != nullptr ? member(*extra, "google") : nullptr;
    return google != nullptr ? string_member(*google, "thought_signature") : std::string();
}

void put_signature(json &call, const std::string &signature) {
    if (!signature.empty())
        call["extra_content"] = {{"google", {{"thought_signature", signature}}}};
}

bool is_function(const json &object) {
    const json *type = member(object, "type");
    return type == nullptr || *type == "function";
}

chat::OutputFormat read_format(const json &body) {
    chat::OutputFormat format;
    const json *v = given(body, "response_format");
    if (v == nullptr)
        return format;
    static constexpr const char *kHint =
        "Use {\"type\":\"text\"}, {\"type\":\"json_object\"} or "
        "{\"type\":\"json_schema\",\"json_schema\":{\"name\":...,\"schema\":{...}}}.";
    std::string type = string_member(*v, "type");
    if (type == "text")
        return format;
    if (type == "json_object") {
        format.kind = chat::OutputFormat::Kind::kJsonObject;
        return format;
    }
    if (type != "json_schema")
        invalid("\"response_format\" must have type text, json_object or json_schema", kHint);
    const json *spec = given(*v, "json_schema");
    if (spec == nullptr || !spec->is_object())
        invalid("\"response_format\" of type json_schema needs a \"json_schema\" object", kHint);
    const json *schema = given(*spec, "schema");
    if (schema != nullptr && !schema->is_object())
        invalid("\"response_format.json_schema.schema\" must be a JSON Schema object", kHint);
    const json *strict = given(*spec, "strict");
    if (strict != nullptr && !strict->is_boolean())
        invalid("\"response_format.json_schema.strict\" must be a boolean", kHint);
    format.kind = chat::OutputFormat::Kind::kJsonSchema;
    format.name = string_member(*spec, "name");
    if (schema != nullptr)
        format.schema = *schema;
    format.strict = strict != nullptr && strict->get<bool>();
    return format;
}

std::vector<chat::Tool> read_tools(const json &body) {
    std::vector<chat::Tool> tools;
    const json *list = given(body, "tools");
    if (list == nullptr)
        return tools;
    for (const json &entry : *list) {
        std::string type = string_member(entry, "type");
        if (type != "function")
            cannot_cross("tools of type \"" + type + "\"");
        const json *fn = member(entry, "function");
        if (fn == nullptr || string_member(*fn, "name").empty())
            invalid("every entry of \"tools\" needs function.name");
        chat::Tool tool;
        tool.name = string_member(*fn, "name");
        tool.description = string_member(*fn, "description");
        if (const json *parameters = given(*fn, "parameters")) {
            if (!parameters->is_object())
                invalid("tools[].function.parameters must be a JSON Schema object");
            tool.parameters = *parameters;
        }
        tools.push_back(std::move(tool));
    }
    return tools;
}

// ---- answers ----

// The stop reason of a choice. Some servers (vLLM, Ollama) say "stop" when the answer is tool
// calls; a caller of another dialect must still be told to run them. vLLM names the stop string
// that matched in the choice's stop_reason.
chat::StopReason stop_reason(const json &choice, bool has_tool_calls, std::string &sequence) {
    std::string reason = string_member(choice, "finish_reason");
    if (reason == "length")
        return chat::StopReason::kMaxTokens;
    if (reason == "tool_calls" || reason == "function_call")
        return chat::StopReason::kToolUse;
    if (reason == "content_filter")
        return chat::StopReason::kContentFilter;
    if (reason == "stop" || reason.empty()) {
        if (has_tool_calls)
            return chat::StopReason::kToolUse;
        sequence = string_member(choice, "stop_reason");
        return sequence.empty() ? chat::StopReason::kEndTurn : chat::StopReason::kStopSequence;
    }
    return chat::StopReason::kOther;
}

std::string dump(const json &value) {
    return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

// The text of an answer's content: a string, or (some servers) an array of text parts.
std::string answer_text(const ServiceEndpoint &s, const json *content) {
    if (content == nullptr)
        return {};
    if (content->is_string())
        return content->get<std::string>();
    if (!content->is_array())
        translate::detail::bad_response(s, "chat", "message.content is neither text nor null");
    std::string text;
    for (const json &part : *content)
        text += string_member(part, "text");
    return text;
}

Event event_of(Event::Kind kind, std::size_t index = 0) {
    Event e;
    e.kind = kind;
    e.index = index;
    return e;
}

// The status a mid-stream error stands for: OpenAI's error chunks carry no status, but their
// type or code say when it is a rate limit; Google's layer puts the HTTP status in code.
int stream_error_status(const UpstreamError &err) {
    for (const std::string *s : {&err.type, &err.code}) {
        if (s->find("rate_limit") != std::string::npos || *s == "insufficient_quota")
            return 429;
    }
    if (err.code.size() == 3 && std::isdigit(static_cast<unsigned char>(err.code[0]))) {
        int status = std::atoi(err.code.c_str());
        if (status >= 400 && status <= 599)
            return status;
    }
    return 500;
}

}  // namespace

const char *finish_reason(chat::StopReason reason) {
    switch (reason) {
        case chat::StopReason::kMaxTokens:
            return "length";
        case chat::StopReason::kToolUse:
            return "tool_calls";
        case chat::StopReason::kContentFilter:
            return "content_filter";
        case chat::StopReason::kEndTurn:
        case chat::StopReason::kStopSequence:
        case chat::StopReason::kOther:
            break;
    }
    return "stop";
}

// ---- caller side ----

chat::Request read_request(const json &body) {
    rules::validate(body);
    chat::Request r;
    if (const json *n = given(body, "n"); n != nullptr && n->get<long long>() > 1)
        cannot_cross("\"n\" greater than 1");

    // A tool message names the call it answers by id; the form also carries the tool's name,
    // which Gemini answers by.
    std::map<std::string, std::string> call_names;
    const json &messages = body["messages"];
    for (std::size_t i = 0; i < messages.size(); ++i) {
        const json &m = messages[i];
        const std::string &role = m["role"].get_ref<const std::string &>();
        const json *content = given(m, "content");
        if (role == "system" || role == "developer") {
            if (!r.system.empty())
                r.system += "\n\n";
            r.system += text_of(content);
        } else if (role == "user") {
            r.messages.push_back({chat::Role::kUser, user_blocks(*content, i)});
        } else if (role == "assistant") {
            chat::Message message{chat::Role::kAssistant, {}};
            if (std::string text = text_of(content); !text.empty()) {
                Block b;
                b.text = std::move(text);
                message.content.push_back(std::move(b));
            }
            if (const json *calls = given(m, "tool_calls")) {
                for (const json &call : *calls) {
                    if (!is_function(call))
                        cannot_cross("tool calls of type \"" + string_member(call, "type") + "\"");
                    Block b;
                    b.kind = Block::Kind::kToolUse;
                    b.tool_id = string_member(call, "id");
                    b.tool_name = string_member(call["function"], "name");
                    b.input = rules::tool_arguments(call, i);
                    b.signature = signature_of(call);
                    call_names[b.tool_id] = b.tool_name;
                    message.content.push_back(std::move(b));
                }
            }
            // An assistant message with neither (content null, no calls) says nothing.
            if (!message.content.empty())
                r.messages.push_back(std::move(message));
        } else {  // tool
            Block b;
            b.kind = Block::Kind::kToolResult;
            b.tool_id = m["tool_call_id"].get<std::string>();
            if (auto name = call_names.find(b.tool_id); name != call_names.end())
                b.tool_name = name->second;
            b.text = text_of(content);
            // The results of one round of calls are one user turn, as Anthropic needs them.
            bool results_turn =
                !r.messages.empty() && r.messages.back().role == chat::Role::kUser &&
                std::all_of(r.messages.back().content.begin(), r.messages.back().content.end(),
                            [](const Block &previous) {
                                return previous.kind == Block::Kind::kToolResult;
                            });
            if (results_turn) {
                r.messages.back().content.push_back(std::move(b));
            } else {
                r.messages.push_back({chat::Role::kUser, {std::move(b)}});
            }
        }
    }
    if (r.messages.empty())
        invalid("the chat request has no user or assistant message");

    r.tools = read_tools(body);
    if (auto choice = rules::tool_choice(body)) {
        chat::ToolChoice c;
        if (choice->mode == "none") {
            c.mode = chat::ToolChoice::Mode::kNone;
        } else if (choice->mode == "required") {
            c.mode = chat::ToolChoice::Mode::kRequired;
        } else if (choice->mode == "function") {
            c.mode = chat::ToolChoice::Mode::kNamed;
            c.name = choice->function;
        }
        r.tool_choice = c;
    }
    r.max_tokens = rules::max_tokens(body);
    if (const json *v = given(body, "temperature"))
        r.temperature = v->get<double>();
    if (const json *v = given(body, "top_p"))
        r.top_p = v->get<double>();
    if (json stop = rules::stop_sequences(body); stop.is_array()) {
        for (const json &s : stop)
            r.stop.push_back(s.get<std::string>());
    }
    if (const json *v = given(body, "seed")) {
        if (v->is_number_unsigned() && v->get<unsigned long long>() > LLONG_MAX)
            invalid("\"seed\" is out of range");
        r.seed = v->get<long long>();
    }
    r.format = read_format(body);
    for (auto [key, field] : {std::pair{"presence_penalty", &r.presence_penalty},
                              std::pair{"frequency_penalty", &r.frequency_penalty}}) {
        if (const json *v = given(body, key))
            *field = v->get<double>();  // rules::validate checked it is a number
    }
    if (const json *v = given(body, "parallel_tool_calls")) {
        if (!v->is_boolean())
            invalid("\"parallel_tool_calls\" must be a boolean");
        r.parallel_tool_calls = v->get<bool>();
    }
    if (const json *v = given(body, "user")) {
        if (!v->is_string())
            invalid("\"user\" must be a string");
        r.user = v->get<std::string>();
    }
    const json *stream = given(body, "stream");
    r.stream = stream != nullptr && stream->get<bool>();
    r.stream_usage = r.stream && rules::stream_usage_asked(body);
    return r;
}

json write_response(const chat::Response &response) {
    std::string text;
    json tool_calls = json::array();
    for (const Block &b : response.content) {
        if (b.kind == Block::Kind::kText) {
            text += b.text;
        } else if (b.kind == Block::Kind::kToolUse) {
            tool_calls.push_back(
                {{"id", b.tool_id},
                 {"type", "function"},
                 {"function", {{"name", b.tool_name}, {"arguments", dump(b.input)}}}});
            put_signature(tool_calls.back(), b.signature);
        }
        // An answer's images or tool results have no place in an OpenAI message.
    }
    return rules::completion(response.id.empty() ? translate::detail::completion_id() : response.id,
                             response.model, std::move(text), std::move(tool_calls),
                             finish_reason(response.stop_reason), response.usage);
}

void StreamWriter::start(std::string id, const std::string &model) {
    if (id.empty())
        id = translate::detail::completion_id();
    prefix_ = "{\"id\":";
    translate::detail::append_json_string(prefix_, id);
    prefix_ += ",\"object\":\"chat.completion.chunk\",\"created\":";
    prefix_ += std::to_string(static_cast<long long>(std::time(nullptr)));
    prefix_ += ",\"model\":";
    translate::detail::append_json_string(prefix_, model);
    prefix_ += ",\"choices\":[";
}

void StreamWriter::delta_chunk(std::string &out, std::string_view delta,
                               const char *finish_reason) {
    if (prefix_.empty())
        start({}, {});
    out += "data: ";
    out += prefix_;
    out += "{\"index\":0,\"delta\":";
    out += delta;
    out += ",\"finish_reason\":";
    if (finish_reason == nullptr) {
        out += "null";
    } else {
        out += '"';
        out += finish_reason;
        out += '"';
    }
    out += "}]}\n\n";
}

void StreamWriter::write(const Event &e, std::string &out) {
    if (done_)
        return;
    std::string delta;
    switch (e.kind) {
        case Event::Kind::kStart:
            if (!prefix_.empty())
                break;  // one stream, one id: a repeated start says nothing new
            start(e.id, e.model);
            if (e.usage.present)
                usage_ = e.usage;
            delta_chunk(out, "{\"role\":\"assistant\",\"content\":\"\"}", nullptr);
            break;
        case Event::Kind::kBlockStart: {
            if (e.block.kind != Block::Kind::kToolUse)
                break;
            int call = tool_calls_++;
            tool_index_[e.index] = call;
            delta = "{\"tool_calls\":[{\"index\":" + std::to_string(call) + ",\"id\":";
            translate::detail::append_json_string(delta, e.block.tool_id);
            delta += ",\"type\":\"function\",\"function\":{\"name\":";
            translate::detail::append_json_string(delta, e.block.tool_name);
            delta += ",\"arguments\":\"\"}";
            if (!e.block.signature.empty()) {
                delta += ",\"extra_content\":{\"google\":{\"thought_signature\":";
                translate::detail::append_json_string(delta, e.block.signature);
                delta += "}}";
            }
            delta += "}]}";
            delta_chunk(out, delta, nullptr);
            break;
        }
        case Event::Kind::kTextDelta:
            if (e.text.empty())
                break;
            delta = "{\"content\":";
            translate::detail::append_json_string(delta, e.text);
            delta += '}';
            delta_chunk(out, delta, nullptr);
            break;
        case Event::Kind::kToolInputDelta: {
            auto call = tool_index_.find(e.index);
            if (call == tool_index_.end() || e.text.empty())
                break;
            delta = "{\"tool_calls\":[{\"index\":" + std::to_string(call->second) +
                    ",\"function\":{\"arguments\":";
            translate::detail::append_json_string(delta, e.text);
            delta += "}}]}";
            delta_chunk(out, delta, nullptr);
            break;
        }
        case Event::Kind::kBlockStop:
            break;
        case Event::Kind::kStop:
            delta_chunk(out, "{}", finish_reason(e.stop_reason));
            break;
        case Event::Kind::kUsage:
            usage_ = e.usage;
            break;
        case Event::Kind::kEnd:
            if (stream_usage_) {
                if (prefix_.empty())
                    start({}, {});
                out += "data: ";
                out += prefix_;
                out += "],\"usage\":";
                translate::detail::append_usage_json(out, usage_);
                out += "}\n\n";
            }
            out += "data: [DONE]\n\n";
            done_ = true;
            break;
        case Event::Kind::kError:
            out += "data: ";
            out += translate::openai_error_json(
                e.error.message.empty() ? "the service failed mid-stream" : e.error.message,
                e.error.type.empty() ? gateway::error_type(e.error.status) : e.error.type);
            out += "\n\n";
            done_ = true;
            break;
    }
}

std::string error_body(int status, std::string_view message) {
    return translate::openai_error_json(message, gateway::error_type(status));
}

// ---- upstream side ----

translate::UpstreamRequest write_request(const ServiceEndpoint &s, const chat::Request &r,
                                         const chat::Defaults &) {
    // chat::Defaults holds Anthropic's required limit; OpenAI gets no limit the caller did not set.
    if (r.top_k)
        unsupported(s, "\"top_k\"");
    json messages = json::array();
    if (!r.system.empty())
        messages.push_back({{"role", "system"}, {"content", r.system}});
    for (const chat::Message &m : r.messages) {
        if (m.role == chat::Role::kUser) {
            // Tool results are tool messages, and go first: they must follow the assistant
            // message that made the calls.
            json parts = json::array();
            bool only_text = true;
            for (const Block &b : m.content) {
                switch (b.kind) {
                    case Block::Kind::kToolResult:
                        messages.push_back(
                            {{"role", "tool"}, {"tool_call_id", b.tool_id}, {"content", b.text}});
                        break;
                    case Block::Kind::kText:
                        parts.push_back({{"type", "text"}, {"text", b.text}});
                        break;
                    case Block::Kind::kImage:
                        parts.push_back(
                            {{"type", "image_url"}, {"image_url", {{"url", b.image_url}}}});
                        only_text = false;
                        break;
                    case Block::Kind::kToolUse:
                        unsupported(s, "tool calls in a user message");
                }
            }
            if (parts.empty())
                continue;
            json content = only_text && parts.size() == 1 ? parts[0]["text"] : std::move(parts);
            messages.push_back({{"role", "user"}, {"content", std::move(content)}});
            continue;
        }
        std::string text;
        json tool_calls = json::array();
        for (const Block &b : m.content) {
            switch (b.kind) {
                case Block::Kind::kText:
                    text += b.text;
                    break;
                case Block::Kind::kToolUse:
                    tool_calls.push_back(
                        {{"id", b.tool_id},
                         {"type", "function"},
                         {"function", {{"name", b.tool_name}, {"arguments", dump(b.input)}}}});
                    put_signature(tool_calls.back(), b.signature);
                    break;
                case Block::Kind::kImage:
                    unsupported(s, "images in an assistant message");
                case Block::Kind::kToolResult:
                    unsupported(s, "tool results in an assistant message");
            }
        }
        json message = {{"role", "assistant"}};
        message["content"] = text.empty() && !tool_calls.empty() ? json() : json(std::move(text));
        if (!tool_calls.empty())
            message["tool_calls"] = std::move(tool_calls);
        messages.push_back(std::move(message));
    }

    json body = {{"model", s.model}, {"messages", std::move(messages)}};
    if (!r.tools.empty()) {
        json tools = json::array();
        for (const chat::Tool &t : r.tools) {
            json fn = {{"name", t.name}};
            if (!t.description.empty())
                fn["description"] = t.description;
            if (!t.parameters.empty())
                fn["parameters"] = t.parameters;
            tools.push_back({{"type", "function"}, {"function", std::move(fn)}});
        }
        body["tools"] = std::move(tools);
    }
    if (r.tool_choice) {
        switch (r.tool_choice->mode) {
            case chat::ToolChoice::Mode::kAuto:
                body["tool_choice"] = "auto";
                break;
            case chat::ToolChoice::Mode::kNone:
                body["tool_choice"] = "none";
                break;
            case chat::ToolChoice::Mode::kRequired:
                body["tool_choice"] = "required";
                break;
            case chat::ToolChoice::Mode::kNamed:
                body["tool_choice"] = {{"type", "function"},
                                       {"function", {{"name", r.tool_choice->name}}}};
                break;
        }
    }
    // max_completion_tokens, not the older max_tokens: OpenAI's reasoning models refuse
    // max_tokens, and vLLM and the other current servers take the newer name.
    if (r.max_tokens)
        body["max_completion_tokens"] = *r.max_tokens;
    if (r.temperature)
        body["temperature"] = *r.temperature;
    if (r.top_p)
        body["top_p"] = *r.top_p;
    if (!r.stop.empty())
        body["stop"] = r.stop;
    if (r.seed)
        body["seed"] = *r.seed;
    if (r.presence_penalty)
        body["presence_penalty"] = *r.presence_penalty;
    if (r.frequency_penalty)
        body["frequency_penalty"] = *r.frequency_penalty;
    if (r.parallel_tool_calls && !r.tools.empty())
        body["parallel_tool_calls"] = *r.parallel_tool_calls;
    switch (r.format.kind) {
        case chat::OutputFormat::Kind::kText:
            break;
        case chat::OutputFormat::Kind::kJsonObject:
            body["response_format"] = {{"type", "json_object"}};
            break;
        case chat::OutputFormat::Kind::kJsonSchema:
            // OpenAI requires a name; other dialects' schemas come without one.
            body["response_format"] = {
                {"type", "json_schema"},
                {"json_schema",
                 {{"name", r.format.name.empty() ? std::string("response") : r.format.name},
                  {"schema", r.format.schema},
                  {"strict", r.format.strict}}}};
            break;
    }
    if (!r.user.empty())
        body["user"] = r.user;
    if (r.stream) {
        body["stream"] = true;
        body["stream_options"] = {{"include_usage", true}};
    }
    return translate::detail::post_json(s, "/v1/chat/completions", r.stream,
                                        translate::detail::serialise(body));
}

chat::Response read_response(const ServiceEndpoint &s, std::string_view body) {
    json j = translate::detail::parse_upstream_body(s, body, "chat");
    const json *choices = member(j, "choices");
    if (choices == nullptr || !choices->is_array())
        translate::detail::bad_response(s, "chat", "the body has no \"choices\" array");
    if (choices->empty())
        translate::detail::bad_response(s, "chat", "the body has no choices");
    const json &choice = (*choices)[0];
    const json *message = member(choice, "message");
    if (message == nullptr || !message->is_object())
        translate::detail::bad_response(s, "chat", "the first choice has no \"message\" object");

    chat::Response r;
    r.id = string_member(j, "id");
    r.model = string_member(j, "model");
    if (r.model.empty())
        r.model = s.model;
    std::string text = answer_text(s, given(*message, "content"));
    if (text.empty())
        text = string_member(*message, "refusal");
    if (!text.empty()) {
        Block b;
        b.text = std::move(text);
        r.content.push_back(std::move(b));
    }
    if (const json *calls = given(*message, "tool_calls")) {
        if (!calls->is_array())
            translate::detail::bad_response(s, "chat", "message.tool_calls is not an array");
        int number = 0;
        for (const json &call : *calls) {
            const json *fn = member(call, "function");
            if (!is_function(call) || fn == nullptr)
                continue;  // other kinds of call were not asked for
            Block b;
            b.kind = Block::Kind::kToolUse;
            b.tool_id = string_member(call, "id");
            if (b.tool_id.empty())
                b.tool_id = "call_" + std::to_string(number);
            number++;
            b.tool_name = string_member(*fn, "name");
            b.signature = signature_of(call);
            const json *args = given(*fn, "arguments");
            if (args != nullptr && args->is_object()) {
                b.input = *args;
            } else if (args != nullptr && args->is_string() &&
                       !args->get_ref<const std::string &>().empty()) {
                b.input = json::parse(args->get_ref<const std::string &>(), nullptr, false);
            }
            if (!b.input.is_object()) {
                translate::detail::bad_response(
                    s, "chat",
                    "tool call \"" + b.tool_id + "\" has arguments that are not a JSON object");
            }
            r.content.push_back(std::move(b));
        }
    }
    bool has_calls = !r.content.empty() && r.content.back().kind == Block::Kind::kToolUse;
    r.stop_reason = stop_reason(choice, has_calls, r.stop_sequence);
    const json *usage = given(j, "usage");
    r.usage = translate::detail::usage_from_openai(usage != nullptr ? *usage : json());
    return r;
}

// ---- StreamReader ----

StreamReader::StreamReader(const ServiceEndpoint &service) : service_(service) {}

void StreamReader::read(std::string_view bytes, bool finishing, std::vector<Event> &out) {
    auto too_long = read_events(parser_, bytes, finishing, done_,
                                [&](const SseEventView &e) { event(e, out); });
    // An event past the parser's cap; the events before it have been read.
    if (too_long && !done_)
        fail(502, "upstream_error", "service \"" + service_.name + "\": " + *too_long, out);
}

void StreamReader::feed(std::string_view bytes, std::vector<Event> &out) {
    if (!done_)
        read(bytes, false, out);
}

void StreamReader::finish(std::vector<Event> &out) {
    if (done_)
        return;
    read({}, true, out);
    if (!done_)
        end(out);
}

void StreamReader::event(const SseEventView &e, std::vector<Event> &out) {
    if (e.event == "error") {
        // Some OpenAI-compatible servers name their error events.
        UpstreamError err = shown_upstream_error(std::string(e.data), service_);
        fail(stream_error_status(err), err.type, err.message, out);
        return;
    }
    if (e.data == "[DONE]") {
        end(out);
        return;
    }
    if (e.data.find_first_not_of(" \t\r\n") == std::string_view::npos)
        return;  // an empty event carries nothing
    if (started_ && !stopped_ && plain_text_chunk(e.data, out))
        return;
    json j = json::parse(e.data, nullptr, false);
    if (!j.is_object()) {
        fail(502, "upstream_error",
             "service \"" + service_.name + "\" sent a malformed stream event", out);
        return;
    }
    if (given(j, "error") != nullptr) {
        UpstreamError err = shown_upstream_error(std::string(e.data), service_);
        fail(stream_error_status(err), err.type, err.message, out);
        return;
    }
    chunk(j, out);
}

bool StreamReader::plain_text_chunk(std::string_view data, std::vector<Event> &out) {
    namespace detail = translate::detail;
    auto unset = [](std::string_view v) { return v.empty() || v == "null"; };
    static constexpr std::string_view kTop[] = {"choices", "usage", "error"};
    std::string_view top[3];
    if (!detail::top_level_members(data, kTop, top, 3) || !unset(top[1]) || !top[2].empty())
        return false;
    std::vector<std::string_view> choices;
    if (top[0].empty() || top[0][0] != '[' || !detail::array_elements(top[0], choices) ||
        choices.size() != 1) {
        return false;
    }
    static constexpr std::string_view kChoice[] = {"index", "delta", "finish_reason"};
    std::string_view choice[3];
    if (!detail::top_level_members(choices[0], kChoice, choice, 3) ||
        !(choice[0].empty() || choice[0] == "0") || !unset(choice[2]) || choice[1].empty() ||
        choice[1][0] != '{') {
        return false;
    }
    static constexpr std::string_view kDelta[] = {"content", "tool_calls", "refusal",
                                                  "function_call"};
    std::string_view delta[4];
    if (!detail::top_level_members(choice[1], kDelta, delta, 4) || !unset(delta[1]) ||
        !unset(delta[2]) || !unset(delta[3])) {
        return false;
    }
    if (unset(delta[0]))
        return true;  // a role chunk, or an empty one
    if (delta[0][0] != '"')
        return false;
    json content = json::parse(delta[0], nullptr, false);
    if (!content.is_string())
        return false;
    text(content.get_ref<const std::string &>(), out);
    return true;
}

void StreamReader::ensure_started(const json &j, std::vector<Event> &out) {
    if (started_)
        return;
    started_ = true;
    Event e = event_of(Event::Kind::kStart);
    e.id = string_member(j, "id");
    if (e.id.empty())
        e.id = translate::detail::completion_id();
    e.model = string_member(j, "model");
    if (e.model.empty())
        e.model = service_.model;
    out.push_back(std::move(e));
}

void StreamReader::chunk(const json &j, std::vector<Event> &out) {
    const json *choices = member(j, "choices");
    const json *usage = given(j, "usage");
    bool has_choices = choices != nullptr && choices->is_array() && !choices->empty();
    // Azure's first chunk (prompt_filter_results, an empty id) has neither: the answer's id and
    // model come with the first chunk that does.
    if (!has_choices && usage == nullptr)
        return;
    ensure_started(j, out);
    if (usage != nullptr && usage->is_object())
        usage_ = translate::detail::usage_from_openai(*usage);
    if (!has_choices)
        return;
    for (std::size_t pos = 0; pos < choices->size() && !done_; ++pos) {
        const json &c = (*choices)[pos];
        const json *index = member(c, "index");
        std::size_t at =
            index != nullptr && index->is_number_unsigned() ? index->get<std::size_t>() : pos;
        // The form carries one choice; a crossing request cannot ask for more.
        if (at != 0 || stopped_)
            continue;
        if (const json *delta = member(c, "delta")) {
            if (const json *t = given(*delta, "content"); t != nullptr && t->is_string())
                text(t->get_ref<const std::string &>(), out);
            if (const json *t = given(*delta, "refusal"); t != nullptr && t->is_string())
                text(t->get_ref<const std::string &>(), out);
            if (const json *calls = given(*delta, "tool_calls");
                calls != nullptr && calls->is_array()) {
                for (std::size_t k = 0; k < calls->size() && !done_; ++k)
                    tool_delta((*calls)[k], k, out);
            }
        }
        const json *reason = given(c, "finish_reason");
        if (!done_ && reason != nullptr && reason->is_string() &&
            !reason->get_ref<const std::string &>().empty()) {
            flush(out);
            std::string sequence;
            chat::StopReason r = stop_reason(c, !calls_.empty(), sequence);
            stop(r, std::move(sequence), out);
        }
    }
}

void StreamReader::text(std::string_view piece, std::vector<Event> &out) {
    if (piece.empty())
        return;
    if (open_ == Open::kTool) {
        // A tool call's block is open and may get more pieces: the text waits.
        if (!pending_.empty() && pending_.back().text) {
            pending_.back().piece.append(piece);
        } else {
            Pending p;
            p.text = true;
            p.piece = std::string(piece);
            pending_.push_back(std::move(p));
        }
        return;
    }
    if (open_ == Open::kNone) {
        open_ = Open::kText;
        open_index_ = next_block_++;
        out.push_back(event_of(Event::Kind::kBlockStart, open_index_));
    }
    Event e = event_of(Event::Kind::kTextDelta, open_index_);
    e.text = std::string(piece);
    out.push_back(std::move(e));
}

void StreamReader::tool_delta(const json &delta, std::size_t position, std::vector<Event> &out) {
    if (!delta.is_object() || !is_function(delta))
        return;
    const json *index = member(delta, "index");
    long long openai_index = index != nullptr && index->is_number_integer()
                                 ? index->get<long long>()
                                 : static_cast<long long>(position);
    std::size_t k = 0;
    while (k < calls_.size() && calls_[k].openai_index != openai_index)
        ++k;
    bool fresh = k == calls_.size();
    if (fresh) {
        if (calls_.size() >= kMaxCalls) {
            fail(502, "upstream_error",
                 "service \"" + service_.name + "\" sent a malformed stream event", out);
            return;
        }
        calls_.push_back(Call{});
        calls_.back().openai_index = openai_index;
    }
    Call &call = calls_[k];
    const json *fn = member(delta, "function");
    if (call.id.empty())
        call.id = string_member(delta, "id");
    if (call.name.empty() && fn != nullptr)
        call.name = string_member(*fn, "name");
    if (call.signature.empty())
        call.signature = signature_of(delta);
    std::string piece = fn != nullptr ? string_member(*fn, "arguments") : std::string();

    if (call.live) {
        if (!piece.empty()) {
            Event e = event_of(Event::Kind::kToolInputDelta, open_index_);
            e.text = std::move(piece);
            out.push_back(std::move(e));
        }
        return;
    }
    if (call.emitted)
        return;  // cannot happen before the finish, after which deltas are not read
    // Another call's block is open, or this call waits already (it came without a name): kept
    // whole until the choice finishes.
    if (!fresh || open_ == Open::kTool || call.name.empty()) {
        call.arguments += piece;
        if (fresh) {
            Pending p;
            p.call = k;
            pending_.push_back(p);
        }
        return;
    }
    close_open(out);
    open_ = Open::kTool;
    open_index_ = next_block_++;
    open_call_ = k;
    call.live = true;
    Event start = event_of(Event::Kind::kBlockStart, open_index_);
    start.block.kind = Block::Kind::kToolUse;
    start.block.tool_id = call_id(call);
    start.block.tool_name = call.name;
    start.block.signature = call.signature;
    out.push_back(std::move(start));
    if (!piece.empty()) {
        Event e = event_of(Event::Kind::kToolInputDelta, open_index_);
        e.text = std::move(piece);
        out.push_back(std::move(e));
    }
}

std::string StreamReader::call_id(Call &call) {
    // Anthropic and the SDKs need an id to answer a call by; some servers send none.
    if (call.id.empty())
        call.id = "call_" + std::to_string(generated_ids_++);
    return call.id;
}

void StreamReader::close_open(std::vector<Event> &out) {
    if (open_ == Open::kNone)
        return;
    out.push_back(event_of(Event::Kind::kBlockStop, open_index_));
    if (open_ == Open::kTool) {
        calls_[open_call_].live = false;
        calls_[open_call_].emitted = true;
    }
    open_ = Open::kNone;
}

void StreamReader::flush(std::vector<Event> &out) {
    close_open(out);
    for (Pending &p : pending_) {
        std::size_t index = next_block_++;
        Event start = event_of(Event::Kind::kBlockStart, index);
        Event delta = event_of(Event::Kind::kTextDelta, index);
        if (p.text) {
            delta.text = std::move(p.piece);
        } else {
            Call &call = calls_[p.call];
            start.block.kind = Block::Kind::kToolUse;
            start.block.tool_id = call_id(call);
            start.block.tool_name = call.name;
            start.block.signature = call.signature;
            delta.kind = Event::Kind::kToolInputDelta;
            delta.text = std::move(call.arguments);
            call.arguments.clear();
            call.emitted = true;
        }
        out.push_back(std::move(start));
        if (!delta.text.empty())
            out.push_back(std::move(delta));
        out.push_back(event_of(Event::Kind::kBlockStop, index));
    }
    pending_.clear();
}

void StreamReader::stop(chat::StopReason reason, std::string sequence, std::vector<Event> &out) {
    if (stopped_)
        return;
    stopped_ = true;
    Event e = event_of(Event::Kind::kStop);
    e.stop_reason = reason;
    e.stop_sequence = std::move(sequence);
    out.push_back(std::move(e));
}

void StreamReader::end(std::vector<Event> &out) {
    ensure_started(json::object(), out);
    flush(out);
    // A stream that ended without a finish_reason still ended: the other dialects need a reason.
    stop(calls_.empty() ? chat::StopReason::kEndTurn : chat::StopReason::kToolUse, {}, out);
    if (usage_.present) {
        Event e = event_of(Event::Kind::kUsage);
        e.usage = usage_;
        out.push_back(std::move(e));
    }
    out.push_back(event_of(Event::Kind::kEnd));
    done_ = true;
}

void StreamReader::fail(int status, std::string type, std::string message,
                        std::vector<Event> &out) {
    Event e = event_of(Event::Kind::kError);
    e.error.status = status;
    e.error.type = type.empty() ? std::string("upstream_error") : std::move(type);
    e.error.message = message.empty() ? "service \"" + service_.name + "\" failed mid-stream"
                                      : std::move(message);
    out.push_back(std::move(e));
    done_ = true;
}

// ---- the same protocol on both sides ----

std::string passed_body(const ServiceEndpoint &service, json &body, std::string_view raw,
                        bool ask_stream_usage) {
    // The caller's bytes with the model set: serialising the document again would cost as much
    // as parsing it. A caller's own stream_options is edited in the document.
    if (!raw.empty() && (!ask_stream_usage || given(body, "stream_options") == nullptr)) {
        std::string model;
        translate::detail::append_json_string(model, service.model);
        const translate::detail::MemberEdit edits[] = {
            {"model", model}, {"stream_options", "{\"include_usage\":true}"}};
        if (std::optional<std::string> text =
                translate::detail::with_members(raw, edits, ask_stream_usage ? 2 : 1)) {
            return std::move(*text);
        }
    }
    body["model"] = service.model;
    if (ask_stream_usage) {
        json &options = body["stream_options"];
        if (!options.is_object())
            options = json::object();
        options["include_usage"] = true;
    }
    return translate::detail::serialise(body);
}

chat::Passed pass_request(const ServiceEndpoint &service, json &body, std::string_view raw, bool) {
    rules::validate(body);
    chat::Passed call;
    call.stream = rules::streaming(body);
    call.stream_usage = call.stream && rules::stream_usage_asked(body);
    call.request = translate::detail::post_json(service, "/v1/chat/completions", call.stream,
                                                passed_body(service, body, raw, call.stream));
    return call;
}

}  // namespace pgi::protocols::openai_chat
