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

#include "transaction_steps.h"

namespace pgi::pg {

namespace {

// lock_timeout for this transaction only (SET LOCAL): it bounds every heavyweight lock wait of
// the body, whichever statement or catalog access takes the lock.
void set_local_lock_timeout(int ms) {
    std::string value = std::to_string(ms);
    (void)set_config_option("lock_timeout", value.c_str(), PGC_SUSET, PGC_S_SESSION,
                            GUC_ACTION_LOCAL, true, 0, false);
}

// PostgreSQL's side of the steps; the order is the core's (transaction_steps.h).
class WorkerSteps : public pgi::TransactionSteps {
  public:
    WorkerSteps(const char *activity, const TransactionLimits &limits)
        : activity_(activity), limits_(limits), caller_(CurrentMemoryContext) {}

    void begin() override {
        pg_guard_void([&]() {
            SetCurrentStatementStartTimestamp();
            StartTransactionCommand();
            PushActiveSnapshot(GetTransactionSnapshot());
            pgstat_report_activity(STATE_RUNNING, activity_);
            if (limits_.lock_timeout_ms > 0)
                set_local_lock_timeout(limits_.lock_timeout_ms);
            // A background worker has no statement loop to arm statement_timeout; the timer
            // sends the same SIGINT, and the next CHECK_FOR_INTERRUPTS raises the usual error.
            if (limits_.statement_timeout_ms > 0)
                enable_timeout_after(STATEMENT_TIMEOUT, limits_.statement_timeout_ms);
        });
    }

    void commit() override {
        pg_guard_void([&]() {
            disable_timeout(STATEMENT_TIMEOUT, false);
            PopActiveSnapshot();
            CommitTransactionCommand();
            pgstat_report_activity(STATE_IDLE, nullptr);
            MemoryContextSwitchTo(caller_);
        });
    }

    // What PostgreSQL's own error recovery would do; safe when nothing is open.
    void abort() noexcept override {
        HOLD_INTERRUPTS();
        disable_timeout(STATEMENT_TIMEOUT, false);
        AbortCurrentTransaction();
        pgstat_report_activity(STATE_IDLE, nullptr);
        MemoryContextSwitchTo(caller_);
        RESUME_INTERRUPTS();
    }

    // A PgError's ErrorData lives in the transaction's memory: it becomes a pgi::Error with
    // the same SQLSTATE, message, detail and hint. Anything else passes through as it is.
    std::exception_ptr capture() noexcept override {
        try {
            throw;
        } catch (const PgError &e) {
            try {
                return std::make_exception_ptr(to_error(e));
            } catch (...) {
                return std::current_exception();
            }
        } catch (...) {
            return std::current_exception();
        }
    }

  private:
    const char *activity_;
    TransactionLimits limits_;
    MemoryContext caller_;
};

}  // namespace

void run_in_transaction(const char *activity, const TransactionLimits &limits,
                        const std::function<void()> &body) {
    WorkerSteps steps(activity, limits);
    pgi::run_steps(steps, body);
}

}  // namespace pgi::pg
