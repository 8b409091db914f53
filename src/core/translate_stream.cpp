#include "translate_stream.h"

#include <cstring>
#include <ctime>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <nlohmann/json.hpp>

#include "redact.h"
#include "translate_util.h"
#include "upstream_error.h"

namespace pgi::translate {

namespace {

using detail::member;
using detail::string_member;
using nlohmann::json;

// Gemini asks for at most 8 candidates; a larger index is a broken upstream, not a reason to
// allocate without bound. Anthropic block indexes are bounded the same way.
constexpr std::size_t kMaxChoices = 128;
constexpr std::size_t kMaxBlocks = 4096;

// Writes an event in SSE framing; a payload spread over several data lines stays that way.
void forward(std::string &out, std::string_view data) {
    out += "data: ";
    std::size_t pos = 0;
    for (std::size_t nl = data.find('\n'); nl != std::string_view::npos;
         nl = data.find('\n', pos)) {
        out.append(data.substr(pos, nl - pos));
        out += "\ndata: ";
        pos = nl + 1;
    }
    out.append(data.substr(pos));
    out += "\n\n";
}

bool quoted_key_at(const char *p, std::size_t n, std::size_t i) {
    if (i + 7 > n)
        return false;
    return std::memcmp(p + i, "\"usage\"", 7) == 0 || std::memcmp(p + i, "\"error\"", 7) == 0;
}

// Whether `"usage"` or `"error"` appears anywhere in the text. One pass that stops only at quotes,
// 16 bytes at a time where SSE2 is there: two memmem calls over every chunk of a stream were a
// twentieth of the gateway's instructions, and std::string::find stops at every quote to compare.
bool mentions_usage_or_error(std::string_view text) {
    const char *p = text.data();
    const std::size_t n = text.size();
    std::size_t i = 0;
#if defined(__SSE2__)
    const __m128i quote = _mm_set1_epi8('"');
    for (; i + 16 <= n; i += 16) {
        __m128i block = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p + i));
        unsigned mask = static_cast<unsigned>(_mm_movemask_epi8(_mm_cmpeq_epi8(block, quote)));
        while (mask != 0) {
            if (quoted_key_at(p, n, i + static_cast<std::size_t>(__builtin_ctz(mask))))
                return true;
            mask &= mask - 1;
        }
    }
#endif
    for (; i < n; ++i) {
        if (p[i] == '"' && quoted_key_at(p, n, i))
            return true;
    }
    return false;
}

bool empty_array(std::string_view v) {
    if (v.size() < 2 || v.front() != '[' || v.back() != ']')
        return false;
    for (char c : v.substr(1, v.size() - 2)) {
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return false;
    }
    return true;
}

bool is_true(const json *v) {
    return v != nullptr && v->is_boolean() && v->get<bool>();
}

std::size_t index_of(const json &object, std::size_t fallback) {
    const json *v = member(object, "index");
    return v != nullptr && v->is_number_unsigned() ? v->get<std::size_t>() : fallback;
}

// Characters of the JSON string values of the members that carry generated text in any of the
// three stream shapes ("content", "text", "arguments", "partial_json"), found by a scan rather
// than a parse: an estimate needs no more, and this runs on every event. An escape counts as one
// character.
std::size_t text_chars(std::string_view data) {
    static constexpr std::string_view kKeys[] = {"\"content\"", "\"text\"", "\"arguments\"",
                                                 "\"partial_json\""};
    std::size_t total = 0;
    for (std::size_t at = data.find('"'); at != std::string_view::npos;) {
        std::size_t key_end = std::string_view::npos;
        for (std::string_view key : kKeys) {
            if (data.compare(at, key.size(), key) == 0) {
                key_end = at + key.size();
                break;
            }
        }
        if (key_end == std::string_view::npos) {
            // Skip this string whole, so that a value is never read as a key.
            std::size_t i = at + 1;
            while (i < data.size() && data[i] != '"')
                i += data[i] == '\\' ? 2 : 1;
            at = i + 1 < data.size() ? data.find('"', i + 1) : std::string_view::npos;
            continue;
        }
        std::size_t i = key_end;
        while (i < data.size() &&
               (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r'))
            i++;
        if (i >= data.size() || data[i] != ':') {
            at = data.find('"', key_end);
            continue;
        }
        i++;
        while (i < data.size() &&
               (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r'))
            i++;
        if (i >= data.size() || data[i] != '"') {
            at = data.find('"', i);
            continue;
        }
        i++;
        while (i < data.size() && data[i] != '"') {
            // UTF-8 continuation bytes are part of the character before them.
            if ((static_cast<unsigned char>(data[i]) & 0xC0) != 0x80)
                total++;
            i += data[i] == '\\' ? 2 : 1;
        }
        at = i + 1 < data.size() ? data.find('"', i + 1) : std::string_view::npos;
    }
    return total;
}

}  // namespace

Usage ChatStream::charged_usage() const {
    if (done_ && usage_.present)
        return usage_;
    Usage u = usage_;
    long long estimate = static_cast<long long>((streamed_chars_ + 3) / 4);
    if (estimate > u.completion_tokens) {
        u.completion_tokens = estimate;
        u.total_tokens = u.prompt_tokens + u.completion_tokens;
        u.present = true;
    }
    return u;
}

ChatStream::ChatStream(const ServiceEndpoint &service, bool caller_wants_usage)
    : service_(service), caller_wants_usage_(caller_wants_usage) {}

// Hands each parsed event to the stream's translation, writing to `out`.
struct ChatStream::Sink final : SseSink {
    ChatStream &stream;
    std::string &out;
    Sink(ChatStream &s, std::string &o) : stream(s), out(o) {}
    void on_event(const SseEventView &e) override {
        if (!stream.done_)
            stream.event(e, out);
    }
};

void ChatStream::feed(std::string_view bytes, std::string &out) {
    if (done_)
        return;
    Sink sink(*this, out);
    try {
        parser_.feed(bytes, sink);
    } catch (const Error &e) {
        // An event past the parser's cap; the events completed before it have been written.
        if (!done_)
            error(out, "service \"" + service_.name + "\": " + e.what(), "upstream_error");
    }
}

void ChatStream::finish(std::string &out) {
    if (done_)
        return;
    Sink sink(*this, out);
    parser_.finish(sink);
    if (!done_)
        end(out);
}

void ChatStream::fail(std::string_view message, std::string &out) {
    if (!done_)
        error(out, message, "upstream_error");
}

void ChatStream::event(const SseEventView &e, std::string &out) {
    streamed_chars_ += text_chars(e.data);
    switch (service_.protocol) {
        case Protocol::kOpenAiV1:
            openai_event(e, out);
            break;
        case Protocol::kAnthropicV1:
            anthropic_event(e, out);
            break;
        case Protocol::kGeminiV1Beta:
            gemini_event(e, out);
            break;
    }
}

// ---- OpenAI: forward, watching for usage and errors without parsing every chunk ----

void ChatStream::openai_event(const SseEventView &e, std::string &out) {
    if (e.event == "error") {
        // Some OpenAI-compatible servers name their error events; pass the message on.
        UpstreamError err = shown_upstream_error(std::string(e.data), service_);
        error(out, err.message, err.type.empty() ? "upstream_error" : err.type);
        return;
    }
    if (e.data == "[DONE]") {
        out += "data: [DONE]\n\n";
        done_ = true;
        return;
    }
    // Most chunks carry neither member (a quoted "usage" or "error" in the content only sends a
    // chunk the slow way): no need to walk their JSON.
    if (!mentions_usage_or_error(e.data)) {
        forward(out, e.data);
        return;
    }
    static constexpr std::string_view kKeys[] = {"usage", "choices", "error"};
    std::string_view values[3];
    if (!detail::top_level_members(e.data, kKeys, values, 3)) {
        forward(out, e.data);  // not ours to judge: the caller gets what the upstream sent
        return;
    }
    std::string_view usage = values[0], choices = values[1], err = values[2];
    if (!err.empty() && err != "null") {
        forward(out, e.data);
        failed_ = done_ = true;
        return;
    }
    if (!usage.empty() && usage != "null") {
        Usage u = detail::usage_from_openai_text(usage);
        if (u.present)
            usage_ = u;
        bool usage_only = choices.empty() || choices == "null" || empty_array(choices);
        if (usage_only) {
            if (!caller_wants_usage_)
                return;  // requested by us for the ledger, not by the caller
            if (choices.empty() || choices == "null") {
                // vLLM sends choices:null; OpenAI clients index into choices unguarded. The scan
                // above is no validation: a chunk that is not JSON goes on as it came.
                json chunk = json::parse(e.data, nullptr, false);
                if (chunk.is_object()) {
                    chunk["choices"] = json::array();
                    forward(out, chunk.dump());
                    return;
                }
            }
        }
    }
    forward(out, e.data);
}

// ---- chunk writing for the translated protocols ----

void ChatStream::start(std::string id, std::string_view model) {
    if (id.empty())
        id = detail::completion_id();
    if (model.empty())
        model = service_.model;
    prefix_ = "{\"id\":";
    detail::append_json_string(prefix_, id);
    prefix_ += ",\"object\":\"chat.completion.chunk\",\"created\":";
    prefix_ += std::to_string(static_cast<long long>(std::time(nullptr)));
    prefix_ += ",\"model\":";
    detail::append_json_string(prefix_, model);
    prefix_ += ",\"choices\":[";
}

ChatStream::Choice &ChatStream::choice(std::size_t index) {
    if (index >= choices_.size())
        choices_.resize(index + 1);
    return choices_[index];
}

void ChatStream::open_choice(std::string &out, std::size_t index) {
    if (prefix_.empty())
        start({}, {});
    Choice &c = choice(index);
    if (c.started)
        return;
    c.started = true;
    role_chunk(out, index);
}

void ChatStream::role_chunk(std::string &out, std::size_t index) {
    out += "data: ";
    out += prefix_;
    out += "{\"index\":";
    out += std::to_string(index);
    out += ",\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n";
}

// A chunk for one choice is written in two halves around its delta object.
namespace {

void chunk_begin(std::string &out, const std::string &prefix, std::size_t index) {
    out += "data: ";
    out += prefix;
    out += "{\"index\":";
    out += std::to_string(index);
    out += ",\"delta\":";
}

void chunk_end(std::string &out, const char *finish_reason) {
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

}  // namespace

void ChatStream::content_chunk(std::string &out, std::size_t index, std::string_view text) {
    if (text.empty())
        return;
    open_choice(out, index);
    chunk_begin(out, prefix_, index);
    out += "{\"content\":";
    detail::append_json_string(out, text);
    out += '}';
    chunk_end(out, nullptr);
}

void ChatStream::finish_chunk(std::string &out, std::size_t index, const char *finish_reason) {
    open_choice(out, index);
    Choice &c = choice(index);
    if (c.finished)
        return;
    c.finished = true;
    chunk_begin(out, prefix_, index);
    out += "{}";
    chunk_end(out, finish_reason);
}

void ChatStream::end(std::string &out) {
    if (service_.protocol != Protocol::kOpenAiV1 && caller_wants_usage_) {
        if (prefix_.empty())
            start({}, {});
        out += "data: ";
        out += prefix_;
        out += "],\"usage\":";
        detail::append_usage_json(out, usage_);
        out += "}\n\n";
    }
    out += "data: [DONE]\n\n";
    done_ = true;
}

void ChatStream::error(std::string &out, std::string_view message, std::string_view type) {
    out += "data: ";
    out += openai_error_json(message, type);
    out += "\n\n";
    failed_ = done_ = true;
}

// ---- Anthropic Messages events ----

void ChatStream::anthropic_event(const SseEventView &e, std::string &out) {
    json j = json::parse(e.data, nullptr, false);
    if (!j.is_object()) {
        error(out, "service \"" + service_.name + "\" sent a malformed stream event",
              "upstream_error");
        return;
    }
    // The event name is authoritative (the SDKs dispatch on it); data.type backs it up.
    const std::string type = e.event.empty() ? string_member(j, "type") : std::string(e.event);
    if (type == "message_start") {
        const json *message = member(j, "message");
        if (message != nullptr && prefix_.empty()) {
            start(string_member(*message, "id"), string_member(*message, "model"));
        }
        if (const json *u = message != nullptr ? member(*message, "usage") : nullptr) {
            usage_ = detail::usage_from_anthropic(*u);
        }
        open_choice(out, 0);
    } else if (type == "content_block_start") {
        const json *block = member(j, "content_block");
        if (block == nullptr)
            return;
        std::string block_type = string_member(*block, "type");
        if (block_type == "text") {
            content_chunk(out, 0, string_member(*block, "text"));
        } else if (block_type == "tool_use") {
            std::size_t at = index_of(j, 0);
            if (at >= kMaxBlocks)
                return;
            open_choice(out, 0);
            int tool = choice(0).tool_calls++;
            if (block_tool_index_.size() <= at)
                block_tool_index_.resize(at + 1, -1);
            block_tool_index_[at] = tool;
            chunk_begin(out, prefix_, 0);
            out += "{\"tool_calls\":[{\"index\":";
            out += std::to_string(tool);
            out += ",\"id\":";
            detail::append_json_string(out, string_member(*block, "id"));
            out += ",\"type\":\"function\",\"function\":{\"name\":";
            detail::append_json_string(out, string_member(*block, "name"));
            out += ",\"arguments\":\"\"}}]}";
            chunk_end(out, nullptr);
        }
        // thinking blocks are not part of an OpenAI answer
    } else if (type == "content_block_delta") {
        const json *delta = member(j, "delta");
        if (delta == nullptr)
            return;
        std::string delta_type = string_member(*delta, "type");
        if (delta_type == "text_delta") {
            content_chunk(out, 0, string_member(*delta, "text"));
        } else if (delta_type == "input_json_delta") {
            std::size_t at = index_of(j, 0);
            std::string partial = string_member(*delta, "partial_json");
            if (at >= block_tool_index_.size() || block_tool_index_[at] < 0 || partial.empty()) {
                return;
            }
            chunk_begin(out, prefix_, 0);
            out += "{\"tool_calls\":[{\"index\":";
            out += std::to_string(block_tool_index_[at]);
            out += ",\"function\":{\"arguments\":";
            detail::append_json_string(out, partial);
            out += "}}]}";
            chunk_end(out, nullptr);
        }
    } else if (type == "message_delta") {
        if (const json *u = member(j, "usage"); u != nullptr && u->is_object()) {
            // output_tokens is cumulative; input counts appear here only on newer API versions.
            Usage d = detail::usage_from_anthropic(*u);
            usage_.completion_tokens = d.completion_tokens;
            if (member(*u, "input_tokens") != nullptr)
                usage_.prompt_tokens = d.prompt_tokens;
            usage_.total_tokens =
                detail::add_counts(usage_.prompt_tokens, usage_.completion_tokens);
            usage_.present = true;
        }
        const json *delta = member(j, "delta");
        const json *stop = delta != nullptr ? member(*delta, "stop_reason") : nullptr;
        if (stop != nullptr && !stop->is_null()) {
            finish_chunk(out, 0, detail::anthropic_finish_reason(*stop));
        }
    } else if (type == "message_stop") {
        end(out);
    } else if (type == "error") {
        const json *err = member(j, "error");
        std::string message =
            err != nullptr ? redact_key(string_member(*err, "message"), service_) : std::string();
        std::string kind =
            err != nullptr ? redact_key(string_member(*err, "type"), service_) : std::string();
        error(out,
              message.empty() ? "service \"" + service_.name + "\" failed mid-stream" : message,
              kind.empty() ? "upstream_error" : kind);
    }
    // ping, content_block_stop and event types added later carry nothing to translate.
}

// ---- Gemini streamGenerateContent events (each one a whole GenerateContentResponse) ----

void ChatStream::gemini_event(const SseEventView &e, std::string &out) {
    json j = json::parse(e.data, nullptr, false);
    if (!j.is_object()) {
        error(out, "service \"" + service_.name + "\" sent a malformed stream event",
              "upstream_error");
        return;
    }
    if (const json *err = member(j, "error"); err != nullptr && !err->is_null()) {
        UpstreamError parsed = shown_upstream_error(std::string(e.data), service_);
        error(out, parsed.message, parsed.type.empty() ? "upstream_error" : parsed.type);
        return;
    }
    if (prefix_.empty())
        start(string_member(j, "responseId"), string_member(j, "modelVersion"));
    if (const json *u = member(j, "usageMetadata"); u != nullptr && u->is_object()) {
        usage_ = detail::usage_from_gemini(*u);
    }
    const json *candidates = member(j, "candidates");
    if (candidates == nullptr || !candidates->is_array() || candidates->empty()) {
        const json *feedback = member(j, "promptFeedback");
        if (feedback != nullptr && member(*feedback, "blockReason") != nullptr) {
            finish_chunk(out, 0, "content_filter");
        }
        return;
    }
    for (std::size_t pos = 0; pos < candidates->size(); ++pos) {
        const json &c = (*candidates)[pos];
        std::size_t index = index_of(c, pos);
        if (index >= kMaxChoices) {
            error(out, "service \"" + service_.name + "\" sent a malformed stream event",
                  "upstream_error");
            return;
        }
        open_choice(out, index);
        const json *content = member(c, "content");
        const json *parts = content != nullptr ? member(*content, "parts") : nullptr;
        if (parts != nullptr && parts->is_array()) {
            std::string text;
            for (const json &part : *parts) {
                if (is_true(member(part, "thought")))
                    continue;
                text += string_member(part, "text");
            }
            content_chunk(out, index, text);
            for (const json &part : *parts) {
                const json *call = member(part, "functionCall");
                if (call == nullptr || is_true(member(part, "thought")))
                    continue;
                json tool = detail::gemini_tool_call(*call, part, next_call_id_++);
                tool["index"] = choice(index).tool_calls++;
                chunk_begin(out, prefix_, index);
                out += "{\"tool_calls\":[";
                out += tool.dump();
                out += "]}";
                chunk_end(out, nullptr);
            }
        }
        const json *reason = member(c, "finishReason");
        if (reason != nullptr && reason->is_string() &&
            !reason->get_ref<const std::string &>().empty()) {
            finish_chunk(out, index,
                         detail::gemini_finish_reason(*reason, choice(index).tool_calls > 0));
        }
    }
}

}  // namespace pgi::translate
