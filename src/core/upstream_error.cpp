#include "upstream_error.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <string_view>

#include "redact.h"

namespace pgi {

namespace {

std::string text_of(const nlohmann::json &j) {
    if (j.is_string())
        return j.get<std::string>();
    if (j.is_number_integer())
        return std::to_string(j.get<long long>());
    return {};
}

std::string first_chars(std::string_view body) {
    constexpr std::size_t kMax = 200;
    std::size_t n = std::min(body.size(), kMax);
    // Not in the middle of a UTF-8 character: the message ends up in JSON and in logs.
    if (n < body.size()) {
        while (n > 0 && (static_cast<unsigned char>(body[n]) & 0xC0) == 0x80)
            --n;
    }
    std::string out;
    for (char c : body.substr(0, n))
        out.push_back((c == '\n' || c == '\r') ? ' ' : c);
    return out;
}

// The error's fields; `unparsed` tells that the message is the body's start, not a field.
UpstreamError parse(const std::string &body, bool &unparsed) {
    UpstreamError e;
    unparsed = false;
    nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        unparsed = true;
        e.message = first_chars(body);
        return e;
    }
    if (j.contains("error")) {
        const auto &err = j["error"];
        if (err.is_string()) {
            e.message = err.get<std::string>();
            return e;
        }
        if (err.is_object()) {
            if (err.contains("message"))
                e.message = text_of(err["message"]);
            if (err.contains("type"))
                e.type = text_of(err["type"]);
            if (err.contains("status"))
                e.type = text_of(err["status"]);
            if (err.contains("code"))
                e.code = text_of(err["code"]);
            if (err.contains("details") && err["details"].is_array()) {
                for (const auto &d : err["details"]) {
                    if (d.is_object() && d.contains("reason")) {
                        e.reason = text_of(d["reason"]);
                        break;
                    }
                }
            }
            return e;
        }
    }
    if (j.contains("detail")) {
        e.message = j["detail"].is_string() ? j["detail"].get<std::string>() : j["detail"].dump();
        return e;
    }
    if (j.contains("message"))
        e.message = text_of(j["message"]);
    if (e.message.empty()) {
        unparsed = true;
        e.message = first_chars(body);
    }
    return e;
}

}  // namespace

UpstreamError parse_upstream_error(const std::string &body) {
    bool unparsed = false;
    return parse(body, unparsed);
}

UpstreamError shown_upstream_error(const std::string &body, const ServiceEndpoint &service) {
    bool unparsed = false;
    UpstreamError e = parse(body, unparsed);
    if (service.api_key.empty())
        return e;
    e.message = unparsed ? first_chars(redact_key(body, service)) : redact_key(e.message, service);
    e.type = redact_key(e.type, service);
    e.code = redact_key(e.code, service);
    e.reason = redact_key(e.reason, service);
    return e;
}

}  // namespace pgi
