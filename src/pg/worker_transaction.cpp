#include "worker_transaction.h"

extern "C" {
#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
}

#include <exception>
#include <optional>

namespace pgi::pg {

namespace {

// lock_timeout for this transaction only (SET LOCAL): it bounds every heavyweight lock wait of
// the body, whichever statement or catalog access takes the lock.
void set_local_lock_timeout(int ms) {
    std::string value = std::to_string(ms);
    (void)set_config_option("lock_timeout", value.c_str(), PGC_SUSET, PGC_S_SESSION,
                            GUC_ACTION_LOCAL, true, 0, false);
}

// What the caller sees after a failure: PostgreSQL's error as a pgi::Error, or the C++
// exception as it was.
struct Failure {
    std::optional<pgi::Error> error;
    std::exception_ptr other;
};

// Aborts whatever is open, as PostgreSQL's own error recovery would. Safe when nothing is open.
void abort_transaction(MemoryContext caller) {
    HOLD_INTERRUPTS();
    disable_timeout(STATEMENT_TIMEOUT, false);
    AbortCurrentTransaction();
    pgstat_report_activity(STATE_IDLE, nullptr);
    MemoryContextSwitchTo(caller);
    RESUME_INTERRUPTS();
}

}  // namespace

void run_in_transaction(const char *activity, const TransactionLimits &limits,
                        const std::function<void()> &body) {
    MemoryContext caller = CurrentMemoryContext;
    Failure failure;
    try {
        pg_guard_void([&]() {
            SetCurrentStatementStartTimestamp();
            StartTransactionCommand();
            PushActiveSnapshot(GetTransactionSnapshot());
            pgstat_report_activity(STATE_RUNNING, activity);
            if (limits.lock_timeout_ms > 0)
                set_local_lock_timeout(limits.lock_timeout_ms);
            // A background worker has no statement loop to arm statement_timeout; the timer
            // sends the same SIGINT, and the next CHECK_FOR_INTERRUPTS raises the usual error.
            if (limits.statement_timeout_ms > 0)
                enable_timeout_after(STATEMENT_TIMEOUT, limits.statement_timeout_ms);
        });
        body();
        pg_guard_void([&]() {
            disable_timeout(STATEMENT_TIMEOUT, false);
            PopActiveSnapshot();
            CommitTransactionCommand();
            pgstat_report_activity(STATE_IDLE, nullptr);
            MemoryContextSwitchTo(caller);
        });
        return;
    } catch (const PgError &e) {
        // The ErrorData lives in the transaction's memory: copy it before the abort frees it.
        try {
            failure.error = to_error(e);
        } catch (...) {
            failure.other = std::current_exception();
        }
    } catch (...) {
        failure.other = std::current_exception();
    }
    abort_transaction(caller);
    if (failure.error)
        throw *failure.error;
    std::rethrow_exception(failure.other);
}

}  // namespace pgi::pg
