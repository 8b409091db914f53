// Outbound HTTP from a backend: one curl-multi client per backend (its connection cache is what
// makes one call per row cost one round trip, not a handshake), with requests shaped by the
// inference.* settings and retries bounded by the statement's remaining time.
#pragma once

#include <vector>

#include "http_client.h"
#include "translate.h"

namespace pgi::pg {

http::Client &backend_client();

// An upstream call to a service as an HTTP request with the session's timeouts and size cap, and
// the service's TLS and address restrictions.
http::Request make_request(const translate::UpstreamRequest &call, const ServiceEndpoint &service);

// Retries per inference.max_retries, never past statement_timeout.
http::RetryPolicy retry_policy();

// Runs requests with at most inference.max_concurrency in flight, cancellable.
std::vector<http::Response> perform_calls(const std::vector<http::Request> &requests);

}  // namespace pgi::pg
