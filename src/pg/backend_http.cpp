#include "backend_http.h"

#include "cpp_wall.h"

extern "C" {
#include "access/xact.h"
#include "storage/proc.h"
#include "utils/timestamp.h"
}

#include <algorithm>

#include "settings.h"

namespace pgi::pg {

http::Client &backend_client() {
    static http::Client client;
    return client;
}

http::Request make_request(const translate::UpstreamRequest &call, const ServiceEndpoint &service) {
    http::Request r;
    r.method = call.method;
    r.url = call.url;
    r.headers = call.headers;
    r.body = call.body;
    set_transport(service, r);
    r.connect_timeout_ms = setting_connect_timeout_ms;
    r.timeout_ms =
        service.request_timeout_ms > 0 ? service.request_timeout_ms : setting_request_timeout_ms;
    r.max_response_size = static_cast<size_t>(setting_max_response_size_kb) * 1024;
    return r;
}

http::RetryPolicy retry_policy() {
    http::RetryPolicy p;
    p.max_retries = setting_max_retries;
    if (StatementTimeout > 0) {
        // Time left before statement_timeout fires, measured from the statement's start.
        TimestampTz end =
            TimestampTzPlusMilliseconds(GetCurrentStatementStartTimestamp(), StatementTimeout);
        long left_ms = std::max<long>(0, (end - GetCurrentTimestamp()) / 1000);
        p.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(left_ms);
    }
    return p;
}

std::vector<http::Response> perform_calls(const std::vector<http::Request> &requests) {
    return backend_client().perform(requests, static_cast<size_t>(setting_max_concurrency),
                                    check_for_interrupts, retry_policy());
}

}  // namespace pgi::pg
