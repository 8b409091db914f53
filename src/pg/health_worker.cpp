// The health-check worker and the probe-and-record steps it shares with
// inference.check_service().
//
// Each service is scheduled on its own: probed when its interval has passed since its last probe
// started and none of its probes is in flight, so an upstream that hangs until the timeout holds
// back no other service. Probes run in one curl-multi feed loop while no transaction is open;
// the service list is re-read in a short transaction at the interval or when the catalog
// changes, and results reach shared memory as each probe ends and the table in short batched
// transactions. A step that fails (an SPI error, a lock or statement timeout, a cancel) is logged
// and the worker carries on: run_in_transaction aborts the transaction from C++, which keeps the
// HTTP client and its connections instead of paying a restart and fresh handshakes.
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
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "breakers.h"
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

// Holds what the worker allocates outside transactions (mostly copies of errors); reset between
// probing sessions.
MemoryContext worker_cxt = nullptr;

void fill_probe_settings(probe::Settings &s) {
    s.timeout_ms = setting_health_check_timeout_ms;
    s.connect_timeout_ms = std::min(setting_connect_timeout_ms, setting_health_check_timeout_ms);
    s.max_concurrency = kMaxConcurrentProbes;
}

// Every transaction of the worker is short and bounded: a lock held by someone else (LOCK TABLE,
// VACUUM FULL) or a slow statement fails that step after these limits instead of stalling it.
constexpr TransactionLimits kTransactionLimits{1000, 10000};

void in_transaction(const char *activity, const std::function<void()> &body) {
    run_in_transaction(activity, kTransactionLimits, body);
}

// DROP EXTENSION and CREATE EXTENSION may come and go while the worker runs. The extension the
// worker last found, by oid: one created again has another.
Oid seen_extension = InvalidOid;

Oid extension_oid() {
    return pg_guard([]() { return get_extension_oid("pg_inference", true); });
}

bool extension_installed() {
    const ExtensionState state = extension_state("pg_inference health worker");
    seen_extension = state.installed ? state.installed->oid : InvalidOid;
    return state.ready;
}

// After a failed round: whether the extension it found was dropped (and maybe created again)
// since. A round that found it and then waited on its tables while DROP EXTENSION committed
// fails ("relation does not exist", or the lock timeout); that is the drop's doing, not a fault
// worth a warning.
bool dropped_meanwhile() {
    if (!OidIsValid(seen_extension))
        return false;
    Oid now = InvalidOid;
    try {
        in_transaction("pg_inference health check: looking for the extension",
                       [&]() { now = extension_oid(); });
    } catch (const std::exception &) {
        return false;  // unknown: the failure is reported as it is
    }
    return now != seen_extension;
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

void report_failure(const std::string &message, int sqlerrcode);

// When report_failure last ran: only a round that started after it clears last_error, so the
// error stays visible until a round has run entirely after it.
std::optional<std::chrono::steady_clock::time_point> last_failure_at;

// Table writes are batched: at most one transaction a second while probes run.
constexpr long kWriteEveryMs = 1000;

// Schedules each service on its own: a service is probed when its interval has passed since its
// last probe started and no probe of it is in flight, so a hung upstream holds back only its own
// service. Everything here runs on the worker's one thread, from the client's feed loop while
// probes are in flight and from the latch sleep otherwise.
//
// A round, for health_worker_status(): it starts when the service list is re-read at the
// interval (or when the extension appears) and ends once every service listed then has a result
// from a probe started since (a service deregistered meanwhile no longer counts).
class Scheduler {
  public:
    Scheduler() : seen_generation_(catalog_generation()) { fill_probe_settings(settings_); }

    // Read as each probe starts, so a reloaded timeout applies to the next probe.
    const probe::Settings &settings() const { return settings_; }
    bool idle() const { return flights_.empty(); }

    // One turn: reloads the configuration, re-reads the services when the interval has passed or
    // the catalog changed, writes the results not yet in the table when it is time, and returns
    // the probes to start now.
    std::vector<probe::FedProbe> tick() {
        if (ConfigReloadPending) {
            ConfigReloadPending = false;
            pg_guard_void([]() { ProcessConfigFile(PGC_SIGHUP); });
            fill_probe_settings(settings_);
        }
        const auto now = Clock::now();
        const auto interval = std::chrono::seconds(setting_health_check_interval_s);
        // A committed catalog change anywhere in the cluster (a registration, CREATE EXTENSION)
        // moves the generation, also when replayed on a standby; it is looked at on every turn,
        // at least every second.
        catalog_poll_replay();
        const uint64_t generation = catalog_generation();
        const bool interval_due = !last_read_ || now >= *last_read_ + interval;
        bool transacted = false;
        if (interval_due || generation != seen_generation_) {
            seen_generation_ = generation;
            transacted = true;
            guarded([&]() { read_services(now, interval_due); });
        }
        if (!unwritten_.empty() &&
            (flights_.empty() || now >= last_write_ + std::chrono::milliseconds(kWriteEveryMs))) {
            transacted = true;
            guarded([&]() { write_statuses(now); });
        }

        std::vector<probe::FedProbe> out;
        if (installed_) {
            for (auto &[name, s] : services_) {
                if (s.in_flight || (s.last_started && now < *s.last_started + interval))
                    continue;
                s.last_started = now;
                ServiceEndpoint endpoint;
                // An unset env variable or a changed cluster key is that service's failure only.
                try {
                    endpoint = endpoint_of(s.row);
                } catch (const pgi::Error &e) {
                    StatusRecord rec;
                    rec.status = HealthStatus::kFailed;
                    rec.message = std::string("API key unavailable: ") + e.what();
                    rec.checked_at = GetCurrentTimestamp();
                    publish(name, s, rec, now);
                    continue;
                }
                const size_t id = next_id_++;
                flights_[id] = Flight{name, now};
                s.in_flight = true;
                out.push_back({id, std::move(endpoint)});
            }
            set_state(flights_.empty() ? WorkerState::kSleeping : WorkerState::kChecking);
        }
        // A transaction leaves the activity idle; while probes wait, the worker shows as probing.
        const bool probing = !flights_.empty();
        if (transacted || probing != reported_probing_) {
            reported_probing_ = probing;
            pg_guard_void([&]() {
                if (probing)
                    pgstat_report_activity(STATE_RUNNING, "pg_inference health check: probing");
                else
                    pgstat_report_activity(STATE_IDLE, nullptr);
            });
        }
        return out;
    }

    // A probe's result: into shared memory at once, into the table with the next write.
    void done(size_t id, const probe::Result &result) {
        auto f = flights_.find(id);
        if (f == flights_.end())
            return;
        const Flight flight = f->second;
        flights_.erase(f);
        auto it = services_.find(flight.name);
        if (it == services_.end())
            return;  // deregistered, or the extension dropped, while it ran
        it->second.in_flight = false;
        publish(flight.name, it->second, record_of(result, GetCurrentTimestamp()), flight.started);
    }

    // After the feed loop was left by an exception: the client has dropped every transfer. Those
    // services are probed again at the next interval.
    void abandon_flights() {
        const auto now = Clock::now();
        for (const auto &f : flights_) {
            auto it = services_.find(f.second.name);
            if (it != services_.end()) {
                it->second.in_flight = false;
                it->second.last_started = now;
            }
        }
        flights_.clear();
        reported_probing_ = false;
    }

    // How long the idle worker may sleep: until the next service or re-read is due, and at most
    // a second, so catalog changes are noticed within one.
    long sleep_ms() const {
        const auto now = Clock::now();
        const auto interval = std::chrono::seconds(setting_health_check_interval_s);
        auto until = now + std::chrono::milliseconds(kCatalogPollMs);
        if (last_read_)
            until = std::min(until, *last_read_ + interval);
        if (installed_)
            for (const auto &[name, s] : services_)
                if (!s.in_flight)
                    until = std::min(until, s.last_started ? *s.last_started + interval : now);
        if (!unwritten_.empty())
            until = std::min(until, last_write_ + std::chrono::milliseconds(kWriteEveryMs));
        const long ms =
            static_cast<long>(std::chrono::ceil<std::chrono::milliseconds>(until - now).count());
        return std::max(1L, ms);
    }

  private:
    struct Service {
        ServiceRow row;
        std::optional<Clock::time_point> last_started;  // none: probe at once
        bool in_flight = false;
        bool failed = false;  // the last result
    };
    struct Flight {
        std::string name;
        Clock::time_point started;
    };

    // A failed read or write (a lock or statement timeout, an SPI error, a cancel) is logged
    // like a failed round; probes in flight carry on, and the step is tried again later.
    template <typename F>
    void guarded(F &&f) {
        std::string failure;
        int code = ERRCODE_INTERNAL_ERROR;
        try {
            f();
            return;
        } catch (const PgError &e) {
            failure = e.what();
            code = e.data()->sqlerrcode;
        } catch (const pgi::Error &e) {
            failure = e.what();
            code = sqlstate_code(e.sqlstate());
        }
        report_failure(failure, code);
    }

    void read_services(Clock::time_point now, bool interval_due) {
        // Set first: a read that fails is tried again at the next interval, not on every turn.
        last_read_ = now;
        std::vector<ServiceRow> rows;
        std::unordered_set<std::string> unchecked;
        bool installed = false;
        in_transaction("pg_inference health check: reading services", [&]() {
            installed = extension_installed();
            if (!installed)
                return;
            rows = all_services();
            for (const auto &r : rows)
                if (!status_get(r.name).checked_at.has_value())
                    unchecked.insert(r.name);
        });
        if (!installed) {
            installed_ = false;
            services_.clear();
            round_open_ = false;
            set_state(WorkerState::kNoExtension);
            pg_guard_void([]() {
                ereport(DEBUG1,
                        (errmsg("pg_inference health check: extension not installed in database "
                                "\"%s\"; checking again when it is created",
                                setting_database)));
            });
            return;
        }
        const bool appeared = !installed_;
        installed_ = true;
        std::map<std::string, Service> next;
        for (auto &row : rows) {
            auto it = services_.find(row.name);
            Service s = it != services_.end() ? std::move(it->second) : Service{};
            // Never checked since the server started (a new registration, one changed with
            // validate => false): probed at once rather than at its interval.
            if (unchecked.count(row.name) && !s.in_flight)
                s.last_started.reset();
            const std::string name = row.name;
            s.row = std::move(row);
            next.emplace(name, std::move(s));
        }
        services_ = std::move(next);
        for (auto it = round_left_.begin(); it != round_left_.end();)
            it = services_.count(*it) ? std::next(it) : round_left_.erase(it);
        if (appeared || (interval_due && !round_open_)) {
            round_open_ = true;
            round_started_ = now;
            round_started_at_ = GetCurrentTimestamp();
            round_left_.clear();
            for (const auto &[name, s] : services_)
                round_left_.insert(name);
        }
        if (round_open_ && round_left_.empty())
            end_round();
    }

    void write_statuses(Clock::time_point now) {
        last_write_ = now;
        std::vector<ServiceRow> rows;
        std::vector<StatusRecord> records;
        for (const auto &[name, u] : unwritten_) {
            rows.push_back(u.first);
            records.push_back(u.second);
        }
        in_transaction("pg_inference health check: recording statuses", [&]() {
            // The extension may have been dropped while the probes ran; its services went too.
            if (extension_installed())
                record_statuses(rows, records);
            else
                for (const auto &r : rows)
                    status_forget(r.name);
        });
        unwritten_.clear();
    }

    void publish(const std::string &name, Service &s, const StatusRecord &rec,
                 Clock::time_point started) {
        status_put(name, rec);
        unwritten_[name] = {s.row, rec};
        s.failed = rec.status == HealthStatus::kFailed;
        // Requests through routes skip a service found down without failing on it first.
        if (s.failed)
            breaker_mark_failed(name);
        if (round_open_ && started >= round_started_ && round_left_.erase(name) &&
            round_left_.empty())
            end_round();
    }

    void end_round() {
        round_open_ = false;
        const double ms =
            std::chrono::duration<double, std::milli>(Clock::now() - round_started_).count();
        const int failed = static_cast<int>(std::count_if(
            services_.begin(), services_.end(), [](const auto &p) { return p.second.failed; }));
        const int services = static_cast<int>(services_.size());
        const bool clean = !last_failure_at || *last_failure_at < round_started_;
        update_shared([&](WorkerShared &s) {
            s.rounds++;
            s.last_round_at = round_started_at_;
            s.last_round_ms = ms;
            s.last_round_services = services;
            s.last_round_failed = failed;
            if (clean)
                s.last_error[0] = '\0';
        });
        pg_guard_void([&]() {
            ereport(DEBUG1, (errmsg("pg_inference health check: %d services in %.0f ms (%d failed)",
                                    services, ms, failed)));
        });
    }

    probe::Settings settings_;
    uint64_t seen_generation_;
    std::optional<Clock::time_point> last_read_;  // none: read at once
    Clock::time_point last_write_;
    bool installed_ = false;
    bool reported_probing_ = false;
    std::map<std::string, Service> services_;
    std::unordered_map<size_t, Flight> flights_;
    size_t next_id_ = 0;
    std::map<std::string, std::pair<ServiceRow, StatusRecord>> unwritten_;
    bool round_open_ = false;
    Clock::time_point round_started_;
    TimestampTz round_started_at_ = 0;
    std::set<std::string> round_left_;
};

// After a failure (its transaction, if any, already aborted by run_in_transaction): a log line
// and last_error, unless the extension was dropped meanwhile. The worker carries on.
void report_failure(const std::string &message, int sqlerrcode) {
    last_failure_at = Clock::now();
    HOLD_INTERRUPTS();
    pgstat_report_activity(STATE_IDLE, nullptr);
    MemoryContextSwitchTo(worker_cxt);
    RESUME_INTERRUPTS();
    if (dropped_meanwhile()) {
        pg_guard_void([&]() {
            ereport(DEBUG1, (errmsg("pg_inference health check stopped: the extension was "
                                    "dropped meanwhile (%s)",
                                    message.c_str())));
        });
        return;
    }
    update_shared([&](WorkerShared &s) { strlcpy(s.last_error, message.c_str(), kErrorLen); });
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
    // interval when the interval is shorter than the upstreams' keep-alive.
    http::Client client;
    Scheduler scheduler;

    for (;;) {
        bool failed = false;
        std::string failure;
        int code = ERRCODE_INTERNAL_ERROR;
        try {
            MemoryContextReset(worker_cxt);
            std::vector<probe::FedProbe> first = scheduler.tick();
            if (first.empty() && scheduler.idle()) {
                wait_on_latch(scheduler.sleep_ms());
                continue;
            }
            // No transaction is open while the network is waited on; the wait hook keeps
            // SIGTERM, cancellation and barriers working while a probe hangs until its timeout.
            // The session lasts while any probe is in flight; each turn starts what is due.
            bool handed = false;
            probe::probe_feed(
                client,
                [&](std::vector<probe::FedProbe> &out) {
                    if (!handed) {
                        handed = true;
                        out = std::move(first);
                    } else {
                        out = scheduler.tick();
                    }
                    return !scheduler.idle();
                },
                scheduler.settings(), check_for_interrupts,
                [&](size_t id, const probe::Result &r) { scheduler.done(id, r); });
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
        if (failed) {
            scheduler.abandon_flights();
            report_failure(failure, code);
        }
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
    for (size_t i = 0; i < names.size(); i++)
        if (records[i].status == HealthStatus::kFailed)
            breaker_mark_failed(names[i]);
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

    const std::string failure = run_worker_loop([]() { worker_loop(); });
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
