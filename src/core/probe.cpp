#include "probe.h"

#include <map>
#include <nlohmann/json.hpp>

#include "address_filter.h"
#include "error.h"
#include "redact.h"
#include "upstream_error.h"

namespace pgi::probe {

namespace {

constexpr const char *kTlsHint =
    "A trusted self-signed endpoint needs allow_insecure => true at registration.";

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
    request.insecure = service.allow_insecure;
    request.blocked_networks = service.blocked_networks;
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
            Result r = failure(sqlstate::kInsufficientPrivilege, "endpoint refused: " + why, url,
                               status);
            r.hint = net::kBlockedCallHint;
            return r;
        }
        Result r =
            failure(sqlstate::kUpstreamUnreachable, "endpoint unreachable: " + why, url, status);
        if (response.tls_error)
            r.hint = kTlsHint;
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

std::vector<Result> probe_all(http::Client &client, const std::vector<ServiceEndpoint> &services,
                              const Settings &settings, const http::WaitHook &wait,
                              const ResultHook &on_result) {
    std::vector<std::string> urls;
    std::vector<http::Request> requests;
    urls.reserve(services.size());
    requests.reserve(services.size());
    for (const auto &s : services) {
        urls.push_back(probe_url(s));
        requests.push_back(probe_request(s, urls.back(), settings));
    }
    // A result settled by the first response is handed on at once; the rest wait for the
    // model-list round below.
    http::DoneHook first_done;
    if (on_result)
        first_done = [&](size_t i, const http::Response &response) {
            if (!needs_list_fallback(services[i], response))
                on_result(i, diagnose(services[i], urls[i], response));
        };
    const std::vector<http::Response> responses =
        client.perform(requests, settings.max_concurrency, wait, {}, first_done);

    // Services behind one vLLM server share one list request.
    std::vector<http::Request> list_requests;
    std::map<std::string, size_t> list_index_by_key;
    constexpr size_t kNoList = static_cast<size_t>(-1);
    std::vector<size_t> list_index(services.size(), kNoList);
    std::vector<Result> results(services.size());
    for (size_t i = 0; i < services.size(); i++) {
        const ServiceEndpoint &s = services[i];
        if (!needs_list_fallback(s, responses[i])) {
            results[i] = diagnose(s, urls[i], responses[i]);
            continue;
        }
        http::Request request = probe_request(s, list_url(s), settings);
        std::string key = request.url + (request.insecure ? "\n1" : "\n0") +
                          (request.blocked_networks ? "1" : "0");
        for (const auto &h : request.headers)
            key += "\n" + h;
        auto [it, inserted] = list_index_by_key.emplace(key, list_requests.size());
        if (inserted)
            list_requests.push_back(std::move(request));
        list_index[i] = it->second;
    }
    if (list_requests.empty())
        return results;

    const std::vector<http::Response> list_responses =
        client.perform(list_requests, settings.max_concurrency, wait);
    for (size_t i = 0; i < services.size(); i++) {
        if (list_index[i] == kNoList)
            continue;
        const http::Request &list_request = list_requests[list_index[i]];
        results[i] = diagnose_list_fallback(services[i], urls[i], responses[i], list_request.url,
                                            list_responses[list_index[i]]);
        if (on_result)
            on_result(i, results[i]);
    }
    return results;
}

Result probe_one(http::Client &client, const ServiceEndpoint &service, const Settings &settings,
                 const http::WaitHook &wait) {
    return probe_all(client, {service}, settings, wait).front();
}

}  // namespace pgi::probe
