#include "gateway_snapshot.h"

#include "crypto.h"
#include "error.h"

namespace pgi::gateway {

namespace {

using json = nlohmann::json;

[[noreturn]] void bad(const std::string &where, const std::string &what) {
    throw Error(sqlstate::kInvalidParameterValue, "invalid snapshot: " + where + ": " + what);
}

std::string text(const json &entry, const char *field, const std::string &where, bool required) {
    auto it = entry.find(field);
    if (it == entry.end() || it->is_null()) {
        if (required)
            bad(where, std::string("\"") + field + "\" is required");
        return {};
    }
    if (!it->is_string())
        bad(where, std::string("\"") + field + "\" must be a string");
    return it->get<std::string>();
}

template <class T>
std::optional<T> number(const json &entry, const char *field, const std::string &where) {
    auto it = entry.find(field);
    if (it == entry.end() || it->is_null())
        return std::nullopt;
    if (!it->is_number_integer())
        bad(where, std::string("\"") + field + "\" must be an integer");
    return it->get<T>();
}

bool flag(const json &entry, const char *field, const std::string &where, bool absent = false) {
    auto it = entry.find(field);
    if (it == entry.end() || it->is_null())
        return absent;
    if (!it->is_boolean())
        bad(where, std::string("\"") + field + "\" must be true or false");
    return it->get<bool>();
}

}  // namespace

Snapshot snapshot_from_json(const json &document) {
    if (!document.is_object())
        bad("document", "must be a JSON object");
    Snapshot snapshot;
    const json &services = document.value("services", json::array());
    if (!services.is_array())
        bad("services", "must be an array");
    for (size_t i = 0; i < services.size(); i++) {
        const json &entry = services[i];
        std::string where = "services[" + std::to_string(i) + "]";
        if (!entry.is_object())
            bad(where, "must be an object");
        ServiceEndpoint s;
        s.name = text(entry, "name", where, true);
        s.model = text(entry, "model", where, true);
        s.base_url = text(entry, "base_url", where, true);
        while (!s.base_url.empty() && s.base_url.back() == '/')
            s.base_url.pop_back();
        std::string protocol = text(entry, "protocol", where, false);
        if (!protocol.empty()) {
            std::optional<Protocol> p = parse_protocol(protocol);
            if (!p)
                bad(where, "unknown protocol \"" + protocol + "\"");
            s.protocol = *p;
        }
        s.api_key = text(entry, "api_key", where, false);
        s.allow_insecure = flag(entry, "allow_insecure", where);
        s.request_timeout_ms = number<long>(entry, "request_timeout_ms", where).value_or(0);
        s.tls.ca_file = text(entry, "ca_file", where, false);
        s.tls.client_cert_file = text(entry, "client_cert_file", where, false);
        s.tls.client_key_file = text(entry, "client_key_file", where, false);
        std::string route = text(entry, "rerank_route", where, false);
        if (!route.empty()) {
            if (route != "ranking" && route != "rerank")
                bad(where, "\"rerank_route\" must be \"ranking\" or \"rerank\"");
            snapshot.rerank_routes[s.name] = route;
        }
        std::string name = s.name;
        if (!snapshot.services.emplace(name, std::move(s)).second)
            bad(where, "duplicate service \"" + name + "\"");
    }

    const json &keys = document.value("keys", json::array());
    if (!keys.is_array())
        bad("keys", "must be an array");
    for (size_t i = 0; i < keys.size(); i++) {
        const json &entry = keys[i];
        std::string where = "keys[" + std::to_string(i) + "]";
        if (!entry.is_object())
            bad(where, "must be an object");
        AccessKey k;
        k.name = text(entry, "name", where, true);
        k.tenant = text(entry, "tenant", where, false);
        std::string plain = text(entry, "key", where, false);
        std::string hex = text(entry, "key_hash", where, false);
        if (!plain.empty()) {
            k.key_hash = crypto::sha256(plain);
        } else {
            std::optional<std::string> raw = crypto::from_hex(hex);
            if (!raw || raw->size() != 32)
                bad(where, "needs \"key\" (plain text) or \"key_hash\" (64 hex characters)");
            k.key_hash = std::move(*raw);
        }
        auto allowed = entry.find("services");
        if (allowed != entry.end() && !allowed->is_null()) {
            if (!allowed->is_array())
                bad(where, "\"services\" must be an array or null");
            std::vector<std::string> names;
            for (const json &n : *allowed) {
                if (!n.is_string())
                    bad(where, "\"services\" must hold service names");
                names.push_back(n.get<std::string>());
            }
            k.services = std::move(names);
        }
        k.expires_at_ms = number<int64_t>(entry, "expires_at_ms", where);
        k.revoked = flag(entry, "revoked", where);
        k.limits.rpm = number<int>(entry, "requests_per_minute", where);
        k.limits.rph = number<int>(entry, "requests_per_hour", where);
        k.limits.burst = number<int>(entry, "burst", where);
        k.limits.tokens_per_hour = number<int64_t>(entry, "tokens_per_hour", where);
        k.passthrough = flag(entry, "passthrough", where, true);
        std::string hash = k.key_hash;
        if (!snapshot.keys.emplace(hash, std::move(k)).second)
            bad(where, "duplicate key");
    }

    const json &routes = document.value("routes", json::array());
    if (!routes.is_array())
        bad("routes", "must be an array");
    for (size_t i = 0; i < routes.size(); i++) {
        const json &entry = routes[i];
        std::string where = "routes[" + std::to_string(i) + "]";
        if (!entry.is_object())
            bad(where, "must be an object");
        std::string name = text(entry, "name", where, true);
        if (snapshot.services.count(name))
            bad(where, "\"" + name + "\" is a service's name");
        RouteEntry route;
        try {
            route.targets = routing::parse_targets(entry.value("targets", json()));
            if (auto f = entry.find("fallback_on"); f != entry.end())
                route.fallback_on = routing::check_fallback_on(f->get<std::vector<std::string>>());
        } catch (const Error &e) {
            bad(where, e.what());
        } catch (const json::exception &) {
            bad(where, "\"fallback_on\" must be an array of strings");
        }
        for (const routing::Target &t : route.targets)
            if (!snapshot.services.count(t.service))
                bad(where, "unknown service \"" + t.service + "\"");
        if (auto cooldown = number<int64_t>(entry, "cooldown_ms", where)) {
            if (*cooldown < 1)
                bad(where, "\"cooldown_ms\" must be positive");
            route.cooldown_us = *cooldown * 1000;
        }
        if (!snapshot.routes.emplace(name, std::move(route)).second)
            bad(where, "duplicate route \"" + name + "\"");
    }
    return snapshot;
}

}  // namespace pgi::gateway
