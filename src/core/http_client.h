// The one outbound HTTP client. Backends and workers call it synchronously through
// Client, which drives libcurl's multi interface in short polls so a wait hook can check for
// cancellation; the gateway drives the same easy-handle setup (apply_request, Transfer) from its
// own event loop. No threads: PostgreSQL code must stay on the main thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <curl/curl.h>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "tls_files.h"

namespace pgi::net {
class AddressFilter;
}

namespace pgi::http {

struct Request {
    std::string method = "GET";
    std::string url;
    std::vector<std::string> headers;  // "Name: value"
    std::string body;                  // sent when non-empty or method is POST
    bool insecure = false;             // allow_insecure: no peer/host verification
    tls::Files tls;                    // a CA to verify against, a client certificate
    long connect_timeout_ms = 10000;
    long timeout_ms = 120000;
    size_t max_response_size = 64u << 20;
    // When set, a connection to an address in these networks is refused: a new one before it is
    // made (CURLOPT_OPENSOCKETFUNCTION, after DNS), a kept-alive one before the request is sent
    // on it (CURLOPT_PREREQFUNCTION). Never retried.
    std::shared_ptr<const net::AddressFilter> blocked_networks;

    // The header lines carry the upstream key: wiped when the request goes.
    Request() = default;
    Request(const Request &) = default;
    Request(Request &&) = default;
    Request &operator=(const Request &) = default;
    Request &operator=(Request &&) = default;
    ~Request();
};

struct Response {
    long status = 0;  // 0 when the transfer failed before a status
    std::string body;
    // Names lowercased; only the last response's (after 100 Continue or a proxy's CONNECT).
    std::vector<std::pair<std::string, std::string>> headers;
    int curl_code = 0;            // CURLcode, 0 = OK
    std::string transport_error;  // curl's error text (error buffer, else curl_easy_strerror)
    bool tls_error = false;       // certificate or TLS handshake failure
    bool too_large = false;       // body exceeded max_response_size (transfer aborted)
    int attempts = 1;
    bool blocked = false;  // refused: the upstream's address is in Request::blocked_networks

    // The first value of a header, "" if absent.
    std::string header(const std::string &lower_name) const;
};

// Called repeatedly (at least every 20 ms) while a transfer or a backoff sleep is waiting. It may
// throw (pgi::Interrupted or anything else): the client then removes and cleans up all its easy
// handles before the exception leaves perform(), and stays usable.
using WaitHook = std::function<void()>;

// Called once per request as soon as its final response is known (after any retries), with the
// request's index; may throw like a WaitHook, with the same cleanup.
using DoneHook = std::function<void(size_t index, const Response &response)>;

// A request handed to Client::perform_feed, with the caller's tag for it.
struct FedRequest {
    size_t id = 0;
    Request request;
};

// Polled by perform_feed on every turn of its loop (at least every 20 ms): appends the requests
// to start now to out, and returns false once no more will ever come. After it has returned
// false it is not called again. May throw like a WaitHook.
using Feeder = std::function<bool(std::vector<FedRequest> &out)>;

struct RetryPolicy {
    int max_retries = 0;         // retries after the first attempt
    long base_backoff_ms = 250;  // exponential: base * 2^retry, full jitter, capped at max
    long max_backoff_ms = 8000;
    std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

// The state curl needs while it runs one transfer. curl keeps pointers into it (error buffer,
// header list, callback data, CURLOPT_PRIVATE), so it must stay where it is, and outlive its
// easy handle's use, until the handle is removed from its multi handle and reset.
struct Transfer {
    Transfer() = default;
    ~Transfer();
    Transfer(const Transfer &) = delete;
    Transfer &operator=(const Transfer &) = delete;

    Response response;
    // When set, body bytes go here instead of into response.body, so a streaming driver can pass
    // them on as they arrive; response.status and response.headers are complete by the first
    // call. Return false to abort the transfer. Must not throw (it runs inside curl).
    std::function<bool(const char *data, size_t size)> on_body;
    // For the driver: CURLOPT_PRIVATE points at the Transfer, this points back at the driver's
    // own per-transfer record.
    void *owner = nullptr;

    // Filled by apply_request and the callbacks.
    size_t max_response_size = 0;
    size_t received = 0;
    curl_slist *header_list = nullptr;
    char error_buffer[CURL_ERROR_SIZE] = {};
    const net::AddressFilter *blocked_networks = nullptr;  // the Request's, while it runs
    std::string refused_address;  // set when a connection was refused for blocked_networks
};

// Applies a Request to an easy handle (fresh or curl_easy_reset): no signals, http and https
// only, no redirects, timeouts, TCP keepalive, verification off when insecure, the error buffer,
// the size-capped write callback and the header callback, CURLOPT_PRIVATE = &transfer. The
// request's body is not copied: the Request must outlive the transfer.
void apply_request(CURL *easy, const Request &request, Transfer &transfer);

// For a driver that installs its own CURLOPT_OPENSOCKETFUNCTION: whether the transfer's
// blocked_networks refuse this address (the refusal is recorded in the transfer, and reported by
// finish_transfer). Must be called before a socket is opened.
bool refuse_connection(Transfer &transfer, const sockaddr *address);

// Records the outcome of a finished transfer (CURLMSG_DONE's result) in transfer.response.
void finish_transfer(CURL *easy, CURLcode result, Transfer &transfer);

// The Transfer that apply_request attached to an easy handle.
Transfer *transfer_of(CURL *easy);

// Whether a finished attempt is worth repeating: connection failures and the
// statuses that mean "try again later"; never the overall timeout, TLS failures, oversized bodies
// or other 4xx.
bool is_retryable(const Response &response);

// Retry-After as milliseconds from now, from delta-seconds or an HTTP-date; -1 when absent or
// invalid; more than 60000 when the upstream asks for longer than a call should wait.
long retry_after_ms(const Response &response);

// How long to wait before retry number retry_number (0 = the first retry): Retry-After when the
// upstream sent one, else exponential backoff from retry.base_backoff_ms with full jitter, capped
// at retry.max_backoff_ms. Shared by the blocking Client and the event-driven AsyncClient.
long backoff_ms(const Response &response, int retry_number, const RetryPolicy &retry,
                std::minstd_rand &jitter);

// Reset easy handles kept for reuse by one multi handle. curl_easy_reset drops every pointer
// into the finished Transfer, while the connection itself stays in the multi handle's cache:
// that is what makes the next call reuse it. Shared by Client and AsyncClient.
class EasyPool {
  public:
    EasyPool() = default;
    ~EasyPool() { clear(); }
    EasyPool(const EasyPool &) = delete;
    EasyPool &operator=(const EasyPool &) = delete;

    // A reset handle, or a new one; nullptr when libcurl cannot make one.
    CURL *acquire();
    // Detaches the handle from multi and keeps it (or frees it if the pool cannot grow).
    void release(CURLM *multi, CURL *easy);
    // Frees every kept handle; call before curl_multi_cleanup.
    void clear();

  private:
    std::vector<CURL *> idle_;
};

class Client {
  public:
    Client();
    ~Client();
    Client(const Client &) = delete;
    Client &operator=(const Client &) = delete;

    // Runs all requests concurrently, never more than max_concurrency at once (0 counts as 1);
    // responses in the same order as requests. Connections stay alive in the multi handle's cache
    // between calls. on_done, when set, hears of each response as it is settled, so a caller
    // need not wait for the slowest request to act on the others.
    std::vector<Response> perform(const std::vector<Request> &requests, size_t max_concurrency,
                                  const WaitHook &wait, const RetryPolicy &retry = {},
                                  const DoneHook &on_done = nullptr);
    Response perform_one(const Request &request, const WaitHook &wait,
                         const RetryPolicy &retry = {});

    // Runs requests as feeder hands them over, never more than max_concurrency at once (0 counts
    // as 1; the others queue), so a long-running caller can start new work while slow requests
    // are still in flight. on_done hears of each request by the id it was fed with, once, when
    // its final response is known. Returns when the feeder has said stop and every fed request
    // has been settled. perform is this loop over a feeder that hands over its batch at once.
    void perform_feed(const Feeder &feeder, size_t max_concurrency, const WaitHook &wait,
                      const RetryPolicy &retry, const DoneHook &on_done);

    // Total new connections made (sum of CURLINFO_NUM_CONNECTS), for reuse tests and benchmarks.
    long connections_opened() const { return connections_opened_; }

  private:
    struct Active;
    class ActiveSet;

    struct Job;
    // The one transfer loop. source appends jobs (a borrowed or an owned request each) and
    // returns false once no more will come.
    void run(const std::function<bool(std::vector<Job> &)> &source, size_t max_concurrency,
             const WaitHook &wait, const RetryPolicy &retry,
             const std::function<void(size_t id, Response &response)> &on_done);
    CURL *acquire_easy();

    CURLM *multi_ = nullptr;
    EasyPool easy_pool_;
    long connections_opened_ = 0;
    std::minstd_rand jitter_;
};

}  // namespace pgi::http
