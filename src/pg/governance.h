// Gateway governance in shared memory: per-key rate limits, usage
// counters flushed to inference.usage_ledger, and the metrics every listener reports. The logic
// is the core's (rate_limiter.h, usage_counters.h, metrics.h); this file places its tables in
// shared memory under one LWLock and writes the ledger.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "gateway.h"
#include "rate_limiter.h"

struct Latch;

namespace pgi::pg {

// inference.gateway_max_keys: how many access keys shared memory tracks.
int governance_max_keys();
// The usage writer's latch, to wake it (null while it is not running).
Latch *usage_writer_latch();

// Defines inference.gateway_max_keys (when preloading) and inference.gateway_usage_flush_interval.
void governance_define_settings();
void governance_request_shmem();  // from the shmem_request_hook
void governance_init_shmem();     // from the shmem_startup_hook

// The Governor of one listener worker.
class Governance : public gateway::Governor {
  public:
    // Attaches listener `index` (1-based) to the shared tables and arranges a last flush of the
    // usage counters when the process exits. Call once the worker is connected to its database.
    void start(int index);
    // The listener now serves from a snapshot loaded just now (for the snapshot-age gauge).
    void snapshot_loaded();
    // From the listener's housekeeping tick: publishes its in-flight count and wakes the usage
    // writer when the counters fill up. No SQL: the listener's loop never waits on the database.
    void housekeeping(std::size_t in_flight, const gateway::Server::ConnectionStats &connections);

    gateway::Admission admit(const gateway::AccessKey *key, const std::string &service,
                             std::string_view user, int64_t cost,
                             const std::string &currency) override;
    void finished(const gateway::Finished &request) override;
    std::string metrics_text() override;
    // The gateway's warnings (already rate-limited by it) as WARNINGs in the server log.
    void warning(const std::string &message) override;
    // The breakers in shared memory (breakers.h), shared with every backend and listener.
    routing::Pass breaker_may_try(const std::string &service, int64_t cooldown_us) override;
    void breaker_report(const std::string &service, bool failed, int64_t cooldown_us) override;
    void breaker_probe_abandoned(const std::string &service) override;

  private:
    int index_ = 0;
    std::string index_text_;
    int64_t next_reclaim_ms_ = 0;
};

// Counts one upstream call of a SQL function (inference.chat, encode_text, ...) in the usage
// ledger under "role:" and the calling role's name (the current role outside the
// SECURITY DEFINER function, as SET ROLE left it), for the service that was called: failed
// calls as errors, with the tokens the answers reported, priced under the service's price
// version `price` (0: none). No SQL: the usage writer records it with the gateway's. Nothing
// happens when pg_inference is not preloaded (there is no writer).
void record_sql_usage(const std::string &service, int64_t price, bool failed,
                      const translate::Usage &usage);

// The usage writer (a background worker that serves no HTTP) writes the counters to
// inference.usage_ledger, so that a lock on the ledger or key rows, or a commit waiting for a
// synchronous standby, never stalls a listener's callers.
struct UsageWriterState {
    int64_t last_warning_ms = 0;
    int64_t last_lease_log_ms = 0;
    uint64_t reported_dropped = 0;
    uint64_t reported_user_dropped = 0;
};
// Publishes the writer's latch (listeners set it when the counters fill up) and arranges a last
// flush when the writer exits.
void usage_writer_attach();
// One flush; a failure leaves the counts in shared memory and is logged at most every 10 s.
void usage_writer_flush(UsageWriterState &state);
int usage_flush_interval_ms();
// Whether a listener asked for a flush before the interval (the counters are filling up).
bool usage_flush_requested();

// ---- Limits held for the whole cluster (docs/replicas.md) ----
// Whether this server spends blocks lent by its primary: a hot standby under
// inference.limits_scope = 'cluster'.
bool limits_leased();
// On the primary: lends a block of a key's limits from its buckets (rate_limiter.h's lend).
governance::Lease lend_limits(const std::string &key, const governance::Limits &limits,
                              int64_t requests, int64_t tokens);
// On a standby: the keys in use whose lease is half spent, and how much each needs.
struct LeaseNeed {
    std::string key;
    int64_t requests;
    int64_t tokens;
};
std::vector<LeaseNeed> leases_needed();
// On a standby: adds a block the primary lent.
void add_lease(const std::string &key, const governance::Lease &lent);

}  // namespace pgi::pg
