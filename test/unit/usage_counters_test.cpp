#include "usage_counters.h"

#include <atomic>
#include <gtest/gtest.h>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace {

using namespace pgi::governance;
using pgi::translate::Usage;

Usage usage(long long p, long long c, long long t) {
    Usage u;
    u.prompt_tokens = p;
    u.completion_tokens = c;
    u.total_tokens = t;
    u.present = true;
    return u;
}

bool add(UsageTable &table, const UsageKey &k, const UsageCounts &c) {
    return add_usage(table, k, hash_of(k), c);
}

struct Table {
    explicit Table(uint32_t max) : memory(UsageTable::bytes(max)) {
        UsageTable::format(memory.data(), max);
    }
    UsageTable table() { return UsageTable(memory.data()); }
    std::vector<char> memory;
};

TEST(UsageCounters, Classification) {
    UsageCounts ok = usage_of(200, false, usage(3, 4, 7), 1000);
    EXPECT_EQ(ok.requests, 1);
    EXPECT_EQ(ok.prompt_tokens, 3);
    EXPECT_EQ(ok.completion_tokens, 4);
    EXPECT_EQ(ok.total_tokens, 7);
    EXPECT_EQ(ok.errors, 0);
    EXPECT_EQ(ok.rate_limited, 0);
    EXPECT_EQ(ok.last_access_ms, 1000);

    UsageCounts limited = usage_of(429, true, Usage(), 1);
    EXPECT_EQ(limited.errors, 0);
    EXPECT_EQ(limited.rate_limited, 1);
    // An upstream's 429, passed on, is an error like any other status >= 400.
    EXPECT_EQ(usage_of(429, false, Usage(), 1).errors, 1);
    EXPECT_EQ(usage_of(502, false, Usage(), 1).errors, 1);
    EXPECT_EQ(usage_of(499, false, Usage(), 1).errors, 1);
    EXPECT_EQ(usage_of(404, false, Usage(), 1).errors, 1);
    EXPECT_EQ(usage_of(302, false, Usage(), 1).errors, 0);
}

TEST(UsageCounters, TokenNormalisation) {
    Tokens t = tokens_of(usage(0, 0, 12));  // rerank: a total only
    EXPECT_EQ(t.prompt, 12);
    EXPECT_EQ(t.completion, 0);
    EXPECT_EQ(t.total, 12);
    t = tokens_of(usage(5, 6, 0));  // no total
    EXPECT_EQ(t.total, 11);
    t = tokens_of(usage(5, 0, 5));  // embeddings
    EXPECT_EQ(t.prompt, 5);
    EXPECT_EQ(t.total, 5);
    t = tokens_of(usage(-1, 2, 2));
    EXPECT_EQ(t.prompt, 0);
    Usage absent = usage(5, 6, 11);
    absent.present = false;
    EXPECT_EQ(tokens_of(absent).total, 0);
    // Whatever an upstream reports, sums saturate instead of overflowing.
    t = tokens_of(usage(INT64_MAX, INT64_MAX, 0));
    EXPECT_EQ(t.total, INT64_MAX);
    UsageCounts sum = usage_of(200, false, usage(INT64_MAX, 1, INT64_MAX), 10);
    sum.add(sum);
    EXPECT_EQ(sum.prompt_tokens, INT64_MAX);
    EXPECT_EQ(sum.total_tokens, INT64_MAX);
    EXPECT_EQ(sum.completion_tokens, 2);
}

TEST(UsageCounters, UtcDay) {
    EXPECT_EQ(utc_day(0), 0);
    EXPECT_EQ(utc_day(86'400'000 - 1), 0);
    EXPECT_EQ(utc_day(86'400'000), 1);
    EXPECT_EQ(utc_day(-1), -1);
    EXPECT_EQ(utc_day(1'735'689'600'000), 20089);  // 2025-01-01
}

TEST(UsageCounters, AddAndTake) {
    Table t(16);
    UsageTable table = t.table();
    UsageKey a = usage_key("alice", "gw-openai", 0, 20089);
    UsageKey b = usage_key("alice", "gw-claude", 0, 20089);
    UsageKey c = usage_key("alice", "gw-openai", 0, 20090);
    ASSERT_TRUE(add(table, a, usage_of(200, false, usage(1, 2, 3), 10)));
    ASSERT_TRUE(add(table, a, usage_of(500, false, Usage(), 30)));
    ASSERT_TRUE(add(table, a, usage_of(429, true, Usage(), 20)));
    ASSERT_TRUE(add(table, b, usage_of(200, false, usage(4, 5, 9), 5)));
    ASSERT_TRUE(add(table, c, usage_of(200, false, usage(1, 1, 2), 40)));
    EXPECT_EQ(table.count(), 3u);

    std::vector<UsageEntry> out;
    out.reserve(table.count());
    take_usage(table, out);
    ASSERT_EQ(out.size(), 3u);
    std::map<std::tuple<std::string, std::string, int>, UsageCounts> got;
    for (auto &e : out)
        got[{std::string(e.key.key.view()), std::string(e.key.service.view()), e.key.day}] =
            e.counts;
    UsageCounts &ga = got[{"alice", "gw-openai", 20089}];
    EXPECT_EQ(ga.requests, 3);
    EXPECT_EQ(ga.prompt_tokens, 1);
    EXPECT_EQ(ga.completion_tokens, 2);
    EXPECT_EQ(ga.total_tokens, 3);
    EXPECT_EQ(ga.errors, 1);
    EXPECT_EQ(ga.rate_limited, 1);
    EXPECT_EQ(ga.last_access_ms, 30);
    EXPECT_EQ((got[{"alice", "gw-claude", 20089}].total_tokens), 9);
    EXPECT_EQ((got[{"alice", "gw-openai", 20090}].requests), 1);

    // Taken counts are zero; pairs used again keep their slot, the others go at the next take.
    EXPECT_EQ(table.count(), 3u);
    add(table, a, usage_of(200, false, usage(1, 1, 2), 50));
    out.clear();
    take_usage(table, out);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].counts.requests, 1);
    EXPECT_EQ(table.count(), 1u);
    out.clear();
    take_usage(table, out);
    EXPECT_TRUE(out.empty());
    EXPECT_EQ(table.count(), 0u);
}

TEST(UsageCounters, CachedTokensArePartOfThePrompt) {
    Usage u = usage(100, 20, 120);
    u.cached_tokens = 60;
    UsageCounts c = usage_of(200, false, u, 1);
    EXPECT_EQ(c.prompt_tokens, 100);
    EXPECT_EQ(c.cached_tokens, 60);
    c.add(c);
    EXPECT_EQ(c.cached_tokens, 120);
    // A share outside the prompt would price tokens below zero: it is kept within it.
    u.cached_tokens = 500;
    EXPECT_EQ(tokens_of(u).cached, 100);
    u.cached_tokens = -5;
    EXPECT_EQ(tokens_of(u).cached, 0);
}

TEST(UsageCounters, EachPriceVersionKeepsItsOwnCounts) {
    Table t(16);
    UsageTable table = t.table();
    Usage u = usage(10, 5, 15);
    ASSERT_TRUE(add(table, usage_key("k", "s", 7, 1), usage_of(200, false, u, 1)));
    ASSERT_TRUE(add(table, usage_key("k", "s", 8, 1), usage_of(200, false, u, 2)));
    ASSERT_TRUE(add(table, usage_key("k", "s", 8, 1), usage_of(200, false, u, 3)));
    EXPECT_NE(hash_of(usage_key("k", "s", 7, 1)), hash_of(usage_key("k", "s", 8, 1)));
    std::vector<UsageEntry> out;
    out.reserve(table.count());
    take_usage(table, out);
    ASSERT_EQ(out.size(), 2u);
    std::map<int64_t, int64_t> requests;
    for (const UsageEntry &e : out)
        requests[e.key.price] = e.counts.requests;
    EXPECT_EQ(requests[7], 1);
    EXPECT_EQ(requests[8], 2);
}

TEST(UsageCounters, EndUsersHaveRowsOfTheirOwn) {
    Table t(16);
    UsageTable table = t.table();
    const std::string long_id(256, 'z');
    ASSERT_TRUE(
        add(table, usage_key("k", "s", 0, 1, "alice"), usage_of(200, false, usage(3, 0, 3), 5)));
    ASSERT_TRUE(add(table, usage_key("k", "s", 0, 1, "bob"), usage_of(429, true, Usage(), 6)));
    ASSERT_TRUE(
        add(table, usage_key("k", "s", 0, 1, "alice"), usage_of(200, false, usage(2, 0, 2), 7)));
    ASSERT_TRUE(add(table, usage_key("k", "s", 0, 1, long_id), usage_of(200, false, Usage(), 8)));
    // A user id is not a service name: ("k", "s", user "x") and ("k", "sx") differ.
    EXPECT_NE(hash_of(usage_key("k", "s", 0, 1, "x")), hash_of(usage_key("k", "sx", 0, 1)));
    std::vector<UsageEntry> out;
    out.reserve(table.count());
    take_usage(table, out);
    ASSERT_EQ(out.size(), 3u);
    std::map<std::string, UsageCounts> by_user;
    for (const UsageEntry &e : out)
        by_user[std::string(e.key.user.view())] = e.counts;
    EXPECT_EQ(by_user["alice"].requests, 2);
    EXPECT_EQ(by_user["alice"].total_tokens, 5);
    EXPECT_EQ(by_user["alice"].last_access_ms, 7);
    EXPECT_EQ(by_user["bob"].rate_limited, 1);
    EXPECT_EQ(by_user[long_id].requests, 1) << "a 256-byte id is kept whole";
}

TEST(UsageCounters, FullTableRefusesNewPairsOnly) {
    Table t(16);
    UsageTable table = t.table();
    for (int i = 0; i < 16; i++)
        ASSERT_TRUE(add(table, usage_key("k" + std::to_string(i), "s", 0, 1),
                        usage_of(200, false, Usage(), 1)));
    EXPECT_FALSE(add(table, usage_key("new", "s", 0, 1), usage_of(200, false, Usage(), 1)));
    EXPECT_TRUE(add(table, usage_key("k3", "s", 0, 1), usage_of(200, false, Usage(), 1)));
    EXPECT_FALSE(add(table, usage_key("", "", 0, 1), usage_of(200, false, Usage(), 1)));
}

// The table against a std::map, through random adds, takes and removals: backward-shift deletion
// must never lose or duplicate an entry.
TEST(FixedTable, MatchesAModelUnderRandomOperations) {
    Table t(200);
    UsageTable table = t.table();
    std::map<std::string, int64_t> model;
    std::mt19937 rng(42);
    std::vector<UsageEntry> out;
    out.reserve(200);
    for (int round = 0; round < 2000; round++) {
        int op = rng() % 10;
        if (op < 7) {
            std::string k = "key" + std::to_string(rng() % 300);
            bool added = add(table, usage_key(k, "svc", 0, 7), usage_of(200, false, Usage(), 1));
            if (added)
                model[k]++;
            else
                EXPECT_EQ(model.size(), 200u);
        } else if (op < 9) {
            // Remove a random third of the entries.
            unsigned salt = rng();
            table.remove_if([&](const UsageEntry &e) {
                std::string k(e.key.key.view());
                if ((std::hash<std::string>()(k) ^ salt) % 3 != 0)
                    return false;
                model.erase(k);
                return true;
            });
        } else {
            out.clear();
            take_usage(table, out);
            for (auto &e : out) {
                std::string k(e.key.key.view());
                EXPECT_EQ(model[k], e.counts.requests) << k;
                model[k] = 0;
            }
            for (auto it = model.begin(); it != model.end();)
                it = it->second == 0 ? model.erase(it) : std::next(it);
            // Entries taken just now stay (zeroed) until the next take.
            continue;
        }
        for (auto &m : model) {
            UsageKey k = usage_key(m.first, "svc", 0, 7);
            UsageEntry *e = table.find(k, hash_of(k));
            ASSERT_NE(e, nullptr) << m.first;
            EXPECT_EQ(e->counts.requests, m.second);
        }
    }
}

// Listener threads add while a flusher thread takes: every request is counted exactly once.
TEST(UsageCounters, NothingLostWhileTakingConcurrently) {
    Table t(64);
    UsageTable table = t.table();
    std::mutex mu;
    std::atomic<bool> done{false};
    int64_t taken_requests = 0, taken_tokens = 0;
    std::thread flusher([&] {
        std::vector<UsageEntry> out;
        out.reserve(64);
        while (true) {
            bool last = done.load();
            out.clear();
            {
                std::lock_guard<std::mutex> lock(mu);
                take_usage(table, out);
            }
            for (auto &e : out) {
                taken_requests += e.counts.requests;
                taken_tokens += e.counts.total_tokens;
            }
            if (last)
                break;
        }
    });
    std::vector<std::thread> listeners;
    for (int l = 0; l < 4; l++) {
        listeners.emplace_back([&, l] {
            for (int i = 0; i < 5000; i++) {
                UsageKey k =
                    usage_key("key" + std::to_string(i % 7), "svc" + std::to_string(l), 0, 1);
                std::lock_guard<std::mutex> lock(mu);
                ASSERT_TRUE(add(table, k, usage_of(200, false, usage(1, 2, 3), i)));
            }
        });
    }
    for (auto &th : listeners)
        th.join();
    done = true;
    flusher.join();
    EXPECT_EQ(taken_requests, 4 * 5000);
    EXPECT_EQ(taken_tokens, 4 * 5000 * 3);
}

}  // namespace
