// Per-key rate limits of the gateway. Three token buckets, one algorithm:
//   requests per minute: holds `burst` requests (default: requests_per_minute), refilled at
//                        requests_per_minute / 60 per second;
//   requests per hour:   holds requests_per_hour, refilled at requests_per_hour / 3600 per second;
//   tokens per hour:     holds tokens_per_hour, refilled likewise. A request needs a budget left
//                        (> 0) to be admitted; its tokens are charged when the upstream has said
//                        how many it used, so the last request may overdraw the budget and the
//                        key waits until the debt is refilled.
// Continuous refill (as OpenAI's limits behave) rather than fixed windows: there is no window
// boundary at which twice the limit gets through.
//
// Plain structs and pure functions over them: the host keeps the states in shared memory (a
// FixedTable of LimiterEntry) and serialises calls with its own lock.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "shared_table.h"

namespace pgi::governance {

// The limits of one access key; 0 means no limit.
struct Limits {
    int64_t requests_per_minute = 0;
    int64_t burst = 0;  // 0: requests_per_minute
    int64_t requests_per_hour = 0;
    int64_t tokens_per_hour = 0;

    bool any() const {
        return requests_per_minute > 0 || requests_per_hour > 0 || tokens_per_hour > 0;
    }
};

// What a bucket is: it holds up to capacity units and gains `rate` units every period_us.
struct BucketSpec {
    int64_t capacity;
    int64_t rate;
    int64_t period_us;
};

// A bucket's state. The refill is exact integer arithmetic: `carry` keeps the part of a unit
// earned but not yet whole, so a bucket never drifts however often it is looked at.
struct Bucket {
    int64_t level;       // whole units; below zero after a charge larger than what was left
    int64_t updated_us;  // the monotonic time level is true at
    int64_t carry;       // in [0, period_us): unit fractions, in units of 1/period_us
    bool live;           // false: never used (starts full)
};

// Brings the bucket up to now_us (starting it full if it was never used, and clamping it to a
// capacity that shrank).
void refill(Bucket &b, const BucketSpec &spec, int64_t now_us);
// Microseconds until a refilled bucket holds at least `level` units (0 if it does).
int64_t time_until(const Bucket &b, const BucketSpec &spec, int64_t level);

// The three buckets of one key.
struct KeyBuckets {
    Bucket minute, hour, tokens;
    int64_t full_at_us;  // when every bucket is full again: the state is then worth nothing
};

enum class Refusal : int { kNone, kRequestsPerMinute, kRequestsPerHour, kTokensPerHour };

// One limit as the x-ratelimit-* headers show it.
struct Quota {
    int64_t limit = 0;
    int64_t remaining = 0;
    int64_t reset_us = 0;  // until the bucket is full again
};

struct Decision {
    bool allowed = true;
    Refusal refusal = Refusal::kNone;
    int64_t retry_after_us = 0;  // on refusal: until every limit would let the request in
    bool has_requests = false;   // requests: the tightest request limit (after this request)
    bool has_tokens = false;
    Quota requests, tokens;
};

// Admits one request (taking one unit from each request bucket) or refuses it (taking nothing).
Decision admit(KeyBuckets &k, const Limits &limits, int64_t now_us);
// Returns the unit an admitted request took from each request bucket: the request was refused
// by other limits it is also under (its tenant's), so it used nothing.
void give_back(KeyBuckets &k, const Limits &limits);
// One decision for a request under two sets of limits (a key's and its tenant's), each already
// decided: refused when either refused (the longer wait), and the headers of whichever set is
// closer to refusing.
Decision tighter(const Decision &a, const Decision &b);
// Charges a finished request's tokens to the token bucket (no-op without a token limit).
void charge_tokens(KeyBuckets &k, const Limits &limits, int64_t tokens, int64_t now_us);
// True when every bucket is full again: forgetting the state changes nothing.
inline bool idle(const KeyBuckets &k, int64_t now_us) {
    return now_us >= k.full_at_us;
}

// A duration as OpenAI's x-ratelimit-reset-* headers write it (Go's time.Duration style),
// rounded up: "0s", "20ms", "12s", "1m0s", "1h2m3s".
std::string format_reset(int64_t us);
// The x-ratelimit-* headers of a decision, and retry-after (whole seconds, rounded up) on a
// refusal.
void append_rate_limit_headers(const Decision &d,
                               std::vector<std::pair<std::string, std::string>> &headers);
// The 429's message, like OpenAI's: which limit of which key, and when to try again.
// `tenant`: the limits that refused are those the key's tenant shares with its other keys;
// `user`: those of the key's end user.
std::string refusal_message(const Decision &d, const Limits &limits, const std::string &key_name,
                            const std::string &tenant = {}, const std::string &user = {});

// ---- Limits held for the whole cluster (inference.limits_scope = 'cluster') ----
// A standby has no buckets of its own for a key: it spends blocks of the key's limits that the
// primary lends it from the primary's buckets, and asks for another block as one runs low. The
// cluster then admits at most each limit plus, per standby, what it holds unspent.

// What a standby may still spend of a key's limits.
struct Lease {
    int64_t requests;  // requests it may still admit (unused without a request limit)
    int64_t tokens;    // tokens it may still charge; below zero after an overdraw, as a bucket
    bool granted;      // the primary has lent at least once
};

// On the primary: takes up to `requests` units from every request bucket (as many as the
// emptiest holds) and up to `tokens` from the token budget (what is left of it), as one
// admission takes one. Returns what it took: the block a standby may spend. Without a request
// limit the requests are lent in full, without a token limit the tokens.
Lease lend(KeyBuckets &k, const Limits &limits, int64_t requests, int64_t tokens, int64_t now_us);
// On a standby: admits one request against its lease, taking one request, or refuses it.
// Refused requests wait for the next block: retry_after_us is a guess of one second.
Decision admit_leased(Lease &lease, const Limits &limits);
// On a standby: charges a finished request's tokens to its lease.
void charge_leased(Lease &lease, const Limits &limits, int64_t tokens);
// Returns the request an admitted request took from a lease (see give_back).
void give_back_leased(Lease &lease, const Limits &limits);

// A key's state in the host's table, keyed by the key's name: rotating a key keeps its counters.
struct LimiterEntry {
    bool used;
    uint64_t hash;
    Name key;
    KeyBuckets buckets;
    Lease lease;            // a standby's, under cluster-wide limits
    int64_t lease_seen_us;  // when a listener last admitted against the lease
};
using LimiterTable = FixedTable<LimiterEntry>;

}  // namespace pgi::governance
