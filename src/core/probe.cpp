#include "probe.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "address_filter.h"
#include "error.h"
#include "redact.h"
#include "upstream_error.h"

namespace pgi::probe {

namespace {

Result failure(const char *sqlstate, std::string message, const std::string &url, long status) {
    Result r;
    r.sqlstate = sqlstate;
    r.message = std::move(message);
    r.url = url;
    r.http_status = status;
    return r;
}

std::string status_from(long status, const std::string &url) {
    return "(status " + std::to_string(status) + " from " + url + ")";
}

std::string list_url(const ServiceEndpoint &service) {
    return service.base_url + "/v1/models";
}

http::Request probe_request(const ServiceEndpoint &service, const std::string &url,
                            const Settings &settings) {
    http::Request request;
    request.url = url;
    request.headers = auth_headers(service);
    request.headers.push_back("Accept: application/json");
    set_transport(service, request);
    request.connect_timeout_ms = settings.connect_timeout_ms;
    request.timeout_ms = settings.timeout_ms;
    return request;
}

bool needs_list_fallback(const ServiceEndpoint &service, const http::Response &response) {
    return service.protocol == Protocol::kOpenAiV1 && response.curl_code == 0 &&
           response.status == 404;
}

enum class ListLookup { kFound, kMissing, kNotAList };

ListLookup find_in_list(const std::string &body, const std::string &model) {
    nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("data") || !j["data"].is_array())
        return ListLookup::kNotAList;
    for (const auto &entry : j["data"]) {
        if (entry.is_object() && entry.contains("id") && entry["id"].is_string() &&
            entry["id"].get<std::string>() == model)
            return ListLookup::kFound;
    }
    return ListLookup::kMissing;
}

}  // namespace

std::string probe_url(const ServiceEndpoint &service) {
    if (service.protocol == Protocol::kGeminiV1Beta)
        return service.base_url + "/v1beta/models/" + service.model;
    return service.base_url + "/v1/models/" + service.model;
}

Result diagnose(const ServiceEndpoint &service, const std::string &url,
                const http::Response &response) {
    const long status = response.status;
    if (response.curl_code != 0) {
        const std::string why = redact_key(response.transport_error, service);
        if (response.too_large)
            return failure(sqlstate::kUpstreamBadResponse,
                           "unexpected response from " + url + ": " + why, url, status);
        if (response.blocked) {
            Result r =
                failure(sqlstate::kInsufficientPrivilege, "endpoint refused: " + why, url, status);
            r.hint = net::kBlockedCallHint;
            return r;
        }
        Result r =
            failure(sqlstate::kUpstreamUnreachable, "endpoint unreachable: " + why, url, status);
        if (response.tls_error)
            r.hint = tls::failure_hint(service.tls);
        return r;
    }
    if (status >= 200 && status < 300) {
        Result r;
        r.ok = true;
        r.http_status = status;
        r.url = url;
        return r;
    }
    const UpstreamError upstream = parse_upstream_error(response.body);
    if (status == 401 || (status == 400 && service.protocol == Protocol::kGeminiV1Beta &&
                          upstream.reason == "API_KEY_INVALID")) {
        // Anthropic answers 401 for an exhausted credit balance too, so the key may be fine.
        const char *what = service.protocol == Protocol::kAnthropicV1
                               ? "API key is missing/invalid or account credits are exhausted "
                               : "API key is missing or invalid ";
        return failure(sqlstate::kUpstreamAuth, what + status_from(status, url), url, status);
    }
    if (status == 403)
        return failure(sqlstate::kUpstreamForbidden,
                       "API key lacks permission for this endpoint " + status_from(status, url),
                       url, status);
    if (status == 404)
        return failure(
            sqlstate::kUpstreamNotFound,
            "endpoint not found — check the base URL and model name " + status_from(status, url),
            url, status);
    if (status == 429) {
        if (upstream.type == "insufficient_quota" || upstream.code == "insufficient_quota")
            return failure(sqlstate::kUpstreamRateLimit,
                           "account quota exhausted — check billing and credits", url, status);
        return failure(sqlstate::kUpstreamRateLimit, "rate limited by upstream", url, status);
    }
    if (status == 503 || status == 529)
        return failure(sqlstate::kUpstreamServer,
                       "upstream is temporarily unavailable " + status_from(status, url), url,
                       status);
    if (status >= 500 && status < 600)
        return failure(sqlstate::kUpstreamServer,
                       "upstream server error " + status_from(status, url), url, status);
    // The upstream's own words may quote the key back; the status message is readable by all.
    const UpstreamError shown = shown_upstream_error(response.body, service);
    std::string message = "unexpected status " + std::to_string(status) + " from " + url;
    if (!shown.message.empty())
        message += ": " + shown.message;
    return failure(sqlstate::kUpstreamBadResponse, message, url, status);
}

Result diagnose_list_fallback(const ServiceEndpoint &service, const std::string &model_url,
                              const http::Response &model_response, const std::string &list_url,
                              const http::Response &list_response) {
    const bool list_answered =
        list_response.curl_code == 0 && list_response.status >= 200 && list_response.status < 300;
    if (list_answered) {
        switch (find_in_list(list_response.body, service.model)) {
            case ListLookup::kFound:
                return diagnose(service, list_url, list_response);
            case ListLookup::kMissing:
                return diagnose(service, model_url, model_response);
            case ListLookup::kNotAList:
                return failure(sqlstate::kUpstreamBadResponse,
                               "unexpected response from " + list_url + ": not a model list",
                               list_url, list_response.status);
        }
    }
    // A server without the list route is as much "not found" as the model itself.
    if (list_response.curl_code == 0 && list_response.status == 404)
        return diagnose(service, model_url, model_response);
    return diagnose(service, list_url, list_response);
}

void probe_feed(http::Client &client, const ProbeFeeder &feeder, const Settings &settings,
                const http::WaitHook &wait, const ResultHook &on_result) {
    using Clock = std::chrono::steady_clock;
    // A probe under way: its first answer is kept while the model-list request runs.
    struct Probe {
        size_t id = 0;
        ServiceEndpoint service;
        std::string url;
        http::Response model_response;
        Clock::time_point started;
    };
    // A model-list request under way, and the probes waiting for it.
    struct ListFetch {
        std::string key;
        std::string url;
        std::vector<size_t> waiters;
    };
    // A model list that arrived after a probe started answers that probe too: services behind
    // one server that finish together share one list request. Newer probes ask again.
    struct ListAnswer {
        std::string url;
        http::Response response;
        Clock::time_point at;
    };
    // Request ids: 2k for probe k's first request, 2m+1 for list request m.
    std::unordered_map<size_t, Probe> probes;
    std::unordered_map<size_t, ListFetch> lists;
    std::map<std::string, size_t> list_by_key;
    std::map<std::string, ListAnswer> answers;
    std::vector<http::FedRequest> queued;
    std::vector<FedProbe> fresh;
    size_t next_probe = 0;
    size_t next_list = 0;
    bool more = true;

    auto settle = [&](size_t key, const http::Response &list_response,
                      const std::string &list_url) {
        auto it = probes.find(key);
        const size_t id = it->second.id;
        const Result r = diagnose_list_fallback(it->second.service, it->second.url,
                                                it->second.model_response, list_url, list_response);
        probes.erase(it);
        if (on_result)
            on_result(id, r);
    };

    auto feed = [&](std::vector<http::FedRequest> &out) {
        out = std::move(queued);
        queued.clear();
        if (more) {
            fresh.clear();
            more = feeder(fresh);
            for (auto &f : fresh) {
                const size_t key = next_probe++;
                Probe &p = probes[key];
                p.id = f.id;
                p.service = std::move(f.service);
                p.url = probe_url(p.service);
                p.started = Clock::now();
                out.push_back({2 * key, probe_request(p.service, p.url, settings)});
            }
        }
        return more || !probes.empty() || !out.empty();
    };

    auto done = [&](size_t request_id, const http::Response &response) {
        if (request_id % 2 == 0) {
            const size_t key = request_id / 2;
            Probe &p = probes.at(key);
            if (!needs_list_fallback(p.service, response)) {
                const size_t id = p.id;
                const Result r = diagnose(p.service, p.url, response);
                probes.erase(key);
                if (on_result)
                    on_result(id, r);
                return;
            }
            p.model_response = response;
            http::Request request = probe_request(p.service, list_url(p.service), settings);
            std::string list_key = request.url + (request.insecure ? "\n1" : "\n0") +
                                   (request.blocked_networks ? "1" : "0") + "\n" +
                                   request.tls.ca_file + "\n" + request.tls.client_cert_file +
                                   "\n" + request.tls.client_key_file;
            for (const auto &h : request.headers)
                list_key += "\n" + h;
            auto answered = answers.find(list_key);
            if (answered != answers.end() && answered->second.at >= p.started)
                return settle(key, answered->second.response, answered->second.url);
            auto running = list_by_key.find(list_key);
            if (running != list_by_key.end()) {
                lists.at(running->second).waiters.push_back(key);
                return;
            }
            const size_t m = next_list++;
            lists[m] = ListFetch{list_key, request.url, {key}};
            list_by_key.emplace(list_key, m);
            queued.push_back({2 * m + 1, std::move(request)});
            return;
        }
        auto it = lists.find(request_id / 2);
        ListFetch fetch = std::move(it->second);
        lists.erase(it);
        list_by_key.erase(fetch.key);
        answers[fetch.key] = ListAnswer{fetch.url, response, Clock::now()};
        for (size_t key : fetch.waiters)
            settle(key, response, fetch.url);
        // Answers older than every probe under way can serve none of them.
        Clock::time_point oldest = Clock::time_point::max();
        for (const auto &p : probes)
            oldest = std::min(oldest, p.second.started);
        for (auto a = answers.begin(); a != answers.end();)
            a = a->second.at < oldest ? answers.erase(a) : std::next(a);
    };

    client.perform_feed(feed, settings.max_concurrency, wait, {}, done);
}

std::vector<Result> probe_all(http::Client &client, const std::vector<ServiceEndpoint> &services,
                              const Settings &settings, const http::WaitHook &wait,
                              const ResultHook &on_result) {
    std::vector<Result> results(services.size());
    bool handed = false;
    probe_feed(
        client,
        [&](std::vector<FedProbe> &out) {
            if (!handed) {
                handed = true;
                for (size_t i = 0; i < services.size(); i++)
                    out.push_back({i, services[i]});
            }
            return false;
        },
        settings, wait,
        [&](size_t i, const Result &r) {
            results[i] = r;
            if (on_result)
                on_result(i, r);
        });
    return results;
}

Result probe_one(http::Client &client, const ServiceEndpoint &service, const Settings &settings,
                 const http::WaitHook &wait) {
    return probe_all(client, {service}, settings, wait).front();
}

}  // namespace pgi::probe
