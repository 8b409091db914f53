#include <cstring>
#include <ctime>

#include "openai_chat.h"
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <nlohmann/json.hpp>

#include "redact.h"
#include "translate_util.h"
#include "upstream_error.h"

namespace pgi::protocols::openai_chat {

namespace {

using nlohmann::json;
using translate::Usage;
namespace detail = translate::detail;

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

StreamRelay::StreamRelay(const ServiceEndpoint &service, bool caller_wants_usage)
    : service_(service), caller_wants_usage_(caller_wants_usage) {}

Usage StreamRelay::charged_usage() const {
    return translate::charged_usage(usage_, done_, streamed_chars_);
}

void StreamRelay::read(std::string_view bytes, bool finishing, std::string &out) {
    auto too_long = read_events(parser_, bytes, finishing, done_,
                                [&](const SseEventView &e) { event(e, out); });
    // An event past the parser's cap; the events completed before it have been written.
    if (too_long && !done_)
        error(out, "service \"" + service_.name + "\": " + *too_long, "upstream_error");
}

void StreamRelay::feed(std::string_view bytes, std::string &out) {
    if (!done_)
        read(bytes, false, out);
}

void StreamRelay::finish(std::string &out) {
    if (done_)
        return;
    read({}, true, out);
    if (!done_) {
        out += "data: [DONE]\n\n";
        done_ = true;
    }
}

void StreamRelay::fail(std::string_view message, std::string &out) {
    if (!done_)
        error(out, message, "upstream_error");
}

void StreamRelay::error(std::string &out, std::string_view message, std::string_view type) {
    out += "data: ";
    out += translate::openai_error_json(message, type);
    out += "\n\n";
    failed_ = done_ = true;
}

// Forwards, watching for usage and errors without parsing every chunk.
void StreamRelay::event(const SseEventView &e, std::string &out) {
    streamed_chars_ += text_chars(e.data);
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

}  // namespace pgi::protocols::openai_chat
