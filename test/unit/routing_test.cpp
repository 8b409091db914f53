#include "routing.h"

#include <gtest/gtest.h>
#include <map>
#include <string>

#include "error.h"

namespace {

using namespace pgi::routing;
using nlohmann::json;

std::string refusal(const json &targets) {
    try {
        parse_targets(targets);
    } catch (const pgi::Error &e) {
        EXPECT_EQ(e.sqlstate(), "22023");
        EXPECT_FALSE(e.hint().empty()) << e.what();
        return e.what();
    }
    return "accepted";
}

TEST(RouteTargets, ReadsServicesWeightsAndPriorities) {
    auto t = parse_targets(
        json::parse(R"([{"service": "claude", "weight": 3}, {"service": "gpt", "priority": 2}])"));
    ASSERT_EQ(t.size(), 2u);
    EXPECT_EQ(t[0].service, "claude");
    EXPECT_EQ(t[0].weight, 3);
    EXPECT_EQ(t[0].priority, 1);
    EXPECT_EQ(t[1].service, "gpt");
    EXPECT_EQ(t[1].weight, 1);
    EXPECT_EQ(t[1].priority, 2);
    EXPECT_EQ(targets_json(t), json::parse(R"([{"service":"claude","weight":3,"priority":1},
                              {"service":"gpt","weight":1,"priority":2}])"));
}

TEST(RouteTargets, RefusesWhatIsNotATarget) {
    EXPECT_EQ(refusal(json::object()), "targets must be a non-empty JSON array");
    EXPECT_EQ(refusal(json::array()), "targets must be a non-empty JSON array");
    EXPECT_EQ(refusal(json::parse(R"(["claude"])")), "targets[0] must be an object");
    EXPECT_EQ(refusal(json::parse(R"([{"weight": 2}])")), "targets[0] has no \"service\"");
    EXPECT_EQ(refusal(json::parse(R"([{"service": 7}])")), "targets[0].service must be a string");
    EXPECT_EQ(refusal(json::parse(R"([{"service": "a", "weight": 0}])")),
              "targets[0].weight must be between 1 and 2147483647");
    EXPECT_EQ(refusal(json::parse(R"([{"service": "a", "weight": -3}])")),
              "targets[0].weight must be between 1 and 2147483647");
    EXPECT_EQ(refusal(json::parse(R"([{"service": "a", "weight": 1.5}])")),
              "targets[0].weight must be an integer");
    EXPECT_EQ(refusal(json::parse(R"([{"service": "a", "weight": 99999999999}])")),
              "targets[0].weight must be between 1 and 2147483647");
    EXPECT_EQ(refusal(json::parse(R"([{"service": "a", "priority": -1}])")),
              "targets[0].priority must be between 0 and 2147483647");
    EXPECT_EQ(refusal(json::parse(R"([{"service": "a", "wieght": 2}])")),
              "targets[0] has an unknown member \"wieght\"");
    EXPECT_EQ(refusal(json::parse(R"([{"service": "a"}, {"service": "a"}])")),
              "service \"a\" is named twice in targets");
    json many = json::array();
    for (int i = 0; i < 17; i++)
        many.push_back({{"service", "s" + std::to_string(i)}});
    EXPECT_EQ(refusal(many), "a route has at most 16 targets (17 given)");
    // A name that could never be a service's.
    EXPECT_NE(refusal(json::parse(R"([{"service": "Bad Name"}])")), "accepted");
}

TEST(RouteFallback, AcceptsConnectTimeout429And5xxOnly) {
    EXPECT_EQ(check_fallback_on({"503", "connect", "503", "timeout", "429", "599"}),
              (std::vector<std::string>{"503", "connect", "timeout", "429", "599"}));
    for (const char *bad : {"404", "400", "200", "5xx", "", "connect ", "1000"}) {
        try {
            check_fallback_on({bad});
            ADD_FAILURE() << bad << " accepted";
        } catch (const pgi::Error &e) {
            EXPECT_EQ(e.sqlstate(), "22023");
            EXPECT_NE(e.hint().find("other 4xx"), std::string::npos);
        }
    }
    EXPECT_TRUE(falls_back(kDefaultFallbackOn, {Failure::Kind::kConnect, 0}));
    EXPECT_TRUE(falls_back(kDefaultFallbackOn, {Failure::Kind::kTimeout, 0}));
    EXPECT_TRUE(falls_back(kDefaultFallbackOn, {Failure::Kind::kStatus, 503}));
    EXPECT_TRUE(falls_back(kDefaultFallbackOn, {Failure::Kind::kStatus, 529}));
    EXPECT_FALSE(falls_back(kDefaultFallbackOn, {Failure::Kind::kStatus, 501}));
    EXPECT_FALSE(falls_back(kDefaultFallbackOn, {Failure::Kind::kStatus, 400}));
    EXPECT_FALSE(falls_back({"503"}, {Failure::Kind::kConnect, 0}));
}

TEST(RouteOrder, PrioritiesFirstThenEveryTargetOnce) {
    std::vector<Target> t = {{"late", 5, 2}, {"a", 1, 1}, {"b", 1, 1}, {"last", 1, 3}};
    for (uint64_t seed = 0; seed < 200; seed++) {
        auto order = attempt_order(t, seed);
        ASSERT_EQ(order.size(), 4u);
        EXPECT_TRUE((order[0] == 1 && order[1] == 2) || (order[0] == 2 && order[1] == 1));
        EXPECT_EQ(order[2], 0u);
        EXPECT_EQ(order[3], 3u);
    }
}

TEST(RouteOrder, WeightsShareTheFirstAttempts) {
    std::vector<Target> t = {{"three", 3, 1}, {"one", 1, 1}};
    int first_three = 0;
    const int n = 100000;
    for (uint64_t seed = 0; seed < n; seed++)
        first_three += attempt_order(t, seed * 0x9E3779B97F4A7C15ull + 7)[0] == 0 ? 1 : 0;
    EXPECT_NEAR(static_cast<double>(first_three) / n, 0.75, 0.01);
    // Three targets 1:2:7.
    std::vector<Target> u = {{"a", 1, 1}, {"b", 2, 1}, {"c", 7, 1}};
    std::map<std::size_t, int> firsts;
    for (uint64_t seed = 0; seed < n; seed++)
        firsts[attempt_order(u, seed)[0]]++;
    EXPECT_NEAR(firsts[0] / static_cast<double>(n), 0.1, 0.01);
    EXPECT_NEAR(firsts[1] / static_cast<double>(n), 0.2, 0.01);
    EXPECT_NEAR(firsts[2] / static_cast<double>(n), 0.7, 0.01);
}

TEST(Routing, FailuresOfTransfers) {
    pgi::http::Response r;
    r.curl_code = CURLE_COULDNT_CONNECT;
    EXPECT_EQ(failure_of(r).kind, Failure::Kind::kConnect);
    r.curl_code = CURLE_OPERATION_TIMEDOUT;
    r.status = 200;  // a time-out after the status is still one
    EXPECT_EQ(failure_of(r).kind, Failure::Kind::kTimeout);
    r.curl_code = CURLE_RECV_ERROR;  // broke off within a 2xx answer
    EXPECT_EQ(failure_of(r).kind, Failure::Kind::kConnect);
    r.curl_code = 0;
    r.status = 503;
    EXPECT_TRUE(falls_back(kDefaultFallbackOn, failure_of(r)));
    r.status = 401;
    EXPECT_FALSE(falls_back(kDefaultFallbackOn, failure_of(r)));
    r.status = 200;
    r.too_large = true;  // our cap, not the service's fault
    EXPECT_FALSE(falls_back(kDefaultFallbackOn, failure_of(r)));
}

constexpr int64_t kSec = 1'000'000;

TEST(Breaker, OpensAfterFailuresInARowAndProbesOnce) {
    const int64_t cd = 30 * kSec;
    Breaker b{};
    EXPECT_EQ(may_try(b, 0, cd), Pass::kClosed);
    failed(b, 0, 3, cd);
    failed(b, 0, 3, cd);
    succeeded(b);  // not in a row
    failed(b, 1, 3, cd);
    failed(b, 2, 3, cd);
    EXPECT_EQ(may_try(b, 2, cd), Pass::kClosed);
    failed(b, 3, 3, cd);
    EXPECT_EQ(may_try(b, 4, cd), Pass::kOpen);
    EXPECT_EQ(may_try(b, 3 + cd - 1, cd), Pass::kOpen);
    // Half-open: one probe, the others still skip.
    EXPECT_EQ(may_try(b, 3 + cd, cd), Pass::kProbe);
    EXPECT_EQ(may_try(b, 3 + cd, cd), Pass::kOpen);
    // The probe fails: open for another cooldown.
    failed(b, 40 * kSec, 3, cd);
    EXPECT_EQ(may_try(b, 69 * kSec, cd), Pass::kOpen);
    EXPECT_EQ(may_try(b, 70 * kSec, cd), Pass::kProbe);
    succeeded(b);
    EXPECT_EQ(may_try(b, 70 * kSec, cd), Pass::kClosed);
    EXPECT_EQ(b.failures, 0);
}

TEST(Breaker, AProbeThatNeverReportsHoldsItsSlotForOneCooldown) {
    const int64_t cd = 30 * kSec;
    Breaker b{};
    marked_failed(b, 0, cd);
    EXPECT_EQ(may_try(b, cd, cd), Pass::kProbe);  // lost: its process died
    EXPECT_EQ(may_try(b, 2 * cd - 1, cd), Pass::kOpen);
    EXPECT_EQ(may_try(b, 2 * cd, cd), Pass::kProbe);
}

TEST(Breaker, TheHealthWorkerOpensItAndAnAbandonedProbeFreesTheSlot) {
    const int64_t cd = 30 * kSec;
    Breaker b{};
    marked_failed(b, 10 * kSec, cd);
    EXPECT_EQ(may_try(b, 11 * kSec, cd), Pass::kOpen);
    EXPECT_EQ(may_try(b, 40 * kSec, cd), Pass::kProbe);
    probe_abandoned(b, 40 * kSec);
    EXPECT_EQ(may_try(b, 40 * kSec, cd), Pass::kProbe);
    // Marked failed again while a probe is out: no probe until the new cooldown ends.
    marked_failed(b, 41 * kSec, cd);
    EXPECT_EQ(may_try(b, 50 * kSec, cd), Pass::kOpen);
    EXPECT_EQ(may_try(b, 71 * kSec, cd), Pass::kProbe);
    // Abandoning a probe never closes the breaker.
    probe_abandoned(b, 72 * kSec);
    EXPECT_EQ(may_try(b, 72 * kSec, cd), Pass::kProbe);
}

TEST(Breaker, AThresholdBelowOneMeansOne) {
    Breaker b{};
    failed(b, 0, 0, kSec);
    EXPECT_EQ(may_try(b, 1, kSec), Pass::kOpen);
}

}  // namespace
