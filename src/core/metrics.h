// The gateway's metrics (GET /metrics): per-service counters and latency histograms
// kept in plain structs that the host places in shared memory, so every listener reports the
// same totals, and their rendering in the Prometheus text format 0.0.4.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "gateway.h"
#include "shared_table.h"
#include "translate.h"

namespace pgi::governance {

// The OpenTelemetry GenAI metrics' bucket bounds (their advised boundaries, with 25 ms added to
// the time to first token): bounds[] in the unit counted (microseconds, or tokens), text[] as
// /metrics writes them.
struct Scale {
    const int64_t *bounds;
    const char *const *text;
    int n;
};
// The gateway's own latencies, in microseconds: from a cached embedding (5 ms) to a long
// generation (300 s).
extern const Scale kLatency;
inline constexpr int kLatencyBuckets = 15;
extern const Scale kTimeToFirstToken;    // 1 ms to 10 s
extern const Scale kTimePerOutputToken;  // 10 ms to 2.5 s
extern const Scale kTokenCounts;         // 1 to 4^13 tokens

// A histogram on one of those scales (up to 16 bounds).
struct Buckets {
    uint64_t counts[17];  // per bucket, not cumulative; counts[scale.n] is +Inf
    uint64_t count;
    int64_t sum;  // in the scale's unit

    void observe(const Scale &scale, int64_t value);
};

// Distinct HTTP statuses counted per service; any beyond them count as code "other".
inline constexpr int kStatusSlots = 16;

struct ServiceMetrics {
    struct StatusCount {
        int32_t status;  // 0: slot free
        uint64_t count;
    } statuses[kStatusSlots];
    uint64_t other_statuses;
    // On kLatency:
    Buckets total;     // whole request, as the caller saw it
    Buckets upstream;  // time spent on upstream calls (requests that made one)
    Buckets by_dialect[gateway::kDialectCount];  // total, by the caller's API
    // Streams answered 200: time to the first body bytes, and per output token after them.
    Buckets first_token_us, per_output_token_us;
    Buckets input_tokens, output_tokens;  // per request that reported usage
    uint64_t prompt_tokens, completion_tokens;
    uint64_t rate_limited;
    // The tokens at the service's price, in its currency ("" until a priced request): a double,
    // as Prometheus counters are; the ledger keeps the exact cost.
    double cost;
    FixedText<4> currency;

    // Only the 429s of the limits count as rate limited (the 503 of a full limiter is an error).
    void record(const gateway::Finished &request);
};

struct MetricsEntry {
    bool used;
    uint64_t hash;
    Name key;  // the service ("" for requests that named no known service)
    ServiceMetrics metrics;
};
using MetricsTable = FixedTable<MetricsEntry>;

// What one listener process publishes about itself.
struct ListenerGauges {
    bool active;                   // running now
    int64_t in_flight;             // requests being served
    uint64_t requests;             // requests it finished since the server started
    int64_t snapshot_loaded_ms;    // unix ms when it loaded its catalog snapshot
    int64_t open_connections;      // client connections now
    uint64_t connections_refused;  // answered 503 past inference.gateway_max_connections
    uint64_t accept_failures;      // accept() errors, such as running out of descriptors
};

// A copy of everything /metrics shows, taken under the host's lock.
struct MetricsView {
    std::vector<std::pair<std::string, ServiceMetrics>> services;  // the overflow as "(other)"
    std::vector<ListenerGauges> listeners;                         // index 0 is listener 1
    uint64_t usage_dropped = 0;
    uint64_t user_usage_dropped = 0;  // end users' rows of requests the keys' rows did count
    // Requests counted but not yet in the ledger: in shared memory, or in a batch a standby
    // could not send to its primary yet.
    uint64_t usage_pending = 0;
    uint64_t limiter_full = 0;
    uint64_t users_full = 0;
    // Budgets (budget.h): alerts sent and dropped, requests refused for a full table.
    uint64_t budget_alerts_sent = 0;
    uint64_t budget_alerts_dropped = 0;
    uint64_t budget_tracker_full = 0;
    // The request log: rows written to inference.request_log, and dropped.
    uint64_t request_log_written = 0;
    uint64_t request_log_dropped = 0;
    int64_t now_ms = 0;
};

std::string render_prometheus(const MetricsView &view);

}  // namespace pgi::governance
