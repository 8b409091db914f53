#include "route_calls.h"

#include "cpp_wall.h"

extern "C" {
#include "common/pg_prng.h"
}

#include <optional>

#include "breakers.h"
#include "governance.h"

namespace pgi::pg {

namespace {

// One try, counted under the calling role. A try that threw anything but AttemptFailed sent
// nothing (bad input) or could not read a 2xx answer: neither is the upstream's usage to count.
void counted(const ServiceRow &row, const Attempt &attempt) {
    translate::Usage usage;
    try {
        attempt(row, usage);
    } catch (const AttemptFailed &) {
        record_sql_usage(row.name, row.price.id, true, usage);
        throw;
    }
    record_sql_usage(row.name, row.price.id, false, usage);
}

// Each try's outcome goes to the service's breaker. A failure counts against the service when it
// is one the caller could fall back on: the service, not the request, is at fault.

void call_route(const RouteRow &route, const Attempt &attempt) {
    const uint64_t seed = pg_guard([]() { return pg_prng_uint64(&pg_global_prng_state); });
    std::optional<AttemptFailed> last;
    std::string tried;
    for (std::size_t index : routing::attempt_order(route.targets, seed)) {
        const std::string &service = route.targets[index].service;
        const routing::Pass pass = breaker_may_try(service, route.cooldown_us);
        if (pass == routing::Pass::kOpen)
            continue;
        // The catalog keeps targets registered; a service deregistered by a transaction that
        // committed after ours began is skipped like an open breaker.
        std::optional<ServiceRow> row = find_service(service);
        if (!row) {
            if (pass == routing::Pass::kProbe)
                breaker_probe_abandoned(service);
            continue;
        }
        try {
            counted(*row, attempt);
            breaker_report(service, false, route.cooldown_us);
            return;
        } catch (const AttemptFailed &f) {
            const bool falls = routing::falls_back(route.fallback_on, f.failure());
            breaker_report(service, falls, route.cooldown_us);
            if (!falls)
                throw;
            tried += (tried.empty() ? "" : ", ") + ("\"" + service + "\"");
            last = f;
        } catch (...) {
            if (pass == routing::Pass::kProbe)
                breaker_probe_abandoned(service);
            throw;
        }
    }
    if (!last)
        throw pgi::Error(sqlstate::kUpstreamUnreachable,
                         "route \"" + route.name + "\" has no service to try",
                         "Every target's circuit breaker is open after repeated failures; each is "
                         "tried again by one request after the route's cooldown. "
                         "inference.check_service() tells why a service fails.");
    throw pgi::Error(last->sqlstate(),
                     "route \"" + route.name + "\": every target failed; the last: " + last->what(),
                     last->hint(), "Tried " + tried + ".");
}

}  // namespace

void call_named(const std::string &name, const Attempt &attempt) {
    if (std::optional<ServiceRow> row = find_service(name)) {
        try {
            counted(*row, attempt);
            breaker_report(name, false, 0);
        } catch (const AttemptFailed &f) {
            breaker_report(name, routing::falls_back(routing::kDefaultFallbackOn, f.failure()), 0);
            throw;
        }
        return;
    }
    if (std::optional<RouteRow> route = find_route(name)) {
        call_route(*route, attempt);
        return;
    }
    throw pgi::Error(sqlstate::kUndefinedObject, "service \"" + name + "\" does not exist",
                     "Call inference.list_models() to see the registered services, and read "
                     "inference.routes for the routes.");
}

}  // namespace pgi::pg
