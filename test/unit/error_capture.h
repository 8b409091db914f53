// Captures the pgi::Error a call throws, so unit tests can assert its SQLSTATE, message, hint and
// detail in one place.
#pragma once

#include <gtest/gtest.h>
#include <string>
#include <utility>

#include "error.h"

// A call that throws nothing fails the test here, where the output names the cause, rather than
// at whichever assertion first reads the empty error.
template <typename F>
pgi::Error error_of(F &&f) {
    try {
        f();
    } catch (const pgi::Error &e) {
        return e;
    }
    ADD_FAILURE() << "no pgi::Error thrown";
    return pgi::Error("", "");
}

// The same error as plain strings, for suites that compare the fields with std::string.
struct Failure {
    std::string sqlstate;
    std::string message;
    std::string hint;
    std::string detail;
};

template <typename F>
Failure failure_of(F &&f) {
    const pgi::Error e = error_of(std::forward<F>(f));
    return {e.sqlstate(), e.what(), e.hint(), e.detail()};
}
