// Service health status in shared memory: written by probes (registration,
// check_service, the health worker), read by service_info. Shared memory is what lets a hot
// standby serve statuses and makes "Pending" mean "not probed since the server started".
#pragma once

#include "cpp_wall.h"

extern "C" {
#include "datatype/timestamp.h"
}

#include <optional>
#include <string>

namespace pgi::pg {

enum class HealthStatus : char { kReady = 'R', kFailed = 'F', kPending = 'P', kUnknown = 'U' };

const char *health_status_name(HealthStatus s);

struct StatusRecord {
    HealthStatus status = HealthStatus::kUnknown;
    std::string message;
    std::optional<TimestampTz> checked_at;
};

inline constexpr const char *kPendingMessage =
    "Remote connection check is pending \xE2\x80\x94 upstream has not yet been verified";

void status_store_request_shmem();  // from _PG_init / shmem_request_hook
void status_store_init_shmem();     // from shmem_startup_hook
bool status_store_available();

// The status a service shows now (Pending/Unknown when nothing was recorded).
StatusRecord status_get(const std::string &service);
// Inside a transaction these take effect when it commits, and not at all when it (or the
// subtransaction that made them) rolls back, like the catalog rows they describe. Outside any
// transaction (the health worker while it probes) they take effect at once.
void status_put(const std::string &service, const StatusRecord &record);
void status_forget(const std::string &service);

}  // namespace pgi::pg
