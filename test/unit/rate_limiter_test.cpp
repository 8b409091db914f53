#include "rate_limiter.h"

#include <atomic>
#include <gtest/gtest.h>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace pgi::governance;

constexpr int64_t kSec = 1'000'000;
constexpr int64_t kT0 = 1'000 * kSec;  // an arbitrary monotonic start

Limits rpm(int64_t n, int64_t burst = 0) {
    Limits l;
    l.requests_per_minute = n;
    l.burst = burst;
    return l;
}

std::map<std::string, std::string> headers_of(const Decision &d) {
    std::vector<std::pair<std::string, std::string>> h;
    append_rate_limit_headers(d, h);
    std::map<std::string, std::string> out;
    for (auto &p : h)
        out[p.first] = p.second;
    return out;
}

int admitted(KeyBuckets &k, const Limits &l, int64_t now, int tries) {
    int n = 0;
    for (int i = 0; i < tries; i++)
        n += admit(k, l, now).allowed ? 1 : 0;
    return n;
}

TEST(Bucket, StartsFullAndRefillsExactly) {
    BucketSpec spec{7, 7, 60 * kSec};  // 7 per minute: 8.571428... s per unit
    Bucket b{};
    refill(b, spec, kT0);
    EXPECT_EQ(b.level, 7);
    b.level = 0;
    // Looked at every millisecond for a minute: exactly 7 units come back, no rounding drift.
    for (int64_t t = 1; t <= 60'000; t++)
        refill(b, spec, kT0 + t * 1000);
    EXPECT_EQ(b.level, 7);
    b.level = 0;
    int64_t start = b.updated_us;
    refill(b, spec, start + 8'571'428);
    EXPECT_EQ(b.level, 0);  // 8.571428 s earn 0.99999993 of a unit
    refill(b, spec, start + 8'571'429);
    EXPECT_EQ(b.level, 1);
}

TEST(Bucket, TimeUntilAccountsForTheCarry) {
    BucketSpec spec{5, 5, 60 * kSec};
    Bucket b{};
    refill(b, spec, kT0);
    b.level = 0;
    EXPECT_EQ(time_until(b, spec, 1), 12 * kSec);
    refill(b, spec, kT0 + 5 * kSec);
    EXPECT_EQ(time_until(b, spec, 1), 7 * kSec);
    EXPECT_EQ(time_until(b, spec, 5), 55 * kSec);
    EXPECT_EQ(time_until(b, spec, 0), 0);
}

TEST(Bucket, DebtAndShrinkingCapacity) {
    BucketSpec spec{100, 100, 3600 * kSec};
    Bucket b{};
    refill(b, spec, kT0);
    b.level = -20;
    EXPECT_EQ(time_until(b, spec, 1), 21 * 36 * kSec);
    refill(b, spec, kT0 + 3600 * kSec * 10);
    EXPECT_EQ(b.level, 100);
    BucketSpec smaller{10, 10, 3600 * kSec};
    refill(b, smaller, kT0 + 3600 * kSec * 10 + 1);
    EXPECT_EQ(b.level, 10);
}

TEST(Bucket, HugeBudgetsDoNotOverflow) {
    const int64_t big = 1'000'000'000'000'000'000;  // tokens per hour
    BucketSpec spec{big, big, 3600 * kSec};
    Bucket b{};
    refill(b, spec, kT0);
    b.level = 0;
    refill(b, spec, kT0 + kSec);  // 1e6 us * 1e18 needs 128 bits
    EXPECT_EQ(b.level, 277'777'777'777'777);
    EXPECT_EQ(b.carry, 2'800'000'000);  // 1e24 mod 3.6e9
    EXPECT_EQ(time_until(b, spec, big), 3599 * kSec);
}

// A key's and its tenant's limits: a request one set refuses takes nothing from the other.
TEST(RateLimiter, TenantLimitsBesideTheKeys) {
    Limits key;
    key.requests_per_minute = 10;
    Limits tenant;
    tenant.requests_per_minute = 3;
    tenant.tokens_per_hour = 1000;
    KeyBuckets k{}, t{};
    int allowed = 0;
    for (int i = 0; i < 5; i++) {
        Decision dk = admit(k, key, kT0);
        Decision dt = admit(t, tenant, kT0);
        if (dk.allowed && !dt.allowed)
            give_back(k, key);
        if (dt.allowed && !dk.allowed)
            give_back(t, tenant);
        Decision d = tighter(dk, dt);
        if (d.allowed) {
            allowed++;
            // The headers show the tenant's, which is closer to refusing.
            EXPECT_EQ(d.requests.limit, 3);
            EXPECT_TRUE(d.has_tokens);
        } else {
            EXPECT_EQ(d.refusal, Refusal::kRequestsPerMinute);
            EXPECT_EQ(d.retry_after_us, 20 * kSec);
        }
    }
    EXPECT_EQ(allowed, 3);
    // The key's refused requests were given back: it spent 3 of its 10.
    EXPECT_EQ(k.minute.level, 7);
    EXPECT_EQ(
        refusal_message(tighter(admit(k, key, kT0), admit(t, tenant, kT0)), tenant, "k", "acme"),
        "Rate limit reached for requests per minute (limit 3) on tenant \"acme\" of access "
        "key \"k\". Please try again in 20s.");
    // Giving back never fills a bucket past its capacity, and ignores token buckets.
    KeyBuckets full{};
    admit(full, key, kT0);
    give_back(full, key);
    give_back(full, key);
    EXPECT_EQ(full.minute.level, 10);
    Lease lease{2, 5, true};
    give_back_leased(lease, key);
    EXPECT_EQ(lease.requests, 3);
    give_back_leased(lease, Limits{});
    EXPECT_EQ(lease.requests, 3);
    // Both refusing: the longer wait.
    Decision a, b;
    a.allowed = b.allowed = false;
    a.retry_after_us = 5;
    b.retry_after_us = 9;
    b.refusal = Refusal::kTokensPerHour;
    EXPECT_EQ(tighter(a, b).refusal, Refusal::kTokensPerHour);
    EXPECT_EQ(tighter(b, a).retry_after_us, 9);
}

TEST(RateLimiter, AnUpstreamsHugeTokenCountSaturatesTheDebt) {
    // An upstream may report any count; charging it twice must not overflow the bucket.
    KeyBuckets k{};
    Limits l;
    l.tokens_per_hour = 100;
    charge_tokens(k, l, INT64_MAX, kT0);
    charge_tokens(k, l, INT64_MAX, kT0);
    EXPECT_EQ(k.tokens.level, INT64_MIN);
    Decision d = admit(k, l, kT0);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.retry_after_us, INT64_MAX);
    Lease s{1, -5, true};
    charge_leased(s, l, INT64_MAX);
    EXPECT_EQ(s.tokens, INT64_MIN);
}

TEST(Bucket, ClockGoingBackIsIgnored) {
    BucketSpec spec{5, 5, 60 * kSec};
    Bucket b{};
    refill(b, spec, kT0);
    b.level = 0;
    refill(b, spec, kT0 + 24 * kSec);
    EXPECT_EQ(b.level, 2);
    refill(b, spec, kT0 + 10 * kSec);  // another process read the clock a little earlier
    EXPECT_EQ(b.level, 2);
    EXPECT_EQ(b.updated_us, kT0 + 24 * kSec);
}

TEST(RateLimiter, RequestsPerMinuteWithDefaultBurst) {
    KeyBuckets k{};
    Limits l = rpm(5);
    for (int i = 0; i < 5; i++) {
        Decision d = admit(k, l, kT0);
        ASSERT_TRUE(d.allowed) << i;
        auto h = headers_of(d);
        EXPECT_EQ(h["x-ratelimit-limit-requests"], "5");
        EXPECT_EQ(h["x-ratelimit-remaining-requests"], std::to_string(4 - i));
        EXPECT_EQ(h.count("retry-after"), 0u);
        EXPECT_EQ(h.count("x-ratelimit-limit-tokens"), 0u);
    }
    Decision d = admit(k, l, kT0);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.refusal, Refusal::kRequestsPerMinute);
    EXPECT_EQ(d.retry_after_us, 12 * kSec);
    auto h = headers_of(d);
    EXPECT_EQ(h["retry-after"], "12");
    EXPECT_EQ(h["x-ratelimit-remaining-requests"], "0");
    EXPECT_EQ(h["x-ratelimit-reset-requests"], "1m0s");
    EXPECT_EQ(refusal_message(d, l, "k1"),
              "Rate limit reached for requests per minute (limit 5) on access key \"k1\". Please "
              "try again in 12s.");
    // A refusal takes nothing: one unit is back 12 s after the burst.
    EXPECT_FALSE(admit(k, l, kT0 + 12 * kSec - 1).allowed);
    EXPECT_TRUE(admit(k, l, kT0 + 12 * kSec).allowed);
    EXPECT_FALSE(admit(k, l, kT0 + 12 * kSec).allowed);
    // Full again a minute after the last unit was taken.
    EXPECT_EQ(admitted(k, l, kT0 + 72 * kSec, 10), 5);
}

TEST(RateLimiter, BurstSmallerAndLargerThanTheRate) {
    KeyBuckets k{};
    Limits l = rpm(60, 10);  // one per second, up to 10 at once
    EXPECT_EQ(admitted(k, l, kT0, 20), 10);
    EXPECT_EQ(admitted(k, l, kT0 + kSec, 20), 1);
    EXPECT_EQ(admitted(k, l, kT0 + 4 * kSec, 20), 3);
    Decision d = admit(k, l, kT0 + 4 * kSec);
    EXPECT_EQ(headers_of(d)["x-ratelimit-limit-requests"], "10");
    EXPECT_EQ(headers_of(d)["retry-after"], "1");

    KeyBuckets big{};
    Limits b = rpm(2, 6);  // bursts of 6, then one per 30 s
    EXPECT_EQ(admitted(big, b, kT0, 10), 6);
    EXPECT_EQ(admit(big, b, kT0).retry_after_us, 30 * kSec);
    EXPECT_EQ(admitted(big, b, kT0 + 60 * kSec, 10), 2);
}

TEST(RateLimiter, RequestsPerHour) {
    KeyBuckets k{};
    Limits l;
    l.requests_per_hour = 3;
    EXPECT_EQ(admitted(k, l, kT0, 5), 3);
    Decision d = admit(k, l, kT0 + 60 * kSec);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.refusal, Refusal::kRequestsPerHour);
    EXPECT_EQ(d.retry_after_us, 19 * 60 * kSec);  // a unit every 20 minutes
    auto h = headers_of(d);
    EXPECT_EQ(h["retry-after"], "1140");
    EXPECT_EQ(h["x-ratelimit-reset-requests"], "59m0s");
    EXPECT_TRUE(admit(k, l, kT0 + 20 * 60 * kSec).allowed);
}

TEST(RateLimiter, HeadersShowTheTightestRequestLimit) {
    KeyBuckets k{};
    Limits l = rpm(10);
    l.requests_per_hour = 4;
    Decision d = admit(k, l, kT0);
    auto h = headers_of(d);
    EXPECT_EQ(h["x-ratelimit-limit-requests"], "4");
    EXPECT_EQ(h["x-ratelimit-remaining-requests"], "3");
    EXPECT_EQ(admitted(k, l, kT0, 10), 3);
    d = admit(k, l, kT0);
    EXPECT_EQ(d.refusal, Refusal::kRequestsPerHour);
    EXPECT_EQ(headers_of(d)["x-ratelimit-limit-requests"], "4");
    // Both refuse after a minute of rest? No: the minute bucket is full again, the hour one not.
    d = admit(k, l, kT0 + 61 * kSec);
    EXPECT_EQ(d.refusal, Refusal::kRequestsPerHour);
}

TEST(RateLimiter, RefusalByOneLimitTakesFromNone) {
    KeyBuckets k{};
    Limits l = rpm(2);
    l.requests_per_hour = 100;
    EXPECT_EQ(admitted(k, l, kT0, 10), 2);
    // 8 refusals took nothing from the hour bucket.
    Limits hour_only;
    hour_only.requests_per_hour = 100;
    EXPECT_EQ(headers_of(admit(k, hour_only, kT0))["x-ratelimit-remaining-requests"], "97");
}

TEST(RateLimiter, TokensPerHour) {
    KeyBuckets k{};
    Limits l;
    l.tokens_per_hour = 100;
    Decision d = admit(k, l, kT0);
    ASSERT_TRUE(d.allowed);
    auto h = headers_of(d);
    EXPECT_EQ(h["x-ratelimit-limit-tokens"], "100");
    EXPECT_EQ(h["x-ratelimit-remaining-tokens"], "100");
    EXPECT_EQ(h["x-ratelimit-reset-tokens"], "0s");
    EXPECT_EQ(h.count("x-ratelimit-limit-requests"), 0u);
    charge_tokens(k, l, 60, kT0);
    d = admit(k, l, kT0);
    ASSERT_TRUE(d.allowed);  // 40 left: the next answer may take more than that
    EXPECT_EQ(headers_of(d)["x-ratelimit-remaining-tokens"], "40");
    EXPECT_EQ(headers_of(d)["x-ratelimit-reset-tokens"], "36m0s");
    charge_tokens(k, l, 60, kT0);
    d = admit(k, l, kT0);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.refusal, Refusal::kTokensPerHour);
    EXPECT_EQ(d.retry_after_us, 21 * 36 * kSec);  // the 20-token debt, then one token
    h = headers_of(d);
    EXPECT_EQ(h["x-ratelimit-remaining-tokens"], "0");
    EXPECT_EQ(h["retry-after"], "756");
    EXPECT_EQ(refusal_message(d, l, "k"),
              "Rate limit reached for tokens per hour (limit 100) on access key \"k\". Please try "
              "again in 12m36s.");
    EXPECT_TRUE(admit(k, l, kT0 + 756 * kSec).allowed);
    // Exactly spent is spent.
    KeyBuckets e{};
    charge_tokens(e, l, 100, kT0);
    EXPECT_FALSE(admit(e, l, kT0).allowed);
    // No limit, no charge.
    KeyBuckets none{};
    charge_tokens(none, Limits{}, 1000, kT0);
    EXPECT_FALSE(none.tokens.live);
}

TEST(RateLimiter, LongestWaitWinsWhenSeveralRefuse) {
    KeyBuckets k{};
    Limits l = rpm(1);
    l.tokens_per_hour = 10;
    ASSERT_TRUE(admit(k, l, kT0).allowed);
    charge_tokens(k, l, 10, kT0);
    Decision d = admit(k, l, kT0);
    EXPECT_EQ(d.refusal, Refusal::kTokensPerHour);  // 6 minutes beats the minute's 60 s
    EXPECT_EQ(d.retry_after_us, 360 * kSec);
    auto h = headers_of(d);
    EXPECT_EQ(h["x-ratelimit-remaining-requests"], "0");
    EXPECT_EQ(h["x-ratelimit-reset-requests"], "1m0s");
}

TEST(RateLimiter, IdleOnceEveryBucketIsFull) {
    KeyBuckets k{};
    Limits l = rpm(6);
    l.tokens_per_hour = 3600;
    admit(k, l, kT0);
    EXPECT_FALSE(idle(k, kT0));
    EXPECT_FALSE(idle(k, kT0 + 10 * kSec - 1));
    EXPECT_TRUE(idle(k, kT0 + 10 * kSec));
    charge_tokens(k, l, 100, kT0 + 10 * kSec);
    EXPECT_FALSE(idle(k, kT0 + 100 * kSec));
    EXPECT_TRUE(idle(k, kT0 + 110 * kSec));
}

TEST(RateLimiter, FormatReset) {
    EXPECT_EQ(format_reset(0), "0s");
    EXPECT_EQ(format_reset(-5), "0s");
    EXPECT_EQ(format_reset(1), "1ms");
    EXPECT_EQ(format_reset(20'000), "20ms");
    EXPECT_EQ(format_reset(999'001), "1s");
    EXPECT_EQ(format_reset(kSec), "1s");
    EXPECT_EQ(format_reset(12 * kSec), "12s");
    EXPECT_EQ(format_reset(59 * kSec + 1), "1m0s");
    EXPECT_EQ(format_reset(360 * kSec), "6m0s");
    EXPECT_EQ(format_reset(3723 * kSec), "1h2m3s");
}

// Several threads (standing in for listener processes) share one table under one lock, as the
// host does with its LWLock: at a frozen instant exactly `burst` requests get through, however
// they interleave.
TEST(RateLimiter, ExactAcrossThreads) {
    std::vector<char> memory(LimiterTable::bytes(64));
    LimiterTable::format(memory.data(), 64);
    LimiterTable table(memory.data());
    std::mutex mu;
    Limits l = rpm(1000, 250);
    std::atomic<int> allowed{0}, refused{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; t++) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 200; i++) {
                // Two keys: each has its own bucket.
                Name key = Name::of(i % 2 == 0 ? "even" : "odd");
                std::lock_guard<std::mutex> lock(mu);
                LimiterEntry *e = table.find_or_insert(key, hash_of(key));
                ASSERT_NE(e, nullptr);
                (admit(e->buckets, l, kT0).allowed ? allowed : refused)++;
                (void)t;
            }
        });
    }
    for (auto &th : threads)
        th.join();
    EXPECT_EQ(allowed.load(), 500);
    EXPECT_EQ(refused.load(), 8 * 200 - 500);
    EXPECT_EQ(table.count(), 2u);
}

TEST(LimiterTable, FullTableAndReclaim) {
    std::vector<char> memory(LimiterTable::bytes(16));
    LimiterTable::format(memory.data(), 16);
    LimiterTable table(memory.data());
    Limits l = rpm(60);
    for (int i = 0; i < 16; i++) {
        Name n = Name::of("key-" + std::to_string(i));
        LimiterEntry *e = table.find_or_insert(n, hash_of(n));
        ASSERT_NE(e, nullptr);
        admit(e->buckets, l, kT0 + i * kSec);  // key i is full again at T0 + (i + 1) s
    }
    Name extra = Name::of("extra");
    EXPECT_EQ(table.find_or_insert(extra, hash_of(extra)), nullptr);
    table.remove_if([&](const LimiterEntry &e) { return idle(e.buckets, kT0 + 8 * kSec); });
    EXPECT_EQ(table.count(), 8u);
    for (int i = 0; i < 16; i++) {
        Name n = Name::of("key-" + std::to_string(i));
        EXPECT_EQ(table.find(n, hash_of(n)) != nullptr, i >= 8) << i;
    }
    EXPECT_NE(table.find_or_insert(extra, hash_of(extra)), nullptr);
}

}  // namespace

namespace {

// ---- Leases: the cluster-wide limits of standbys ----

TEST(Lease, LendsWhatTheEmptiestRequestBucketHolds) {
    Limits l = rpm(100);
    l.requests_per_hour = 30;
    KeyBuckets k{};
    Lease a = lend(k, l, 10, 0, kT0);
    EXPECT_TRUE(a.granted);
    EXPECT_EQ(a.requests, 10);
    // The hour bucket has 20 left, the minute bucket 90: the primary's own requests and the
    // loans draw on the same buckets.
    for (int i = 0; i < 15; i++)
        ASSERT_TRUE(admit(k, l, kT0).allowed);
    Lease b = lend(k, l, 10, 0, kT0);
    EXPECT_EQ(b.requests, 5);
    EXPECT_EQ(lend(k, l, 10, 0, kT0).requests, 0);
    EXPECT_FALSE(admit(k, l, kT0).allowed);
}

TEST(Lease, TheClusterAdmitsTheLimitPlusWhatStandbysHoldUnspent) {
    // A primary and two standbys share 100 requests; every standby asks for blocks of 10 as
    // it runs out. Whatever the interleaving, the cluster admits 100 and the standbys' unspent
    // blocks bound the excess (here there is none: every block is spent).
    Limits l = rpm(100);
    KeyBuckets primary{};
    Lease standby[2] = {};
    int admitted = 0;
    for (int round = 0; round < 100; round++) {
        if (admit(primary, l, kT0).allowed)
            admitted++;
        for (Lease &s : standby) {
            if (s.requests < 1) {
                Lease more = lend(primary, l, 10, 0, kT0);
                s.requests += more.requests;
            }
            if (admit_leased(s, l).allowed)
                admitted++;
        }
    }
    EXPECT_EQ(admitted, 100);
}

TEST(Lease, AStandbyRefusesWhenItsBlockIsSpent) {
    Limits l = rpm(60);
    Lease s{2, 0, true};
    Decision d = admit_leased(s, l);
    EXPECT_TRUE(d.allowed);
    EXPECT_TRUE(d.has_requests);
    EXPECT_EQ(d.requests.limit, 60);
    EXPECT_EQ(d.requests.remaining, 1);
    EXPECT_TRUE(admit_leased(s, l).allowed);
    d = admit_leased(s, l);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.refusal, Refusal::kRequestsPerMinute);
    EXPECT_EQ(s.requests, 0);  // a refusal takes nothing
    EXPECT_EQ(refusal_message(d, l, "k"),
              "Rate limit reached for requests per minute (limit 60) on access key \"k\". "
              "Please try again in 1s.");
}

TEST(Lease, TokensAreLentFromTheBudgetAndOverdrawnLikeABucket) {
    Limits l;
    l.tokens_per_hour = 1000;
    KeyBuckets k{};
    // No request limit: requests are lent in full, tokens up to the budget.
    Lease s = lend(k, l, 10, 400, kT0);
    EXPECT_EQ(s.requests, 10);
    EXPECT_EQ(s.tokens, 400);
    EXPECT_TRUE(admit_leased(s, l).allowed);
    charge_leased(s, l, 500);  // the last request may overdraw
    EXPECT_EQ(s.tokens, -100);
    Decision d = admit_leased(s, l);
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.refusal, Refusal::kTokensPerHour);
    // 600 tokens are left on the primary; a block of requests without tokens is not lent.
    EXPECT_EQ(lend(k, l, 10, 1000, kT0).tokens, 600);
    Lease none = lend(k, l, 10, 1000, kT0);
    EXPECT_EQ(none.requests, 0);
    EXPECT_EQ(none.tokens, 0);
}

TEST(Lease, LoansRefillWithTheBuckets) {
    Limits l = rpm(60);  // one a second
    KeyBuckets k{};
    EXPECT_EQ(lend(k, l, 100, 0, kT0).requests, 60);
    EXPECT_EQ(lend(k, l, 100, 0, kT0).requests, 0);
    EXPECT_EQ(lend(k, l, 100, 0, kT0 + 5 * kSec).requests, 5);
    EXPECT_FALSE(idle(k, kT0 + 5 * kSec));
    EXPECT_TRUE(idle(k, kT0 + 66 * kSec));
}

}  // namespace
