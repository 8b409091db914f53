// The routes' SQL helpers: checking a route's fields (the SQL wrappers in the extension script do
// the catalog work) and the lock that keeps route and service names apart.
#include "cpp_wall.h"

extern "C" {
#include "utils/timestamp.h"

#include "datatype/timestamp.h"
}

#include "error.h"
#include "jsonb_args.h"
#include "routing.h"
#include "service_catalog.h"
#include "validation.h"

namespace pgi::pg {

namespace {

// A cooldown shorter than a second would let a failing service take a request every few
// milliseconds; a day is longer than any outage worth skipping silently.
constexpr int64_t kMinCooldownUs = USECS_PER_SEC;
constexpr int64_t kMaxCooldownUs = USECS_PER_DAY;

}  // namespace

}  // namespace pgi::pg

using namespace pgi;
using namespace pgi::pg;

// inference_internal.check_route(name, targets, fallback_on, cooldown, functions) RETURNS jsonb
PGI_FUNCTION(pgi_check_route) {
    validate::service_name(required_text_arg(fcinfo, 0, "name"), "route");
    nlohmann::json out = nlohmann::json::object();
    if (auto targets = jsonb_arg(fcinfo, 1))
        out["targets"] = routing::targets_json(routing::parse_targets(*targets));
    if (!PG_ARGISNULL(2))
        out["fallback_on"] = routing::check_fallback_on(labels_arg(fcinfo, 2, "fallback_on"));
    if (std::optional<int64_t> us = interval_arg_us(fcinfo, 3)) {
        if (*us < kMinCooldownUs || *us > kMaxCooldownUs)
            throw pgi::Error(sqlstate::kInvalidParameterValue,
                             "cooldown must be between 1 second and 1 day",
                             "A failing service is skipped for the cooldown, then tried by one "
                             "request; pass e.g. '30 seconds'.");
    }
    if (!PG_ARGISNULL(4))
        out["functions"] = labels_arg(fcinfo, 4, "functions");
    return jsonb_datum(out.dump());
}

// inference_internal.lock_names() RETURNS void: held to the end of the transaction by whoever is about
// to give a service or a route a name, after which the name's check sees every committed one.
PGI_FUNCTION(pgi_lock_names) {
    (void)fcinfo;
    lock_names();
    PG_RETURN_VOID();
}
