// How every background worker of the extension connects to inference.database. When that
// database does not exist (dropped, or never created), the postmaster would otherwise restart
// each worker every second, forever, each failing with FATAL. Instead one failed connection
// marks the database missing in shared memory; workers started while it is marked wait without
// a database (one log line for all of them) and exit once it exists, so the postmaster starts
// them again, connected.
#pragma once

#include <functional>
#include <string>

namespace pgi::pg {

// Registers a static background worker of the extension (from _PG_init): restarted one second
// after it exits with an error, connected through worker_connect. `function` is the exported
// entry point, `type` what pg_stat_activity.backend_type shows.
void worker_register(const char *function, const char *name, const char *type, bool during_recovery,
                     int arg = 0);

void worker_connection_request_shmem();
void worker_connection_init_shmem();

// Instead of BackgroundWorkerInitializeConnection(inference.database): returns connected, or
// never (waits for the database, then exits with code 1 to be restarted; SIGTERM exits).
void worker_connect(const char *worker_name);

// Runs a worker's main loop: returns what ended it (a C++ exception's message; empty when the
// loop returned), for the worker to report as it exits.
std::string run_worker_loop(const std::function<void()> &loop);

}  // namespace pgi::pg
