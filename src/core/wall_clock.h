// The wall clock as every part of the extension reads it: Unix time, for times that are stored
// (the ledger, the request log, key expiry) or compared across processes.
#pragma once

#include <chrono>
#include <cstdint>

namespace pgi {

inline int64_t unix_us() {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

inline int64_t unix_ms() {
    return unix_us() / 1000;
}

}  // namespace pgi
