#include "metrics.h"

#include <gtest/gtest.h>
#include <sstream>
#include <string>
#include <vector>

namespace {

using namespace pgi::governance;
using pgi::translate::Usage;

Usage usage(long long p, long long c) {
    Usage u;
    u.prompt_tokens = p;
    u.completion_tokens = c;
    u.total_tokens = p + c;
    u.present = true;
    return u;
}

std::vector<std::string> lines_with(const std::string &text, const std::string &prefix) {
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        if (line.compare(0, prefix.size(), prefix) == 0)
            out.push_back(line);
    return out;
}

bool has_line(const std::string &text, const std::string &line) {
    return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}

TEST(Metrics, HistogramBuckets) {
    Histogram h{};
    h.observe(0);       // 0 s
    h.observe(5);       // exactly 0.005 s: le is inclusive
    h.observe(5.001);   // just over
    h.observe(1500);    // 1.5 s
    h.observe(400000);  // beyond the last bound
    EXPECT_EQ(h.counts[0], 2u);
    EXPECT_EQ(h.counts[1], 1u);
    EXPECT_EQ(h.counts[8], 1u);  // le 2.5
    EXPECT_EQ(h.counts[kLatencyBuckets], 1u);
    EXPECT_EQ(h.count, 5u);
    EXPECT_EQ(h.sum_us, 0 + 5000 + 5001 + 1'500'000 + 400'000'000);
}

TEST(Metrics, RecordStatusesTokensAndLimits) {
    ServiceMetrics m{};
    m.record(200, false, usage(3, 4), 10, 8);
    m.record(200, false, usage(1, 1), 10, 8);
    m.record(429, true, Usage(), 1, 0);
    EXPECT_EQ(m.statuses[0].status, 200);
    EXPECT_EQ(m.statuses[0].count, 2u);
    EXPECT_EQ(m.statuses[1].status, 429);
    EXPECT_EQ(m.prompt_tokens, 4u);
    EXPECT_EQ(m.completion_tokens, 5u);
    EXPECT_EQ(m.rate_limited, 1u);
    EXPECT_EQ(m.total.count, 3u);
    EXPECT_EQ(m.upstream.count, 2u);  // the refusal made no upstream call
    for (int s = 0; s < kStatusSlots + 3; s++)
        m.record(300 + s, false, Usage(), 1, 1);
    EXPECT_EQ(m.other_statuses, 5u);  // 16 slots: 200, 429 and 14 more
}

TEST(Metrics, CostAtTheServicesPrice) {
    pgi::Price price;
    price.id = 3;
    price.input_per_mtok = 2.5;
    price.output_per_mtok = 10;
    price.cached_input_per_mtok = 1.25;
    price.currency = "USD";
    ServiceMetrics m{};
    Usage u = usage(1000, 200);
    u.cached_tokens = 400;
    m.record(200, false, u, 1, 1, &price);
    // 600 x 2.50 + 400 x 1.25 + 200 x 10 per million
    EXPECT_DOUBLE_EQ(m.cost, 0.004);
    EXPECT_EQ(m.currency.view(), "USD");
    // An unpriced service has no cost line.
    MetricsView view;
    ServiceMetrics free{};
    free.record(200, false, usage(1, 1), 1, 1);
    view.services = {{"priced", m}, {"free", free}};
    std::string text = render_prometheus(view);
    EXPECT_TRUE(has_line(text, "# TYPE pg_inference_gateway_cost_total counter"));
    EXPECT_TRUE(has_line(
        text, "pg_inference_gateway_cost_total{service=\"priced\",currency=\"USD\"} 0.004"));
    EXPECT_EQ(text.find("pg_inference_gateway_cost_total{service=\"free\""), std::string::npos);
}

TEST(Metrics, RendersTheTextFormat) {
    MetricsView view;
    ServiceMetrics a{};
    a.record(200, false, usage(3, 4), 12, 10);
    a.record(502, false, Usage(), 2600, 2500);
    ServiceMetrics quoted{};
    quoted.record(404, false, Usage(), 1, 0);
    view.services = {{"gw-openai", a}, {"we\"ird\\", quoted}};
    view.listeners.resize(2);
    view.listeners[0] = {true, 3, 10, 1'000'000, 4, 2, 1};
    view.listeners[1] = {true, 0, 7, 998'500, 0, 0, 0};
    view.usage_dropped = 0;
    view.now_ms = 1'000'000 + 2500;
    std::string text = render_prometheus(view);

    EXPECT_TRUE(has_line(text, "# TYPE pg_inference_gateway_requests_total counter"));
    EXPECT_TRUE(has_line(
        text, "pg_inference_gateway_requests_total{service=\"gw-openai\",code=\"200\"} 1"));
    EXPECT_TRUE(has_line(
        text, "pg_inference_gateway_requests_total{service=\"gw-openai\",code=\"502\"} 1"));
    EXPECT_TRUE(has_line(
        text, "pg_inference_gateway_requests_total{service=\"we\\\"ird\\\\\",code=\"404\"} 1"));
    EXPECT_TRUE(has_line(
        text, "pg_inference_gateway_tokens_total{service=\"gw-openai\",kind=\"prompt\"} 3"));
    EXPECT_TRUE(has_line(
        text, "pg_inference_gateway_tokens_total{service=\"gw-openai\",kind=\"completion\"} 4"));
    EXPECT_TRUE(has_line(text, "pg_inference_gateway_rate_limited_total{service=\"gw-openai\"} 0"));
    // Cumulative buckets, then sum (seconds) and count.
    EXPECT_TRUE(has_line(text,
                         "pg_inference_gateway_request_duration_seconds_bucket{service=\"gw-"
                         "openai\",le=\"0.01\"} 0"));
    EXPECT_TRUE(has_line(text,
                         "pg_inference_gateway_request_duration_seconds_bucket{service=\"gw-"
                         "openai\",le=\"0.025\"} 1"));
    EXPECT_TRUE(has_line(text,
                         "pg_inference_gateway_request_duration_seconds_bucket{service=\"gw-"
                         "openai\",le=\"2.5\"} 1"));
    EXPECT_TRUE(has_line(
        text,
        "pg_inference_gateway_request_duration_seconds_bucket{service=\"gw-openai\",le=\"5\"} 2"));
    EXPECT_TRUE(has_line(text,
                         "pg_inference_gateway_request_duration_seconds_bucket{service=\"gw-"
                         "openai\",le=\"+Inf\"} 2"));
    EXPECT_TRUE(has_line(
        text, "pg_inference_gateway_request_duration_seconds_sum{service=\"gw-openai\"} 2.612000"));
    EXPECT_TRUE(has_line(
        text, "pg_inference_gateway_request_duration_seconds_count{service=\"gw-openai\"} 2"));
    EXPECT_TRUE(has_line(
        text, "pg_inference_gateway_upstream_duration_seconds_count{service=\"gw-openai\"} 2"));
    EXPECT_TRUE(has_line(
        text, "pg_inference_gateway_upstream_duration_seconds_count{service=\"we\\\"ird\\\\\"} 0"));
    EXPECT_EQ(
        lines_with(text,
                   "pg_inference_gateway_request_duration_seconds_bucket{service=\"gw-openai\"")
            .size(),
        static_cast<size_t>(kLatencyBuckets + 1));
    EXPECT_TRUE(has_line(text, "pg_inference_gateway_in_flight_requests{listener=\"1\"} 3"));
    EXPECT_TRUE(has_line(text, "pg_inference_gateway_in_flight_requests{listener=\"2\"} 0"));
    EXPECT_TRUE(has_line(text, "pg_inference_gateway_listener_requests_total{listener=\"2\"} 7"));
    EXPECT_TRUE(has_line(
        text, "pg_inference_gateway_catalog_snapshot_age_seconds{listener=\"1\"} 2.500000"));
    EXPECT_TRUE(has_line(
        text, "pg_inference_gateway_catalog_snapshot_age_seconds{listener=\"2\"} 4.000000"));
    EXPECT_TRUE(has_line(text, "pg_inference_gateway_usage_dropped_total 0"));
    EXPECT_TRUE(has_line(text, "pg_inference_gateway_user_usage_dropped_total 0"));
    EXPECT_TRUE(has_line(text, "pg_inference_gateway_usage_pending_requests 0"));
    EXPECT_TRUE(has_line(text, "pg_inference_gateway_user_limiter_full_total 0"));
    // Every family is announced once, and every line is a comment or a sample.
    EXPECT_EQ(lines_with(text, "# TYPE ").size(), 17u);
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        EXPECT_TRUE(line.rfind("# ", 0) == 0 || line.rfind("pg_inference_gateway_", 0) == 0)
            << line;
    EXPECT_EQ(text.back(), '\n');
}

TEST(Metrics, ConnectionGaugesPerListener) {
    MetricsView view;
    view.listeners.resize(2);
    view.listeners[0] = {true, 0, 0, 100, 4, 2, 1};
    view.listeners[1] = {false, 0, 0, 0, 0, 3, 0};
    view.now_ms = 200;
    std::string text = render_prometheus(view);
    EXPECT_TRUE(has_line(text, "# TYPE pg_inference_gateway_open_connections gauge"));
    EXPECT_TRUE(has_line(text, "pg_inference_gateway_open_connections{listener=\"1\"} 4"));
    // A listener that is gone holds no connections, but its counts stay until restart.
    EXPECT_TRUE(lines_with(text, "pg_inference_gateway_open_connections{listener=\"2\"}").empty());
    EXPECT_TRUE(has_line(text, "pg_inference_gateway_connections_refused_total{listener=\"1\"} 2"));
    EXPECT_TRUE(has_line(text, "pg_inference_gateway_connections_refused_total{listener=\"2\"} 3"));
    EXPECT_TRUE(has_line(text, "pg_inference_gateway_accept_failures_total{listener=\"1\"} 1"));
}

TEST(Metrics, InactiveListenersKeepOnlyTheirCounter) {
    MetricsView view;
    view.listeners.resize(1);
    view.listeners[0] = {false, 0, 5, 100, 0, 0, 0};
    view.now_ms = 200;
    std::string text = render_prometheus(view);
    EXPECT_TRUE(has_line(text, "pg_inference_gateway_listener_requests_total{listener=\"1\"} 5"));
    EXPECT_TRUE(lines_with(text, "pg_inference_gateway_in_flight_requests{").empty());
    EXPECT_TRUE(lines_with(text, "pg_inference_gateway_catalog_snapshot_age_seconds{").empty());
}

}  // namespace
