// Health checks: the background worker that probes every service of
// inference.database on a timer, and the probe-and-record steps it shares with
// inference.check_service(), so a status reads the same whoever produced it.
#pragma once

#include <functional>
#include <vector>

#include "http_client.h"
#include "probe.h"
#include "service_catalog.h"
#include "status_store.h"

namespace pgi::pg {

// From _PG_init when preloaded: the worker, and the shared memory that reports on it (requested
// and initialised through the module's shared-memory hooks).
void health_worker_register();
void health_worker_request_shmem();
void health_worker_init_shmem();

// Probes the services concurrently and turns each result into the status to record: Ready, or
// Failed with the diagnosis (a hint joins the message: a status has no field of its own for
// it). A key that cannot be read fails that service alone. Apart from timestamps it makes no
// PostgreSQL call, so it runs outside any transaction; results are in the order of rows.
// on_record, when set, gets each record (by its index in rows) as soon as it is known.
using RecordHook = std::function<void(size_t index, const StatusRecord &record)>;
std::vector<StatusRecord> probe_services(http::Client &client, const std::vector<ServiceRow> &rows,
                                         const probe::Settings &settings,
                                         const http::WaitHook &wait,
                                         const RecordHook &on_record = nullptr);

// Records probe results, in the current transaction, in inference.service_status (one statement)
// and in shared memory. On a hot standby, whose tables are read-only, in shared memory alone.
// A service deregistered since rows were read loses any status put for it meanwhile.
void record_statuses(const std::vector<ServiceRow> &rows, const std::vector<StatusRecord> &records);

}  // namespace pgi::pg
