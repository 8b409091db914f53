// The outbound HTTP client for event-driven processes (the gateway listeners): libcurl's multi
// socket interface on a libevent event_base, so thousands of transfers share one thread and one
// connection cache without ever blocking the loop. The easy-handle setup is http_client's
// (apply_request, Transfer), so the gateway and the SQL functions call upstreams the same way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <unordered_map>
#include <vector>

#include "http_client.h"

struct event;
struct event_base;

namespace pgi::http {

class AsyncClient {
  public:
    using Id = std::uint64_t;

    struct Handlers {
        // Body bytes of a 2xx answer as they arrive; status and headers in `head` are complete.
        // Return false to abort the transfer (on_done then reports the abort). Runs inside
        // libcurl: it must not throw; cancel() is safe, destroying the client is not. When
        // unset, or for any non-2xx answer, the body collects in Response::body.
        std::function<bool(const Response &head, const char *data, std::size_t size)> on_body;
        // The final outcome, after any retries. Called exactly once, from the event loop and
        // never from inside start(), unless the call is cancelled first. May start or cancel
        // calls (this one is already gone).
        std::function<void(Response &response)> on_done;
    };

    struct Options {
        RetryPolicy retry;
        // When positive, the request's total timeout is lifted and the call fails (with
        // CURLE_OPERATION_TIMEDOUT) after this long without receiving data instead: streams may
        // last minutes, silence may not. Connecting is still bounded by connect_timeout_ms.
        long idle_timeout_ms = 0;
    };

    explicit AsyncClient(event_base *base);
    // Aborts every transfer without calling its handlers.
    ~AsyncClient();
    AsyncClient(const AsyncClient &) = delete;
    AsyncClient &operator=(const AsyncClient &) = delete;

    // Starts a call; the request is kept (curl reads its body in place) until the call ends.
    // Retries follow is_retryable with exponential backoff and full jitter on libevent timers,
    // honouring Retry-After, up to retry.max_retries and never past retry.deadline, and only
    // while no body byte has gone to on_body.
    Id start(Request request, Handlers handlers, const Options &options);
    Id start(Request request, Handlers handlers) {
        return start(std::move(request), std::move(handlers), Options());
    }

    // Stops a call: no handler runs for it afterwards. Unknown or finished ids are ignored.
    // Safe from any handler, including the call's own on_body.
    void cancel(Id id);

    // Stops (paused = true) or restarts receiving a running call's answer, for a caller that
    // reads a stream more slowly than the upstream writes it: libcurl stops reading the socket,
    // so TCP slows the upstream down, and the idle timeout is off while paused. Not from inside
    // a handler; unknown or finished ids are ignored. Resuming may deliver buffered bytes to
    // on_body at once.
    void pause(Id id, bool paused);

    // Calls not yet done (running or waiting to retry).
    std::size_t active() const { return calls_.size(); }
    // New connections made so far (sum of CURLINFO_NUM_CONNECTS), for reuse tests.
    long connections_opened() const { return connections_opened_; }

  private:
    struct Call;
    struct Socket;

    static int socket_callback(CURL *easy, curl_socket_t fd, int what, void *client, void *socket);
    static int timer_callback(CURLM *multi, long timeout_ms, void *client);
    static curl_socket_t open_socket(void *call, curlsocktype purpose, curl_sockaddr *address);
    static int close_socket(void *client, curl_socket_t fd);
    static void on_socket_event(int fd, short events, void *client);
    static void on_timer(int fd, short events, void *client);
    static void on_call_timer(int fd, short events, void *call);
    static void on_idle_timer(int fd, short events, void *call);

    void launch(Call &call);
    void socket_action(int fd, int flags);
    void read_messages();
    void finished(Call &call, int curl_code);
    void complete(Id id);
    void cancel_deferred();

    event_base *base_;
    CURLM *multi_ = nullptr;
    event *timer_ = nullptr;
    std::unordered_map<Id, std::unique_ptr<Call>> calls_;
    EasyPool easy_pool_;
    // Every socket libcurl opened for a connection (open_socket) until it closes it
    // (close_socket), including kept-alive connections it has no transfer on.
    std::unordered_map<curl_socket_t, std::unique_ptr<Socket>> sockets_;
    std::vector<Id> to_cancel_;  // cancels asked for from inside libcurl
    int in_curl_ = 0;            // depth of curl_multi_socket_action calls
    bool in_timer_ = false;      // on_timer is running
    Id next_id_ = 1;
    long connections_opened_ = 0;
    std::minstd_rand jitter_;
};

}  // namespace pgi::http
