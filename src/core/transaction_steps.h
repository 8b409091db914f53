// The order of a worker's transaction, apart from the database that runs it. The host supplies
// the steps (start, commit, abort, and a copy of a failure into memory of its own); run_steps
// fixes the order that keeps a failing transaction safe:
//   1. a failure is made self-contained (copied out of the transaction's memory) first,
//   2. then the transaction is aborted, exactly once, which may free that memory,
//   3. then the copy is thrown.
// Reading an error after the abort had freed it crashed a worker once; this order is why it
// cannot again, and it is unit-tested here without a database.
#pragma once

#include <exception>
#include <functional>

namespace pgi {

class TransactionSteps {
  public:
    virtual ~TransactionSteps() = default;
    virtual void begin() = 0;
    virtual void commit() = 0;
    // Must not throw: it runs while a failure is being handled.
    virtual void abort() noexcept = 0;
    // Called inside a catch handler, before abort(): returns the failure in flight as an
    // exception that refers to no memory the abort frees.
    virtual std::exception_ptr capture() noexcept = 0;
};

// Runs begin, body and commit; on a failure of any of them, capture, abort, then rethrow.
void run_steps(TransactionSteps &steps, const std::function<void()> &body);

}  // namespace pgi
