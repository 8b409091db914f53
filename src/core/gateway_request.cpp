#include "gateway_request.h"

#include <cctype>
#include <nlohmann/json.hpp>

#include "crypto.h"
#include "utf8.h"

namespace pgi::gateway {

namespace {

constexpr std::string_view kPassthroughPrefix = "/inferenceservices/";
constexpr std::string_view kModelPrefix = "/v1/models/";

}  // namespace

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size())
        return false;
    for (size_t i = 0; i < a.size(); i++) {
        if (std::tolower(static_cast<unsigned char>(a[i])) !=
            std::tolower(static_cast<unsigned char>(b[i])))
            return false;
    }
    return true;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
        s.remove_suffix(1);
    return s;
}

namespace {

// The Gemini dialect's routes: models/{model}, optionally followed by ":method", under /v1beta/
// or /v1/. The model may carry Google's "models/" prefix once more (some clients double it).
bool gemini_route(std::string_view path, Route &r) {
    std::string_view rest;
    for (std::string_view prefix :
         {std::string_view("/v1beta/models"), std::string_view("/v1/models")}) {
        if (path.substr(0, prefix.size()) == prefix) {
            rest = path.substr(prefix.size());
            if (prefix == "/v1/models" && rest.find(':') == std::string_view::npos)
                return false;  // /v1/models[/{id}] is OpenAI's and Anthropic's
            break;
        }
    }
    if (rest.data() == nullptr)
        return false;
    if (rest.empty()) {
        r.endpoint = Endpoint::kGeminiModels;
        r.allowed = kGet | kHead;
        return true;
    }
    if (rest.front() != '/')
        return false;
    rest.remove_prefix(1);
    std::string_view method;
    if (std::size_t colon = rest.rfind(':'); colon != std::string_view::npos) {
        method = rest.substr(colon + 1);
        rest = rest.substr(0, colon);
    }
    std::optional<std::string> model = percent_decode(rest);
    if (!model)
        model = std::string();  // names no service: the lookup answers 404
    if (model->rfind("models/", 0) == 0)
        model->erase(0, 7);
    r.model_id = std::move(*model);
    if (method.empty() && path.find(':') == std::string_view::npos) {
        r.endpoint = Endpoint::kGeminiModel;
        r.allowed = kGet | kHead;
    } else if (method == "generateContent") {
        r.endpoint = Endpoint::kGenerate;
        r.allowed = kPost;
    } else if (method == "streamGenerateContent") {
        r.endpoint = Endpoint::kStreamGenerate;
        r.allowed = kPost;
    } else if (method == "countTokens") {
        r.endpoint = Endpoint::kGeminiCount;
        r.allowed = kPost;
    } else if (method == "embedContent") {
        r.endpoint = Endpoint::kEmbedContent;
        r.allowed = kPost;
    } else if (method == "batchEmbedContents") {
        r.endpoint = Endpoint::kBatchEmbed;
        r.allowed = kPost;
    } else {
        return false;  // a method the gateway does not serve: 404
    }
    return true;
}

}  // namespace

int dialect_of(Endpoint endpoint) {
    // The positions in kDialectLabels (gateway.h).
    switch (endpoint) {
        case Endpoint::kChat:
            return 0;
        case Endpoint::kMessages:
        case Endpoint::kCountTokens:
            return 1;
        case Endpoint::kResponses:
            return 2;
        case Endpoint::kCompletions:
            return 3;
        case Endpoint::kGeminiModels:
        case Endpoint::kGeminiModel:
        case Endpoint::kGenerate:
        case Endpoint::kStreamGenerate:
        case Endpoint::kGeminiCount:
        case Endpoint::kEmbedContent:
        case Endpoint::kBatchEmbed:
            return 4;
        case Endpoint::kEmbeddings:
            return 5;
        case Endpoint::kRerank:
        case Endpoint::kRanking:
            return 6;
        case Endpoint::kPassthrough:
            return 7;
        default:
            return 8;
    }
}

Route route(std::string_view path) {
    Route r;
    if (path == "/health") {
        r.endpoint = Endpoint::kHealth;
        r.allowed = kGet | kHead;
    } else if (path == "/metrics") {
        r.endpoint = Endpoint::kMetrics;
        r.allowed = kGet | kHead;
    } else if (path == "/v1/models") {
        r.endpoint = Endpoint::kModels;
        r.allowed = kGet | kHead;
    } else if (gemini_route(path, r)) {
        // set by gemini_route (before /v1/models/{id}, which its /v1/ form shares)
    } else if (path.size() > kModelPrefix.size() &&
               path.substr(0, kModelPrefix.size()) == kModelPrefix) {
        std::optional<std::string> id = percent_decode(path.substr(kModelPrefix.size()));
        r.endpoint = Endpoint::kModel;
        r.allowed = kGet | kHead;
        // An undecodable id names no model; the lookup then answers 404.
        r.model_id = id ? std::move(*id) : std::string();
    } else if (path == "/v1/chat/completions") {
        r.endpoint = Endpoint::kChat;
        r.allowed = kPost;
    } else if (path == "/v1/messages") {
        r.endpoint = Endpoint::kMessages;
        r.allowed = kPost;
    } else if (path == "/v1/messages/count_tokens") {
        r.endpoint = Endpoint::kCountTokens;
        r.allowed = kPost;
    } else if (path == "/v1/responses") {
        r.endpoint = Endpoint::kResponses;
        r.allowed = kPost;
    } else if (path == "/v1/completions") {
        r.endpoint = Endpoint::kCompletions;
        r.allowed = kPost;
    } else if (path == "/v1/embeddings") {
        r.endpoint = Endpoint::kEmbeddings;
        r.allowed = kPost;
    } else if (path == "/v1/rerank") {
        r.endpoint = Endpoint::kRerank;
        r.allowed = kPost;
    } else if (path == "/v1/ranking") {
        r.endpoint = Endpoint::kRanking;
        r.allowed = kPost;
    } else if (path.size() > kPassthroughPrefix.size() &&
               path.substr(0, kPassthroughPrefix.size()) == kPassthroughPrefix) {
        std::string_view tail = path.substr(kPassthroughPrefix.size());
        size_t slash = tail.find('/');
        std::string_view name = tail.substr(0, slash);
        r.endpoint = Endpoint::kPassthrough;
        r.allowed = kGet | kPost | kHead | kPut | kDelete | kOptions | kPatch;
        std::optional<std::string> decoded = percent_decode(name);
        if (!decoded || decoded->empty() || *decoded == "." || *decoded == ".." ||
            decoded->find_first_of("/\\") != std::string::npos) {
            r.bad_path = true;
        } else {
            r.service = std::move(*decoded);
        }
        r.rest =
            slash == std::string_view::npos ? std::string("/") : std::string(tail.substr(slash));
        if (!safe_subpath(r.rest))
            r.bad_path = true;
    }
    return r;
}

const char *method_name(unsigned method) {
    switch (method) {
        case kGet:
            return "GET";
        case kPost:
            return "POST";
        case kHead:
            return "HEAD";
        case kPut:
            return "PUT";
        case kDelete:
            return "DELETE";
        case kOptions:
            return "OPTIONS";
        case kTrace:
            return "TRACE";
        case kConnect:
            return "CONNECT";
        case kPatch:
            return "PATCH";
        default:
            return "GET";
    }
}

std::string allow_header(unsigned methods) {
    std::string out;
    for (unsigned bit = 1; bit <= kPatch; bit <<= 1) {
        if ((methods & bit) == 0)
            continue;
        if (!out.empty())
            out += ", ";
        out += method_name(bit);
    }
    return out;
}

std::optional<std::string> percent_decode(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size(); i++) {
        char c = text[i];
        if (c == '%') {
            if (i + 2 >= text.size())
                return std::nullopt;
            int hi = crypto::hex_digit(text[i + 1]);
            int lo = crypto::hex_digit(text[i + 2]);
            if (hi < 0 || lo < 0)
                return std::nullopt;
            c = static_cast<char>(hi * 16 + lo);
            i += 2;
        }
        if (c == '\0')
            return std::nullopt;
        out.push_back(c);
    }
    return out;
}

bool safe_subpath(std::string_view rest) {
    if (rest.empty() || rest.front() != '/')
        return false;
    size_t start = 1;
    while (start <= rest.size()) {
        size_t end = rest.find('/', start);
        if (end == std::string_view::npos)
            end = rest.size();
        std::string_view raw = rest.substr(start, end - start);
        std::optional<std::string> segment = percent_decode(raw);
        if (!segment)
            return false;
        if (*segment == "." || *segment == "..")
            return false;
        for (unsigned char c : *segment) {
            // An encoded separator would become a real one for some servers; control
            // characters have no business in a path.
            if (c == '/' || c == '\\' || c < 0x20 || c == 0x7f)
                return false;
        }
        start = end + 1;
    }
    return true;
}

std::string_view access_key(const char *authorization, const char *x_api_key) {
    if (authorization != nullptr) {
        std::string_view value = trim(authorization);
        if (value.size() > 7 && iequals(value.substr(0, 7), "bearer ")) {
            std::string_view key = trim(value.substr(7));
            if (!key.empty())
                return key;
        }
    }
    if (x_api_key != nullptr)
        return trim(x_api_key);
    return {};
}

bool is_gemini_route(const Route &r) {
    return r.endpoint == Endpoint::kGeminiModels || r.endpoint == Endpoint::kGeminiModel ||
           r.endpoint == Endpoint::kGenerate || r.endpoint == Endpoint::kStreamGenerate ||
           r.endpoint == Endpoint::kGeminiCount || r.endpoint == Endpoint::kEmbedContent ||
           r.endpoint == Endpoint::kBatchEmbed;
}

std::string gemini_query_key(const Route &r, const char *query) {
    if (query == nullptr || !is_gemini_route(r))
        return {};
    std::string_view q(query);
    while (!q.empty()) {
        std::string_view param = q.substr(0, q.find('&'));
        q.remove_prefix(std::min(q.size(), param.size() + 1));
        if (param.substr(0, 4) == "key=") {
            std::optional<std::string> key = percent_decode(param.substr(4));
            return key ? *key : std::string();
        }
    }
    return {};
}

BodyType json_body_type(const char *content_type, std::string_view body) {
    if (content_type == nullptr)
        return BodyType::kJson;
    std::string_view type = trim(content_type);
    type = trim(type.substr(0, type.find(';')));
    if (type.empty())
        return BodyType::kJson;
    std::string lower(type);
    for (char &c : lower)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower.find("json") != std::string::npos || lower == "text/plain")
        return BodyType::kJson;
    if (lower == "application/x-www-form-urlencoded") {
        size_t i = 0;
        while (i < body.size() && std::isspace(static_cast<unsigned char>(body[i])))
            i++;
        if (i < body.size() && body[i] == '{')
            return BodyType::kJson;
    }
    return BodyType::kUnsupported;
}

int caller_status(long status) {
    switch (status) {
        case 401:
        case 403:
        case 407:
            return 502;
        case 408:
            return 504;
        case 429:
            return 429;
        case 500:
        case 502:
        case 503:
        case 504:
            return static_cast<int>(status);
        case 529:
            return 503;
        default:
            break;
    }
    if (status >= 400 && status <= 499)
        return static_cast<int>(status);
    return 502;
}

const char *error_type(int status) {
    if (status == 429)
        return "rate_limit_error";
    if (status == 500)
        return "server_error";
    if (status >= 500)
        return "upstream_error";
    return "invalid_request_error";
}

std::optional<Protocol> passthrough_usage_shape(std::string_view rest) {
    auto ends_with = [&](std::string_view tail) {
        return rest.size() >= tail.size() && rest.substr(rest.size() - tail.size()) == tail;
    };
    while (rest.size() > 1 && rest.back() == '/')
        rest.remove_suffix(1);
    if (ends_with("/chat/completions") || ends_with("/completions") || ends_with("/embeddings"))
        return Protocol::kOpenAiV1;
    if (ends_with("/messages"))
        return Protocol::kAnthropicV1;
    // The method follows the model after a ':' that a caller may have percent-encoded.
    std::string_view last = rest.substr(rest.rfind('/') + 1);
    for (std::string_view sep :
         {std::string_view(":"), std::string_view("%3A"), std::string_view("%3a")}) {
        std::size_t at = last.rfind(sep);
        if (at == std::string_view::npos)
            continue;
        std::string_view method = last.substr(at + sep.size());
        if (method == "generateContent" || method == "streamGenerateContent")
            return Protocol::kGeminiV1Beta;
    }
    return std::nullopt;
}

std::string end_user_in_body(const nlohmann::json &body) {
    if (!body.is_object())
        return {};
    for (const char *name : {"user", "safety_identifier"}) {
        auto it = body.find(name);
        if (it != body.end() && it->is_string() && !it->get_ref<const std::string &>().empty())
            return it->get<std::string>();
    }
    auto metadata = body.find("metadata");
    if (metadata != body.end() && metadata->is_object()) {
        auto id = metadata->find("user_id");
        if (id != metadata->end() && id->is_string())
            return id->get<std::string>();
    }
    return {};
}

std::string end_user_problem(std::string_view user) {
    if (user.size() > kMaxEndUser)
        return "is longer than " + std::to_string(kMaxEndUser) + " bytes";
    if (!utf8_valid(user))
        return "is not UTF-8 text";
    for (char c : user) {
        const auto b = static_cast<unsigned char>(c);
        if (b < 0x20 || b == 0x7F)
            return "contains a control character";
    }
    return {};
}

}  // namespace pgi::gateway
