// The wire protocols a registered service can speak, and the per-protocol facts every other part
// needs: names, auth headers and well-known paths.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tls_files.h"

namespace pgi {

namespace http {
struct Request;
}

namespace net {
class AddressFilter;
}

enum class Protocol { kOpenAiV1, kGeminiV1Beta, kAnthropicV1 };

// "OPENAI_V1" etc. Parsing is case-insensitive; nullopt for anything else.
std::optional<Protocol> parse_protocol(const std::string &text);
const char *protocol_name(Protocol p);

// A service's price in force when the catalog was read (inference.prices). The ledger prices
// usage exactly, in SQL, from the version id; the rates here are doubles for /metrics alone.
struct Price {
    int64_t id = 0;  // the inference.price_store version; 0: the service has no price
    double input_per_mtok = 0;
    double output_per_mtok = 0;
    double cached_input_per_mtok = 0;  // the input price when none was set
    // The same in nano-units of the currency per million tokens, exact (budget.h).
    int64_t input_nano = 0;
    int64_t output_nano = 0;
    int64_t cached_input_nano = 0;
    std::string currency;
};

// Everything needed to call one registered service. The api_key is the plain key, already
// decrypted or read from the environment; it must never be logged or put in an error.
struct ServiceEndpoint {
    std::string name;
    std::string model;
    std::string base_url;  // validated, no trailing '/'
    Protocol protocol = Protocol::kOpenAiV1;
    std::string api_key;  // empty: no auth header is sent
    bool allow_insecure = false;
    // Set when the service was registered (or its key last set) by a role that
    // inference.blocked_networks restricts: every connection made for it is refused when its
    // address is in these networks. Null: no address is refused.
    std::shared_ptr<const net::AddressFilter> blocked_networks;
    // The whole time one upstream request of this service may take (streams: the longest the
    // upstream may stay silent); 0: the host's default (inference.request_timeout).
    long request_timeout_ms = 0;
    tls::Files tls{};  // set by a superuser: paths the server reads
    Price price{};

    // The key is wiped when an endpoint goes: snapshots and catalogs hold plain keys for as
    // long as they live, and freed memory must not keep them.
    ServiceEndpoint() = default;
    ServiceEndpoint(const ServiceEndpoint &) = default;
    ServiceEndpoint(ServiceEndpoint &&) = default;
    ServiceEndpoint &operator=(const ServiceEndpoint &) = default;
    ServiceEndpoint &operator=(ServiceEndpoint &&) = default;
    ~ServiceEndpoint();
};

// The headers that carry the upstream credentials (and Anthropic's version header), as
// "Name: value" lines ready for curl. Empty key: only non-secret headers.
std::vector<std::string> auth_headers(const ServiceEndpoint &service);

// How every request to the service connects: its TLS verification and files, and the networks
// it may not reach. One place, so that no path (probe, SQL call, gateway) forgets one.
void set_transport(const ServiceEndpoint &service, http::Request &request);

}  // namespace pgi
