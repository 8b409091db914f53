// SQL calls by name: a service's name calls that service; a route's name tries the route's
// services in their attempt order, skipping those whose circuit breaker is open and moving on
// when a try fails with one of the route's fallback conditions (docs/routing.md).
#pragma once

#include <functional>
#include <string>

#include "error.h"
#include "routing.h"
#include "service_catalog.h"
#include "translate.h"

namespace pgi::pg {

// An upstream call that failed: the error for the caller, and what routing makes of it.
class AttemptFailed : public pgi::Error {
  public:
    AttemptFailed(pgi::Error error, routing::Failure failure)
        : pgi::Error(std::move(error)), failure_(failure) {}
    const routing::Failure &failure() const { return failure_; }

  private:
    routing::Failure failure_;
};

// One try of a call on a service: it adds the usage the service's answers report to `usage` as
// they come, so that a try failing halfway (a batch of embeddings) still counts what it spent.
using Attempt = std::function<void(const ServiceRow &, translate::Usage &usage)>;

// Runs attempt on the service `name` names, or on each target of the route it names until one
// returns. attempt throws AttemptFailed for an upstream failure; anything else it throws ends
// the call at once. A call's outcome feeds the service's breaker either way, and each try that
// returned or failed upstream is counted in the usage ledger under the calling role
// (record_sql_usage). Throws 42704 for a name that is neither, and the last failure when every
// target failed or was skipped.
void call_named(const std::string &name, const Attempt &attempt);

}  // namespace pgi::pg
