#include "transaction_steps.h"

namespace pgi {

void run_steps(TransactionSteps &steps, const std::function<void()> &body) {
    std::exception_ptr failure;
    try {
        steps.begin();
        body();
        steps.commit();
        return;
    } catch (...) {
        failure = steps.capture();
    }
    steps.abort();
    std::rethrow_exception(failure);
}

}  // namespace pgi
