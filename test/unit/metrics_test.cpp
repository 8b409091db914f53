#include "metrics.h"

#include <gtest/gtest.h>
#include <sstream>
#include <string>
#include <vector>

#include "gateway_request.h"

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

// A finished request as the gateway reports it; first_byte_ms >= 0 for a stream.
pgi::gateway::Finished req(int status, bool limited, const Usage &u, double total_ms,
                           double upstream_ms, const pgi::ServiceEndpoint *service = nullptr,
                           double first_byte_ms = -1, int dialect = 0) {
    pgi::gateway::Finished f;
    f.status = status;
    f.rate_limited = limited;
    f.usage = u;
    f.total_ms = total_ms;
    f.upstream_ms = upstream_ms;
    f.service = service;
    f.first_byte_ms = first_byte_ms;
    f.dialect = dialect;
    return f;
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

TEST(Metrics, LatencyBuckets) {
    Buckets h{};
    h.observe(kLatency, 0);            // 0 s
    h.observe(kLatency, 5000);         // exactly 0.005 s: le is inclusive
    h.observe(kLatency, 5001);         // just over
    h.observe(kLatency, 1'500'000);    // 1.5 s
    h.observe(kLatency, 400'000'000);  // beyond the last bound
    EXPECT_EQ(h.counts[0], 2u);
    EXPECT_EQ(h.counts[1], 1u);
    EXPECT_EQ(h.counts[8], 1u);  // le 2.5
    EXPECT_EQ(h.counts[kLatencyBuckets], 1u);
    EXPECT_EQ(h.count, 5u);
    EXPECT_EQ(h.sum, 0 + 5000 + 5001 + 1'500'000 + 400'000'000);
}

TEST(Metrics, RecordStatusesTokensAndLimits) {
    ServiceMetrics m{};
    m.record(req(200, false, usage(3, 4), 10, 8));
    m.record(req(200, false, usage(1, 1), 10, 8));
    m.record(req(429, true, Usage(), 1, 0));
    EXPECT_EQ(m.statuses[0].status, 200);
    EXPECT_EQ(m.statuses[0].count, 2u);
    EXPECT_EQ(m.statuses[1].status, 429);
    EXPECT_EQ(m.prompt_tokens, 4u);
    EXPECT_EQ(m.completion_tokens, 5u);
    EXPECT_EQ(m.rate_limited, 1u);
    EXPECT_EQ(m.total.count, 3u);
    EXPECT_EQ(m.upstream.count, 2u);  // the refusal made no upstream call
    for (int s = 0; s < kStatusSlots + 3; s++)
        m.record(req(300 + s, false, Usage(), 1, 1));
    EXPECT_EQ(m.other_statuses, 5u);  // 16 slots: 200, 429 and 14 more
}

TEST(Metrics, CostAtTheServicesPrice) {
    pgi::ServiceEndpoint service;
    service.price.id = 3;
    service.price.input_per_mtok = 2.5;
    service.price.output_per_mtok = 10;
    service.price.cached_input_per_mtok = 1.25;
    service.price.currency = "USD";
    ServiceMetrics m{};
    Usage u = usage(1000, 200);
    u.cached_tokens = 400;
    m.record(req(200, false, u, 1, 1, &service));
    // 600 x 2.50 + 400 x 1.25 + 200 x 10 per million
    EXPECT_DOUBLE_EQ(m.cost, 0.004);
    EXPECT_EQ(m.currency.view(), "USD");
    // An unpriced service has no cost line.
    MetricsView view;
    ServiceMetrics free{};
    free.record(req(200, false, usage(1, 1), 1, 1));
    view.services = {{"priced", m}, {"free", free}};
    std::string text = render_prometheus(view);
    EXPECT_TRUE(has_line(text, "# TYPE pg_inference_gateway_cost_total counter"));
    EXPECT_TRUE(has_line(
        text, "pg_inference_gateway_cost_total{service=\"priced\",currency=\"USD\"} 0.004"));
    EXPECT_EQ(text.find("pg_inference_gateway_cost_total{service=\"free\""), std::string::npos);
}

TEST(Metrics, GenAiHistograms) {
    ServiceMetrics m{};
    // A stream of 11 output tokens: first bytes after 22 ms, the rest 100 ms later.
    m.record(req(200, false, usage(40, 11), 122, 120, nullptr, 22, 1));
    m.record(req(200, false, usage(3000, 1), 30, 29, nullptr, -1, 0));  // not a stream
    m.record(req(502, false, usage(5, 2), 50, 49, nullptr, 10, 0));     // a broken stream
    EXPECT_EQ(m.first_token_us.count, 1u);
    EXPECT_EQ(m.first_token_us.sum, 22'000);
    EXPECT_EQ(m.first_token_us.counts[4], 1u);  // le 0.025
    EXPECT_EQ(m.per_output_token_us.count, 1u);
    EXPECT_EQ(m.per_output_token_us.sum, 10'000);  // 100 ms over 10 tokens
    EXPECT_EQ(m.input_tokens.count, 3u);
    EXPECT_EQ(m.input_tokens.sum, 3045);
    EXPECT_EQ(m.input_tokens.counts[3], 1u);  // 40: le 64
    EXPECT_EQ(m.input_tokens.counts[6], 1u);  // 3000: le 4096
    EXPECT_EQ(m.by_dialect[1].count, 1u);
    EXPECT_EQ(m.by_dialect[0].count, 2u);

    MetricsView view;
    view.services = {{"gw", m}};
    std::string text = render_prometheus(view);
    EXPECT_TRUE(has_line(text, "# TYPE gen_ai_server_time_to_first_token_seconds histogram"));
    EXPECT_TRUE(has_line(
        text, "gen_ai_server_time_to_first_token_seconds_bucket{service=\"gw\",le=\"0.02\"} 0"));
    EXPECT_TRUE(has_line(
        text, "gen_ai_server_time_to_first_token_seconds_bucket{service=\"gw\",le=\"0.025\"} 1"));
    EXPECT_TRUE(
        has_line(text, "gen_ai_server_time_to_first_token_seconds_sum{service=\"gw\"} 0.022000"));
    EXPECT_TRUE(
        has_line(text, "gen_ai_server_time_per_output_token_seconds_sum{service=\"gw\"} 0.010000"));
    EXPECT_TRUE(has_line(
        text, "gen_ai_client_token_usage_sum{service=\"gw\",gen_ai_token_type=\"input\"} 3045"));
    EXPECT_TRUE(has_line(text,
                         "gen_ai_client_token_usage_bucket{service=\"gw\",gen_ai_token_type="
                         "\"output\",le=\"16\"} 3"));
    EXPECT_TRUE(has_line(text,
                         "gen_ai_server_request_duration_seconds_count{service=\"gw\",dialect="
                         "\"anthropic\"} 1"));
    EXPECT_TRUE(has_line(text,
                         "gen_ai_server_request_duration_seconds_count{service=\"gw\",dialect="
                         "\"openai_chat\"} 2"));
    // Dialects with no request have no series.
    EXPECT_EQ(text.find("dialect=\"gemini\""), std::string::npos);
}

TEST(Metrics, EveryEndpointHasItsDialectLabel) {
    using pgi::gateway::Endpoint;
    using pgi::gateway::kDialectLabels;
    EXPECT_STREQ(kDialectLabels[dialect_of(Endpoint::kChat)], "openai_chat");
    EXPECT_STREQ(kDialectLabels[dialect_of(Endpoint::kMessages)], "anthropic");
    EXPECT_STREQ(kDialectLabels[dialect_of(Endpoint::kCountTokens)], "anthropic");
    EXPECT_STREQ(kDialectLabels[dialect_of(Endpoint::kResponses)], "openai_responses");
    EXPECT_STREQ(kDialectLabels[dialect_of(Endpoint::kCompletions)], "openai_completions");
    EXPECT_STREQ(kDialectLabels[dialect_of(Endpoint::kStreamGenerate)], "gemini");
    EXPECT_STREQ(kDialectLabels[dialect_of(Endpoint::kEmbeddings)], "openai_embeddings");
    EXPECT_STREQ(kDialectLabels[dialect_of(Endpoint::kRanking)], "rerank");
    EXPECT_STREQ(kDialectLabels[dialect_of(Endpoint::kPassthrough)], "passthrough");
    EXPECT_STREQ(kDialectLabels[dialect_of(Endpoint::kModels)], "other");
}

TEST(Metrics, RendersTheTextFormat) {
    MetricsView view;
    ServiceMetrics a{};
    a.record(req(200, false, usage(3, 4), 12, 10));
    a.record(req(502, false, Usage(), 2600, 2500));
    ServiceMetrics quoted{};
    quoted.record(req(404, false, Usage(), 1, 0));
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
    EXPECT_TRUE(has_line(text, "pg_inference_gateway_budget_alerts_total{outcome=\"dropped\"} 0"));
    EXPECT_TRUE(has_line(text, "pg_inference_gateway_budget_tracker_full_total 0"));
    EXPECT_TRUE(
        has_line(text, "pg_inference_gateway_request_log_rows_total{outcome=\"dropped\"} 0"));
    EXPECT_EQ(lines_with(text, "# TYPE ").size(), 24u);
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
        EXPECT_TRUE(line.rfind("# ", 0) == 0 || line.rfind("pg_inference_gateway_", 0) == 0 ||
                    line.rfind("gen_ai_", 0) == 0)
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
