#include "translate.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <random>

#include "crypto.h"
#include "redact.h"
#include "translate_util.h"
#include "upstream_error.h"
#include "utf8.h"

namespace pgi::translate {

UpstreamRequest::~UpstreamRequest() {
    crypto::wipe(headers);
}

namespace detail {

namespace {

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

void skip_space(std::string_view s, std::size_t &i) {
    while (i < s.size() && is_space(s[i]))
        ++i;
}

// Bytes that end a run the scanner can skip without looking: the hot loops test one table
// entry per byte instead of a chain of comparisons (bodies of megabytes go through here).
struct ByteClass {
    bool in_string[256] = {};     // " and backslash
    bool in_container[256] = {};  // " [ ] { }
    constexpr ByteClass() {
        in_string[static_cast<unsigned char>('"')] = in_string[static_cast<unsigned char>('\\')] =
            true;
        for (char c : {'"', '[', ']', '{', '}'})
            in_container[static_cast<unsigned char>(c)] = true;
    }
};
constexpr ByteClass kBytes;

// i is at an opening quote; on success it ends just past the closing one.
bool skip_string(std::string_view s, std::size_t &i) {
    ++i;
    for (;;) {
        while (i < s.size() && !kBytes.in_string[static_cast<unsigned char>(s[i])])
            ++i;
        if (i >= s.size())
            return false;
        if (s[i] == '"') {
            ++i;
            return true;
        }
        i += 2;  // an escape: whatever follows the backslash is part of the string
    }
}

bool skip_value(std::string_view s, std::size_t &i) {
    if (i >= s.size())
        return false;
    char c = s[i];
    if (c == '"')
        return skip_string(s, i);
    if (c == '{' || c == '[') {
        // Brackets are only counted, not matched: enough to find where a well-formed value ends.
        int depth = 0;
        for (;;) {
            while (i < s.size() && !kBytes.in_container[static_cast<unsigned char>(s[i])])
                ++i;
            if (i >= s.size())
                return false;
            char d = s[i];
            if (d == '"') {
                if (!skip_string(s, i))
                    return false;
                continue;
            }
            ++i;
            if (d == '{' || d == '[') {
                ++depth;
            } else if (--depth == 0) {
                return true;
            }
        }
    }
    std::size_t start = i;
    while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && !is_space(s[i]))
        ++i;
    return i > start;
}

long long int_member(const nlohmann::json &object, const char *key) {
    const nlohmann::json *v = member(object, key);
    if (v == nullptr || !v->is_number())
        return 0;
    if (!v->is_number_float())
        return v->get<long long>();
    // A fraction is cut off; a value past long long's range saturates (casting it is undefined).
    const double d = v->get<double>();
    if (d >= 9223372036854775807.0)
        return std::numeric_limits<long long>::max();
    if (d <= -9223372036854775808.0)
        return std::numeric_limits<long long>::min();
    return static_cast<long long>(d);
}

}  // namespace

UpstreamRequest post_json(const ServiceEndpoint &service, std::string_view path, bool stream,
                          std::string body) {
    UpstreamRequest r{"POST", service.base_url, auth_headers(service), std::move(body)};
    r.url += path;
    r.headers.emplace_back("Content-Type: application/json");
    if (stream)
        r.headers.emplace_back("Accept: text/event-stream");
    return r;
}

bool top_level_members(std::string_view s, const std::string_view *keys, std::string_view *values,
                       std::size_t count) {
    for (std::size_t k = 0; k < count; ++k)
        values[k] = {};
    std::size_t i = 0;
    skip_space(s, i);
    if (i >= s.size() || s[i] != '{')
        return false;
    ++i;
    skip_space(s, i);
    if (i < s.size() && s[i] == '}')
        return true;
    for (;;) {
        if (i >= s.size() || s[i] != '"')
            return false;
        std::size_t key_start = i + 1;
        if (!skip_string(s, i))
            return false;
        std::string_view key = s.substr(key_start, i - 1 - key_start);
        skip_space(s, i);
        if (i >= s.size() || s[i] != ':')
            return false;
        ++i;
        skip_space(s, i);
        std::size_t value_start = i;
        if (!skip_value(s, i))
            return false;
        for (std::size_t k = 0; k < count; ++k) {
            if (keys[k] == key)
                values[k] = s.substr(value_start, i - value_start);
        }
        skip_space(s, i);
        if (i >= s.size())
            return false;
        if (s[i] == '}')
            return true;
        if (s[i] != ',')
            return false;
        ++i;
        skip_space(s, i);
    }
}

std::optional<std::string> with_members(std::string_view s, const MemberEdit *edits,
                                        std::size_t count) {
    constexpr std::size_t kMaxEdits = 4;
    if (count > kMaxEdits)
        return std::nullopt;
    std::size_t start[kMaxEdits] = {}, end[kMaxEdits] = {};
    bool seen[kMaxEdits] = {};
    std::size_t i = 0;
    skip_space(s, i);
    if (i >= s.size() || s[i] != '{')
        return std::nullopt;
    const std::size_t open = i;
    ++i;
    skip_space(s, i);
    bool empty = i < s.size() && s[i] == '}';
    while (!empty) {
        if (i >= s.size() || s[i] != '"')
            return std::nullopt;
        std::size_t key_start = i + 1;
        if (!skip_string(s, i))
            return std::nullopt;
        std::string_view key = s.substr(key_start, i - 1 - key_start);
        if (key.find('\\') != std::string_view::npos)
            return std::nullopt;
        skip_space(s, i);
        if (i >= s.size() || s[i] != ':')
            return std::nullopt;
        ++i;
        skip_space(s, i);
        std::size_t value_start = i;
        if (!skip_value(s, i))
            return std::nullopt;
        for (std::size_t k = 0; k < count; ++k) {
            if (edits[k].key != key)
                continue;
            if (seen[k])
                return std::nullopt;
            seen[k] = true;
            start[k] = value_start;
            end[k] = i;
        }
        skip_space(s, i);
        if (i >= s.size())
            return std::nullopt;
        if (s[i] == '}')
            break;
        if (s[i] != ',')
            return std::nullopt;
        ++i;
        skip_space(s, i);
    }
    std::string out;
    out.reserve(s.size() + 64);
    out.append(s.substr(0, open + 1));
    bool first = true;
    for (std::size_t k = 0; k < count; ++k) {
        if (seen[k])
            continue;
        if (!first)
            out += ',';
        first = false;
        append_json_string(out, edits[k].key);
        out += ':';
        out.append(edits[k].value);
    }
    if (!first && !empty)
        out += ',';
    std::size_t copied = open + 1;
    // Replacements in the order they appear in the text.
    for (;;) {
        std::size_t next = s.size();
        std::size_t which = count;
        for (std::size_t k = 0; k < count; ++k) {
            if (seen[k] && start[k] >= copied && start[k] < next) {
                next = start[k];
                which = k;
            }
        }
        if (which == count)
            break;
        out.append(s.substr(copied, next - copied));
        out.append(edits[which].value);
        copied = end[which];
    }
    out.append(s.substr(copied));
    return out;
}

bool array_elements(std::string_view s, std::vector<std::string_view> &elements) {
    std::size_t i = 0;
    skip_space(s, i);
    if (i >= s.size() || s[i] != '[')
        return false;
    ++i;
    skip_space(s, i);
    if (i < s.size() && s[i] == ']')
        return true;
    for (;;) {
        std::size_t start = i;
        if (!skip_value(s, i))
            return false;
        elements.push_back(s.substr(start, i - start));
        skip_space(s, i);
        if (i >= s.size())
            return false;
        if (s[i] == ']')
            return true;
        if (s[i] != ',')
            return false;
        ++i;
        skip_space(s, i);
    }
}

void append_json_string(std::string &out, std::string_view s) {
    static constexpr char kHex[] = "0123456789abcdef";
    out.push_back('"');
    std::size_t run = 0;  // bytes copied in bulk: most text needs no escaping at all
    for (std::size_t i = 0; i < s.size(); ++i) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c >= 0x80) {
            // Text from a parsed document is UTF-8 already; an upstream's raw bytes (an error
            // that is not JSON) may not be, and JSON must be.
            const Utf8Step step = utf8_step(s.substr(i));
            if (!step.valid) {
                out.append(s.data() + run, i - run);
                out += "\xEF\xBF\xBD";  // U+FFFD
                run = i + step.bytes;
            }
            i += step.bytes - 1;
            continue;
        }
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        out.append(s.data() + run, i - run);
        run = i + 1;
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\r':
                out += "\\r";
                break;
            case '\t':
                out += "\\t";
                break;
            default:
                out += "\\u00";
                out.push_back(kHex[c >> 4]);
                out.push_back(kHex[c & 0xF]);
        }
    }
    out.append(s.data() + run, s.size() - run);
    out.push_back('"');
}

std::string serialise(const nlohmann::json &body) {
    return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string completion_id() {
    static constexpr char kAlphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    thread_local std::mt19937_64 rng{std::random_device{}()};
    std::string id = "chatcmpl-";
    std::uniform_int_distribution<int> pick(0, sizeof(kAlphabet) - 2);
    for (int i = 0; i < 24; ++i)
        id.push_back(kAlphabet[pick(rng)]);
    return id;
}

void bad_response(const ServiceEndpoint &service, const char *what, const std::string &why) {
    throw Error(sqlstate::kUpstreamBadResponse,
                "service \"" + service.name + "\" returned a malformed " + what + " response", {},
                why);
}

nlohmann::json parse_upstream_body(const ServiceEndpoint &service, std::string_view body,
                                   const char *what) {
    nlohmann::json j = nlohmann::json::parse(body.begin(), body.end(), nullptr, false);
    if (j.is_discarded()) {
        // Redacted whole before the cut, so no piece of a key is left at the 200th character.
        const std::string shown = redact_key(body, service);
        bad_response(
            service, what,
            "the body is not JSON: " + std::string(std::string_view(shown).substr(0, 200)));
    }
    // Some OpenAI-compatible servers report failures inside a 200.
    if (j.is_object()) {
        auto err = j.find("error");
        if (err != j.end() && !err->is_null()) {
            UpstreamError e = shown_upstream_error(std::string(body), service);
            throw Error(sqlstate::kUpstreamBadResponse,
                        "service \"" + service.name + "\" returned an error: " + e.message);
        }
    }
    return j;
}

const nlohmann::json *member(const nlohmann::json &object, const char *key) {
    if (!object.is_object())
        return nullptr;
    auto it = object.find(key);
    return it == object.end() ? nullptr : &*it;
}

const nlohmann::json *given(const nlohmann::json &object, const char *key) {
    const nlohmann::json *v = member(object, key);
    return v == nullptr || v->is_null() ? nullptr : v;
}

std::string string_member(const nlohmann::json &object, const char *key) {
    const nlohmann::json *v = member(object, key);
    return v != nullptr && v->is_string() ? v->get<std::string>() : std::string();
}

Usage usage_from_openai(const nlohmann::json &usage) {
    Usage u;
    if (!usage.is_object())
        return u;
    u.present = true;
    u.prompt_tokens = int_member(usage, "prompt_tokens");
    u.completion_tokens = int_member(usage, "completion_tokens");
    u.total_tokens = member(usage, "total_tokens") != nullptr
                         ? int_member(usage, "total_tokens")
                         : add_counts(u.prompt_tokens, u.completion_tokens);
    if (const nlohmann::json *details = member(usage, "prompt_tokens_details");
        details != nullptr && details->is_object()) {
        u.cached_tokens = cached_part(int_member(*details, "cached_tokens"), u.prompt_tokens);
    }
    return u;
}

namespace {

// A JSON number as a token count, as usage_from_openai reads it (a fraction is cut off); 0 for
// anything that is not a number.
long long token_count(std::string_view text) {
    const char *first = text.data(), *last = text.data() + text.size();
    long long n = 0;
    auto as_integer = std::from_chars(first, last, n);
    if (as_integer.ec == std::errc() && as_integer.ptr == last)
        return n;
    double d = 0;
    auto as_double = std::from_chars(first, last, d);
    if (as_double.ec != std::errc() || as_double.ptr != last || !(std::fabs(d) < 9.0e18))
        return 0;
    return static_cast<long long>(d);
}

}  // namespace

Usage usage_from_openai_text(std::string_view object) {
    // Read in place rather than through a JSON document: building one for three numbers cost
    // the gateway as much as the rest of a pass-through answer.
    static constexpr std::string_view kCounts[] = {"prompt_tokens", "completion_tokens",
                                                   "total_tokens", "prompt_tokens_details"};
    static constexpr std::string_view kCached[] = {"cached_tokens"};
    std::string_view counts[4];
    if (object.empty() || object[0] != '{' || !top_level_members(object, kCounts, counts, 4))
        return {};
    Usage u;
    u.present = true;
    u.prompt_tokens = token_count(counts[0]);
    u.completion_tokens = token_count(counts[1]);
    u.total_tokens = !counts[2].empty() ? token_count(counts[2])
                                        : add_counts(u.prompt_tokens, u.completion_tokens);
    std::string_view cached;
    if (!counts[3].empty() && counts[3][0] == '{' &&
        top_level_members(counts[3], kCached, &cached, 1) && !cached.empty()) {
        u.cached_tokens = cached_part(token_count(cached), u.prompt_tokens);
    }
    return u;
}

Usage usage_from_anthropic(const nlohmann::json &usage) {
    Usage u;
    if (!usage.is_object())
        return u;
    u.present = true;
    // Anthropic's input_tokens leaves out cached prompt tokens; OpenAI's prompt_tokens counts
    // them, and so must the ledger.
    u.prompt_tokens = add_counts(add_counts(int_member(usage, "input_tokens"),
                                            int_member(usage, "cache_creation_input_tokens")),
                                 int_member(usage, "cache_read_input_tokens"));
    u.completion_tokens = int_member(usage, "output_tokens");
    u.total_tokens = add_counts(u.prompt_tokens, u.completion_tokens);
    u.cached_tokens = cached_part(int_member(usage, "cache_read_input_tokens"), u.prompt_tokens);
    return u;
}

Usage usage_from_gemini(const nlohmann::json &metadata) {
    Usage u;
    if (!metadata.is_object())
        return u;
    u.present = true;
    u.prompt_tokens = int_member(metadata, "promptTokenCount");
    // Thinking tokens are billed as output, as OpenAI counts reasoning in completion_tokens.
    u.completion_tokens = add_counts(int_member(metadata, "candidatesTokenCount"),
                                     int_member(metadata, "thoughtsTokenCount"));
    u.total_tokens = member(metadata, "totalTokenCount") != nullptr
                         ? int_member(metadata, "totalTokenCount")
                         : add_counts(u.prompt_tokens, u.completion_tokens);
    u.cached_tokens = cached_part(int_member(metadata, "cachedContentTokenCount"), u.prompt_tokens);
    return u;
}

void append_usage_json(std::string &out, const Usage &usage) {
    out += "{\"prompt_tokens\":";
    out += std::to_string(usage.prompt_tokens);
    out += ",\"completion_tokens\":";
    out += std::to_string(usage.completion_tokens);
    out += ",\"total_tokens\":";
    out += std::to_string(usage.total_tokens);
    if (usage.cached_tokens > 0) {
        out += ",\"prompt_tokens_details\":{\"cached_tokens\":";
        out += std::to_string(usage.cached_tokens);
        out += '}';
    }
    out += '}';
}

nlohmann::json usage_json(const Usage &usage) {
    nlohmann::json u = {{"prompt_tokens", usage.prompt_tokens},
                        {"completion_tokens", usage.completion_tokens},
                        {"total_tokens", usage.total_tokens}};
    if (usage.cached_tokens > 0)
        u["prompt_tokens_details"] = {{"cached_tokens", usage.cached_tokens}};
    return u;
}

const char *anthropic_finish_reason(const nlohmann::json &stop_reason) {
    if (!stop_reason.is_string())
        return "stop";
    const auto &r = stop_reason.get_ref<const std::string &>();
    if (r == "max_tokens" || r == "model_context_window_exceeded")
        return "length";
    if (r == "tool_use")
        return "tool_calls";
    if (r == "refusal")
        return "content_filter";
    return "stop";  // end_turn, stop_sequence, pause_turn
}

const char *gemini_finish_reason(const nlohmann::json &finish_reason, bool has_tool_calls) {
    std::string r = finish_reason.is_string() ? finish_reason.get<std::string>() : std::string();
    if (r == "MAX_TOKENS")
        return "length";
    if (r == "SAFETY" || r == "RECITATION" || r == "BLOCKLIST" || r == "PROHIBITED_CONTENT" ||
        r == "SPII" || r == "IMAGE_SAFETY") {
        return "content_filter";
    }
    // Gemini says STOP after a function call; OpenAI callers look for tool_calls.
    return has_tool_calls ? "tool_calls" : "stop";
}

nlohmann::json gemini_tool_call(const nlohmann::json &function_call, const nlohmann::json &part,
                                int number) {
    std::string id = string_member(function_call, "id");
    if (id.empty())
        id = "call_" + std::to_string(number);
    const nlohmann::json *args = member(function_call, "args");
    nlohmann::json call = {
        {"id", std::move(id)},
        {"type", "function"},
        {"function",
         {{"name", string_member(function_call, "name")},
          {"arguments", args != nullptr && !args->is_null() ? args->dump() : std::string("{}")}}}};
    std::string signature = string_member(part, "thoughtSignature");
    if (!signature.empty()) {
        call["extra_content"] = {{"google", {{"thought_signature", std::move(signature)}}}};
    }
    return call;
}

std::string_view gemini_model(const ServiceEndpoint &service) {
    std::string_view model = service.model;
    if (model.substr(0, 7) == "models/")
        model.remove_prefix(7);
    return model;
}

}  // namespace detail

namespace {

// usage is the last member of embeddings bodies and of vLLM's chat bodies: found from the end,
// a 2 MB body costs nothing to read. A `"usage"` preceded by ',' or '{' cannot be inside a
// string (a quote there would need a backslash before it), so it is a key; if its value is then
// followed only by the body's final '}', it is a member of the top-level object.
std::string_view trailing_usage(std::string_view body) {
    std::size_t last = body.find_last_not_of(" \t\r\n");
    // A usage object is a few hundred bytes; looking further back is the full scan's job.
    constexpr std::size_t kTail = 4096;
    std::size_t from = body.size() > kTail ? body.size() - kTail : 0;
    std::size_t at = body.substr(from).rfind("\"usage\"");
    if (at != std::string_view::npos)
        at += from;
    if (last == std::string_view::npos || body[last] != '}' || at == std::string_view::npos) {
        return {};
    }
    std::size_t before = body.find_last_not_of(" \t\r\n", at == 0 ? 0 : at - 1);
    if (at == 0 || before == std::string_view::npos ||
        (body[before] != ',' && body[before] != '{')) {
        return {};
    }
    std::size_t i = at + 7;
    detail::skip_space(body, i);
    if (i >= body.size() || body[i] != ':')
        return {};
    ++i;
    detail::skip_space(body, i);
    std::size_t start = i;
    if (!detail::skip_value(body, i))
        return {};
    std::size_t end = i;
    detail::skip_space(body, i);
    return i == last ? body.substr(start, end - start) : std::string_view();
}

}  // namespace

void add_usage(Usage &a, const Usage &b) {
    if (!b.present)
        return;
    a.prompt_tokens = add_counts(a.prompt_tokens, b.prompt_tokens);
    a.completion_tokens = add_counts(a.completion_tokens, b.completion_tokens);
    a.total_tokens = add_counts(a.total_tokens, b.total_tokens);
    a.cached_tokens = add_counts(a.cached_tokens, b.cached_tokens);
    a.present = true;
}

Usage usage_from_openai_body(std::string_view body) {
    std::string_view value = trailing_usage(body);
    if (value.empty()) {
        static constexpr std::string_view kKeys[] = {"usage"};
        if (!detail::top_level_members(body, kKeys, &value, 1))
            return {};
    }
    return detail::usage_from_openai_text(value);
}

Usage charged_usage(const Usage &reported, bool complete, std::size_t streamed_chars) {
    if (complete && reported.present)
        return reported;
    Usage u = reported;
    long long estimate = static_cast<long long>((streamed_chars + 3) / 4);
    if (estimate > u.completion_tokens) {
        u.completion_tokens = estimate;
        u.total_tokens = add_counts(u.prompt_tokens, u.completion_tokens);
        u.present = true;
    }
    return u;
}

Usage usage_from_answer_body(Protocol shape, std::string_view body) {
    if (shape == Protocol::kOpenAiV1)
        return usage_from_openai_body(body);
    nlohmann::json j = nlohmann::json::parse(body.begin(), body.end(), nullptr, false);
    if (j.is_discarded())
        return {};
    if (shape == Protocol::kAnthropicV1) {
        const nlohmann::json *usage = detail::member(j, "usage");
        return usage != nullptr && usage->is_object() ? detail::usage_from_anthropic(*usage)
                                                      : Usage();
    }
    // Gemini: streamGenerateContent without alt=sse answers an array of chunks, the usage
    // (cumulative) on the last ones.
    const nlohmann::json *usage = nullptr;
    if (j.is_array()) {
        for (const auto &chunk : j) {
            if (const nlohmann::json *u = detail::member(chunk, "usageMetadata"))
                usage = u;
        }
    } else {
        usage = detail::member(j, "usageMetadata");
    }
    return usage != nullptr && usage->is_object() ? detail::usage_from_gemini(*usage) : Usage();
}

Error upstream_failure(const ServiceEndpoint &service, long status, const std::string &body) {
    UpstreamError e = parse_upstream_error(body);
    const char *state = sqlstate::kUpstreamBadResponse;
    std::string hint;
    if (status == 401 || (status == 400 && e.reason == "API_KEY_INVALID")) {
        state = sqlstate::kUpstreamAuth;
        hint = service.protocol == Protocol::kAnthropicV1
                   ? "Check the service's API key and the account's credits; "
                   : "Check the service's API key; ";
        hint += "inference.update_external_service(name, api_key => ...) replaces it.";
    } else if (status == 403) {
        state = sqlstate::kUpstreamForbidden;
        hint = "The API key is not allowed to use this model or endpoint.";
    } else if (status == 404) {
        state = sqlstate::kUpstreamNotFound;
        hint = "Check the service's base_url and model.";
    } else if (status == 429) {
        state = sqlstate::kUpstreamRateLimit;
        hint = e.type == "insufficient_quota" || e.code == "insufficient_quota"
                   ? "The account's quota is exhausted; check billing and credits."
                   : "The upstream is rate limiting; retry later or lower the request rate.";
    } else if (status >= 500 && status <= 599) {
        state = sqlstate::kUpstreamServer;
        hint = "The upstream failed; retry later.";
    }
    // Providers sometimes quote the rejected key back; it must not reach a log or a client. Only
    // the upstream's words are scrubbed: ours and the service name never hold the key.
    const UpstreamError shown = shown_upstream_error(body, service);
    std::string message =
        "service \"" + service.name + "\" returned HTTP " + std::to_string(status);
    if (!shown.message.empty())
        message += ": " + shown.message;
    std::string detail;
    if (!shown.type.empty())
        detail = "upstream error type: " + shown.type;
    if (!shown.code.empty())
        detail += (detail.empty() ? "" : ", ") + std::string("code: ") + shown.code;
    if (!shown.reason.empty())
        detail += (detail.empty() ? "" : ", ") + std::string("reason: ") + shown.reason;
    return Error(state, std::move(message), std::move(hint), std::move(detail));
}

std::string openai_error_json(std::string_view message, std::string_view type,
                              std::string_view code, std::string_view param) {
    std::string out = "{\"error\":{\"message\":";
    detail::append_json_string(out, message);
    out += ",\"type\":";
    detail::append_json_string(out, type);
    out += ",\"param\":";
    if (param.empty()) {
        out += "null";
    } else {
        detail::append_json_string(out, param);
    }
    out += ",\"code\":";
    if (code.empty()) {
        out += "null";
    } else {
        detail::append_json_string(out, code);
    }
    out += "}}";
    return out;
}

}  // namespace pgi::translate
