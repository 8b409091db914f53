// The usage writer: a background worker that moves the gateway's usage counters from shared
// memory to inference.usage_ledger every inference.gateway_usage_flush_interval, or at once when
// a listener finds the counters filling up; on a hot standby, to the primary's ledger, and under
// cluster-wide limits it also borrows the standby's blocks of them. It serves no HTTP, so its
// waits on the database (a locked ledger or key row, a commit waiting for a synchronous standby,
// the primary) delay no caller.
#include "usage_writer.h"

#include "cpp_wall.h"

extern "C" {
#include "access/xlog.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"

PGDLLEXPORT void pgi_usage_writer_main(Datum arg);
}

#include <chrono>

#include "budgets.h"
#include "cluster_limits.h"
#include "governance.h"
#include "request_log.h"
#include "settings.h"
#include "worker_connection.h"

namespace pgi::pg {

namespace {

using Clock = std::chrono::steady_clock;

// How often a standby's writer looks whether it was promoted.
constexpr long kRecoveryWaitMs = 1000;
// How soon a standby's writer tries again to top up leases.
constexpr long kLeaseRetryMs = 100;

// Tops up the leases; a failure (the primary away) is logged at most every 10 s.
void top_up(UsageWriterState &state) {
    try {
        top_up_leases();
    } catch (const std::exception &e) {
        auto now =
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch())
                .count();
        if (now - state.last_lease_log_ms < 10000)
            return;
        state.last_lease_log_ms = now;
        std::string msg = e.what();
        pg_guard_void([&]() {
            ereport(LOG,
                    (errmsg("pg_inference usage writer: could not borrow limits: %s", msg.c_str()),
                     errdetail("Keys with limits are served from the blocks held.")));
        });
    }
}

void writer_loop() {
    // PostgreSQL errors caught in one turn are copied here; reset every turn.
    MemoryContext turn_cxt =
        AllocSetContextCreate(TopMemoryContext, "pg_inference usage writer", ALLOCSET_SMALL_SIZES);
    MemoryContextSwitchTo(turn_cxt);
    usage_writer_attach();
    UsageWriterState state;
    Clock::time_point last_flush = Clock::now();
    bool in_recovery = pg_guard([]() { return RecoveryInProgress(); });
    for (;;) {
        MemoryContextReset(turn_cxt);
        try {
            bool reloaded = false;
            pg_guard_void([&]() {
                CHECK_FOR_INTERRUPTS();
                if (ConfigReloadPending) {
                    ConfigReloadPending = false;
                    ProcessConfigFile(PGC_SIGHUP);
                    reloaded = true;
                }
            });
            // Budget alerts go out as soon as a listener queues one (it sets the latch), and
            // the request log's rows as soon as an eighth of its ring is used.
            send_budget_alerts();
            write_request_log(reloaded);
            // A standby under cluster-wide limits keeps the blocks its listeners spend topped
            // up: a listener that runs low wakes this loop.
            if (limits_leased())
                top_up(state);
            // Measured from the last flush with the interval in force now, so that a reload
            // applies at once. The latch alone (a reload sets it too) flushes nothing: a
            // listener asks for an early flush through shared memory.
            auto due = last_flush + std::chrono::milliseconds(usage_flush_interval_ms());
            // A standby just promoted records what it holds in its own ledger at once, rather
            // than at the end of an interval begun while it had a primary.
            const bool promoted = in_recovery && !pg_guard([]() { return RecoveryInProgress(); });
            if (promoted)
                in_recovery = false;
            if (Clock::now() < due && !usage_flush_requested() && !promoted) {
                long wait_ms =
                    std::chrono::ceil<std::chrono::milliseconds>(due - Clock::now()).count();
                // During recovery the wait is cut to a second, so that a promotion is noticed,
                // and for leases to a tenth, so that a failed top-up is tried again soon.
                if (in_recovery)
                    wait_ms =
                        std::min<long>(wait_ms, limits_leased() ? kLeaseRetryMs : kRecoveryWaitMs);
                pg_guard_void([&]() {
                    (void)WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
                                    std::max<long>(wait_ms, 1), PG_WAIT_EXTENSION);
                    ResetLatch(MyLatch);
                });
                continue;
            }
            last_flush = Clock::now();
            usage_writer_flush(state);
        } catch (const std::exception &e) {
            // A cancel (pg_cancel_backend) or an error outside a flush: carry on. A flush that
            // was cancelled left its counts in shared memory for the next one.
            int level = is_cancel(e) ? DEBUG1 : LOG;
            std::string msg = e.what();
            pg_guard_void(
                [&]() { ereport(level, (errmsg("pg_inference usage writer: %s", msg.c_str()))); });
        }
    }
}

}  // namespace

void usage_writer_register() {
    // On a hot standby too: it sends the standby's counts to the primary's ledger.
    worker_register("pgi_usage_writer_main", "pg_inference usage writer",
                    "pg_inference usage writer", true);
}

}  // namespace pgi::pg

void pgi_usage_writer_main(Datum) {
    using namespace pgi::pg;
    pqsignal(SIGHUP, SignalHandlerForConfigReload);
    pqsignal(SIGTERM, die);
    BackgroundWorkerUnblockSignals();
    worker_connect("pg_inference usage writer");
    const std::string failure = run_worker_loop([]() { writer_loop(); });
    // Only a failure outside the loop's turns gets here. Exit code 1: the postmaster restarts it.
    ereport(FATAL, (errmsg("pg_inference usage writer stopped: %s", failure.c_str())));
}
