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

}  // namespace pgi
