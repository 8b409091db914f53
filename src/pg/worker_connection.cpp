#include "worker_connection.h"

#include "cpp_wall.h"

extern "C" {
#include "access/xact.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/elog.h"
}

#include "error.h"
#include "settings.h"
#include "worker_transaction.h"

namespace pgi::pg {

namespace {

// What the workers know of inference.database.
enum DatabaseState : uint32 {
    kDatabaseOk = 0,        // connect as usual
    kDatabaseMissing = 1,   // a connection failed: it does not exist
    kDatabaseReported = 2,  // ... and a waiting worker has said so in the log
};

struct ConnectionShared {
    pg_atomic_uint32 state;
};

ConnectionShared *shared = nullptr;
emit_log_hook_type previous_emit_log_hook = nullptr;

// Installed only around the connection attempt: PostgreSQL reports a missing database with
// FATAL and exits, so this is the one place that can tell that failure from any other.
void notice_missing_database(ErrorData *edata) {
    if (edata->elevel >= FATAL && edata->sqlerrcode == ERRCODE_UNDEFINED_DATABASE && shared) {
        uint32 expected = kDatabaseOk;
        pg_atomic_compare_exchange_u32(&shared->state, &expected, kDatabaseMissing);
    }
    if (previous_emit_log_hook)
        previous_emit_log_hook(edata);
}

// A failed look (a lock on pg_database held too long, memory) counts as "not yet": the next second
// tries again.
bool database_exists() {
    bool exists = false;
    try {
        run_in_transaction("pg_inference: waiting for inference.database", {1000, 5000}, [&]() {
            exists =
                pg_guard([]() { return OidIsValid(get_database_oid(setting_database, true)); });
        });
    } catch (...) {  // nothing may escape into the worker's C entry point
        return false;
    }
    return exists;
}

// Connected to no database (pg_database is a shared catalog), polls every second for
// inference.database. Never returns: SIGTERM and postmaster death end the process as usual.
void wait_for_database(const char *worker_name) {
    BackgroundWorkerInitializeConnection(nullptr, nullptr, 0);
    for (;;) {
        CHECK_FOR_INTERRUPTS();
        if (database_exists()) {
            pg_atomic_write_u32(&shared->state, kDatabaseOk);
            ereport(LOG, (errmsg("%s: database \"%s\" exists; restarting to connect to it",
                                 worker_name, setting_database)));
            proc_exit(1);  // exit code 1: the postmaster starts the worker again
        }
        uint32 expected = kDatabaseMissing;
        if (pg_atomic_compare_exchange_u32(&shared->state, &expected, kDatabaseReported))
            ereport(LOG, (errmsg("pg_inference: database \"%s\" does not exist; waiting for it",
                                 setting_database),
                          errhint("Create the database, or set inference.database to an "
                                  "existing one and restart the server.")));
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 1000,
                        PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
    }
}

}  // namespace

void worker_connection_request_shmem() {
    RequestAddinShmemSpace(MAXALIGN(sizeof(ConnectionShared)));
}

void worker_connection_init_shmem() {
    bool found = false;
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    shared = static_cast<ConnectionShared *>(
        ShmemInitStruct("pg_inference worker connection", sizeof(ConnectionShared), &found));
    if (!found)
        pg_atomic_init_u32(&shared->state, kDatabaseOk);
    LWLockRelease(AddinShmemInitLock);
}

void worker_connect(const char *worker_name) {
    if (shared && pg_atomic_read_u32(&shared->state) != kDatabaseOk)
        wait_for_database(worker_name);
    previous_emit_log_hook = emit_log_hook;
    emit_log_hook = notice_missing_database;
    BackgroundWorkerInitializeConnection(setting_database, nullptr, 0);
    emit_log_hook = previous_emit_log_hook;
}

void worker_register(const char *function, const char *name, const char *type, bool during_recovery,
                     int arg) {
    BackgroundWorker worker;
    memset(&worker, 0, sizeof(worker));
    worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
    worker.bgw_start_time =
        during_recovery ? BgWorkerStart_ConsistentState : BgWorkerStart_RecoveryFinished;
    worker.bgw_restart_time = 1;
    strlcpy(worker.bgw_library_name, "pg_inference", BGW_MAXLEN);
    strlcpy(worker.bgw_function_name, function, BGW_MAXLEN);
    strlcpy(worker.bgw_name, name, BGW_MAXLEN);
    strlcpy(worker.bgw_type, type, BGW_MAXLEN);
    worker.bgw_main_arg = Int32GetDatum(arg);
    RegisterBackgroundWorker(&worker);
}

std::string run_worker_loop(const std::function<void()> &loop) {
    try {
        loop();
    } catch (const std::exception &e) {
        return e.what();
    } catch (...) {
        return "unknown C++ exception";
    }
    return {};
}

}  // namespace pgi::pg
