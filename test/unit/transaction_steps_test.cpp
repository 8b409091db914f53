// The order of a worker transaction's steps: a failure is copied out before the abort frees the
// transaction's memory, the abort runs once, and the caller gets the copy.
#include "transaction_steps.h"

#include <gtest/gtest.h>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "error.h"

namespace pgi {
namespace {

// An error as the database reports it: a pointer into the transaction's memory.
struct ErrorInTransaction : std::exception {
    const std::string *message;
    explicit ErrorInTransaction(const std::string *m) : message(m) {}
};

// Steps whose "transaction memory" is a string that abort() destroys, as an aborted
// transaction's memory context is freed.
class FakeSteps : public TransactionSteps {
  public:
    std::vector<std::string> log;
    std::unique_ptr<std::string> memory;
    bool fail_begin = false, fail_commit = false;

    void begin() override {
        log.push_back("begin");
        memory = std::make_unique<std::string>("lock timeout on \"services\"");
        if (fail_begin)
            throw ErrorInTransaction(memory.get());
    }
    void commit() override {
        log.push_back("commit");
        if (fail_commit)
            throw ErrorInTransaction(memory.get());
        memory.reset();
    }
    void abort() noexcept override {
        log.push_back("abort");
        memory.reset();  // the error's text goes with it
    }
    std::exception_ptr capture() noexcept override {
        log.push_back("capture");
        try {
            throw;
        } catch (const ErrorInTransaction &e) {
            // Valid only now, before abort().
            return std::make_exception_ptr(Error("55P03", *e.message));
        } catch (...) {
            return std::current_exception();
        }
    }
};

std::string message_of(const std::function<void()> &f) {
    try {
        f();
    } catch (const Error &e) {
        return e.what();
    }
    return "(no error)";
}

TEST(TransactionSteps, CommitsWhenTheBodySucceeds) {
    FakeSteps steps;
    int ran = 0;
    run_steps(steps, [&]() { ran++; });
    EXPECT_EQ(ran, 1);
    EXPECT_EQ(steps.log, (std::vector<std::string>{"begin", "commit"}));
}

TEST(TransactionSteps, ABodyErrorIsCopiedBeforeTheAbortFreesIt) {
    FakeSteps steps;
    std::string message = message_of(
        [&]() { run_steps(steps, [&]() { throw ErrorInTransaction(steps.memory.get()); }); });
    EXPECT_EQ(message, "lock timeout on \"services\"");
    EXPECT_EQ(steps.memory, nullptr);
    EXPECT_EQ(steps.log, (std::vector<std::string>{"begin", "capture", "abort"}));
}

TEST(TransactionSteps, FailuresToBeginOrCommitAbortToo) {
    FakeSteps at_begin;
    at_begin.fail_begin = true;
    EXPECT_EQ(message_of([&]() { run_steps(at_begin, []() {}); }), "lock timeout on \"services\"");
    EXPECT_EQ(at_begin.log, (std::vector<std::string>{"begin", "capture", "abort"}));

    FakeSteps at_commit;
    at_commit.fail_commit = true;
    EXPECT_EQ(message_of([&]() { run_steps(at_commit, []() {}); }), "lock timeout on \"services\"");
    EXPECT_EQ(at_commit.log, (std::vector<std::string>{"begin", "commit", "capture", "abort"}));
}

TEST(TransactionSteps, OtherExceptionsPassThroughAfterTheAbort) {
    FakeSteps steps;
    EXPECT_THROW(run_steps(steps, []() { throw std::bad_alloc(); }), std::bad_alloc);
    EXPECT_EQ(steps.log, (std::vector<std::string>{"begin", "capture", "abort"}));
    FakeSteps again;
    EXPECT_THROW(run_steps(again, []() { throw Interrupted(); }), Interrupted);
    EXPECT_EQ(again.log.back(), "abort");
}

}  // namespace
}  // namespace pgi
