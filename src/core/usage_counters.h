// The gateway's usage per (access key, service, UTC day): every finished request adds
// its counts to an entry of a table in shared memory, and one flush at a time takes the entries'
// counts out (leaving zeros) and adds them to inference.usage_ledger in one transaction. A flush
// that fails gives its counts back, so counting never depends on the database being writable.
// Requests that name an end user are also counted per (access key, end user, service, UTC day),
// in a second table of the same entries, flushed to the same ledger (inference.usage_by_user).
//
// Definitions (also in the README):
//   requests        every request that named a known service or came with a valid key,
//                   rate-limited and failed ones included
//   errors          answers with a status >= 400, except the gateway's own 429s
//   rate_limited    the gateway's own 429s (a key over its limits); an upstream's 429 passed on
//                   to the caller is an error
//   tokens          the upstream's usage; calls that report only a total (rerank) count it as
//                   prompt tokens, and a missing total is prompt + completion
//   cached_tokens   the prompt tokens the upstream read from its prompt cache (a part of
//                   prompt_tokens)
//   price           the version of the service's price in force when the request was answered
//                   (0: none); the ledger turns each version's tokens into cost, so the counters
//                   of two versions stay apart
//   day             the UTC day the request finished on
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "shared_table.h"
#include "translate.h"

namespace pgi::governance {

struct UsageCounts {
    int64_t requests;
    int64_t prompt_tokens;
    int64_t completion_tokens;
    int64_t total_tokens;
    int64_t cached_tokens;
    int64_t errors;
    int64_t rate_limited;
    int64_t last_access_ms;  // unix milliseconds of the latest request counted; 0: none

    void add(const UsageCounts &o);
    bool empty() const { return requests == 0; }
};

// The upstream's usage as the ledger counts it (see the definitions above).
struct Tokens {
    int64_t prompt = 0, completion = 0, total = 0, cached = 0;
};
Tokens tokens_of(const translate::Usage &usage);

// What one finished request adds.
UsageCounts usage_of(int status, bool rate_limited, const translate::Usage &usage, int64_t unix_ms);

// Days since 1970-01-01 (UTC) of a unix time in milliseconds.
int32_t utc_day(int64_t unix_ms);

// An end user's id: at most 256 bytes (the gateway refuses longer ones).
using EndUser = FixedText<257>;
// Whose usage: an access key's name (at most 63 bytes), or for SQL callers "role:" and a role's
// name (at most 63 bytes too).
using PayerName = FixedText<72>;
// What SQL callers' usage is counted under: "role:" and the calling role's name.
constexpr std::string_view kSqlPayerPrefix = "role:";

struct UsageKey {
    PayerName key;  // "" for requests without a key (inference.gateway_require_key = off)
    Name service;   // "" for requests that named no known service
    int32_t day;
    EndUser user;   // "" in the per-key counters; the end user in the per-user ones
    int64_t price;  // inference.price_store id, 0: unpriced

    bool operator==(const UsageKey &o) const {
        return day == o.day && price == o.price && key == o.key && service == o.service &&
               user == o.user;
    }
};

struct UsageEntry {
    bool used;
    uint64_t hash;
    UsageKey key;
    UsageCounts counts;
};
using UsageTable = FixedTable<UsageEntry>;

UsageKey usage_key(std::string_view key, std::string_view service, int64_t price, int32_t day,
                   std::string_view user = {});
uint64_t hash_of(const UsageKey &k);

// Adds counts to the entry of k (whose hash_of is hash: callers compute it before taking their
// lock). False when k is new and the table is full.
bool add_usage(UsageTable &table, const UsageKey &k, uint64_t hash, const UsageCounts &counts);
// Appends every entry with counts to out and zeroes them; entries that had nothing to give
// (no request since the previous take) are removed, so only pairs in use keep a slot. out must
// have room (capacity) for table.count() more entries: nothing is allocated, since the host
// calls this under its lock.
void take_usage(UsageTable &table, std::vector<UsageEntry> &out);

}  // namespace pgi::governance
