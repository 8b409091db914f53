// The one way a background worker runs a transaction. Every worker (health checks, gateway
// listeners, the usage writer) goes through here, so each gets the same guarantees:
//  - a transaction and a snapshot of its own, reported in pg_stat_activity;
//  - a bounded wait: lock_timeout for heavyweight locks (a LOCK TABLE, a VACUUM FULL, a row lock)
//    and a statement timeout for the whole body, so no worker waits on the database for longer
//    than its caller can afford;
//  - on failure, the error is copied into C++ memory *before* the abort frees the transaction's
//    memory, and comes out as a pgi::Error with the original SQLSTATE, message, detail and hint.
#pragma once

#include <functional>

#include "cpp_wall.h"

namespace pgi::pg {

struct TransactionLimits {
    int lock_timeout_ms = 0;       // 0: the server's lock_timeout
    int statement_timeout_ms = 0;  // 0: no deadline of our own
};

// Runs body in a transaction of its own and commits. When the start, body or commit fails, the
// transaction is aborted and the error thrown as pgi::Error. Interrupts that end the process
// (SIGTERM, postmaster death) end it as usual. The caller's memory context is current again
// when this returns or throws.
void run_in_transaction(const char *activity, const TransactionLimits &limits,
                        const std::function<void()> &body);

}  // namespace pgi::pg
