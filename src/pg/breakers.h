// The circuit breakers of the services, in shared memory: every backend and listener of the
// server sees the same state, so a service that keeps failing is skipped by all of them (the
// states and their transitions are routing::Breaker's). Keyed by database and service name.
#pragma once

#include <cstdint>
#include <string>

#include "routing.h"

namespace pgi::pg {

extern int setting_breaker_failures;  // inference.breaker_failures

void breakers_define_settings();
void breakers_request_shmem();
void breakers_init_shmem();

// Whether a request through a route with this cooldown may try the service now (a probe holds
// its slot for the cooldown). Without shared memory (not preloaded) every service passes. A
// service the table has no room for passes too (and is never skipped).
routing::Pass breaker_may_try(const std::string &service, int64_t cooldown_us);
// The outcome of a request that may_try let through. `failed`: it failed in a way that counts
// against the service (a fallback condition). `cooldown_us`: the route's, how long the breaker
// stays open if this opens it, kept as the service's cooldown for later openings (the health
// worker's, a direct call's); 0 for a call that named the service itself.
void breaker_report(const std::string &service, bool failed, int64_t cooldown_us);
// A request let through as the probe ended with no outcome (cancelled): another may probe.
void breaker_probe_abandoned(const std::string &service);
// The health worker found the service Failed: skip it for its last cooldown (30 s if no route
// request reported one yet).
void breaker_mark_failed(const std::string &service);

}  // namespace pgi::pg
