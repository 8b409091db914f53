// The gateway engine: an OpenAI-compatible HTTP server on a libevent event_base
// (evhttp, HTTP/1.1 keep-alive, chunked SSE, optional TLS) that authenticates callers with access
// keys, routes each request to a registered service, translates it with pgi::translate and calls
// the upstream through http::AsyncClient (curl multi on the same loop). No threads, no blocking
// calls, no PostgreSQL: the host (a listener background worker) owns the event_base, feeds
// catalog snapshots in and provides the Governor (rate limits, usage, metrics).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "budget.h"
#include "protocol.h"
#include "routing.h"
#include "translate.h"
#include "translate_rerank.h"

struct event_base;

namespace pgi::gateway {

// A set of rate limits as the catalog stores them (nullopt: no such limit); enforced by the
// Governor, the engine only carries them.
struct LimitValues {
    std::optional<int> rpm, rph, burst;
    std::optional<int64_t> tokens_per_hour;
};

struct AccessKey {
    std::string name;
    std::string tenant;
    std::string key_hash;                              // raw SHA-256 of the key (32 bytes)
    std::optional<std::vector<std::string>> services;  // nullopt: every service
    std::optional<int64_t> expires_at_ms;              // unix milliseconds
    bool revoked = false;
    LimitValues limits;
    // Limits per end user of the key (the user id a request names: docs/routing.md).
    std::optional<int> user_rpm;
    std::optional<int64_t> user_tokens_per_hour;
    // May use /inferenceservices/ (pass-through). With a token limit, only on paths whose
    // answers carry usage the gateway reads (passthrough_usage_shape).
    bool passthrough = true;
    // The limits every key of `tenant` shares (set_tenant_limits), enforced by the Governor
    // beside the key's own.
    LimitValues tenant_limits;
    // Budgets in money (budget.h): the key's own and its tenant's.
    governance::Budget budget, tenant_budget;

    bool budgeted() const { return budget.any() || tenant_budget.any(); }

    bool allows(const std::string &service) const;
};

// A route: a name whose requests go to one of several services (docs/routing.md).
struct RouteEntry {
    std::vector<routing::Target> targets;
    std::vector<std::string> fallback_on = routing::kDefaultFallbackOn;
    int64_t cooldown_us = routing::kDefaultCooldownUs;
};

// Everything the request path needs, immutable once published. In-flight requests keep the
// snapshot they started with, so a reload never pulls a service from under a transfer.
struct Snapshot {
    std::map<std::string, ServiceEndpoint> services;  // by service name
    // Rerank route known to work per service: "ranking" or "rerank". Others are probed
    // (/v1/ranking, then /v1/rerank on 404) and remembered by the Server.
    std::map<std::string, std::string> rerank_routes;
    std::unordered_map<std::string, AccessKey> keys;  // by key_hash
    std::map<std::string, RouteEntry> routes;         // by route name; targets are services
    uint64_t generation = 0;
    // Set when the gateway cannot serve at all (the extension is not installed in the database
    // the listeners read): every request but GET /metrics is answered 503 with this message,
    // before any access key is looked at.
    std::optional<std::string> unavailable;
};

struct Config {
    // "localhost", "*" (every IPv4 and IPv6 address), or literal addresses / host names.
    std::vector<std::string> listen_addresses = {"localhost"};
    int port = 8765;                          // 0: an ephemeral port (tests), see Server::port()
    std::string tls_cert_file, tls_key_file;  // HTTPS when both are set
    bool require_key = true;
    std::size_t max_body_size = 16u << 20;
    std::size_t max_response_size = 64u << 20;  // per upstream answer
    long connect_timeout_ms = 10000;
    // Non-streaming upstream calls: the whole call. Streams and pass-through: the longest the
    // upstream may stay silent (an idle timer), since an LLM stream may last minutes.
    long request_timeout_ms = 120000;
    int client_timeout_s = 60;  // idle keep-alive, slow request and stalled writes
    // A deadline, not an idle timer: a request's headers must be complete this long after its
    // first byte, and its body this long after its headers, or the connection is closed.
    int header_timeout_s = 10;
    long default_max_tokens = 1024;  // Anthropic needs max_tokens (inference.default_max_tokens)
    int max_retries = 2;             // non-streamed upstream failures (the retryable statuses)
    // Open client connections a Server (one listener process) keeps; past it a new connection
    // is answered 503 and closed. 0: no cap.
    std::size_t max_connections = 10000;
    // A request header whose value names the service or route, for every endpoint (pass-through
    // included); the body's model is rewritten to match. Empty: none.
    std::string model_header = "x-ai-eg-model";
    // A request header naming the end user a request is for, for per-user limits; without it the
    // body's user, safety_identifier or metadata.user_id. Empty: only the body.
    std::string user_header = "x-user-id";
};

// What an admitted request holds of its key's budgets until it is finished: its worst-case cost,
// reserved in the key's and the tenant's current periods (budget.h).
struct Reservation {
    int64_t nano = 0;
    int32_t key_period = 0;
    int32_t tenant_period = 0;
};

// A governance decision for one request. headers go on the response in every case
// (x-ratelimit-*, retry-after); a refusal answers status with an OpenAI error carrying message.
struct Admission {
    bool allowed = true;
    int status = 429;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string message;
    std::string code = "rate_limit_exceeded";
    Reservation reservation;  // what an admitted request reserved
};

// The API a request's caller spoke, as /metrics labels it; Finished::dialect indexes it.
inline constexpr const char *kDialectLabels[] = {
    "openai_chat", "anthropic",         "openai_responses", "openai_completions",
    "gemini",      "openai_embeddings", "rerank",           "passthrough",
    "other"};
inline constexpr int kDialectCount = sizeof(kDialectLabels) / sizeof(kDialectLabels[0]);

// What the gateway reports of one finished request (Governor::finished).
struct Finished {
    const AccessKey *key = nullptr;            // null: no key (or none was valid)
    const ServiceEndpoint *service = nullptr;  // null: the request never resolved to one
    std::string_view user;                     // the end user it named; empty: none
    // What the caller got; a stream that the upstream broke counts as 502, a request the caller
    // abandoned as 499 and one cut off by the Server's destruction as 503.
    int status = 0;
    translate::Usage usage;
    double total_ms = 0;
    double upstream_ms = 0;  // 0: no upstream call was made
    // A streamed answer: when its first body bytes went to the caller, from the request's
    // arrival (the time to first token as the caller sees it); < 0: not streamed.
    double first_byte_ms = -1;
    int dialect = kDialectCount - 1;  // the caller's API: an index into kDialectLabels
    bool rate_limited = false;        // refused by the key's limits or budgets
    Reservation reservation;          // what its admission reserved, to be settled
    std::string_view route;           // the route the caller named; empty: a service
    std::string_view error;           // the error code the gateway answered with; empty: none
};

// The host's hooks. The default allows everything and records nothing. Called on the loop
// thread; must not block.
class Governor {
  public:
    virtual ~Governor();
    // Before the upstream call of a request that named an existing service it may use. key is
    // null when the gateway runs without keys and the caller sent none; user is the end user the
    // request names (Config::user_header, else the body), empty when it names none. For a key
    // with a budget, `cost` is the most the request may cost (nano-units of `currency`), to be
    // reserved; 0 otherwise.
    virtual Admission admit(const AccessKey *key, const std::string &service, std::string_view user,
                            int64_t cost, const std::string &currency);
    // Once per request except /health and /metrics, when the answer is complete (requests
    // libevent refuses before the gateway sees them, oversized or malformed, are not reported).
    virtual void finished(const Finished &request);
    // The body of GET /metrics (Prometheus text format 0.0.4).
    virtual std::string metrics_text();
    // A rerank route found by probing, for the host to persist (the Server remembers it too).
    virtual void rerank_route_learned(const std::string &service, translate::RerankRoute route);
    // A warning for the server log (accept failures, libevent's own complaints). The Server
    // rate-limits them: the same message at most once per 10 s, with a count of its repeats.
    virtual void warning(const std::string &message);

    // The services' circuit breakers (routing::Breaker). A request through a route asks whether
    // it may try a target (the route's cooldown given); every upstream call's outcome is
    // reported (failed: a fallback condition of its route, or of the defaults for a call that
    // named the service); a probe whose caller left is given back. These defaults keep the
    // breakers in this process; a host with several processes shares them.
    virtual routing::Pass breaker_may_try(const std::string &service, int64_t cooldown_us);
    virtual void breaker_report(const std::string &service, bool failed, int64_t cooldown_us);
    virtual void breaker_probe_abandoned(const std::string &service);

  private:
    struct LocalBreaker {
        routing::Breaker breaker{0, 0};
        int64_t cooldown_us = routing::kDefaultCooldownUs;  // the last route's
    };
    std::map<std::string, LocalBreaker> breakers_;
};

// A new event_base for a listener's loop (null on failure). It uses epoll's changelist, which
// folds the disable/enable pairs that evhttp and libcurl make on one socket within a loop turn
// into at most one epoll_ctl: two system calls fewer per request.
event_base *new_event_base();

class Server {
  public:
    // The event_base, config and governor must outlive the Server.
    Server(event_base *base, Config config, Governor &governor);
    // Closes the listening sockets and client connections and aborts upstream transfers. For a
    // graceful stop, call stop_listening() first and keep the loop running until in_flight()
    // is 0 (or a deadline passes).
    ~Server();
    Server(const Server &) = delete;
    Server &operator=(const Server &) = delete;

    // Raises the process's soft limit of open descriptors to its hard limit (every client
    // connection and upstream transfer holds one; the usual soft limit of 1024 is far below
    // max_connections), loads the TLS certificate and key when configured, then binds every
    // listen address (SO_REUSEPORT, so several processes share the port). Throws pgi::Error F0000
    // when a file cannot be loaded or an address cannot be resolved or bound (each address must
    // bind at least one socket: "localhost" on a host without IPv6 binds 127.0.0.1 alone).
    void listen();
    // Stops accepting connections; requests in flight continue (graceful shutdown).
    void stop_listening();
    // The port actually bound (useful with port 0), or 0 before listen().
    int port() const;

    // Applies the settings that may change while serving (a configuration reload): require_key,
    // max_body_size, client_timeout_s, header_timeout_s, the upstream timeouts, retries, response
    // size cap, default_max_tokens and max_connections (connections open past a lowered cap stay).
    // Requests that have started keep what they started with; connections already open keep their
    // client timeout. Addresses, port and TLS files are read by listen() alone: a change to them
    // needs a new Server.
    void reconfigure(const Config &config);
    // Publishes a new catalog; requests already running keep the one they started with.
    void set_snapshot(std::shared_ptr<const Snapshot> snapshot);
    // Called on the loop thread before each request's key is checked: the host publishes a
    // newer snapshot there (set_snapshot) when the catalog changed since it loaded its own, so
    // the request after a committed create, rotate, update or revoke of a key is served by it.
    // It must be cheap when nothing changed (a counter read).
    void set_catalog_check(std::function<void()> check);
    // Requests being served (waiting on or streaming from an upstream).
    std::size_t in_flight() const;

    struct ConnectionStats {
        std::size_t open = 0;          // client connections now
        uint64_t refused = 0;          // answered 503 past max_connections, since the start
        uint64_t accept_failures = 0;  // accept() errors (descriptors exhausted, say)
    };
    ConnectionStats connection_stats() const;

    struct Impl;

  private:
    std::unique_ptr<Impl> impl_;
};

}  // namespace pgi::gateway
