#include "gemini.h"

#include <cctype>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "redact.h"
#include "translate_util.h"
#include "upstream_error.h"

namespace pgi::protocols::gemini {

namespace {

using nlohmann::json;
using translate::detail::member;
using translate::detail::string_member;

constexpr const char *kRequestHint =
    "A Gemini request looks like "
    "{\"contents\":[{\"role\":\"user\",\"parts\":[{\"text\":\"Hello\"}]}]}.";

[[noreturn]] void invalid(const std::string &message, const std::string &hint = kRequestHint) {
    throw Error(sqlstate::kInvalidParameterValue, message, hint);
}

[[noreturn]] void cannot_carry(const std::string &what) {
    throw Error(sqlstate::kFeatureNotSupported, "the gateway cannot translate " + what,
                "Only text, images, function calls and function responses cross between "
                "protocols; send this to a GEMINI_V1BETA service, which gets the body as it is.");
}

// Google's JSON parser takes a field by its lowerCamel name or by its proto name in snake_case
// (the REST docs use both): the member under either spelling, camel first.
const json *field(const json &object, std::string_view camel) {
    if (!object.is_object())
        return nullptr;
    auto it = object.find(camel);
    if (it != object.end())
        return &*it;
    std::string snake;
    for (char c : camel) {
        if (std::isupper(static_cast<unsigned char>(c))) {
            snake += '_';
            snake += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        } else {
            snake += c;
        }
    }
    if (snake.size() == camel.size())
        return nullptr;
    it = object.find(snake);
    return it == object.end() ? nullptr : &*it;
}

// A field that is present and not null.
const json *given(const json &object, std::string_view camel) {
    const json *v = field(object, camel);
    return v == nullptr || v->is_null() ? nullptr : v;
}

bool is_true(const json *v) {
    return v != nullptr && v->is_boolean() && v->get<bool>();
}

// A repeated field given as one object is taken as a list of one, as Google's parser does.
std::vector<const json *> list_of(const json *v) {
    std::vector<const json *> items;
    if (v == nullptr)
        return items;
    if (v->is_array()) {
        for (const json &item : *v)
            items.push_back(&item);
    } else {
        items.push_back(v);
    }
    return items;
}

std::string in_quotes(std::string_view s) {
    return "\"" + std::string(s) + "\"";
}

// ---- reading a request ----

std::optional<long long> integer(const json &config, const char *key, long long min) {
    const json *v = given(config, key);
    if (v == nullptr)
        return std::nullopt;
    if (!v->is_number_integer() || v->get<long long>() < min) {
        invalid("generationConfig." + std::string(key) + " must be " +
                (min > 0 ? "a positive integer" : "an integer"));
    }
    return v->get<long long>();
}

std::optional<double> number(const json &config, const char *key) {
    const json *v = given(config, key);
    if (v == nullptr)
        return std::nullopt;
    if (!v->is_number())
        invalid("generationConfig." + std::string(key) + " must be a number");
    return v->get<double>();
}

// Gemini's own Schema (an OpenAPI subset, types in capitals, "nullable") as JSON Schema, which
// the other protocols take: types in lower case, nullable as a "null" type, propertyOrdering
// (Gemini's alone) dropped.
json json_schema(const json &schema) {
    if (schema.is_array()) {
        json out = json::array();
        for (const json &s : schema)
            out.push_back(json_schema(s));
        return out;
    }
    if (!schema.is_object())
        return schema;
    json out = json::object();
    for (const auto &item : schema.items()) {
        const std::string &key = item.key();
        if (key == "propertyOrdering" || key == "property_ordering" || key == "nullable")
            continue;
        if (key == "type" && item.value().is_string()) {
            std::string type = item.value().get<std::string>();
            for (char &c : type)
                c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            out["type"] = type;
        } else if (key == "properties" && item.value().is_object()) {
            json props = json::object();
            for (const auto &p : item.value().items())
                props[p.key()] = json_schema(p.value());
            out["properties"] = std::move(props);
        } else if (key == "items" || key == "anyOf" || key == "any_of") {
            out[key == "any_of" ? "anyOf" : key] = json_schema(item.value());
        } else {
            out[key] = item.value();
        }
    }
    if (is_true(member(schema, "nullable")) && out.contains("type") && out["type"].is_string()) {
        out["type"] = json::array({out["type"], "null"});
    }
    return out;
}

// The text a functionResponse's response stands for. Gemini wants an object; a plain result
// wrapped as {"content": text} (how write_request wraps it) or {"output": text} is unwrapped,
// and {"error": ...} (Google's way to report a failed call) marks the result as an error.
void read_function_response(const json &response, chat::Block &block) {
    if (response.is_object() && response.size() == 1) {
        const auto item = response.begin();
        const std::string &key = item.key();
        const json &value = item.value();
        if (key == "content" || key == "output" || key == "error") {
            block.is_error = key == "error";
            block.text =
                value.is_string() ? value.get<std::string>() : translate::detail::serialise(value);
            return;
        }
    }
    block.text =
        response.is_string() ? response.get<std::string>() : translate::detail::serialise(response);
}

// An image part (inlineData or fileData) as the form's image URL.
chat::Block image_block(const json &data, bool inline_data, const std::string &at) {
    if (!data.is_object())
        invalid(at + " must be an object");
    std::string mime = string_member(data, "mimeType");
    if (mime.empty())
        mime = string_member(data, "mime_type");
    if (!mime.empty() && mime.compare(0, 6, "image/") != 0)
        cannot_carry(at + " of type " + in_quotes(mime) + " (only images cross)");
    chat::Block b;
    b.kind = chat::Block::Kind::kImage;
    if (inline_data) {
        const json *bytes = given(data, "data");
        if (mime.empty() || bytes == nullptr || !bytes->is_string())
            invalid(at + " needs \"mimeType\" and base64 \"data\"");
        b.image_url = "data:" + mime + ";base64," + bytes->get<std::string>();
    } else {
        const json *uri = given(data, "fileUri");
        if (uri == nullptr || !uri->is_string() || uri->get_ref<const std::string &>().empty())
            invalid(at + " needs a \"fileUri\"");
        b.image_url = uri->get<std::string>();
    }
    return b;
}

struct CallRecord {
    std::string name;
    std::string id;
};

void read_contents(const json &contents, chat::Request &req) {
    if (!(contents.is_array() && !contents.empty()) && !contents.is_object())
        invalid("\"contents\" must be a non-empty array");
    std::vector<CallRecord> calls;  // every function call so far, in order
    int next_call = 0;
    const std::vector<const json *> turns = list_of(&contents);
    for (std::size_t i = 0; i < turns.size(); ++i) {
        const json &turn = *turns[i];
        const std::string at = "contents[" + std::to_string(i) + "]";
        if (!turn.is_object())
            invalid(at + " must be an object with \"role\" and \"parts\"");
        // A turn without a role is the user's, as Gemini takes it; "function" is the role older
        // clients give to the turn holding function responses.
        const json *role_v = given(turn, "role");
        std::string role = role_v != nullptr && role_v->is_string() ? role_v->get<std::string>()
                                                                    : std::string("user");
        if (role_v != nullptr && !role_v->is_string())
            invalid(at + ".role must be a string");
        if (role != "user" && role != "model" && role != "function")
            invalid(at + " has an unknown role " + in_quotes(role),
                    "Valid roles are user and model.");
        const bool model = role == "model";
        const json *parts = given(turn, "parts");
        if (parts == nullptr || (parts->is_array() && parts->empty()))
            invalid(at + " has no \"parts\"");
        chat::Message message;
        message.role = model ? chat::Role::kAssistant : chat::Role::kUser;
        std::size_t j = 0;
        for (const json *part_p : list_of(parts)) {
            const json &part = *part_p;
            const std::string pat = at + ".parts[" + std::to_string(j++) + "]";
            if (!part.is_object())
                invalid(pat + " must be an object");
            if (is_true(given(part, "thought")))
                continue;
            if (const json *text = given(part, "text")) {
                if (!text->is_string())
                    invalid(pat + ".text must be a string");
                chat::Block b;
                b.text = text->get<std::string>();
                message.content.push_back(std::move(b));
            } else if (const json *data = given(part, "inlineData")) {
                message.content.push_back(image_block(*data, true, pat + ".inlineData"));
            } else if (const json *file = given(part, "fileData")) {
                message.content.push_back(image_block(*file, false, pat + ".fileData"));
            } else if (const json *call = given(part, "functionCall")) {
                if (!model)
                    invalid(pat + ": only model turns hold a functionCall");
                std::string name = string_member(*call, "name");
                if (name.empty())
                    invalid(pat + ".functionCall needs a \"name\"");
                const json *args = given(*call, "args");
                if (args != nullptr && !args->is_object())
                    invalid(pat + ".functionCall.args must be an object");
                chat::Block b;
                b.kind = chat::Block::Kind::kToolUse;
                b.tool_name = name;
                b.tool_id = string_member(*call, "id");
                if (b.tool_id.empty())
                    b.tool_id = "call_" + std::to_string(next_call);
                next_call++;
                if (args != nullptr)
                    b.input = *args;
                if (const json *sig = given(part, "thoughtSignature"); sig && sig->is_string())
                    b.signature = sig->get<std::string>();
                calls.push_back({name, b.tool_id});
                message.content.push_back(std::move(b));
            } else if (const json *answer = given(part, "functionResponse")) {
                if (model)
                    invalid(pat + ": a functionResponse belongs in a user turn");
                std::string name = string_member(*answer, "name");
                if (name.empty())
                    invalid(pat + ".functionResponse needs a \"name\"");
                chat::Block b;
                b.kind = chat::Block::Kind::kToolResult;
                b.tool_name = name;
                b.tool_id = string_member(*answer, "id");
                if (b.tool_id.empty()) {
                    // Gemini answers by name: the latest earlier call of that function.
                    for (auto c = calls.rbegin(); c != calls.rend(); ++c) {
                        if (c->name == name) {
                            b.tool_id = c->id;
                            break;
                        }
                    }
                }
                if (b.tool_id.empty()) {
                    invalid(pat + " answers function " + in_quotes(name) +
                                ", which no earlier functionCall called",
                            "Each functionResponse must follow the model turn whose functionCall "
                            "it answers.");
                }
                const json *response = given(*answer, "response");
                if (response != nullptr)
                    read_function_response(*response, b);
                message.content.push_back(std::move(b));
            } else if (given(part, "executableCode") || given(part, "codeExecutionResult")) {
                cannot_carry("code execution parts");
            } else {
                invalid(pat +
                        " has none of text, inlineData, fileData, functionCall and "
                        "functionResponse");
            }
        }
        if (!message.content.empty())
            req.messages.push_back(std::move(message));
    }
    if (req.messages.empty())
        invalid("\"contents\" holds no part to send");
}

void read_system(const json &instruction, chat::Request &req) {
    if (instruction.is_string()) {
        req.system = instruction.get<std::string>();
        return;
    }
    if (!instruction.is_object())
        invalid("\"systemInstruction\" must be an object like {\"parts\":[{\"text\":\"...\"}]}");
    std::string system;
    for (const json *part : list_of(given(instruction, "parts"))) {
        const json *text = part->is_object() ? given(*part, "text") : nullptr;
        if (text == nullptr || !text->is_string())
            invalid("\"systemInstruction\" parts must be text parts like {\"text\":\"...\"}");
        if (!system.empty())
            system += "\n\n";
        system += text->get<std::string>();
    }
    req.system = std::move(system);
}

void read_config(const json &config, chat::Request &req) {
    if (!config.is_object())
        invalid("\"generationConfig\" must be an object");
    req.max_tokens = integer(config, "maxOutputTokens", 1);
    req.temperature = number(config, "temperature");
    req.top_p = number(config, "topP");
    req.top_k = integer(config, "topK", 1);
    req.seed = integer(config, "seed", std::numeric_limits<long long>::min());
    req.presence_penalty = number(config, "presencePenalty");
    req.frequency_penalty = number(config, "frequencyPenalty");
    if (const json *stop = given(config, "stopSequences")) {
        if (!stop->is_array())
            invalid("generationConfig.stopSequences must be an array of strings");
        for (const json &s : *stop) {
            if (!s.is_string())
                invalid("generationConfig.stopSequences must be an array of strings");
            req.stop.push_back(s.get<std::string>());
        }
    }
    if (auto n = integer(config, "candidateCount", 1); n && *n > 1)
        cannot_carry("generationConfig.candidateCount above 1");

    std::string mime;
    if (const json *m = given(config, "responseMimeType")) {
        if (!m->is_string())
            invalid("generationConfig.responseMimeType must be a string");
        mime = m->get<std::string>();
    }
    const json *schema = given(config, "responseJsonSchema");
    bool gemini_schema = false;
    if (schema == nullptr) {
        schema = given(config, "responseSchema");
        gemini_schema = schema != nullptr;
    }
    if (schema != nullptr && !schema->is_object())
        invalid("generationConfig.responseSchema must be an object");
    if (mime == "application/json") {
        req.format.kind = schema != nullptr ? chat::OutputFormat::Kind::kJsonSchema
                                            : chat::OutputFormat::Kind::kJsonObject;
        if (schema != nullptr) {
            req.format.schema = gemini_schema ? json_schema(*schema) : *schema;
            req.format.name = "response";
        }
    } else if (schema != nullptr) {
        invalid("generationConfig.responseSchema needs responseMimeType \"application/json\"");
    } else if (!mime.empty() && mime != "text/plain") {
        cannot_carry("generationConfig.responseMimeType " + in_quotes(mime));
    }
}

void read_tools(const json &tools, const json *tool_config, chat::Request &req) {
    if (!tools.is_array())
        invalid("\"tools\" must be an array");
    for (const json &tool : tools) {
        if (!tool.is_object())
            invalid("every entry of \"tools\" must be an object");
        for (const auto &item : tool.items()) {
            const std::string &kind = item.key();
            if (kind != "functionDeclarations" && kind != "function_declarations")
                cannot_carry("tools of kind " + in_quotes(kind));
            if (!item.value().is_array())
                invalid("\"functionDeclarations\" must be an array");
            for (const json &fn : item.value()) {
                chat::Tool t;
                t.name = string_member(fn, "name");
                if (t.name.empty())
                    invalid("every function declaration needs a \"name\"");
                t.description = string_member(fn, "description");
                if (const json *p = given(fn, "parametersJsonSchema"); p && p->is_object()) {
                    t.parameters = *p;
                } else if (const json *q = given(fn, "parameters"); q && q->is_object()) {
                    t.parameters = json_schema(*q);
                } else if (p != nullptr || given(fn, "parameters") != nullptr) {
                    invalid("the parameters of function " + in_quotes(t.name) +
                            " must be a schema object");
                }
                req.tools.push_back(std::move(t));
            }
        }
    }
    const json *calling =
        tool_config != nullptr ? given(*tool_config, "functionCallingConfig") : nullptr;
    if (calling == nullptr)
        return;
    if (!calling->is_object())
        invalid("toolConfig.functionCallingConfig must be an object");
    std::string mode = string_member(*calling, "mode");
    chat::ToolChoice choice;
    if (mode.empty() || mode == "AUTO" || mode == "MODE_UNSPECIFIED" || mode == "VALIDATED") {
        choice.mode = chat::ToolChoice::Mode::kAuto;
    } else if (mode == "NONE") {
        choice.mode = chat::ToolChoice::Mode::kNone;
    } else if (mode == "ANY") {
        choice.mode = chat::ToolChoice::Mode::kRequired;
        const json *allowed = given(*calling, "allowedFunctionNames");
        if (allowed != nullptr) {
            if (!allowed->is_array())
                invalid("allowedFunctionNames must be an array of function names");
            std::set<std::string> names;
            for (const json &n : *allowed) {
                if (!n.is_string())
                    invalid("allowedFunctionNames must be an array of function names");
                names.insert(n.get<std::string>());
            }
            std::set<std::string> declared;
            for (const chat::Tool &t : req.tools)
                declared.insert(t.name);
            if (names.size() == 1) {
                choice.mode = chat::ToolChoice::Mode::kNamed;
                choice.name = *names.begin();
            } else if (!names.empty() && names != declared) {
                cannot_carry("allowedFunctionNames naming several but not all of the functions");
            }
        }
    } else {
        invalid("toolConfig.functionCallingConfig.mode must be AUTO, ANY or NONE");
    }
    req.tool_choice = choice;
}

// ---- writing an answer ----

const char *finish_reason(chat::StopReason r) {
    switch (r) {
        case chat::StopReason::kMaxTokens:
            return "MAX_TOKENS";
        case chat::StopReason::kContentFilter:
            return "SAFETY";
        case chat::StopReason::kOther:
            return "OTHER";
        case chat::StopReason::kEndTurn:
        case chat::StopReason::kStopSequence:
        case chat::StopReason::kToolUse:
            break;
    }
    return "STOP";
}

json usage_metadata(const translate::Usage &u) {
    json m = {{"promptTokenCount", u.prompt_tokens},
              {"candidatesTokenCount", u.completion_tokens},
              {"totalTokenCount", u.total_tokens}};
    if (u.cached_tokens > 0)
        m["cachedContentTokenCount"] = u.cached_tokens;
    return m;
}

// "data:<type>;base64,<data>" split, or nullopt for any other URL.
std::optional<std::pair<std::string, std::string>> data_url(std::string_view url) {
    if (url.substr(0, 5) != "data:")
        return std::nullopt;
    std::size_t comma = url.find(',');
    std::size_t marker = url.find(";base64");
    if (comma == std::string_view::npos || marker == std::string_view::npos || marker > comma)
        return std::nullopt;
    return std::make_pair(std::string(url.substr(5, marker - 5)),
                          std::string(url.substr(comma + 1)));
}

json function_call_part(const chat::Block &b, bool with_id) {
    json call = {{"name", b.tool_name}, {"args", b.input.is_object() ? b.input : json::object()}};
    if (with_id && !b.tool_id.empty())
        call["id"] = b.tool_id;
    json part = {{"functionCall", std::move(call)}};
    if (!b.signature.empty())
        part["thoughtSignature"] = b.signature;
    return part;
}

json image_part(const std::string &url) {
    if (auto d = data_url(url))
        return {{"inlineData", {{"mimeType", d->first}, {"data", d->second}}}};
    json file = {{"fileUri", url}};
    // Gemini wants the type of a file it fetches; the extension tells it for common images.
    std::string_view path = std::string_view(url).substr(0, url.find_first_of("?#"));
    std::size_t dot = path.rfind('.');
    if (dot != std::string_view::npos && path.find('/', dot) == std::string_view::npos) {
        std::string ext(path.substr(dot + 1));
        for (char &c : ext)
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        static const std::map<std::string, const char *> kTypes = {
            {"png", "image/png"},   {"jpg", "image/jpeg"}, {"jpeg", "image/jpeg"},
            {"webp", "image/webp"}, {"gif", "image/gif"},  {"heic", "image/heic"},
            {"heif", "image/heif"}};
        if (auto t = kTypes.find(ext); t != kTypes.end())
            file["mimeType"] = t->second;
    }
    return {{"fileData", std::move(file)}};
}

// ---- reading an answer ----

chat::StopReason stop_reason(const json *finish, bool has_calls) {
    std::string r = finish != nullptr && finish->is_string() ? finish->get<std::string>() : "";
    if (r == "MAX_TOKENS")
        return chat::StopReason::kMaxTokens;
    if (r == "SAFETY" || r == "RECITATION" || r == "BLOCKLIST" || r == "PROHIBITED_CONTENT" ||
        r == "SPII" || r == "IMAGE_SAFETY") {
        return chat::StopReason::kContentFilter;
    }
    if (r.empty() || r == "STOP" || r == "FINISH_REASON_UNSPECIFIED")
        return has_calls ? chat::StopReason::kToolUse : chat::StopReason::kEndTurn;
    return chat::StopReason::kOther;  // OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL, ...
}

chat::Block tool_use(const json &call, const json &part, int number) {
    chat::Block b;
    b.kind = chat::Block::Kind::kToolUse;
    b.tool_name = string_member(call, "name");
    b.tool_id = string_member(call, "id");
    if (b.tool_id.empty())
        b.tool_id = "call_" + std::to_string(number);
    if (const json *args = member(call, "args"); args != nullptr && args->is_object())
        b.input = *args;
    b.signature = string_member(part, "thoughtSignature");
    return b;
}

// The parts of the first candidate (or nullptr), the candidate itself through `candidate`.
const json *first_parts(const json &body, const json **candidate) {
    *candidate = nullptr;
    const json *candidates = member(body, "candidates");
    if (candidates == nullptr || !candidates->is_array() || candidates->empty())
        return nullptr;
    *candidate = &(*candidates)[0];
    const json *content = member(**candidate, "content");
    const json *parts = content != nullptr ? member(*content, "parts") : nullptr;
    return parts != nullptr && parts->is_array() ? parts : nullptr;
}

bool prompt_blocked(const json &body) {
    const json *feedback = member(body, "promptFeedback");
    return feedback != nullptr && member(*feedback, "blockReason") != nullptr;
}

}  // namespace

// ---------------------------------------------------------------- caller side

chat::Request read_request(const json &body, bool stream) {
    if (!body.is_object())
        invalid("the Gemini request must be a JSON object");
    chat::Request req;
    req.stream = stream;
    // Gemini always reports usage on a stream's last event.
    req.stream_usage = stream;
    const json *contents = given(body, "contents");
    if (contents == nullptr)
        invalid("the Gemini request has no \"contents\"");
    read_contents(*contents, req);
    if (const json *system = given(body, "systemInstruction"))
        read_system(*system, req);
    if (const json *config = given(body, "generationConfig"))
        read_config(*config, req);
    const json *tool_config = given(body, "toolConfig");
    if (tool_config != nullptr && !tool_config->is_object())
        invalid("\"toolConfig\" must be an object");
    if (const json *tools = given(body, "tools")) {
        read_tools(*tools, tool_config, req);
    }
    return req;
}

json write_response(const chat::Response &r) {
    json parts = json::array();
    for (const chat::Block &b : r.content) {
        switch (b.kind) {
            case chat::Block::Kind::kText:
                parts.push_back({{"text", b.text}});
                break;
            case chat::Block::Kind::kImage:
                parts.push_back(image_part(b.image_url));
                break;
            case chat::Block::Kind::kToolUse:
                parts.push_back(function_call_part(b, true));
                break;
            case chat::Block::Kind::kToolResult:
                break;  // never part of an answer
        }
    }
    json candidate = {{"content", {{"role", "model"}, {"parts", std::move(parts)}}},
                      {"finishReason", finish_reason(r.stop_reason)},
                      {"index", 0}};
    json out = {{"candidates", json::array({std::move(candidate)})}};
    if (r.usage.present)
        out["usageMetadata"] = usage_metadata(r.usage);
    out["modelVersion"] = r.model;
    out["responseId"] = r.id;
    return out;
}

void StreamWriter::chunk(std::string &out, const json &parts, const char *finish) {
    json candidate = {{"content", {{"role", "model"}, {"parts", parts}}}};
    if (finish != nullptr)
        candidate["finishReason"] = finish;
    candidate["index"] = 0;
    json event = {{"candidates", json::array({std::move(candidate)})}};
    // Gemini reports the usage known so far on every event.
    if (usage_.present)
        event["usageMetadata"] = usage_metadata(usage_);
    event["modelVersion"] = model_;
    event["responseId"] = id_;
    out += "data: ";
    out += translate::detail::serialise(event);
    out += "\r\n\r\n";
}

void StreamWriter::write(const chat::Event &e, std::string &out) {
    if (done_)
        return;
    using Kind = chat::Event::Kind;
    switch (e.kind) {
        case Kind::kStart:
            id_ = e.id;
            model_ = e.model;
            if (e.usage.present)
                usage_ = e.usage;
            break;
        case Kind::kBlockStart:
            if (e.block.kind == chat::Block::Kind::kToolUse) {
                in_tool_ = true;
                tool_ = e.block;
                tool_input_.clear();
            }
            break;
        case Kind::kTextDelta:
            if (!e.text.empty())
                chunk(out, json::array({{{"text", e.text}}}), nullptr);
            break;
        case Kind::kToolInputDelta:
            if (in_tool_)
                tool_input_ += e.text;
            break;
        case Kind::kBlockStop:
            if (in_tool_) {
                in_tool_ = false;
                json input =
                    tool_input_.empty() ? json::object() : json::parse(tool_input_, nullptr, false);
                if (!input.is_object()) {
                    chat::Event failure;
                    failure.kind = Kind::kError;
                    failure.error.status = 500;
                    failure.error.message =
                        "the upstream sent tool call input that is not a JSON object";
                    write(failure, out);
                    return;
                }
                tool_.input = std::move(input);
                chunk(out, json::array({function_call_part(tool_, true)}), nullptr);
            }
            break;
        case Kind::kStop:
            stop_ = e.stop_reason;
            break;
        case Kind::kUsage:
            usage_ = e.usage;
            break;
        case Kind::kEnd:
            // Gemini's last event carries the finish reason and usage, with an empty text part.
            chunk(out, json::array({{{"text", ""}}}), finish_reason(stop_));
            done_ = true;
            break;
        case Kind::kError:
            out += "data: ";
            out += error_body(e.error.status, e.error.message);
            out += "\r\n\r\n";
            done_ = true;
            break;
    }
}

const char *status_name(int status) {
    switch (status) {
        case 400:
            return "INVALID_ARGUMENT";
        case 401:
            return "UNAUTHENTICATED";
        case 403:
            return "PERMISSION_DENIED";
        case 404:
            return "NOT_FOUND";
        case 409:
            return "ABORTED";
        case 429:
            return "RESOURCE_EXHAUSTED";
        case 499:
            return "CANCELLED";
        case 501:
            return "UNIMPLEMENTED";
        case 502:
        case 503:
        case 529:  // an overloaded upstream (Anthropic's 529) is unavailable for now
            return "UNAVAILABLE";
        case 504:
            return "DEADLINE_EXCEEDED";
        default:
            break;
    }
    return status >= 400 && status < 500 ? "INVALID_ARGUMENT" : "INTERNAL";
}

std::string error_body(int status, std::string_view message) {
    json body = {
        {"error",
         {{"code", status}, {"message", std::string(message)}, {"status", status_name(status)}}}};
    return translate::detail::serialise(body);
}

// ---------------------------------------------------------------- upstream side

translate::UpstreamRequest write_request(const ServiceEndpoint &s, const chat::Request &req,
                                         const chat::Defaults &) {
    json contents = json::array();
    // Gemini answers a call by the function's name; the form by the call's id.
    std::map<std::string, std::string> call_names;
    for (std::size_t i = 0; i < req.messages.size(); ++i) {
        const chat::Message &m = req.messages[i];
        const bool model = m.role == chat::Role::kAssistant;
        json parts = json::array();
        for (const chat::Block &b : m.content) {
            switch (b.kind) {
                case chat::Block::Kind::kText:
                    // An empty model text is no part of the turn; Gemini takes a user's as is.
                    if (!model || !b.text.empty())
                        parts.push_back({{"text", b.text}});
                    break;
                case chat::Block::Kind::kImage:
                    if (b.image_url.compare(0, 5, "data:") == 0 && !data_url(b.image_url)) {
                        invalid("messages[" + std::to_string(i) +
                                    "] has an image data URL that is not base64",
                                "Send images as data:<media type>;base64,<data> or as a URL.");
                    }
                    parts.push_back(image_part(b.image_url));
                    break;
                case chat::Block::Kind::kToolUse:
                    call_names[b.tool_id] = b.tool_name;
                    // Gemini gets no id: it does not know ids minted by other providers.
                    parts.push_back(function_call_part(b, false));
                    break;
                case chat::Block::Kind::kToolResult: {
                    std::string name = b.tool_name;
                    if (name.empty()) {
                        auto found = call_names.find(b.tool_id);
                        if (found == call_names.end()) {
                            invalid("messages[" + std::to_string(i) + "] answers tool call " +
                                        in_quotes(b.tool_id) + ", which no earlier message called",
                                    "Each tool result must follow the assistant message that "
                                    "made the call.");
                        }
                        name = found->second;
                    }
                    json response = json::parse(b.text, nullptr, false);
                    if (!response.is_object())
                        response = json(b.text);
                    if (b.is_error) {
                        response = {{"error", std::move(response)}};
                    } else if (!response.is_object()) {
                        response = {{"content", std::move(response)}};
                    }
                    parts.push_back(
                        {{"functionResponse",
                          {{"name", std::move(name)}, {"response", std::move(response)}}}});
                    break;
                }
            }
        }
        if (parts.empty())
            continue;
        const char *role = model ? "model" : "user";
        if (!contents.empty() && contents.back()["role"] == role) {
            for (json &p : parts)
                contents.back()["parts"].push_back(std::move(p));
        } else {
            contents.push_back({{"role", role}, {"parts", std::move(parts)}});
        }
    }
    if (contents.empty())
        invalid("the chat request has no user or assistant message");

    json body = {{"contents", std::move(contents)}};
    if (!req.system.empty())
        body["systemInstruction"] = {{"parts", {{{"text", req.system}}}}};

    json config = json::object();
    if (req.max_tokens)
        config["maxOutputTokens"] = *req.max_tokens;
    if (req.temperature)
        config["temperature"] = *req.temperature;
    if (req.top_p)
        config["topP"] = *req.top_p;
    if (req.top_k)
        config["topK"] = *req.top_k;
    if (!req.stop.empty())
        config["stopSequences"] = req.stop;
    if (req.seed)
        config["seed"] = *req.seed;
    if (req.presence_penalty)
        config["presencePenalty"] = *req.presence_penalty;
    if (req.frequency_penalty)
        config["frequencyPenalty"] = *req.frequency_penalty;
    if (req.format.kind != chat::OutputFormat::Kind::kText)
        config["responseMimeType"] = "application/json";
    if (req.format.kind == chat::OutputFormat::Kind::kJsonSchema)
        config["responseJsonSchema"] = req.format.schema;
    if (!config.empty())
        body["generationConfig"] = std::move(config);

    if (!req.tools.empty()) {
        json declarations = json::array();
        for (const chat::Tool &t : req.tools) {
            json fn = {{"name", t.name}};
            if (!t.description.empty())
                fn["description"] = t.description;
            if (t.parameters.is_object() && !t.parameters.empty())
                fn["parametersJsonSchema"] = t.parameters;
            declarations.push_back(std::move(fn));
        }
        body["tools"] = json::array({{{"functionDeclarations", std::move(declarations)}}});
        if (req.tool_choice) {
            json calling;
            switch (req.tool_choice->mode) {
                case chat::ToolChoice::Mode::kAuto:
                    calling = {{"mode", "AUTO"}};
                    break;
                case chat::ToolChoice::Mode::kNone:
                    calling = {{"mode", "NONE"}};
                    break;
                case chat::ToolChoice::Mode::kRequired:
                    calling = {{"mode", "ANY"}};
                    break;
                case chat::ToolChoice::Mode::kNamed:
                    calling = {{"mode", "ANY"},
                               {"allowedFunctionNames", json::array({req.tool_choice->name})}};
                    break;
            }
            body["toolConfig"] = {{"functionCallingConfig", std::move(calling)}};
        }
    }
    std::string path = "/v1beta/models/" + std::string(translate::detail::gemini_model(s)) +
                       (req.stream ? ":streamGenerateContent?alt=sse" : ":generateContent");
    return translate::detail::post_json(s, path, req.stream, translate::detail::serialise(body));
}

chat::Response read_response(const ServiceEndpoint &s, std::string_view body) {
    json j = translate::detail::parse_upstream_body(s, body, "chat");
    if (!j.is_object())
        translate::detail::bad_response(s, "chat", "the body is not a JSON object");
    chat::Response r;
    const json *candidate = nullptr;
    const json *parts = first_parts(j, &candidate);
    if (candidate == nullptr) {
        // A prompt Gemini blocks outright gets no candidate at all, only promptFeedback.
        if (!prompt_blocked(j))
            translate::detail::bad_response(s, "chat", "the body has no candidates");
        r.stop_reason = chat::StopReason::kContentFilter;
    } else {
        int calls = 0;
        for (const json &part : parts != nullptr ? *parts : json::array()) {
            if (is_true(member(part, "thought")))
                continue;
            if (const json *t = member(part, "text"); t != nullptr && t->is_string()) {
                if (!r.content.empty() && r.content.back().kind == chat::Block::Kind::kText) {
                    r.content.back().text += t->get_ref<const std::string &>();
                } else {
                    chat::Block b;
                    b.text = t->get<std::string>();
                    r.content.push_back(std::move(b));
                }
            } else if (const json *call = member(part, "functionCall")) {
                r.content.push_back(tool_use(*call, part, calls++));
            } else if (const json *data = member(part, "inlineData")) {
                std::string mime = string_member(*data, "mimeType");
                if (mime.compare(0, 6, "image/") == 0) {
                    chat::Block b;
                    b.kind = chat::Block::Kind::kImage;
                    b.image_url = "data:" + mime + ";base64," + string_member(*data, "data");
                    r.content.push_back(std::move(b));
                }
            }
        }
        r.stop_reason = stop_reason(member(*candidate, "finishReason"), calls > 0);
    }
    const json *usage = member(j, "usageMetadata");
    r.usage = translate::detail::usage_from_gemini(usage != nullptr ? *usage : json());
    r.id = string_member(j, "responseId");
    if (r.id.empty())
        r.id = translate::detail::completion_id();
    r.model = string_member(j, "modelVersion");
    if (r.model.empty())
        r.model = s.model;
    return r;
}

// ---- the stream reader ----

void StreamReader::read(std::string_view bytes, bool finishing, std::vector<chat::Event> &out) {
    auto too_long = read_events(parser_, bytes, finishing, done_,
                                [&](const SseEventView &e) { event(e.data, out); });
    // An event past the parser's cap; the events completed before it have been read.
    if (too_long && !done_)
        fail(out, 500, "service \"" + service_.name + "\": " + *too_long);
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
    if (!started_) {
        fail(out, 500, "service \"" + service_.name + "\" ended the stream without an answer");
        return;
    }
    close_block(out);
    chat::Event stop;
    stop.kind = chat::Event::Kind::kStop;
    // Gemini says STOP after a function call, and a stream cut before its finishReason ends
    // like one that said STOP.
    stop.stop_reason =
        stop_ == chat::StopReason::kEndTurn && calls_ > 0 ? chat::StopReason::kToolUse : stop_;
    out.push_back(std::move(stop));
    if (usage_.present) {
        chat::Event usage;
        usage.kind = chat::Event::Kind::kUsage;
        usage.usage = usage_;
        out.push_back(std::move(usage));
    }
    chat::Event end;
    end.kind = chat::Event::Kind::kEnd;
    out.push_back(std::move(end));
    done_ = true;
}

void StreamReader::fail(std::vector<chat::Event> &out, int status, std::string message) {
    chat::Event e;
    e.kind = chat::Event::Kind::kError;
    e.error.status = status;
    e.error.message = std::move(message);
    out.push_back(std::move(e));
    done_ = true;
}

void StreamReader::close_block(std::vector<chat::Event> &out) {
    if (!text_open_)
        return;
    text_open_ = false;
    chat::Event e;
    e.kind = chat::Event::Kind::kBlockStop;
    e.index = blocks_ - 1;
    out.push_back(std::move(e));
}

void StreamReader::event(std::string_view data, std::vector<chat::Event> &out) {
    json j = json::parse(data.begin(), data.end(), nullptr, false);
    if (!j.is_object()) {
        fail(out, 500, "service \"" + service_.name + "\" sent a malformed stream event");
        return;
    }
    if (const json *err = member(j, "error"); err != nullptr && !err->is_null()) {
        UpstreamError shown = shown_upstream_error(std::string(data), service_);
        const json *code = member(*err, "code");
        int status = code != nullptr && code->is_number_integer() &&
                             code->get<long long>() >= 400 && code->get<long long>() <= 599
                         ? code->get<int>()
                         : 500;
        chat::Event e;
        e.kind = chat::Event::Kind::kError;
        e.error.status = status;
        e.error.type = shown.type;
        e.error.message = shown.message.empty()
                              ? "service \"" + service_.name + "\" failed mid-stream"
                              : shown.message;
        out.push_back(std::move(e));
        done_ = true;
        return;
    }
    const json *metadata = member(j, "usageMetadata");
    if (metadata != nullptr && metadata->is_object())
        usage_ = translate::detail::usage_from_gemini(*metadata);
    if (!started_) {
        started_ = true;
        chat::Event start;
        start.kind = chat::Event::Kind::kStart;
        start.id = string_member(j, "responseId");
        if (start.id.empty())
            start.id = translate::detail::completion_id();
        start.model = string_member(j, "modelVersion");
        if (start.model.empty())
            start.model = service_.model;
        start.usage = usage_;
        out.push_back(std::move(start));
    }
    const json *candidate = nullptr;
    const json *parts = first_parts(j, &candidate);
    if (candidate == nullptr) {
        if (prompt_blocked(j)) {
            stop_ = chat::StopReason::kContentFilter;
        }
        return;
    }
    for (const json &part : parts != nullptr ? *parts : json::array()) {
        if (is_true(member(part, "thought")))
            continue;
        if (const json *t = member(part, "text"); t != nullptr && t->is_string()) {
            const std::string &text = t->get_ref<const std::string &>();
            if (text.empty())
                continue;
            if (!text_open_) {
                chat::Event open;
                open.kind = chat::Event::Kind::kBlockStart;
                open.index = blocks_++;
                out.push_back(std::move(open));
                text_open_ = true;
            }
            chat::Event delta;
            delta.kind = chat::Event::Kind::kTextDelta;
            delta.index = blocks_ - 1;
            delta.text = text;
            out.push_back(std::move(delta));
        } else if (const json *call = member(part, "functionCall")) {
            close_block(out);
            chat::Event open;
            open.kind = chat::Event::Kind::kBlockStart;
            open.index = blocks_++;
            open.block = tool_use(*call, part, calls_++);
            chat::Event input;
            input.kind = chat::Event::Kind::kToolInputDelta;
            input.index = open.index;
            input.text = translate::detail::serialise(open.block.input);
            chat::Event stop;
            stop.kind = chat::Event::Kind::kBlockStop;
            stop.index = open.index;
            out.push_back(std::move(open));
            out.push_back(std::move(input));
            out.push_back(std::move(stop));
        }
    }
    if (const json *finish = member(*candidate, "finishReason");
        finish != nullptr && finish->is_string() &&
        !finish->get_ref<const std::string &>().empty()) {
        stop_ = stop_reason(finish, calls_ > 0);
    }
}

// ---- the same protocol on both sides ----

chat::Passed pass_request(const ServiceEndpoint &s, json &body, std::string_view raw,
                          bool stream_route) {
    if (!body.is_object())
        invalid("the Gemini request must be a JSON object");
    chat::Passed call;
    call.stream = stream_route;
    std::string path = "/v1beta/models/" + std::string(translate::detail::gemini_model(s)) +
                       (call.stream ? ":streamGenerateContent?alt=sse" : ":generateContent");
    call.request = translate::detail::post_json(
        s, path, call.stream, raw.empty() ? translate::detail::serialise(body) : std::string(raw));
    return call;
}

}  // namespace pgi::protocols::gemini
