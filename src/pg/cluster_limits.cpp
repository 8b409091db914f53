#include "cluster_limits.h"

#include "cpp_wall.h"

extern "C" {
#include "access/xlog.h"
#include "fmgr.h"
#include "utils/builtins.h"
}

#include "error.h"
#include "governance.h"
#include "primary_link.h"
#include "spi_connection.h"

namespace pgi::pg {

namespace gov = pgi::governance;

void top_up_leases() {
    for (const LeaseNeed &need : leases_needed())
        add_lease(need.key, lend_on_primary(need.key, need.requests, need.tokens));
}

namespace {

// A live key's limits, from the catalog; none for an unknown, revoked or expired key (which
// the primary then lends nothing for: the standby refuses it once its snapshot says so too).
std::optional<gov::Limits> key_limits(const std::string &key) {
    SpiConnection spi;
    if (spi.exec("SELECT coalesce(requests_per_minute, 0)::bigint, coalesce(burst, 0)::bigint, "
                 "       coalesce(requests_per_hour, 0)::bigint, coalesce(tokens_per_hour, 0) "
                 "  FROM inference.access_key_store "
                 " WHERE name = $1 AND revoked_at IS NULL "
                 "   AND (expires_at IS NULL OR expires_at > now())",
                 {spi_text(key)}, true, 1) != 1)
        return std::nullopt;
    gov::Limits l;
    l.requests_per_minute = spi.int64_at(0, 1).value_or(0);
    l.burst = spi.int64_at(0, 2).value_or(0);
    l.requests_per_hour = spi.int64_at(0, 3).value_or(0);
    l.tokens_per_hour = spi.int64_at(0, 4).value_or(0);
    return l;
}

}  // namespace

}  // namespace pgi::pg

// inference_internal.lend_limits(key_name text, want_requests bigint, want_tokens bigint,
//                        OUT requests bigint, OUT tokens bigint): on the primary, a block of a
// key's limits for a standby to spend, taken from the buckets the primary's own gateway uses.
PGI_FUNCTION(pgi_lend_limits) {
    using namespace pgi::pg;
    if (pg_guard([]() { return RecoveryInProgress(); })) {
        throw pgi::Error(pgi::sqlstate::kFeatureNotSupported,
                         "limits are lent by the primary, and this server is a standby",
                         "Point inference.primary_conninfo at the primary.");
    }
    const std::string key = required_text_arg(fcinfo, 0, "key_name");
    const int64_t requests = PG_ARGISNULL(1) ? 0 : PG_GETARG_INT64(1);
    const int64_t tokens = PG_ARGISNULL(2) ? 0 : PG_GETARG_INT64(2);
    if (requests < 0 || tokens < 0)
        throw pgi::Error(pgi::sqlstate::kInvalidParameterValue,
                         "requests and tokens must not be negative",
                         "Ask for a block of zero or more requests and tokens.");
    pgi::governance::Lease lent{0, 0, true};
    if (auto limits = key_limits(key))
        lent = lend_limits(key, *limits, requests, tokens);
    Datum values[2] = {Int64GetDatum(lent.requests), Int64GetDatum(lent.tokens)};
    bool nulls[2] = {false, false};
    return composite_datum(fcinfo, values, nulls);
}
