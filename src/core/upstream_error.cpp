#include "upstream_error.h"

#include <nlohmann/json.hpp>

namespace pgi {

namespace {

std::string text_of(const nlohmann::json &j) {
    if (j.is_string())
        return j.get<std::string>();
    if (j.is_number_integer())
        return std::to_string(j.get<long long>());
    return {};
}

std::string first_chars(const std::string &body) {
    std::string out;
    for (char c : body.substr(0, 200))
        out.push_back((c == '\n' || c == '\r') ? ' ' : c);
    return out;
}

}  // namespace

UpstreamError parse_upstream_error(const std::string &body) {
    UpstreamError e;
    nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
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
    if (e.message.empty())
        e.message = first_chars(body);
    return e;
}

}  // namespace pgi
