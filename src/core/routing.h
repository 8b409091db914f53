// Routes: one name for several services. What a route's targets are, the order in which a
// request tries them, when a failure moves it to the next one, and the circuit breaker that
// skips a service failing again and again. Pure functions over plain structs: the host keeps
// the breakers in shared memory and serialises calls on them.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "http_client.h"

namespace pgi::routing {

// One service of a route. Within the lowest priority number, targets share the requests by
// weight; the next priority serves only when every target before it failed or is skipped.
struct Target {
    std::string service;
    int64_t weight = 1;
    int64_t priority = 1;
};

inline constexpr std::size_t kMaxTargets = 16;
// inference.breaker_failures' default: failures in a row that open a breaker.
inline constexpr int32_t kDefaultBreakerFailures = 3;
// A breaker opened with no route's cooldown at hand (a call that named the service, a health
// check before any route request) stays open this long.
inline constexpr int64_t kDefaultCooldownUs = 30'000'000;

// A route's targets from their JSON form ([{"service": "claude", "weight": 3, "priority": 1},
// ...]; weight and priority may be left out). Throws pgi::Error 22023, with a hint, for anything
// else: not an array, no target, an unknown member, a bad service name, a weight below 1, a
// negative priority, a service named twice, more than kMaxTargets. Whether the services exist is
// the catalog's to say.
std::vector<Target> parse_targets(const nlohmann::json &targets);
// The JSON form of targets, every member written.
nlohmann::json targets_json(const std::vector<Target> &targets);

// What made an attempt fail.
struct Failure {
    enum class Kind { kConnect, kTimeout, kStatus } kind = Kind::kStatus;
    int status = 0;  // kStatus: the upstream's HTTP status
};

// What routing makes of a failed transfer: a time-out (also one after the status), a transfer
// that broke before a status or within a 2xx answer (connect), or the upstream's status. A body
// too large or a blocked address is neither the service's fault nor a condition to fall back on
// (status 0).
Failure failure_of(const http::Response &r);

// The conditions of fallback_on, checked: "connect", "timeout", "429" and statuses 500 to 599.
// Other 4xx are the request's own fault and never fall back: they are refused with 22023, as is
// anything else. Duplicates are dropped; the order is kept.
std::vector<std::string> check_fallback_on(const std::vector<std::string> &conditions);
inline const std::vector<std::string> kDefaultFallbackOn = {"connect", "timeout", "429", "500",
                                                            "502",     "503",     "504", "529"};
// Whether a failure moves the request on to the next target.
bool falls_back(const std::vector<std::string> &fallback_on, const Failure &failure);

// One request's way through a route's targets, drawn as it goes: each next() picks, among the
// targets not drawn yet with the lowest priority number, one at random in proportion to its
// weight (a weighted draw without replacement), so that over many requests each target comes
// first in proportion to its weight. A request that never falls back draws once: no allocation,
// one random number, one pass over the targets.
class Attempts {
  public:
    explicit Attempts(uint64_t seed = 0) : state_(seed) {}
    // The index of the next target to try; nullopt when every target was drawn.
    std::optional<std::size_t> next(const std::vector<Target> &targets);

  private:
    uint64_t state_;
    uint32_t drawn_ = 0;  // a bit per target index (kMaxTargets of them)
};

// Every draw of Attempts(seed) in order: the order in which one request tries the targets.
std::vector<std::size_t> attempt_order(const std::vector<Target> &targets, uint64_t seed);

// ---- The circuit breaker of one service ----
//   closed:    requests pass; `threshold` failures in a row open it;
//   open:      requests skip the service until open_until_us;
//   half-open: then exactly one request passes (the probe): its success closes the breaker, its
//              failure opens it again for another cooldown. The probe holds its slot for one
//              cooldown: a probe that never reports (its process died) delays the next by that.
// The health worker marking the service Failed opens it too.
struct Breaker {
    int32_t failures;       // in a row, while closed
    int64_t open_until_us;  // 0: closed
};

enum class Pass {
    kClosed,  // pass
    kProbe,   // pass, as the half-open probe: report its outcome
    kOpen,    // skip the service
};

Pass may_try(Breaker &b, int64_t now_us, int64_t cooldown_us);
void succeeded(Breaker &b);
void failed(Breaker &b, int64_t now_us, int32_t threshold, int64_t cooldown_us);
void marked_failed(Breaker &b, int64_t now_us, int64_t cooldown_us);
// A probe that ended without an outcome (the caller went away): another request may probe now.
void probe_abandoned(Breaker &b, int64_t now_us);

}  // namespace pgi::routing
