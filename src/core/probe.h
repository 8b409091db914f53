// The connectivity probe and its diagnosis. Registration, key
// updates, check_service and the health worker all ask the same question the same way, so a
// service's status_message reads the same whoever produced it.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "http_client.h"
#include "protocol.h"

namespace pgi::probe {

struct Result {
    bool ok = false;
    std::string message;   // the diagnosis shown to users ("" when ok)
    std::string hint;      // what to do, when the message alone does not say
    std::string sqlstate;  // one of pgi::sqlstate's upstream codes ("" when ok)
    long http_status = 0;
    std::string url;  // the URL whose answer decided the result (never contains a key)
};

struct Settings {
    long timeout_ms = 10000;
    long connect_timeout_ms = 10000;
    size_t max_concurrency = 64;
};

// OPENAI_V1 and ANTHROPIC_V1: base_url/v1/models/<model>; GEMINI_V1_BETA:
// base_url/v1beta/models/<model>.
std::string probe_url(const ServiceEndpoint &service);

// Hears of each service's result (by its id or index) as soon as it is known.
using ResultHook = std::function<void(size_t index, const Result &result)>;

// A probe to start from a feed, with the caller's tag for it.
struct FedProbe {
    size_t id = 0;
    ServiceEndpoint service;
};

// Polled on every turn of the client's loop (at least every 20 ms): appends the probes to start
// now to out, and returns false once no more will come (it is not called again after that).
using ProbeFeeder = std::function<bool(std::vector<FedProbe> &out)>;

// Probes services as feeder hands them over, with one client and no retries (a health check
// reports what it sees), so a long-running caller can start a service's next probe while another
// one still hangs. An OPENAI_V1 404 is followed by GET base_url/v1/models, looking for the model
// id in data[].id, because vLLM serves no per-model route; that request is just another one in
// the same loop, so it waits for nothing else, and services behind one server share one list
// request. on_result hears of each probe by its id as soon as its result is known. Returns when
// the feeder has said stop and every probe has its result. settings is read as each probe starts
// (a caller may change its timeouts between turns); max_concurrency only at the start.
void probe_feed(http::Client &client, const ProbeFeeder &feeder, const Settings &settings,
                const http::WaitHook &wait, const ResultHook &on_result);

// probe_feed over a fixed list: results in the order of services, and on_result, when set, gets
// each one (by its index) as its probe ends.
std::vector<Result> probe_all(http::Client &client, const std::vector<ServiceEndpoint> &services,
                              const Settings &settings, const http::WaitHook &wait,
                              const ResultHook &on_result = nullptr);
Result probe_one(http::Client &client, const ServiceEndpoint &service, const Settings &settings,
                 const http::WaitHook &wait);

// The diagnosis of one probe response. Pure.
Result diagnose(const ServiceEndpoint &service, const std::string &url,
                const http::Response &response);

// The verdict after an OPENAI_V1 per-model 404 and the model-list request that followed. Pure.
// Found in the list: ok. Not in the list, or the list is 404 too: the per-model 404 diagnosis. A
// 2xx list that is not a model list: PI400. Any other list failure: that response's diagnosis.
Result diagnose_list_fallback(const ServiceEndpoint &service, const std::string &model_url,
                              const http::Response &model_response, const std::string &list_url,
                              const http::Response &list_response);

}  // namespace pgi::probe
