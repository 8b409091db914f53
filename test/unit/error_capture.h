// Captures the pgi::Error a call throws, so unit tests can assert its SQLSTATE, message, hint and
// detail in one place.
#pragma once

#include <string>

#include "error.h"

struct Failure {
    std::string sqlstate;
    std::string message;
    std::string hint;
    std::string detail;
};

template <typename F>
Failure failure_of(F &&f) {
    try {
        f();
    } catch (const pgi::Error &e) {
        return {e.sqlstate(), e.what(), e.hint(), e.detail()};
    }
    return {"(none)", "(no error was thrown)", "", ""};
}
