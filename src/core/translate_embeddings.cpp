#include "translate_embeddings.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <optional>

#include "base64.h"
#include "translate_util.h"

namespace pgi::translate {

namespace {

using detail::member;
using nlohmann::json;

constexpr const char *kOptionsHint =
    "Valid embedding options are dimensions, input_type and truncate.";

[[noreturn]] void invalid(const std::string &message, const char *hint = kOptionsHint) {
    throw Error(sqlstate::kInvalidParameterValue, message, hint ? hint : "");
}

struct Options {
    std::optional<long long> dimensions;
    std::string input_type;
    std::string truncate;
};

Options read_options(const json &options) {
    Options o;
    if (options.is_null())
        return o;
    if (!options.is_object())
        invalid("embedding options must be a JSON object");
    for (const auto &[key, value] : options.items()) {
        if (value.is_null())
            continue;
        if (key == "dimensions") {
            if (!value.is_number_integer() || value.get<long long>() < 1) {
                invalid("embedding option \"dimensions\" must be a positive integer");
            }
            o.dimensions = value.get<long long>();
        } else if (key == "input_type") {
            if (!value.is_string() || value.get_ref<const std::string &>().empty()) {
                invalid("embedding option \"input_type\" must be a non-empty string");
            }
            o.input_type = value.get<std::string>();
        } else if (key == "truncate") {
            std::string t = value.is_string() ? value.get<std::string>() : std::string();
            std::transform(t.begin(), t.end(), t.begin(),
                           [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
            if (t != "NONE" && t != "START" && t != "END") {
                invalid("embedding option \"truncate\" must be NONE, START or END");
            }
            o.truncate = std::move(t);
        } else {
            invalid("unknown embedding option \"" + key + "\"");
        }
    }
    return o;
}

// Gemini's taskType for an input_type: the two NIM words, or one of Gemini's own task types.
std::string gemini_task_type(const std::string &input_type) {
    if (input_type == "query")
        return "RETRIEVAL_QUERY";
    if (input_type == "passage")
        return "RETRIEVAL_DOCUMENT";
    static constexpr const char *kTaskTypes[] = {
        "RETRIEVAL_QUERY", "RETRIEVAL_DOCUMENT", "SEMANTIC_SIMILARITY", "CLASSIFICATION",
        "CLUSTERING",      "QUESTION_ANSWERING", "FACT_VERIFICATION",   "CODE_RETRIEVAL_QUERY"};
    for (const char *t : kTaskTypes) {
        if (input_type == t)
            return input_type;
    }
    invalid("embedding option \"input_type\" has no Gemini task type: \"" + input_type + "\"",
            "Use query, passage, RETRIEVAL_QUERY, RETRIEVAL_DOCUMENT, SEMANTIC_SIMILARITY, "
            "CLASSIFICATION, CLUSTERING, QUESTION_ANSWERING, FACT_VERIFICATION or "
            "CODE_RETRIEVAL_QUERY.");
}

std::size_t text_size(const std::vector<std::string> &inputs) {
    std::size_t n = 0;
    for (const std::string &s : inputs)
        n += s.size() + 32;
    return n;
}

// The bodies are written directly: this is the per-row path of encode_text, and a DOM of the
// inputs would only be serialised again.
std::string openai_body(const ServiceEndpoint &s, const std::vector<std::string> &inputs,
                        const Options &o, bool ask_base64) {
    std::string body;
    body.reserve(text_size(inputs) + 128);
    body += "{\"model\":";
    detail::append_json_string(body, s.model);
    body += ",\"input\":[";
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        if (i > 0)
            body += ',';
        detail::append_json_string(body, inputs[i]);
    }
    body += ']';
    if (ask_base64)
        body += ",\"encoding_format\":\"base64\"";
    if (o.dimensions)
        body += ",\"dimensions\":" + std::to_string(*o.dimensions);
    if (!o.input_type.empty()) {
        body += ",\"input_type\":";
        detail::append_json_string(body, o.input_type);
    }
    if (!o.truncate.empty())
        body += ",\"truncate\":\"" + o.truncate + '"';
    body += '}';
    return body;
}

std::string gemini_body(const ServiceEndpoint &s, const std::vector<std::string> &inputs,
                        const Options &o) {
    std::string prefix = "{\"model\":";
    detail::append_json_string(prefix, "models/" + std::string(detail::gemini_model(s)));
    prefix += ",\"content\":{\"parts\":[{\"text\":";
    std::string suffix = "}]}";
    if (!o.input_type.empty())
        suffix += ",\"taskType\":\"" + gemini_task_type(o.input_type) + '"';
    if (o.dimensions)
        suffix += ",\"outputDimensionality\":" + std::to_string(*o.dimensions);
    suffix += '}';

    std::string body;
    body.reserve(text_size(inputs) + inputs.size() * (prefix.size() + suffix.size()) + 16);
    body += "{\"requests\":[";
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        if (i > 0)
            body += ',';
        body += prefix;
        detail::append_json_string(body, inputs[i]);
        body += suffix;
    }
    body += "]}";
    return body;
}

std::vector<float> float_array(const ServiceEndpoint &s, const json &values, std::size_t k) {
    std::vector<float> v;
    v.reserve(values.size());
    for (const json &x : values) {
        if (!x.is_number()) {
            detail::bad_response(s, "embeddings",
                                 "embedding " + std::to_string(k) + " holds a non-number");
        }
        v.push_back(x.get<float>());
    }
    return v;
}

void count_mismatch(const ServiceEndpoint &s, std::size_t expected, std::size_t got) {
    if (expected != got) {
        detail::bad_response(
            s, "embeddings",
            "expected " + std::to_string(expected) + " embeddings, got " + std::to_string(got));
    }
}

// ---- fast path ----
// Embedding bodies are the big ones (128 vectors of 1536 floats is 2 MB of text), and a DOM
// spends most of its time on the numbers. These read the expected shape straight from the text,
// numbers with from_chars; anything unusual makes them give up, and the DOM path below then
// reads the body or says precisely what is wrong with it.

bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

bool fast_floats(std::string_view raw, std::vector<float> &out) {
    const char *p = raw.data(), *end = raw.data() + raw.size();
    auto skip = [&] {
        while (p < end && is_space(*p))
            ++p;
    };
    skip();
    if (p == end || *p != '[')
        return false;
    ++p;
    out.clear();
    out.reserve(raw.size() / 8);
    skip();
    if (p < end && *p == ']')
        return true;
    for (;;) {
        skip();
        // from_chars also reads "nan" and "inf", which are not JSON.
        if (p == end || (*p != '-' && (*p < '0' || *p > '9')))
            return false;
        float f;
        auto [next, ec] = std::from_chars(p, end, f);
        if (ec != std::errc())
            return false;
        out.push_back(f);
        p = next;
        skip();
        if (p == end)
            return false;
        if (*p == ']')
            return true;
        if (*p++ != ',')
            return false;
    }
}

bool fast_vector(std::string_view raw, std::vector<float> &out) {
    if (!raw.empty() && raw.front() == '[')
        return fast_floats(raw, out);
    // Base64 never needs escapes; an encoder that escapes '/' anyway goes the slow way.
    if (raw.size() < 2 || raw.front() != '"' || raw.find('\\') != std::string_view::npos) {
        return false;
    }
    auto floats = base64::decode_floats(std::string(raw.substr(1, raw.size() - 2)));
    if (!floats)
        return false;
    out = std::move(*floats);
    return true;
}

bool fast_openai(std::string_view body, std::size_t expected, Embeddings &e) {
    static constexpr std::string_view kKeys[] = {"data", "usage", "error"};
    std::string_view top[3];
    std::vector<std::string_view> items;
    if (!detail::top_level_members(body, kKeys, top, 3) || (!top[2].empty() && top[2] != "null") ||
        !detail::array_elements(top[0], items) || items.size() != expected) {
        return false;
    }
    e.vectors.assign(expected, {});
    std::vector<bool> seen(expected, false);
    static constexpr std::string_view kItemKeys[] = {"index", "embedding"};
    for (std::size_t pos = 0; pos < items.size(); ++pos) {
        std::string_view fields[2];
        if (!detail::top_level_members(items[pos], kItemKeys, fields, 2))
            return false;
        std::size_t k = pos;
        if (!fields[0].empty()) {
            auto [next, ec] =
                std::from_chars(fields[0].data(), fields[0].data() + fields[0].size(), k);
            if (ec != std::errc() || next != fields[0].data() + fields[0].size())
                return false;
        }
        if (k >= expected || seen[k] || !fast_vector(fields[1], e.vectors[k]))
            return false;
        seen[k] = true;
    }
    if (!top[1].empty() && top[1].front() == '{') {
        e.usage =
            detail::usage_from_openai(json::parse(top[1].begin(), top[1].end(), nullptr, false));
    }
    return true;
}

bool fast_gemini(std::string_view body, std::size_t expected, Embeddings &e) {
    static constexpr std::string_view kKeys[] = {"embeddings"};
    std::string_view top[1];
    std::vector<std::string_view> items;
    if (!detail::top_level_members(body, kKeys, top, 1) || !detail::array_elements(top[0], items) ||
        items.size() != expected) {
        return false;
    }
    e.vectors.assign(expected, {});
    static constexpr std::string_view kItemKeys[] = {"values"};
    for (std::size_t k = 0; k < items.size(); ++k) {
        std::string_view values[1];
        if (!detail::top_level_members(items[k], kItemKeys, values, 1) ||
            !fast_floats(values[0], e.vectors[k])) {
            return false;
        }
    }
    return true;
}

// ---- DOM path ----

Embeddings openai_response(const ServiceEndpoint &s, std::string_view body, std::size_t expected) {
    Embeddings e;
    if (fast_openai(body, expected, e))
        return e;
    e = Embeddings();
    json j = detail::parse_upstream_body(s, body, "embeddings");
    const json *data = member(j, "data");
    if (data == nullptr || !data->is_array()) {
        detail::bad_response(s, "embeddings", "the body has no \"data\" array");
    }
    count_mismatch(s, expected, data->size());
    e.vectors.resize(expected);
    std::vector<bool> seen(expected, false);
    for (std::size_t pos = 0; pos < data->size(); ++pos) {
        const json &item = (*data)[pos];
        const json *index = member(item, "index");
        // Servers may answer out of order; index says where each vector belongs.
        std::size_t k =
            index != nullptr && index->is_number_unsigned() ? index->get<std::size_t>() : pos;
        if ((index != nullptr && !index->is_number_unsigned()) || k >= expected || seen[k]) {
            detail::bad_response(
                s, "embeddings",
                "embedding index " + std::to_string(k) + " is out of range or repeated");
        }
        seen[k] = true;
        const json *embedding = member(item, "embedding");
        if (embedding != nullptr && embedding->is_string()) {
            auto floats = base64::decode_floats(embedding->get_ref<const std::string &>());
            if (!floats) {
                detail::bad_response(
                    s, "embeddings",
                    "embedding " + std::to_string(k) + " is not base64 float32 data");
            }
            e.vectors[k] = std::move(*floats);
        } else if (embedding != nullptr && embedding->is_array()) {
            e.vectors[k] = float_array(s, *embedding, k);
        } else {
            detail::bad_response(s, "embeddings", "embedding " + std::to_string(k) + " is missing");
        }
    }
    if (const json *usage = member(j, "usage"))
        e.usage = detail::usage_from_openai(*usage);
    return e;
}

Embeddings gemini_response(const ServiceEndpoint &s, std::string_view body, std::size_t expected) {
    Embeddings e;
    if (fast_gemini(body, expected, e))
        return e;
    e = Embeddings();
    json j = detail::parse_upstream_body(s, body, "embeddings");
    const json *list = member(j, "embeddings");
    if (list == nullptr || !list->is_array()) {
        detail::bad_response(s, "embeddings", "the body has no \"embeddings\" array");
    }
    count_mismatch(s, expected, list->size());
    e.vectors.reserve(expected);
    for (std::size_t k = 0; k < list->size(); ++k) {
        const json *values = member((*list)[k], "values");
        if (values == nullptr || !values->is_array()) {
            detail::bad_response(s, "embeddings",
                                 "embedding " + std::to_string(k) + " has no values");
        }
        e.vectors.push_back(float_array(s, *values, k));
    }
    return e;
}

void append_float(std::string &out, float f) {
    if (!std::isfinite(f)) {
        out += "null";  // JSON has no NaN or infinity; only a base64 upstream can produce them
        return;
    }
    char buf[32];
    // Shortest text that reads back as the same float: "0.1", not double's 0.10000000149011612.
    auto r = std::to_chars(buf, buf + sizeof buf, f);
    out.append(buf, r.ptr);
}

}  // namespace

UpstreamRequest embeddings_request(const ServiceEndpoint &s, const std::vector<std::string> &inputs,
                                   const json &options, bool ask_base64) {
    if (s.protocol == Protocol::kAnthropicV1) {
        throw Error(sqlstate::kFeatureNotSupported,
                    "service \"" + s.name + "\" does not support embeddings",
                    "Anthropic's API has no embeddings endpoint; register an OpenAI- or "
                    "Gemini-protocol embedding service.");
    }
    Options o = read_options(options);
    if (inputs.empty())
        invalid("there is no input to embed", nullptr);
    if (s.protocol == Protocol::kGeminiV1Beta) {
        if (!o.truncate.empty()) {
            throw Error(sqlstate::kFeatureNotSupported,
                        "service \"" + s.name + "\" does not support the truncate option",
                        "Gemini has no truncate setting; leave the option out.");
        }
        return detail::post_json(
            s, "/v1beta/models/" + std::string(detail::gemini_model(s)) + ":batchEmbedContents",
            false, gemini_body(s, inputs, o));
    }
    return detail::post_json(s, "/v1/embeddings", false, openai_body(s, inputs, o, ask_base64));
}

Embeddings embeddings_response(const ServiceEndpoint &s, std::string_view body,
                               std::size_t expected_count) {
    if (s.protocol == Protocol::kGeminiV1Beta)
        return gemini_response(s, body, expected_count);
    return openai_response(s, body, expected_count);
}

std::string embeddings_openai_response(const Embeddings &e, bool base64_out,
                                       std::string_view model) {
    std::size_t floats = 0;
    for (const auto &v : e.vectors)
        floats += v.size();
    std::string out;
    out.reserve(64 * e.vectors.size() + (base64_out ? floats * 6 : floats * 12) + 128);
    out += "{\"object\":\"list\",\"data\":[";
    for (std::size_t i = 0; i < e.vectors.size(); ++i) {
        if (i > 0)
            out += ',';
        out += "{\"object\":\"embedding\",\"index\":";
        out += std::to_string(i);
        out += ",\"embedding\":";
        if (base64_out) {
            out += '"';
            out += base64::encode_floats(e.vectors[i]);  // the alphabet needs no JSON escaping
            out += '"';
        } else {
            out += '[';
            for (std::size_t k = 0; k < e.vectors[i].size(); ++k) {
                if (k > 0)
                    out += ',';
                append_float(out, e.vectors[i][k]);
            }
            out += ']';
        }
        out += '}';
    }
    out += "],\"model\":";
    detail::append_json_string(out, model);
    out += ",\"usage\":{\"prompt_tokens\":";
    out += std::to_string(e.usage.prompt_tokens);
    out += ",\"total_tokens\":";
    out += std::to_string(e.usage.total_tokens);
    out += "}}";
    return out;
}

EmbeddingsCall parse_embeddings_call(json req) {
    static constexpr const char *kHint =
        "Send {\"model\": \"<service>\", \"input\": \"text\"} or an array of strings as input.";
    if (!req.is_object())
        invalid("the embeddings request must be a JSON object", kHint);
    EmbeddingsCall call;
    auto input = req.find("input");
    if (input == req.end() || input->is_null())
        invalid("the embeddings request has no \"input\"", kHint);
    if (input->is_string()) {
        if (input->get_ref<const std::string &>().empty())
            invalid("\"input\" is empty", kHint);
        call.inputs.push_back(std::move(input->get_ref<std::string &>()));
    } else if (input->is_array() && !input->empty()) {
        call.inputs.reserve(input->size());
        for (std::size_t i = 0; i < input->size(); ++i) {
            json &item = (*input)[i];
            if (item.is_number_integer() || item.is_array()) {
                throw Error(sqlstate::kFeatureNotSupported,
                            "token arrays are not supported as embeddings input",
                            "Send the input as text.");
            }
            if (!item.is_string() || item.get_ref<const std::string &>().empty()) {
                invalid("input[" + std::to_string(i) + "] must be a non-empty string", kHint);
            }
            call.inputs.push_back(std::move(item.get_ref<std::string &>()));
        }
    } else {
        invalid("\"input\" must be a non-empty string or a non-empty array of strings", kHint);
    }
    if (auto format = req.find("encoding_format"); format != req.end() && !format->is_null()) {
        if (*format == "base64") {
            call.base64_out = true;
        } else if (*format != "float") {
            invalid("\"encoding_format\" must be \"float\" or \"base64\"", nullptr);
        }
    }
    for (const char *key : {"dimensions", "input_type", "truncate"}) {
        if (auto v = req.find(key); v != req.end() && !v->is_null())
            call.options[key] = std::move(*v);
    }
    read_options(call.options);  // type errors surface now, with the gateway's 400
    return call;
}

}  // namespace pgi::translate
