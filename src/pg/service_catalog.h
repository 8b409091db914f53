// The catalog tables of the registry (inference.services, inference.service_secrets,
// inference.service_status), read and written through SPI. Callers run inside SECURITY DEFINER
// functions, so these queries see tables that ordinary roles cannot.
#pragma once

#include "cpp_wall.h"

extern "C" {
#include "datatype/timestamp.h"
}

#include <optional>
#include <string>
#include <vector>

#include "gateway.h"
#include "protocol.h"
#include "routing.h"
#include "status_store.h"

namespace pgi::pg {

struct ServiceRow {
    std::string name;
    std::string model;
    std::string base_url;
    Protocol protocol = Protocol::kOpenAiV1;
    std::vector<std::string> functions;
    std::vector<std::string> tags;
    bool allow_insecure = false;
    std::optional<std::string> sealed_key;  // AES-GCM blob
    std::optional<std::string> key_env;     // env:NAME reference
    std::optional<std::string> rerank_route;
    std::optional<int64_t> request_timeout_ms;  // NULL: inference.request_timeout
    tls::Files tls;                             // NULL columns: empty paths
    // The role that registered it, or last set its key, was a superuser: exempt from
    // inference.allowed_env_keys and inference.blocked_networks.
    bool registered_by_superuser = false;
    Price price;  // the latest version in inference.price_store; id 0: it has none
};

// A route: one name for several services (inference.route_store).
struct RouteRow {
    std::string name;
    std::vector<routing::Target> targets;
    std::vector<std::string> fallback_on;
    int64_t cooldown_us = 0;
};

// Secrets to store with a service: exactly one of the two, or neither.
struct SecretValue {
    std::optional<std::string> sealed_key;
    std::optional<std::string> key_env;
};

std::optional<ServiceRow> find_service(const std::string &name);
std::vector<ServiceRow> all_services();
// find_service, or ERROR 42704 naming the service.
ServiceRow require_service(const std::string &name);

std::optional<RouteRow> find_route(const std::string &name);
std::vector<RouteRow> all_routes();
// The error for a service name that a route holds (42710).
pgi::Error route_name_taken(const std::string &name);
// Taken (to the end of the transaction) before a service or a route is given a name, so that
// the check that no route or service holds it sees every committed one.
void lock_names();

// Also refuses a name that a route holds.
void insert_service(const ServiceRow &row, const SecretValue &secret);
void update_service_labels(const std::string &name,
                           const std::optional<std::vector<std::string>> &functions,
                           const std::optional<std::vector<std::string>> &tags);
// Also records whether the role setting the key is a superuser (registered_by_superuser).
// Sets the service's own request timeout; nullopt: back to inference.request_timeout.
void update_service_timeout(const std::string &name, std::optional<int64_t> timeout_ms);
void update_service_tls(const std::string &name, const tls::Files &files);
void replace_secret(const std::string &name, const SecretValue &secret, bool by_superuser);
void delete_service(const std::string &name);
void persist_status(const std::string &name, const StatusRecord &record);
// Writes many statuses (same order as names, checked_at set) in one statement. Returns the names
// of the services that still exist: a service deleted meanwhile, or being deleted by a
// transaction still open, gets no row.
std::vector<std::string> persist_statuses(const std::vector<std::string> &names,
                                          const std::vector<StatusRecord> &records);
void remember_rerank_route(const std::string &name, const std::string &route);

// Every access key, as the gateway's snapshot holds them.
std::vector<gateway::AccessKey> all_access_keys();

// The endpoint of a service with a key given rather than stored (a registration's, a new one):
// a service not registered by a superuser gets the current inference.blocked_networks.
ServiceEndpoint endpoint_with_key(const ServiceRow &row, const std::string &plain_key);
// The endpoint with the plain key (decrypted or read from the environment). A service not
// registered by a superuser gets the current inference.blocked_networks, and its env:NAME must be
// in inference.allowed_env_keys (ERROR 42501 otherwise).
ServiceEndpoint endpoint_of(const ServiceRow &row);

}  // namespace pgi::pg
