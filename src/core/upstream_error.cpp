#include "upstream_error.h"

#include <nlohmann/json.hpp>

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
    std::string out;
    for (char c : body.substr(0, 200))
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
