#include "routing.h"

#include <algorithm>
#include <set>

#include "error.h"
#include "validation.h"

namespace pgi::routing {

namespace {

using nlohmann::json;

constexpr const char *kTargetsHint =
    "Give targets as a JSON array of objects, for instance "
    "[{\"service\": \"claude\", \"weight\": 3, \"priority\": 1}, {\"service\": \"gpt\"}].";

[[noreturn]] void invalid(const std::string &message, const char *hint = kTargetsHint) {
    throw Error(sqlstate::kInvalidParameterValue, message, hint);
}

int64_t positive_integer(const json &v, const std::string &what, int64_t min) {
    if (!v.is_number_integer())
        invalid(what + " must be an integer");
    const bool huge = v.is_number_unsigned() && v.get<uint64_t>() > INT32_MAX;
    if (huge || v.get<int64_t>() < min || v.get<int64_t>() > INT32_MAX) {
        invalid(what + " must be between " + std::to_string(min) + " and " +
                std::to_string(INT32_MAX));
    }
    return v.get<int64_t>();
}

// splitmix64: a well-mixed stream of 64-bit values from one seed.
uint64_t splitmix64(uint64_t &state) {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

}  // namespace

std::vector<Target> parse_targets(const json &targets) {
    if (!targets.is_array() || targets.empty())
        invalid("targets must be a non-empty JSON array");
    if (targets.size() > kMaxTargets)
        invalid("a route has at most " + std::to_string(kMaxTargets) + " targets (" +
                    std::to_string(targets.size()) + " given)",
                "Split the services over several routes, or drop some.");
    std::vector<Target> out;
    std::set<std::string> seen;
    for (std::size_t i = 0; i < targets.size(); i++) {
        const json &t = targets[i];
        const std::string at = "targets[" + std::to_string(i) + "]";
        if (!t.is_object())
            invalid(at + " must be an object");
        Target target;
        bool has_service = false;
        for (const auto &[key, value] : t.items()) {
            if (key == "service") {
                if (!value.is_string())
                    invalid(at + ".service must be a string");
                target.service = value.get<std::string>();
                has_service = true;
            } else if (key == "weight") {
                target.weight = positive_integer(value, at + ".weight", 1);
            } else if (key == "priority") {
                target.priority = positive_integer(value, at + ".priority", 0);
            } else {
                invalid(at + " has an unknown member \"" + validate::display_value(key) + "\"",
                        "A target has \"service\", \"weight\" (default 1) and \"priority\" "
                        "(default 1).");
            }
        }
        if (!has_service)
            invalid(at + " has no \"service\"");
        validate::service_name(target.service);
        if (!seen.insert(target.service).second) {
            invalid("service \"" + target.service + "\" is named twice in targets",
                    "Name each service once; give it a larger weight instead.");
        }
        out.push_back(std::move(target));
    }
    return out;
}

json targets_json(const std::vector<Target> &targets) {
    json out = json::array();
    for (const Target &t : targets)
        out.push_back({{"service", t.service}, {"weight", t.weight}, {"priority", t.priority}});
    return out;
}

std::vector<std::string> check_fallback_on(const std::vector<std::string> &conditions) {
    std::vector<std::string> out;
    for (const std::string &c : conditions) {
        const bool word = c == "connect" || c == "timeout";
        const bool status = c.size() == 3 && std::all_of(c.begin(), c.end(), [](char ch) {
                                return ch >= '0' && ch <= '9';
                            });
        const int code = status ? std::stoi(c) : 0;
        if (!word && !(code == 429 || (code >= 500 && code <= 599))) {
            throw Error(sqlstate::kInvalidParameterValue,
                        "fallback_on condition \"" + validate::display_value(c) +
                            "\" is not one a request can fall back on",
                        "Use connect, timeout, 429 and statuses from 500 to 599; other 4xx "
                        "answers are the request's own fault and go back to the caller.");
        }
        if (std::find(out.begin(), out.end(), c) == out.end())
            out.push_back(c);
    }
    return out;
}

Failure failure_of(const http::Response &r) {
    if (r.too_large || r.blocked)
        return {Failure::Kind::kStatus, 0};
    if (r.curl_code == CURLE_OPERATION_TIMEDOUT)
        return {Failure::Kind::kTimeout, 0};
    if (r.status == 0 || (r.curl_code != 0 && r.status < 300))
        return {Failure::Kind::kConnect, 0};
    return {Failure::Kind::kStatus, static_cast<int>(r.status)};
}

bool falls_back(const std::vector<std::string> &fallback_on, const Failure &failure) {
    std::string condition;
    switch (failure.kind) {
        case Failure::Kind::kConnect:
            condition = "connect";
            break;
        case Failure::Kind::kTimeout:
            condition = "timeout";
            break;
        case Failure::Kind::kStatus:
            condition = std::to_string(failure.status);
            break;
    }
    return std::find(fallback_on.begin(), fallback_on.end(), condition) != fallback_on.end();
}

static_assert(kMaxTargets <= 32, "Attempts keeps a bit per target in 32 bits");

std::optional<std::size_t> Attempts::next(const std::vector<Target> &targets) {
    const std::size_t n = std::min(targets.size(), kMaxTargets);
    int64_t priority = 0;
    uint64_t total = 0;
    bool any = false;
    for (std::size_t i = 0; i < n; i++) {
        if (drawn_ & (1u << i))
            continue;
        if (!any || targets[i].priority < priority) {
            priority = targets[i].priority;
            total = 0;
            any = true;
        }
        if (targets[i].priority == priority)
            total += static_cast<uint64_t>(targets[i].weight);
    }
    if (!any)
        return std::nullopt;
    // A point in [0, total), uniform: the high half of a 64 x 64-bit product.
    uint64_t point =
        static_cast<uint64_t>((static_cast<unsigned __int128>(splitmix64(state_)) * total) >> 64);
    std::size_t last = n;
    for (std::size_t i = 0; i < n; i++) {
        if ((drawn_ & (1u << i)) || targets[i].priority != priority)
            continue;
        last = i;
        const uint64_t w = static_cast<uint64_t>(targets[i].weight);
        if (point < w)
            break;
        point -= w;
    }
    drawn_ |= 1u << last;
    return last;
}

std::vector<std::size_t> attempt_order(const std::vector<Target> &targets, uint64_t seed) {
    std::vector<std::size_t> order;
    Attempts attempts(seed);
    while (std::optional<std::size_t> i = attempts.next(targets))
        order.push_back(*i);
    return order;
}

Pass may_try(Breaker &b, int64_t now_us, int64_t cooldown_us) {
    if (b.open_until_us == 0)
        return Pass::kClosed;
    if (now_us < b.open_until_us)
        return Pass::kOpen;
    b.open_until_us = std::max<int64_t>(now_us + cooldown_us, 1);
    return Pass::kProbe;
}

void succeeded(Breaker &b) {
    b = Breaker{0, 0};
}

void failed(Breaker &b, int64_t now_us, int32_t threshold, int64_t cooldown_us) {
    if (b.open_until_us != 0) {
        // The probe failed (or a request that passed before the breaker opened): open again.
        b.open_until_us = std::max<int64_t>(now_us + cooldown_us, 1);
        return;
    }
    if (++b.failures >= std::max<int32_t>(threshold, 1))
        b.open_until_us = std::max<int64_t>(now_us + cooldown_us, 1);
}

void marked_failed(Breaker &b, int64_t now_us, int64_t cooldown_us) {
    b.open_until_us = std::max<int64_t>({b.open_until_us, now_us + cooldown_us, 1});
}

void probe_abandoned(Breaker &b, int64_t now_us) {
    if (b.open_until_us != 0)
        b.open_until_us = std::max<int64_t>(std::min(b.open_until_us, now_us), 1);
}

}  // namespace pgi::routing
