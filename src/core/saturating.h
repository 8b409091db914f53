#pragma once

#include <limits>

namespace pgi {

// a + b for token counts, saturating at the ends of long long. Counts are whatever number an
// upstream wrote, and they are summed per answer, per stream and per key: a sum past the range
// would be undefined behaviour, and a count that large is wrong either way.
inline long long add_counts(long long a, long long b) {
    long long sum = 0;
    if (__builtin_add_overflow(a, b, &sum))
        return b > 0 ? std::numeric_limits<long long>::max()
                     : std::numeric_limits<long long>::min();
    return sum;
}

// The cached share of a prompt as an upstream reported it, within [0, prompt]: the ledger prices
// prompt - cached tokens at the input price, so a share outside the prompt would price tokens
// below zero.
inline long long cached_part(long long cached, long long prompt) {
    if (cached < 0 || prompt <= 0)
        return 0;
    return cached < prompt ? cached : prompt;
}

}  // namespace pgi
