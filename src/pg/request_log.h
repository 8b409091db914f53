// The request log (inference.gateway_request_log = metadata): one row per gateway request in
// inference.request_log, partitioned by UTC day (docs/observability.md). The listeners put rows
// in a ring in shared memory, never touching SQL; the usage writer moves them to the table in
// batches and drops the days past inference.request_log_retention. When the ring is full a row
// is dropped and counted, never waited for.
#pragma once

#include <cstdint>

#include "gateway.h"

namespace pgi::pg {

void request_log_define_settings();
void request_log_request_shmem();
void request_log_init_shmem();

// From a listener, once per finished request: queues its row when the log is on.
void log_request(const gateway::Finished &request);

// From the usage writer's loop: writes the queued rows (all of them, in batches) and, at most
// once a minute or after a reload, makes the coming days' partitions and drops expired ones.
// `reloaded`: the configuration was just reloaded. Throws on failure (the rows are then lost
// and counted as dropped).
void write_request_log(bool reloaded);

struct RequestLogCounters {
    uint64_t written = 0;
    uint64_t dropped = 0;
    uint64_t pending = 0;
};
RequestLogCounters request_log_counters();

}  // namespace pgi::pg
