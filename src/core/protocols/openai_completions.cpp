#include "openai_completions.h"

#include <climits>
#include <ctime>
#include <optional>

#include "openai_chat.h"
#include "request_members.h"
#include "translate_util.h"

namespace pgi::protocols::openai_completions {

namespace {

using chat::Event;
using nlohmann::json;
using translate::detail::given;

constexpr const char *kRequestHint =
    "A completions request looks like {\"model\":\"...\",\"prompt\":\"Once upon a time\","
    "\"max_tokens\":64}.";

[[noreturn]] void invalid(const std::string &message) {
    throw Error(sqlstate::kInvalidParameterValue, message, kRequestHint);
}

[[noreturn]] void not_carried(const std::string &what) {
    throw Error(sqlstate::kFeatureNotSupported,
                what + " cannot be translated for a service of another protocol",
                "Only an OPENAI_V1 service (vLLM, KServe, OME, ...) takes completions as they "
                "are; call one, or leave this part out.");
}

std::optional<long long> integer(const json &object, const char *key, long long min) {
    return integer_member(object, key, min, kRequestHint);
}

std::optional<double> number(const json &object, const char *key) {
    return number_member(object, key, kRequestHint);
}

bool stream_of(const json &body) {
    const json *v = given(body, "stream");
    if (v == nullptr)
        return false;
    if (!v->is_boolean())
        invalid("\"stream\" must be a boolean");
    return v->get<bool>();
}

std::string completion_id() {
    static constexpr std::size_t kChat = sizeof("chatcmpl-") - 1;
    return "cmpl-" + translate::detail::completion_id().substr(kChat);
}

std::string text_of(const std::vector<chat::Block> &content) {
    std::string text;
    for (const chat::Block &b : content) {
        if (b.kind == chat::Block::Kind::kText)
            text += b.text;
    }
    return text;
}

}  // namespace

chat::Request read_request(const json &body) {
    if (!body.is_object())
        invalid("the completions request must be a JSON object");
    if (const json *model = given(body, "model"); model != nullptr && !model->is_string())
        invalid("\"model\" must be a string");
    const json *prompt = given(body, "prompt");
    if (prompt == nullptr)
        invalid("the completions request has no \"prompt\"");
    std::string text;
    if (prompt->is_string()) {
        text = prompt->get<std::string>();
    } else if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) {
        text = (*prompt)[0].get<std::string>();
    } else if (prompt->is_array() && !prompt->empty() && (*prompt)[0].is_string()) {
        not_carried("several prompts in one request");
    } else if (prompt->is_array() && !prompt->empty()) {
        not_carried("a prompt of token ids");
    } else {
        invalid("\"prompt\" must be a string or an array of strings");
    }
    if (integer(body, "n", 1).value_or(1) > 1)
        not_carried("\"n\" above 1");
    if (integer(body, "best_of", 1).value_or(1) > 1)
        not_carried("\"best_of\" above 1");
    if (const json *echo = given(body, "echo"); echo != nullptr && *echo == true)
        not_carried("\"echo\"");
    if (given(body, "logprobs") != nullptr)
        not_carried("\"logprobs\"");
    if (const json *suffix = given(body, "suffix");
        suffix != nullptr &&
        !(suffix->is_string() && suffix->get_ref<const std::string &>().empty())) {
        not_carried("\"suffix\"");
    }
    chat::Request req;
    chat::Message m;
    chat::Block b;
    b.text = std::move(text);
    m.content.push_back(std::move(b));
    req.messages.push_back(std::move(m));
    req.max_tokens = integer(body, "max_tokens", 1);
    req.temperature = number(body, "temperature");
    req.top_p = number(body, "top_p");
    req.presence_penalty = number(body, "presence_penalty");
    req.frequency_penalty = number(body, "frequency_penalty");
    req.seed = integer(body, "seed", LLONG_MIN);
    if (const json *stop = given(body, "stop")) {
        if (stop->is_string()) {
            req.stop.push_back(stop->get<std::string>());
        } else if (stop->is_array()) {
            for (const json &s : *stop) {
                if (!s.is_string())
                    invalid("\"stop\" must be a string or an array of strings");
                req.stop.push_back(s.get<std::string>());
            }
        } else {
            invalid("\"stop\" must be a string or an array of strings");
        }
    }
    if (const json *user = given(body, "user")) {
        if (!user->is_string())
            invalid("\"user\" must be a string");
        req.user = user->get<std::string>();
    }
    req.stream = stream_of(body);
    if (const json *options = given(body, "stream_options")) {
        const json *usage = options->is_object() ? given(*options, "include_usage") : nullptr;
        if (!options->is_object() || (usage != nullptr && !usage->is_boolean()))
            invalid("\"stream_options\" must be an object like {\"include_usage\": true}");
        req.stream_usage = req.stream && usage != nullptr && usage->get<bool>();
    }
    return req;
}

json write_response(const chat::Response &r) {
    return {
        {"id", r.id.empty() ? completion_id() : r.id},
        {"object", "text_completion"},
        {"created", static_cast<long long>(std::time(nullptr))},
        {"model", r.model},
        {"choices", json::array({{{"index", 0},
                                  {"text", text_of(r.content)},
                                  {"logprobs", nullptr},
                                  {"finish_reason", openai_chat::finish_reason(r.stop_reason)}}})},
        {"usage", translate::detail::usage_json(r.usage)}};
}

void StreamWriter::head(std::string &out) const {
    out += "data: {\"id\":";
    translate::detail::append_json_string(out, id_);
    out += ",\"object\":\"text_completion\",\"created\":";
    out += std::to_string(created_);
    out += ",\"model\":";
    translate::detail::append_json_string(out, model_);
}

void StreamWriter::chunk(std::string &out, std::string_view text, const char *finish_reason) {
    head(out);
    out += ",\"choices\":[{\"index\":0,\"text\":";
    translate::detail::append_json_string(out, text);
    out += ",\"logprobs\":null,\"finish_reason\":";
    if (finish_reason == nullptr) {
        out += "null";
    } else {
        translate::detail::append_json_string(out, finish_reason);
    }
    out += "}]}\n\n";
}

void StreamWriter::write(const Event &e, std::string &out) {
    if (done_)
        return;
    if (id_.empty()) {
        id_ = e.kind == Event::Kind::kStart && !e.id.empty() ? e.id : completion_id();
        model_ = e.kind == Event::Kind::kStart ? e.model : std::string();
        created_ = static_cast<long long>(std::time(nullptr));
    }
    switch (e.kind) {
        case Event::Kind::kTextDelta:
            if (!e.text.empty())
                chunk(out, e.text, nullptr);
            break;
        case Event::Kind::kStop:
            stop_reason_ = e.stop_reason;
            break;
        case Event::Kind::kUsage:
            usage_ = e.usage;
            break;
        case Event::Kind::kEnd:
            chunk(out, "", openai_chat::finish_reason(stop_reason_));
            if (stream_usage_) {
                head(out);
                out += ",\"choices\":[],\"usage\":";
                translate::detail::append_usage_json(out, usage_);
                out += "}\n\n";
            }
            out += "data: [DONE]\n\n";
            done_ = true;
            break;
        case Event::Kind::kError:
            out += "data: ";
            out += openai_chat::error_body(e.error.status, e.error.message);
            out += "\n\n";
            done_ = true;
            break;
        default:
            break;  // block boundaries have no counterpart; tool calls cannot be asked for
    }
}

chat::Passed pass_request(const ServiceEndpoint &service, json &body, std::string_view raw, bool) {
    if (!body.is_object())
        invalid("the completions request must be a JSON object");
    chat::Passed call;
    call.stream = stream_of(body);
    if (const json *options = given(body, "stream_options"); options != nullptr && call.stream) {
        const json *usage = options->is_object() ? given(*options, "include_usage") : nullptr;
        call.stream_usage = usage != nullptr && *usage == true;
    }
    call.request =
        translate::detail::post_json(service, "/v1/completions", call.stream,
                                     openai_chat::passed_body(service, body, raw, call.stream));
    return call;
}

}  // namespace pgi::protocols::openai_completions
