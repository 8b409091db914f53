#include "metrics.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "usage_counters.h"

namespace pgi::governance {

namespace {

// Each scale's bounds in its unit, for comparing without floating point, and as /metrics writes
// them.
constexpr int64_t kLatencyUs[kLatencyBuckets] = {
    5'000,     10'000,    25'000,     50'000,     100'000,    250'000,     500'000,    1'000'000,
    2'500'000, 5'000'000, 10'000'000, 30'000'000, 60'000'000, 120'000'000, 300'000'000};
constexpr const char *kLatencyText[kLatencyBuckets] = {"0.005", "0.01", "0.025", "0.05", "0.1",
                                                       "0.25",  "0.5",  "1",     "2.5",  "5",
                                                       "10",    "30",   "60",    "120",  "300"};

constexpr int64_t kTtftUs[] = {1'000,     5'000,     10'000,    20'000,   25'000,  40'000,
                               60'000,    80'000,    100'000,   250'000,  500'000, 750'000,
                               1'000'000, 2'500'000, 5'000'000, 7'500'000};
constexpr const char *kTtftText[] = {"0.001", "0.005", "0.01", "0.02", "0.025", "0.04",
                                     "0.06",  "0.08",  "0.1",  "0.25", "0.5",   "0.75",
                                     "1",     "2.5",   "5",    "7.5"};
constexpr int64_t kTpotUs[] = {10'000,  25'000,  50'000,  75'000,  100'000,   150'000,  200'000,
                               300'000, 400'000, 500'000, 750'000, 1'000'000, 2'500'000};
constexpr const char *kTpotText[] = {"0.01", "0.025", "0.05", "0.075", "0.1", "0.15", "0.2",
                                     "0.3",  "0.4",   "0.5",  "0.75",  "1",   "2.5"};
constexpr int64_t kTokens[] = {1,         4,         16,         64,        256,
                               1'024,     4'096,     16'384,     65'536,    262'144,
                               1'048'576, 4'194'304, 16'777'216, 67'108'864};
constexpr const char *kTokensText[] = {"1",       "4",       "16",       "64",      "256",
                                       "1024",    "4096",    "16384",    "65536",   "262144",
                                       "1048576", "4194304", "16777216", "67108864"};
template <typename T, std::size_t N>
constexpr int count_of(const T (&)[N]) {
    return static_cast<int>(N);
}

// A label value as the text format wants it: backslash, double quote and newline escaped.
void append_label(std::string &out, const char *name, const std::string &value) {
    out += name;
    out += "=\"";
    for (char c : value) {
        if (c == '\\' || c == '"') {
            out += '\\';
            out += c;
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
    out += '"';
}

void family(std::string &out, const char *name, const char *type, const char *help) {
    out += "# HELP ";
    out += name;
    out += ' ';
    out += help;
    out += "\n# TYPE ";
    out += name;
    out += ' ';
    out += type;
    out += '\n';
}

void sample(std::string &out, const std::string &name, const std::string &labels,
            const std::string &value) {
    out += name;
    if (!labels.empty()) {
        out += '{';
        out += labels;
        out += '}';
    }
    out += ' ';
    out += value;
    out += '\n';
}

std::string seconds(int64_t us) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%lld.%06lld", static_cast<long long>(us / 1'000'000),
                  static_cast<long long>(us % 1'000'000));
    return buf;
}

std::string service_label(const std::string &service) {
    std::string s;
    append_label(s, "service", service);
    return s;
}

// A histogram on a Scale; sum_text is its sum as the family's unit writes it.
void buckets(std::string &out, const char *name, const std::string &labels, const Buckets &b,
             const Scale &scale, const std::string &sum_text) {
    uint64_t cumulative = 0;
    std::string base = name;
    for (int i = 0; i <= scale.n; i++) {
        cumulative += b.counts[i];
        sample(out, base + "_bucket",
               labels + ",le=\"" + (i < scale.n ? scale.text[i] : "+Inf") + "\"",
               std::to_string(cumulative));
    }
    sample(out, base + "_sum", labels, sum_text);
    sample(out, base + "_count", labels, std::to_string(b.count));
}

// A latency histogram (on kLatency), its sum in seconds.
void latency(std::string &out, const char *name, const std::string &labels, const Buckets &b) {
    buckets(out, name, labels, b, kLatency, seconds(b.sum));
}

// A family of one sample without labels.
void single(std::string &out, const char *name, const char *type, const char *help,
            uint64_t value) {
    family(out, name, type, help);
    sample(out, name, "", std::to_string(value));
}

// A family with one sample per listener. A gauge describes running listeners only; a counter
// also keeps the count of a listener that is gone, until the server restarts.
template <typename Value>
void per_listener(std::string &out, const char *name, const char *type, const char *help,
                  const std::vector<ListenerGauges> &listeners, Value value) {
    const bool counter = std::string_view(type) == "counter";
    family(out, name, type, help);
    for (size_t i = 0; i < listeners.size(); i++) {
        auto v = value(listeners[i]);
        if (listeners[i].active || (counter && v > 0))
            sample(out, name, "listener=\"" + std::to_string(i + 1) + "\"", std::to_string(v));
    }
}

// The shortest decimal that reads back as the same double: 0.004, not 0.0040000000000000001.
std::string shortest(double v) {
    char text[32];
    for (int digits = 1; digits <= 17; digits++) {
        std::snprintf(text, sizeof(text), "%.*g", digits, v);
        if (std::strtod(text, nullptr) == v)
            break;
    }
    return text;
}

}  // namespace

const Scale kLatency{kLatencyUs, kLatencyText, kLatencyBuckets};
const Scale kTimeToFirstToken{kTtftUs, kTtftText, count_of(kTtftUs)};
const Scale kTimePerOutputToken{kTpotUs, kTpotText, count_of(kTpotUs)};
const Scale kTokenCounts{kTokens, kTokensText, count_of(kTokens)};

void Buckets::observe(const Scale &scale, int64_t value) {
    int i = 0;
    while (i < scale.n && value > scale.bounds[i])
        i++;
    counts[i]++;
    count++;
    sum += value;
}

void ServiceMetrics::record(const gateway::Finished &r) {
    int slot = -1;
    for (int i = 0; i < kStatusSlots; i++) {
        if (statuses[i].status == r.status || statuses[i].status == 0) {
            slot = i;
            break;
        }
    }
    if (slot >= 0) {
        statuses[slot].status = r.status;
        statuses[slot].count++;
    } else {
        other_statuses++;
    }
    const auto us = [](double ms) { return ms <= 0 ? 0 : static_cast<int64_t>(ms * 1000.0 + 0.5); };
    total.observe(kLatency, us(r.total_ms));
    if (r.dialect >= 0 && r.dialect < gateway::kDialectCount)
        by_dialect[r.dialect].observe(kLatency, us(r.total_ms));
    if (r.upstream_ms > 0)
        upstream.observe(kLatency, us(r.upstream_ms));
    Tokens t = tokens_of(r.usage);
    prompt_tokens += static_cast<uint64_t>(t.prompt);
    completion_tokens += static_cast<uint64_t>(t.completion);
    if (r.usage.present) {
        input_tokens.observe(kTokenCounts, t.prompt);
        output_tokens.observe(kTokenCounts, t.completion);
    }
    if (r.rate_limited && r.status == 429)
        rate_limited++;
    if (r.status == 200 && r.first_byte_ms >= 0) {
        first_token_us.observe(kTimeToFirstToken, us(r.first_byte_ms));
        // OpenTelemetry's time per output token: after the first, over the tokens after it.
        if (t.completion > 1) {
            per_output_token_us.observe(
                kTimePerOutputToken,
                us((r.total_ms - r.first_byte_ms) / static_cast<double>(t.completion - 1)));
        }
    }
    const Price *price = r.service != nullptr ? &r.service->price : nullptr;
    if (price != nullptr && price->id != 0) {
        cost += (static_cast<double>(t.prompt - t.cached) * price->input_per_mtok +
                 static_cast<double>(t.cached) * price->cached_input_per_mtok +
                 static_cast<double>(t.completion) * price->output_per_mtok) /
                1e6;
        currency = FixedText<4>::of(price->currency);
    }
}

std::string render_prometheus(const MetricsView &view) {
    std::string out;
    out.reserve(4096 + view.services.size() * 4096);
    std::vector<std::string> labels;
    labels.reserve(view.services.size());
    for (const auto &s : view.services)
        labels.push_back(service_label(s.first));

    family(out, "pg_inference_gateway_requests_total", "counter",
           "Requests answered by the gateway, by service and HTTP status.");
    for (size_t i = 0; i < view.services.size(); i++) {
        const ServiceMetrics &m = view.services[i].second;
        std::vector<std::pair<int, uint64_t>> codes;
        for (const auto &s : m.statuses)
            if (s.status != 0)
                codes.emplace_back(s.status, s.count);
        std::sort(codes.begin(), codes.end());
        for (const auto &c : codes)
            sample(out, "pg_inference_gateway_requests_total",
                   labels[i] + ",code=\"" + std::to_string(c.first) + "\"",
                   std::to_string(c.second));
        if (m.other_statuses > 0)
            sample(out, "pg_inference_gateway_requests_total", labels[i] + ",code=\"other\"",
                   std::to_string(m.other_statuses));
    }

    family(out, "pg_inference_gateway_rate_limited_total", "counter",
           "Requests refused with 429 because their access key was over one of its limits.");
    for (size_t i = 0; i < view.services.size(); i++)
        sample(out, "pg_inference_gateway_rate_limited_total", labels[i],
               std::to_string(view.services[i].second.rate_limited));

    family(out, "pg_inference_gateway_tokens_total", "counter",
           "Tokens the upstreams reported, by service and kind (prompt, completion).");
    for (size_t i = 0; i < view.services.size(); i++) {
        const ServiceMetrics &m = view.services[i].second;
        sample(out, "pg_inference_gateway_tokens_total", labels[i] + ",kind=\"prompt\"",
               std::to_string(m.prompt_tokens));
        sample(out, "pg_inference_gateway_tokens_total", labels[i] + ",kind=\"completion\"",
               std::to_string(m.completion_tokens));
    }

    family(out, "pg_inference_gateway_cost_total", "counter",
           "What the tokens cost at the services' prices, by service and currency (floating "
           "point; inference.usage has the exact cost).");
    for (size_t i = 0; i < view.services.size(); i++) {
        const ServiceMetrics &m = view.services[i].second;
        if (m.currency.view().empty())
            continue;
        sample(out, "pg_inference_gateway_cost_total",
               labels[i] + ",currency=\"" + std::string(m.currency.view()) + "\"",
               shortest(m.cost));
    }

    family(out, "pg_inference_gateway_request_duration_seconds", "histogram",
           "Time from a request's arrival to the end of its answer.");
    for (size_t i = 0; i < view.services.size(); i++)
        latency(out, "pg_inference_gateway_request_duration_seconds", labels[i],
                view.services[i].second.total);

    family(out, "pg_inference_gateway_upstream_duration_seconds", "histogram",
           "Time spent in upstream calls, for requests that made one.");
    for (size_t i = 0; i < view.services.size(); i++)
        latency(out, "pg_inference_gateway_upstream_duration_seconds", labels[i],
                view.services[i].second.upstream);

    // The OpenTelemetry GenAI semantic conventions' metrics, in their Prometheus names.
    family(out, "gen_ai_server_request_duration_seconds", "histogram",
           "Time from a request's arrival to the end of its answer, by service and the API the "
           "caller spoke.");
    for (size_t i = 0; i < view.services.size(); i++) {
        for (int d = 0; d < gateway::kDialectCount; d++) {
            const Buckets &h = view.services[i].second.by_dialect[d];
            if (h.count > 0) {
                std::string l = labels[i];
                l += ',';
                append_label(l, "dialect", gateway::kDialectLabels[d]);
                latency(out, "gen_ai_server_request_duration_seconds", l, h);
            }
        }
    }
    family(out, "gen_ai_client_token_usage", "histogram",
           "Tokens per request as the upstreams reported them, by service and token type "
           "(input, output).");
    for (size_t i = 0; i < view.services.size(); i++) {
        const ServiceMetrics &m = view.services[i].second;
        buckets(out, "gen_ai_client_token_usage", labels[i] + ",gen_ai_token_type=\"input\"",
                m.input_tokens, kTokenCounts, std::to_string(m.input_tokens.sum));
        buckets(out, "gen_ai_client_token_usage", labels[i] + ",gen_ai_token_type=\"output\"",
                m.output_tokens, kTokenCounts, std::to_string(m.output_tokens.sum));
    }
    family(out, "gen_ai_server_time_to_first_token_seconds", "histogram",
           "Streams answered 200: time from the request's arrival to the first bytes of the "
           "answer sent to the caller.");
    for (size_t i = 0; i < view.services.size(); i++) {
        const Buckets &b = view.services[i].second.first_token_us;
        buckets(out, "gen_ai_server_time_to_first_token_seconds", labels[i], b, kTimeToFirstToken,
                seconds(b.sum));
    }
    family(out, "gen_ai_server_time_per_output_token_seconds", "histogram",
           "Streams answered 200 with more than one output token: the time after the first "
           "bytes, per output token after the first.");
    for (size_t i = 0; i < view.services.size(); i++) {
        const Buckets &b = view.services[i].second.per_output_token_us;
        buckets(out, "gen_ai_server_time_per_output_token_seconds", labels[i], b,
                kTimePerOutputToken, seconds(b.sum));
    }

    per_listener(out, "pg_inference_gateway_in_flight_requests", "gauge",
                 "Requests a listener is serving now.", view.listeners,
                 [](const ListenerGauges &l) { return l.in_flight; });
    per_listener(out, "pg_inference_gateway_listener_requests_total", "counter",
                 "Requests each listener process finished.", view.listeners,
                 [](const ListenerGauges &l) { return l.requests; });
    per_listener(out, "pg_inference_gateway_open_connections", "gauge",
                 "Client connections a listener holds open now.", view.listeners,
                 [](const ListenerGauges &l) { return l.open_connections; });
    per_listener(out, "pg_inference_gateway_connections_refused_total", "counter",
                 "Connections answered 503 because inference.gateway_max_connections was reached.",
                 view.listeners, [](const ListenerGauges &l) { return l.connections_refused; });
    per_listener(
        out, "pg_inference_gateway_accept_failures_total", "counter",
        "Failed accept() calls (out of file descriptors, say); the listener pauses 100 ms.",
        view.listeners, [](const ListenerGauges &l) { return l.accept_failures; });

    family(out, "pg_inference_gateway_catalog_snapshot_age_seconds", "gauge",
           "Seconds since a listener loaded the catalog snapshot it serves from.");
    for (size_t i = 0; i < view.listeners.size(); i++) {
        const ListenerGauges &l = view.listeners[i];
        if (l.active && l.snapshot_loaded_ms > 0)
            sample(out, "pg_inference_gateway_catalog_snapshot_age_seconds",
                   "listener=\"" + std::to_string(i + 1) + "\"",
                   seconds(std::max<int64_t>(0, view.now_ms - l.snapshot_loaded_ms) * 1000));
    }

    single(out, "pg_inference_gateway_usage_dropped_total", "counter",
           "Requests whose usage did not fit in shared memory (raise inference.gateway_max_keys).",
           view.usage_dropped);

    single(out, "pg_inference_gateway_user_usage_dropped_total", "counter",
           "Requests counted for their access key whose end user's usage did not fit in shared "
           "memory (raise inference.gateway_max_keys).",
           view.user_usage_dropped);

    single(out, "pg_inference_gateway_usage_pending_requests", "gauge",
           "Requests counted but not yet in the ledger (on a standby: not yet sent to the "
           "primary).",
           view.usage_pending);

    single(out, "pg_inference_gateway_rate_limiter_full_total", "counter",
           "Requests refused with 503 because the rate limiter could track no more keys "
           "(raise inference.gateway_max_keys).",
           view.limiter_full);
    single(out, "pg_inference_gateway_user_limiter_full_total", "counter",
           "Requests refused with 503 because the rate limiter could track no more end users "
           "(raise inference.gateway_max_users).",
           view.users_full);
    family(out, "pg_inference_gateway_budget_alerts_total", "counter",
           "Budget alerts (NOTIFY inference_budget) sent, and dropped (a full queue, or a hot "
           "standby, which cannot notify).");
    sample(out, "pg_inference_gateway_budget_alerts_total", "outcome=\"sent\"",
           std::to_string(view.budget_alerts_sent));
    sample(out, "pg_inference_gateway_budget_alerts_total", "outcome=\"dropped\"",
           std::to_string(view.budget_alerts_dropped));
    single(out, "pg_inference_gateway_budget_tracker_full_total", "counter",
           "Requests refused with 503 because no more budgets could be tracked "
           "(raise inference.gateway_max_keys).",
           view.budget_tracker_full);
    family(out, "pg_inference_gateway_request_log_rows_total", "counter",
           "Rows of the request log written to inference.request_log, and dropped (its ring in "
           "shared memory was full, a write failed, or a hot standby, which cannot write).");
    sample(out, "pg_inference_gateway_request_log_rows_total", "outcome=\"written\"",
           std::to_string(view.request_log_written));
    sample(out, "pg_inference_gateway_request_log_rows_total", "outcome=\"dropped\"",
           std::to_string(view.request_log_dropped));
    return out;
}

}  // namespace pgi::governance
