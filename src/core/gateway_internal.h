// The gateway's moving parts, shared by gateway.cpp (server, routing, access), gateway_openai.cpp
// (chat, embeddings, rerank) and gateway_passthrough.cpp. Not an API for the rest of the project.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "error.h"
#include "gateway.h"
#include "gateway_request.h"
#include "http_async.h"
#include "log_throttle.h"
#include "modules.h"

struct bufferevent;
struct event;
struct evconnlistener;
struct evbuffer;
struct evhttp;
struct evhttp_bound_socket;
struct evhttp_connection;
struct evhttp_request;
struct evbuffer_cb_entry;
typedef struct ssl_ctx_st SSL_CTX;

namespace pgi::gateway {

using Clock = std::chrono::steady_clock;

// What every request that reached a service carries into its exchange.
struct RequestContext {
    evhttp_request *req = nullptr;
    Clock::time_point started;
    std::shared_ptr<const Snapshot> snapshot;  // keeps key and service alive
    const AccessKey *key = nullptr;
    const ServiceEndpoint *service = nullptr;
    std::vector<std::pair<std::string, std::string>> headers;  // the Governor's, on every reply
    bool ledger = true;  // tell the Governor (not for /health and /metrics)
    // The caller's dialect when it is not the gateway's own OpenAI shape: its errors are written
    // by this module (Anthropic's {"type":"error",...}), with that dialect's error types.
    const protocols::Module *dialect = nullptr;
    // A request that named a route: the route, its draws of the targets to try, and the current
    // try's breaker pass.
    const RouteEntry *route = nullptr;
    routing::Attempts attempts;
    routing::Pass pass = routing::Pass::kClosed;
    // The service or route was named by Config::model_header, not by the path or body.
    bool model_from_header = false;
    // The end user the request names (Config::user_header, else the body); empty: none.
    std::string end_user;
    Endpoint endpoint = Endpoint::kUnknown;  // as routed, for the metrics' dialect label
    Reservation reservation;                 // held of the key's budgets until finished
    std::string route_name;                  // the route the caller named; empty: a service
    std::string error_code;                  // the code of the gateway's error answer
};

// One request being served with an upstream call. Owned by Server::Impl::exchanges until done;
// deleted once done and no callback of it is on the stack (busy == 0).
struct Exchange {
    Exchange(Server::Impl &server, RequestContext &&context);
    virtual ~Exchange();
    Exchange(const Exchange &) = delete;
    Exchange &operator=(const Exchange &) = delete;

    // Bytes of the upstream's 2xx body, for calls made with streamed = true.
    virtual bool on_body(const http::Response &head, const char *data, std::size_t size);
    // The upstream call's outcome. Ends in a reply (Server::Impl::respond and friends) or in a
    // new upstream call.
    virtual void on_done(http::Response &response) = 0;
    // The caller left before the answer was complete: usage is set to what the tokens spent so
    // far are charged (a stream cut short still cost them).
    virtual void on_caller_left() {}

    Server::Impl &server;
    RequestContext context;
    evhttp_request *req;  // null once the reply is handed to libevent or the caller left
    evhttp_connection *conn;
    Clock::time_point upstream_started;
    double upstream_ms = 0;
    http::AsyncClient::Id upstream = 0;
    translate::Usage usage;
    bool streaming = false;  // the reply's status line and headers are sent
    bool done = false;
    int busy = 0;
    evbuffer *chunk = nullptr;   // reused for streamed chunks
    bool chunk_pending = false;  // chunk holds bytes for the end of this loop turn
    double first_byte_ms = -1;   // when send_chunk first had bytes for the caller; < 0: never
    // Plans and starts the upstream call for context.service: the first try, and each fallback
    // to another target of a route (Server::Impl::fall_back). Set by the starters whose requests
    // may name a route (all but pass-through).
    std::function<void()> begin;
    // A stream whose caller reads slowly: the upstream is paused while the connection's output
    // holds more than kStreamHighWater bytes, and resumed below kStreamLowWater (drain_cb).
    bool upstream_paused = false;
    evbuffer_cb_entry *drain_cb = nullptr;
    std::string out;  // reused for translated stream output
};

// A watched client connection, between its requests' first bytes and their dispatch. Until a
// request's headers are complete, the connection's read low-water mark keeps libevent from
// parsing them (its read callback does not run), so that the headers can be checked whole before
// any body is read: a caller refused for its key (401) or its Content-Length (413) is answered
// and disconnected at once. The timer is the header deadline, then the body deadline.
struct ClientConnection {
    enum class Phase {
        kIdle,       // between requests: nothing of the next one has arrived
        kHeaders,    // headers arriving, held from libevent
        kBody,       // headers checked and passed to libevent, body arriving
        kServing,    // the request reached the gateway's handler
        kUnchecked,  // pipelined: the next request was already buffered, libevent parses it
    };
    Server::Impl *impl = nullptr;
    evhttp_connection *conn = nullptr;
    bufferevent *bev = nullptr;
    event *timer = nullptr;
    evbuffer_cb_entry *input_cb = nullptr;
    Phase phase = Phase::kIdle;
    std::size_t scanned = 0;  // input bytes already searched for the end of the headers
    std::string refusal;      // a complete response to send before closing, when refused
    int refusal_status = 0;
};

// ---- what the gateway's files share (gateway.cpp defines the functions) ----

// OpenAI model objects need a creation time; services have none worth exposing.
inline constexpr long long kModelCreated = 1735689600;  // 2025-01-01T00:00:00Z

// How long listening pauses after accept() failed: long enough not to spin while descriptors are
// exhausted, short enough that a freed descriptor is soon used again.
inline constexpr long kAcceptPauseMs = 100;
// How long a refused connection is drained before it is closed, so that what the client sent
// does not turn the close into a reset that could destroy the 503 before it is read.
inline constexpr auto kLingerTime = std::chrono::seconds(2);
// The longest header block evhttp accepts (evhttp_set_max_headers_size); a longer one is refused
// with 431 before libevent reads it (Server::Impl::client_input).
inline constexpr size_t kMaxHeaderBytes = 64 * 1024;
// The methods any route serves; libevent refuses others before a route is looked up.
inline constexpr unsigned kServedMethods =
    kGet | kPost | kHead | kPut | kDelete | kOptions | kPatch;
// A streamed answer pauses its upstream while more than this waits for a slow caller, and
// resumes below the low mark: a slow reader costs at most about this much memory.
inline constexpr size_t kStreamHighWater = 1u << 20;
inline constexpr size_t kStreamLowWater = 256u << 10;

double ms_since(Clock::time_point t);
void add_headers(evhttp_request *req,
                 const std::vector<std::pair<std::string, std::string>> &headers);
// Sends an answer with its headers; a HEAD request gets the headers and the body's length only.
void send_response(evhttp_request *req, int status, std::string &&body, const char *content_type,
                   const std::vector<std::pair<std::string, std::string>> &headers);
// The gateway's own OpenAI-shaped error object.
std::string error_body(std::string_view message, int status, std::string_view code,
                       std::string_view param);

// A watched client connection closes (Server::Impl::watch; also called when a connection that
// carried an exchange goes, gateway_exchanges.cpp).
void on_connection_close(evhttp_connection *conn, void *arg);

// Who lists models on the OpenAI path says so by a header: anthropic-version on every Anthropic
// SDK request, x-goog-api-key or x-goog-api-client on every Google Gen AI SDK request.
enum class ModelsCaller { kOpenAi, kAnthropic, kGemini };
ModelsCaller models_caller(bool anthropic_version, bool goog_header);
// The caller's dialect for a route: null for the gateway's own OpenAI shape
// (gateway_requests.cpp).
const protocols::Module *dialect_for(const Route &r, ModelsCaller caller);

// The endpoints' starters (gateway_chat.cpp, gateway_openai.cpp, gateway_passthrough.cpp): each
// builds its exchange, translates the request and calls the upstream, or answers the caller's
// mistake. start_chat serves the chat route of every dialect: `caller` is the route's module.
void start_chat(Server::Impl &server, RequestContext &&context, nlohmann::json body,
                const protocols::Module &caller, bool stream_route = false);
// start_count_tokens serves the counting routes: `caller` is the Anthropic or the Gemini module.
void start_count_tokens(Server::Impl &server, RequestContext &&context, nlohmann::json body,
                        const protocols::Module &caller);
void start_embeddings(Server::Impl &server, RequestContext &&context, nlohmann::json body);
void start_rerank(Server::Impl &server, RequestContext &&context, nlohmann::json body);

// The most a request may cost, in nano-units of `currency` (set to the dearest service's), for a
// key with a budget: its prompt estimated (count_tokens::estimate for chat requests, a token per
// 4 bytes of the body otherwise) plus its max_tokens, or default_max_tokens, at the dearest
// price among the services it may go to (gateway_budget.cpp).
int64_t worst_cost(const Snapshot &snapshot, const RequestContext &context, Endpoint endpoint,
                   const nlohmann::json &body, std::size_t body_bytes, long default_max_tokens,
                   std::string &currency);
// Gemini's embedContent / batchEmbedContents (gateway_gemini.cpp).
void start_gemini_embeddings(Server::Impl &server, RequestContext &&context, nlohmann::json body,
                             bool batch);
void start_passthrough(Server::Impl &server, RequestContext &&context, const Route &route);
// The caller's headers its dialect forwards with a request passed through to a service of the
// same protocol (Anthropic's anthropic-beta; gateway_anthropic.cpp).
void forward_dialect_headers(const Exchange &ex, translate::UpstreamRequest &request);
// An Anthropic model object / list for GET /v1/models with an anthropic-version header.
nlohmann::json anthropic_model_object(const std::string &name);
nlohmann::json anthropic_model_list(const std::vector<std::string> &names);
// A Gemini model object / list for GET /v1beta/models[/{model}] (gateway_gemini.cpp).
nlohmann::json gemini_model_object(const std::string &name);
nlohmann::json gemini_model_list(const std::vector<std::string> &names);

// The caller's body as it arrived (handle_service_call made it one contiguous piece to parse it),
// for calls that pass it on rather than serialise the parsed document again.
std::string_view raw_body(const Exchange &ex);
// Whether an upstream call succeeded with a 2xx answer.
bool upstream_ok(const http::Response &response);
// The headers of an SSE answer.
extern const std::vector<std::pair<std::string, std::string>> kSseHeaders;

// A translated upstream call as the HTTP client's request.
http::Request to_http(translate::UpstreamRequest &&request);

struct Server::Impl {
    Impl(event_base *base, Config config, Governor &governor);
    ~Impl();

    // evhttp's entry point and what it hands requests to. A handler that answers, or hands the
    // request to an exchange, clears context.req.
    void handle(evhttp_request *req);
    // The caller's access key: null when it is valid (key set to it), else why it is refused.
    const char *check_key(const Snapshot &snapshot, const char *authorization,
                          const char *x_api_key, const AccessKey **key) const;
    // Checks a request's complete header block before its body is read: a full response (and its
    // status) when the request would be refused for its key or its size, "" otherwise.
    // body_length: the Content-Length, 0 without one, -1 when chunked or unreadable.
    std::string precheck(std::string_view headers, int &status, long long &body_length) const;
    void handle_models(RequestContext &context, const Route &route);
    void handle_service_call(const Route &route, RequestContext &context);

    // What the Governor is told of a request that ends now with status (no usage, no upstream).
    static Finished finished_of(const RequestContext &context, int status, bool rate_limited);
    // Answers a request that made no upstream call, and tells the Governor (context.ledger).
    void reply(RequestContext &context, int status, std::string body,
               const char *content_type = "application/json", bool rate_limited = false);
    void reply_error(RequestContext &context, int status, std::string_view message,
                     std::string_view code = {}, std::string_view param = {},
                     bool rate_limited = false);
    // An error body in the caller's dialect (context.dialect), OpenAI's shape by default.
    static std::string error_json(const RequestContext &context, int status,
                                  std::string_view message, std::string_view code,
                                  std::string_view param);

    // The evhttp side of config (body size cap, client timeout), at start and on reconfigure.
    void apply_http_limits();

    // Connections. Every accepted connection gets its bufferevent from make_bufferevent, which
    // counts it and queues it for on_accepted (the end of the same loop turn, before any of its
    // I/O): evhttp has made its connection by then, and it is either refused (past
    // max_connections) or watched, so that its close callback gives the slot back. Exchanges
    // borrow the close callback while they serve a request and hand it back with watch().
    void on_accepted();
    void watch(evhttp_connection *conn);
    void refuse(evhttp_connection *conn, bufferevent *bev);
    // Keeps reading and dropping what a client sends on a duplicate of fd after its answer, so
    // that closing does not turn into a reset that destroys the answer before it is read.
    void linger_on(int fd);
    // Per-connection request phases and deadlines (ClientConnection).
    void track(evhttp_connection *conn, bufferevent *bev);
    void untrack(evhttp_connection *conn);
    void client_input(ClientConnection &cc);
    void client_timer(ClientConnection &cc);
    void request_dispatched(evhttp_request *req);
    void request_completed(evhttp_request *req);
    void arm_deadline(ClientConnection &cc, int factor = 1);
    void close_client(ClientConnection &cc, const std::string &response);
    // Stream backpressure on the caller's connection.
    void check_backpressure(Exchange &ex);
    void stream_drained(Exchange &ex);
    void drop_drain_cb(Exchange &ex);
    // accept() failed (descriptors exhausted, say): listening pauses for a moment rather than
    // retrying in a busy loop.
    void accept_failed(int error);
    void resume_accepting();
    // Through the throttle to the Governor. from_libevent: inside libevent's log callback, where
    // no libevent function may be called (the summary timer is not armed).
    void warn(const std::string &message, bool from_libevent = false);
    void flush_warnings();
    void schedule_warnings();  // arms warn_event for the earliest summary due

    // Routes. next_target moves a request that named a route to its next target whose breaker
    // lets it try (context.service), false when none is left. fall_back starts that target for
    // an exchange whose try failed with one of the route's conditions before anything reached
    // the caller; false when the failure is the caller's to see.
    bool next_target(RequestContext &context);
    bool fall_back(Exchange &ex, const http::Response &response);
    // The x-pg-inference-service header: the service that serves (or failed) the request.
    static void name_service(RequestContext &context);
    // Tells the Governor how an upstream call of the exchange's service ended.
    void report_outcome(Exchange &ex, const http::Response &response);

    // Exchange plumbing.
    Exchange &adopt(std::unique_ptr<Exchange> exchange);
    void call_upstream(Exchange &ex, http::Request request, bool streamed);
    // content_type null: none added (pass-through answers carry the upstream's own).
    void respond(Exchange &ex, int status, std::string body,
                 const char *content_type = "application/json");
    void respond_error(Exchange &ex, int status, std::string_view message,
                       std::string_view code = {}, std::string_view param = {});
    // An upstream's failed call (transport error or non-2xx) as the caller's error.
    void respond_upstream_failure(Exchange &ex, const http::Response &response);
    // A pgi::Error from translation: 22023/0A000 are the caller's (400), PI4xx are the
    // upstream's (502), anything else is ours (500).
    void respond_translate_error(Exchange &ex, const Error &error);
    void start_stream(Exchange &ex, int status,
                      const std::vector<std::pair<std::string, std::string>> &headers);
    void send_chunk(Exchange &ex, const char *data, std::size_t size);
    void flush_chunk(Exchange &ex);
    void flush_chunks();
    void end_stream(Exchange &ex, int ledger_status);
    void abort_stream(Exchange &ex, int ledger_status);
    void finish(Exchange &ex, int status, bool rate_limited = false);
    void reap(Exchange *ex);

    event_base *base;
    Config config;
    Governor &governor;
    evhttp *http = nullptr;
    SSL_CTX *ssl_ctx = nullptr;
    std::vector<evhttp_bound_socket *> bound;
    int bound_port = 0;
    std::shared_ptr<const Snapshot> snapshot;
    std::function<void()> catalog_check;  // Server::set_catalog_check
    http::AsyncClient client;
    std::unordered_set<Exchange *> exchanges;
    event *flush_event = nullptr;  // runs flush_chunks once the current callbacks are done
    std::vector<Exchange *> to_flush, flushing;
    std::unordered_map<std::string, translate::RerankRoute> learned_routes;
    uint64_t route_draws = 0;  // seeds the attempt order of each request that names a route

    std::size_t connections = 0;
    std::unordered_map<evhttp_connection *, ClientConnection *> clients;
    uint64_t refused = 0, accept_failures = 0;
    std::vector<bufferevent *> accepted;  // held (incref) until on_accepted
    event *accept_event = nullptr;        // runs on_accepted
    event *resume_event = nullptr;        // re-enables the listeners after an accept failure
    bool accept_paused = false;
    struct Lingering;  // a refused connection drained before it is closed
    std::unordered_set<Lingering *> lingering;
    LogThrottle throttle;
    event *warn_event = nullptr;  // summaries of repeated warnings
};

// A refused connection: the 503 is written, the write side shut, and what the client still sends
// is read and dropped until it closes or kLingerTime passes.
struct Server::Impl::Lingering {
    Server::Impl *impl = nullptr;
    int fd = -1;
    event *ev = nullptr;
    Clock::time_point until;

    ~Lingering();  // frees the event and closes the socket (gateway_connections.cpp)
};

// Runs an exchange's setup, answering the caller for whatever it throws.
template <class F>
void guarded_start(Server::Impl &server, Exchange &ex, F &&setup) {
    try {
        setup();
    } catch (const Error &e) {
        server.respond_translate_error(ex, e);
    } catch (const nlohmann::json::exception &e) {
        server.respond_error(ex, 400, e.what(), "invalid_value");
    } catch (const std::exception &e) {
        server.respond_error(ex, 500, std::string("internal gateway error: ") + e.what(),
                             "internal_error");
    }
}

}  // namespace pgi::gateway
