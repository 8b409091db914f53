// The health-check worker (SPEC.md §3.1) and the probe-and-record steps it shares with
// inference.check_service().
//
// One round: read every service in one short transaction, commit, probe them all with curl multi
// while no transaction is open, then write every result in one short transaction. A round that
// fails (an SPI error, a lock or statement timeout, a cancel) is logged and the worker carries on
// at the next interval: run_in_transaction aborts the transaction from C++, which keeps the HTTP
// client and its connections instead of paying a restart and fresh handshakes.
#include "health_worker.h"

#include "cpp_wall.h"

extern "C" {
#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "commands/extension.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

PGDLLEXPORT void pgi_health_worker_main(Datum arg);
}

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <unordered_set>

#include "catalog_generation.h"
#include "error.h"
#include "settings.h"
#include "worker_connection.h"
#include "worker_transaction.h"

namespace pgi::pg {

namespace {

// Enough that 1,000 services behind a 200 ms upstream take about a second; few enough that one
// round cannot exhaust file descriptors or look like an attack to a shared upstream.
constexpr size_t kMaxConcurrentProbes = 256;
constexpr size_t kErrorLen = 512;
// How often the sleeping worker looks for catalog changes (new services, CREATE EXTENSION).
constexpr long kCatalogPollMs = 1000;

// What the worker is doing, for inference.health_worker_status().
enum class WorkerState : char {
    kStopped = 0,
    kStarting,
    kNoExtension,
    kSleeping,
    kChecking,
};

const char *state_name(WorkerState s) {
    switch (s) {
        case WorkerState::kStopped:
            return "stopped";
        case WorkerState::kStarting:
            return "starting";
        case WorkerState::kNoExtension:
            return "no extension";
        case WorkerState::kSleeping:
            return "sleeping";
        case WorkerState::kChecking:
            return "checking";
    }
    return "stopped";
}

// The worker's report on itself. Shared memory is reset by crash recovery, like the statuses.
struct WorkerShared {
    slock_t mutex;
    int pid;  // 0: no worker process
    WorkerState state;
    int64 rounds;               // rounds completed since the server started
    TimestampTz last_round_at;  // start of the last completed round; 0: none yet
    double last_round_ms;
    int last_round_services;
    int last_round_failed;
    char last_error[kErrorLen];  // why the last round failed; "" after a good round
};

WorkerShared *worker_shared = nullptr;

}  // namespace

void health_worker_request_shmem() {
    RequestAddinShmemSpace(MAXALIGN(sizeof(WorkerShared)));
}

void health_worker_init_shmem() {
    bool found = false;
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    worker_shared = static_cast<WorkerShared *>(
        ShmemInitStruct("pg_inference health worker", sizeof(WorkerShared), &found));
    if (!found) {
        memset(worker_shared, 0, sizeof(WorkerShared));
        SpinLockInit(&worker_shared->mutex);
    }
    LWLockRelease(AddinShmemInitLock);
}

namespace {

// f only assigns fields: nothing that can fail may run under a spinlock.
template <typename F>
void update_shared(F &&f) {
    if (!worker_shared)
        return;
    SpinLockAcquire(&worker_shared->mutex);
    f(*worker_shared);
    SpinLockRelease(&worker_shared->mutex);
}

void set_state(WorkerState state) {
    update_shared([&](WorkerShared &s) { s.state = state; });
}

void clear_pid(int, Datum) {
    update_shared([](WorkerShared &s) {
        s.pid = 0;
        s.state = WorkerState::kStopped;
    });
}

StatusRecord record_of(const probe::Result &r, TimestampTz checked_at) {
    StatusRecord rec;
    rec.checked_at = checked_at;
    if (r.ok) {
        rec.status = HealthStatus::kReady;
    } else {
        rec.status = HealthStatus::kFailed;
        rec.message = r.hint.empty() ? r.message : r.message + ". " + r.hint;
    }
    return rec;
}

// ---------------------------------------------------------------------------------------------
// The worker process

using Clock = std::chrono::steady_clock;

// Holds what a round allocates outside transactions (mostly copies of errors); reset each round.
MemoryContext worker_cxt = nullptr;

probe::Settings worker_probe_settings() {
    probe::Settings s;
    s.timeout_ms = setting_health_check_timeout_ms;
    s.connect_timeout_ms = std::min(setting_connect_timeout_ms, setting_health_check_timeout_ms);
    s.max_concurrency = kMaxConcurrentProbes;
    return s;
}

// Every transaction of the worker is short and bounded: a lock held by someone else (LOCK TABLE,
// VACUUM FULL) or a slow statement fails the round after these limits instead of stalling it.
constexpr TransactionLimits kTransactionLimits{1000, 10000};

void in_transaction(const char *activity, const std::function<void()> &body) {
    run_in_transaction(activity, kTransactionLimits, body);
}

// DROP EXTENSION and CREATE EXTENSION may come and go while the worker runs.
bool extension_installed() {
    return pg_guard([]() { return OidIsValid(get_extension_oid("pg_inference", true)); });
}

// Sleeps until the latch is set or timeout_ms pass, then processes interrupts: SIGTERM exits
// here, and a ProcSignalBarrier (DROP DATABASE of another database waits for every backend to
// absorb one) is absorbed here rather than making that command hang.
void wait_on_latch(long timeout_ms) {
    pg_guard_void([&]() {
        (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, timeout_ms,
                        PG_WAIT_EXTENSION);
        ResetLatch(MyLatch);
        CHECK_FOR_INTERRUPTS();
    });
}

// A full round probes every service on the interval; a catch-up probes only services never
// checked since the server started (a new registration, one registered with validate => false),
// run as soon as the catalog changes so they do not wait for the interval.
enum class RoundKind { kFull, kCatchUp };

// Returns whether the extension is installed.
bool run_round(http::Client &client, RoundKind kind) {
    const Clock::time_point started = Clock::now();
    const TimestampTz started_at = GetCurrentTimestamp();
    if (kind == RoundKind::kFull)
        set_state(WorkerState::kChecking);

    std::vector<ServiceRow> rows;
    bool installed = false;
    in_transaction("pg_inference health check: reading services", [&]() {
        installed = extension_installed();
        if (installed)
            rows = all_services();
        if (kind == RoundKind::kCatchUp)
            rows.erase(std::remove_if(rows.begin(), rows.end(),
                                      [](const ServiceRow &r) {
                                          return status_get(r.name).checked_at.has_value();
                                      }),
                       rows.end());
    });
    if (!installed) {
        set_state(WorkerState::kNoExtension);
        pg_guard_void([]() {
            ereport(DEBUG1,
                    (errmsg("pg_inference health check: extension not installed in database "
                            "\"%s\"; checking again when it is created",
                            setting_database)));
        });
        return false;
    }
    if (kind == RoundKind::kCatchUp && rows.empty()) {
        set_state(WorkerState::kSleeping);
        return true;
    }
    set_state(WorkerState::kChecking);

    // No transaction is open while the network is waited on; the wait hook keeps SIGTERM,
    // cancellation and barriers working through a round that hangs until its timeout. Each
    // status reaches shared memory as its probe ends, so a hung upstream holds back no other
    // service; the table gets them all at the end, in one statement.
    pg_guard_void(
        []() { pgstat_report_activity(STATE_RUNNING, "pg_inference health check: probing"); });
    std::vector<StatusRecord> records =
        probe_services(client, rows, worker_probe_settings(), check_for_interrupts,
                       [&](size_t i, const StatusRecord &rec) { status_put(rows[i].name, rec); });

    in_transaction("pg_inference health check: recording statuses", [&]() {
        // The extension may have been dropped while the probes ran; its services went with it.
        if (extension_installed())
            record_statuses(rows, records);
        else
            for (const auto &r : rows)
                status_forget(r.name);
    });

    if (kind == RoundKind::kCatchUp) {
        set_state(WorkerState::kSleeping);
        return true;
    }
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - started).count();
    const int failed =
        static_cast<int>(std::count_if(records.begin(), records.end(), [](const StatusRecord &r) {
            return r.status == HealthStatus::kFailed;
        }));
    update_shared([&](WorkerShared &s) {
        s.rounds++;
        s.last_round_at = started_at;
        s.last_round_ms = ms;
        s.last_round_services = static_cast<int>(rows.size());
        s.last_round_failed = failed;
        s.last_error[0] = '\0';
        s.state = WorkerState::kSleeping;
    });
    pg_guard_void([&]() {
        ereport(DEBUG1, (errmsg("pg_inference health check: %zu services in %.0f ms (%d failed)",
                                rows.size(), ms, failed)));
    });
    return true;
}

// After a failed round (its transaction, if any, already aborted by run_in_transaction): a log
// line. The worker then waits for the next interval as after any round.
void report_failure(const std::string &message, int sqlerrcode) {
    HOLD_INTERRUPTS();
    pgstat_report_activity(STATE_IDLE, nullptr);
    MemoryContextSwitchTo(worker_cxt);
    RESUME_INTERRUPTS();
    update_shared([&](WorkerShared &s) {
        strlcpy(s.last_error, message.c_str(), kErrorLen);
        s.state = WorkerState::kSleeping;
    });
    pg_guard_void([&]() {
        ereport(
            WARNING,
            (errcode(sqlerrcode), errmsg("pg_inference health check failed: %s", message.c_str()),
             errhint("The worker tries again in %d s.", setting_health_check_interval_s)));
    });
}

void worker_loop() {
    worker_cxt = AllocSetContextCreate(TopMemoryContext, "pg_inference health worker",
                                       ALLOCSET_DEFAULT_SIZES);
    MemoryContextSwitchTo(worker_cxt);
    // One client for the worker's life: its connection cache spares a handshake per service per
    // round when the interval is shorter than the upstreams' keep-alive.
    http::Client client;
    std::optional<Clock::time_point> last_round;  // none: the first round runs at once
    bool installed = false;
    uint64_t seen_generation = catalog_generation();

    for (;;) {
        bool failed = false;
        std::string failure;
        int code = ERRCODE_INTERNAL_ERROR;
        try {
            MemoryContextReset(worker_cxt);
            if (ConfigReloadPending) {
                ConfigReloadPending = false;
                pg_guard_void([]() { ProcessConfigFile(PGC_SIGHUP); });
            }
            // A committed catalog change anywhere in the cluster (a registration, CREATE
            // EXTENSION) moves the generation; the worker looks at it at least every second.
            const uint64_t generation = catalog_generation();
            const bool catalog_changed = generation != seen_generation;
            // Measured from the last round's start, with the interval in force now: a reload
            // that shortens it takes effect at once.
            const auto now = Clock::now();
            const bool due =
                !last_round ||
                now >= *last_round + std::chrono::seconds(setting_health_check_interval_s);
            if (!due && !catalog_changed) {
                const auto until_due =
                    *last_round + std::chrono::seconds(setting_health_check_interval_s) - now;
                wait_on_latch(std::min<long>(
                    kCatalogPollMs,
                    static_cast<long>(
                        std::chrono::ceil<std::chrono::milliseconds>(until_due).count())));
                continue;
            }
            // Read before the round: a change made while it runs gets a catch-up after it.
            seen_generation = generation;
            if (due || !installed) {
                last_round = now;
                installed = run_round(client, RoundKind::kFull);
            } else {
                installed = run_round(client, RoundKind::kCatchUp);
            }
        } catch (const PgError &e) {
            failed = true;
            failure = e.what();
            code = e.data()->sqlerrcode;
        } catch (const pgi::Error &e) {
            failed = true;
            failure = e.what();
            code = sqlstate_code(e.sqlstate());
        } catch (const std::exception &e) {
            failed = true;
            failure = e.what();
        }
        if (failed)
            report_failure(failure, code);
    }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Shared with check_service

std::vector<StatusRecord> probe_services(http::Client &client, const std::vector<ServiceRow> &rows,
                                         const probe::Settings &settings,
                                         const http::WaitHook &wait, const RecordHook &on_record) {
    std::vector<StatusRecord> records(rows.size());
    std::vector<ServiceEndpoint> endpoints;
    std::vector<size_t> probed;  // index in rows of each endpoint
    const TimestampTz started = GetCurrentTimestamp();
    for (size_t i = 0; i < rows.size(); i++) {
        // An unset env variable or a changed cluster key is that service's failure only.
        try {
            endpoints.push_back(endpoint_of(rows[i]));
            probed.push_back(i);
        } catch (const pgi::Error &e) {
            records[i].status = HealthStatus::kFailed;
            records[i].message = std::string("API key unavailable: ") + e.what();
            records[i].checked_at = started;
            if (on_record)
                on_record(i, records[i]);
        }
    }
    // Each record is timed by its own probe's end, whoever hears of it first.
    (void)probe::probe_all(client, endpoints, settings, wait,
                           [&](size_t k, const probe::Result &r) {
                               StatusRecord &rec = records[probed[k]];
                               rec = record_of(r, GetCurrentTimestamp());
                               if (on_record)
                                   on_record(probed[k], rec);
                           });
    return records;
}

void record_statuses(const std::vector<ServiceRow> &rows,
                     const std::vector<StatusRecord> &records) {
    std::vector<std::string> names;
    names.reserve(rows.size());
    for (const auto &r : rows)
        names.push_back(r.name);
    if (pg_guard([]() { return RecoveryInProgress(); })) {
        for (size_t i = 0; i < names.size(); i++)
            status_put(names[i], records[i]);
        return;
    }
    // Only services that still exist get a status in shared memory: one deregistered while the
    // probes ran would otherwise hold a slot until restart.
    const std::vector<std::string> live = persist_statuses(names, records);
    const std::unordered_set<std::string> alive(live.begin(), live.end());
    for (size_t i = 0; i < names.size(); i++) {
        if (alive.count(names[i]))
            status_put(names[i], records[i]);
        else
            status_forget(names[i]);
    }
}

void health_worker_register() {
    // From consistent state rather than recovery's end: a hot standby checks too, and serves the
    // statuses from its own shared memory.
    worker_register("pgi_health_worker_main", "pg_inference health worker",
                    "pg_inference health worker", true);
}

}  // namespace pgi::pg

void pgi_health_worker_main(Datum) {
    using namespace pgi::pg;
    // die instead of the default bgworker_die: it only sets flags, so SIGTERM takes effect at the
    // next CHECK_FOR_INTERRUPTS (every wait, every 20 ms of a probe) and never inside curl.
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();
    worker_connect("pg_inference health worker");

    before_shmem_exit(clear_pid, 0);
    update_shared([](WorkerShared &s) {
        s.pid = MyProcPid;
        s.state = WorkerState::kStarting;
    });

    std::string failure;
    try {
        worker_loop();
    } catch (const std::exception &e) {
        failure = e.what();
    } catch (...) {
        failure = "unknown C++ exception";
    }
    // Only a failure outside any round gets here (the HTTP client could not be set up, memory
    // ran out while recovering). Exit code 1: the postmaster starts the worker again.
    ereport(FATAL, (errmsg("pg_inference health worker stopped: %s", failure.c_str())));
}

// inference.health_worker_status(): the worker's own report (see the extension script).
PGI_FUNCTION(pgi_health_worker_status) {
    using namespace pgi::pg;
    WorkerShared copy;
    memset(&copy, 0, sizeof(copy));
    const bool preloaded = worker_shared != nullptr;
    if (preloaded) {
        SpinLockAcquire(&worker_shared->mutex);
        copy = *worker_shared;
        SpinLockRelease(&worker_shared->mutex);
    }
    const bool ran = copy.last_round_at != 0;
    const char *state = !preloaded ? "off" : copy.pid == 0 ? "stopped" : state_name(copy.state);
    Datum values[9] = {};
    bool nulls[9] = {};
    values[0] = Int32GetDatum(copy.pid);
    nulls[0] = copy.pid == 0;
    values[1] = preloaded ? text_datum(setting_database) : 0;
    nulls[1] = !preloaded;
    values[2] = text_datum(state);
    values[3] = Int64GetDatum(copy.rounds);
    nulls[3] = !preloaded;
    values[4] = TimestampTzGetDatum(copy.last_round_at);
    values[5] = Float8GetDatum(copy.last_round_ms);
    values[6] = Int32GetDatum(copy.last_round_services);
    values[7] = Int32GetDatum(copy.last_round_failed);
    nulls[4] = nulls[5] = nulls[6] = nulls[7] = !ran;
    values[8] = copy.last_error[0] ? text_datum(copy.last_error) : 0;
    nulls[8] = copy.last_error[0] == '\0';
    return composite_datum(fcinfo, values, nulls);
}
