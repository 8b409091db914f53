// How every background worker of the extension connects to inference.database. When that
// database does not exist (dropped, or never created), the postmaster would otherwise restart
// each worker every second, forever, each failing with FATAL. Instead one failed connection
// marks the database missing in shared memory; workers started while it is marked wait without
// a database (one log line for all of them) and exit once it exists, so the postmaster starts
// them again, connected.
#pragma once

namespace pgi::pg {

void worker_connection_request_shmem();
void worker_connection_init_shmem();

// Instead of BackgroundWorkerInitializeConnection(inference.database): returns connected, or
// never (waits for the database, then exits with code 1 to be restarted; SIGTERM exits).
void worker_connect(const char *worker_name);

}  // namespace pgi::pg
