#include "http_client.h"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <deque>
#include <memory>
#include <mutex>
#include <string_view>
#include <sys/socket.h>
#include <unordered_map>

#include "address_filter.h"
#include "crypto.h"
#include "error.h"

namespace pgi::http {

Request::~Request() {
    crypto::wipe(headers);
}

namespace {

using Clock = std::chrono::steady_clock;

// The longest a wait hook may go uncalled; cancellation must take effect within 200 ms.
constexpr long kPollSliceMs = 20;

// An upstream asking for more than this will not recover within one call; return its answer
// instead of holding a query for minutes.
constexpr long kMaxRetryAfterMs = 60000;

void global_init() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() &&
           (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
        s.remove_suffix(1);
    return s;
}

std::string lowercase(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

size_t header_callback(char *data, size_t size, size_t nitems, void *userdata) {
    auto *t = static_cast<Transfer *>(userdata);
    const size_t n = size * nitems;
    try {
        std::string_view line = trim(std::string_view(data, n));
        if (line.substr(0, 5) == "HTTP/") {
            // Each status line starts a new response (100 Continue, a proxy's CONNECT answer);
            // only the last one's headers describe the body.
            t->response.headers.clear();
            size_t sp = line.find(' ');
            t->response.status = 0;
            for (size_t i = sp == std::string_view::npos ? line.size() : sp + 1;
                 i < line.size() && std::isdigit(static_cast<unsigned char>(line[i])); i++)
                t->response.status = t->response.status * 10 + (line[i] - '0');
            return n;
        }
        size_t colon = line.find(':');
        if (colon == std::string_view::npos)
            return n;
        t->response.headers.emplace_back(lowercase(std::string(trim(line.substr(0, colon)))),
                                         std::string(trim(line.substr(colon + 1))));
        return n;
    } catch (...) {
        return 0;  // an exception must not unwind through curl; a short count aborts the transfer
    }
}

size_t write_callback(char *data, size_t size, size_t nmemb, void *userdata) {
    auto *t = static_cast<Transfer *>(userdata);
    const size_t n = size * nmemb;
    // Checked here as well as with CURLOPT_MAXFILESIZE, which only knows sizes announced up front.
    if (n > t->max_response_size - std::min(t->received, t->max_response_size)) {
        t->response.too_large = true;
        return 0;
    }
    t->received += n;
    try {
        if (t->on_body)
            return t->on_body(data, n) ? n : 0;
        t->response.body.append(data, n);
        return n;
    } catch (...) {
        return 0;
    }
}

// Opens the socket for a new connection unless its (resolved) address is refused.
curl_socket_t open_checked_socket(void *transfer_p, curlsocktype, curl_sockaddr *address) {
    auto *transfer = static_cast<Transfer *>(transfer_p);
    if (refuse_connection(*transfer, &address->addr))
        return CURL_SOCKET_BAD;
    return ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
}

// A connection kept alive from an earlier transfer never passes open_checked_socket again: its
// address is checked here, after connecting and before anything is sent on it.
int prereq_check(void *transfer_p, char *primary_ip, char *, int, int) {
    auto *transfer = static_cast<Transfer *>(transfer_p);
    if (transfer->blocked_networks == nullptr || primary_ip == nullptr)
        return CURL_PREREQFUNC_OK;
    try {
        if (!transfer->blocked_networks->contains(std::string(primary_ip)))
            return CURL_PREREQFUNC_OK;
        transfer->refused_address = primary_ip;
    } catch (...) {
    }
    return CURL_PREREQFUNC_ABORT;
}

bool is_tls_failure(CURLcode code) {
    switch (code) {
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CIPHER:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_CRL_BADFILE:
        case CURLE_SSL_ISSUER_ERROR:
        case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
        case CURLE_SSL_INVALIDCERTSTATUS:
            return true;
        default:
            return false;
    }
}

}  // namespace

// Retry-After as milliseconds from now: delta-seconds or an HTTP-date; -1 when absent or invalid.
long retry_after_ms(const Response &response) {
    std::string value = response.header("retry-after");
    if (value.empty())
        return -1;
    if (std::all_of(value.begin(), value.end(),
                    [](unsigned char c) { return std::isdigit(c) != 0; })) {
        if (value.size() > 9)
            return kMaxRetryAfterMs + 1;
        return std::stol(value) * 1000;
    }
    time_t when = curl_getdate(value.c_str(), nullptr);
    if (when < 0)
        return -1;
    time_t now = std::time(nullptr);
    if (when <= now)
        return 0;
    double ms = std::difftime(when, now) * 1000.0;
    return ms > kMaxRetryAfterMs ? kMaxRetryAfterMs + 1 : static_cast<long>(ms);
}

std::string Response::header(const std::string &lower_name) const {
    for (const auto &h : headers)
        if (h.first == lower_name)
            return h.second;
    return {};
}

Transfer::~Transfer() {
    if (header_list != nullptr)
        curl_slist_free_all(header_list);
}

bool refuse_connection(Transfer &transfer, const sockaddr *address) {
    if (transfer.blocked_networks == nullptr || !transfer.blocked_networks->contains(address))
        return false;
    try {
        transfer.refused_address = net::address_text(address);
    } catch (...) {
    }
    if (transfer.refused_address.empty())
        transfer.refused_address = "(unprintable)";
    return true;
}

void apply_request(CURL *easy, const Request &request, Transfer &transfer) {
    transfer.max_response_size = request.max_response_size;
    transfer.received = 0;
    transfer.error_buffer[0] = '\0';
    transfer.refused_address.clear();
    transfer.blocked_networks = request.blocked_networks && !request.blocked_networks->empty()
                                    ? request.blocked_networks.get()
                                    : nullptr;
    if (transfer.header_list != nullptr) {
        curl_slist_free_all(transfer.header_list);
        transfer.header_list = nullptr;
    }
    bool has_expect = false;
    for (const auto &h : request.headers) {
        if (h.size() >= 7 && lowercase(h.substr(0, 7)) == "expect:")
            has_expect = true;
        curl_slist *next = curl_slist_append(transfer.header_list, h.c_str());
        if (next == nullptr)
            throw std::bad_alloc();
        transfer.header_list = next;
    }
    // curl sends "Expect: 100-continue" before large bodies and then waits up to a second for
    // servers that never answer it; the upstreams we call answer the request directly.
    if (!has_expect) {
        curl_slist *next = curl_slist_append(transfer.header_list, "Expect:");
        if (next == nullptr)
            throw std::bad_alloc();
        transfer.header_list = next;
    }

    curl_easy_setopt(easy, CURLOPT_URL, request.url.c_str());
    curl_easy_setopt(easy, CURLOPT_PRIVATE, static_cast<void *>(&transfer));
    // Signals belong to PostgreSQL; curl's alarm()-based DNS timeout would steal SIGALRM.
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS, static_cast<long>(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS,
                     static_cast<long>(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    // A redirect could carry the upstream's credentials to another host.
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, request.connect_timeout_ms);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, request.timeout_ms);
    // Idle pooled connections otherwise die silently behind NATs and load balancers.
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPIDLE, 60L);
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPINTVL, 30L);
    if (request.insecure) {
        curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    // curl keeps these in each connection's TLS config: a pooled connection is reused only by a
    // request with the same files.
    if (!request.tls.ca_file.empty())
        curl_easy_setopt(easy, CURLOPT_CAINFO, request.tls.ca_file.c_str());
    if (!request.tls.client_cert_file.empty()) {
        curl_easy_setopt(easy, CURLOPT_SSLCERT, request.tls.client_cert_file.c_str());
        curl_easy_setopt(easy, CURLOPT_SSLCERTTYPE, "PEM");
        curl_easy_setopt(easy, CURLOPT_SSLKEY, request.tls.client_key_file.c_str());
        curl_easy_setopt(easy, CURLOPT_SSLKEYTYPE, "PEM");
    }
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, transfer.error_buffer);
    curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE,
                     static_cast<curl_off_t>(request.max_response_size));
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, write_callback);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, static_cast<void *>(&transfer));
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, header_callback);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, static_cast<void *>(&transfer));
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "pg_inference");
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, transfer.header_list);
    if (transfer.blocked_networks != nullptr) {
        curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, open_checked_socket);
        curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, static_cast<void *>(&transfer));
        curl_easy_setopt(easy, CURLOPT_PREREQFUNCTION, prereq_check);
        curl_easy_setopt(easy, CURLOPT_PREREQDATA, static_cast<void *>(&transfer));
    }

    if (request.method == "GET" && request.body.empty()) {
        curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    } else if (request.method == "HEAD") {
        curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
    } else {
        if (!request.body.empty() || request.method == "POST") {
            curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                             static_cast<curl_off_t>(request.body.size()));
            curl_easy_setopt(easy, CURLOPT_POSTFIELDS, request.body.data());
        }
        if (request.method != "POST")
            curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    }
}

void finish_transfer(CURL *easy, CURLcode result, Transfer &transfer) {
    Response &r = transfer.response;
    long status = 0;
    if (curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK)
        r.status = status;
    r.curl_code = result;
    if (result == CURLE_OK)
        return;
    if (!transfer.refused_address.empty()) {
        // Said plainly instead of curl's "Couldn't connect" or "aborted by callback".
        r.blocked = true;
        r.transport_error =
            "upstream address " + transfer.refused_address + " is in inference.blocked_networks";
        return;
    }
    if (result == CURLE_FILESIZE_EXCEEDED)
        r.too_large = true;
    r.tls_error = is_tls_failure(result);
    if (r.too_large) {
        // curl's own text ("Failure writing output to destination") hides the cause.
        r.transport_error =
            "response larger than " + std::to_string(transfer.max_response_size) + " bytes";
    } else if (transfer.error_buffer[0] != '\0') {
        r.transport_error = std::string(trim(transfer.error_buffer));
    } else {
        r.transport_error = curl_easy_strerror(result);
    }
    // An endpoint that refuses the client's certificate (or its absence) says so with a TLS alert
    // after the handshake, which curl reports as a failed read or write: a TLS failure all the
    // same, and no retry would fare better.
    if ((result == CURLE_RECV_ERROR || result == CURLE_SEND_ERROR) &&
        r.transport_error.find("SSL") != std::string::npos &&
        r.transport_error.find("alert") != std::string::npos)
        r.tls_error = true;
}

Transfer *transfer_of(CURL *easy) {
    void *p = nullptr;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, &p);
    return static_cast<Transfer *>(p);
}

bool is_retryable(const Response &response) {
    if (response.too_large || response.tls_error || response.blocked)
        return false;
    switch (response.curl_code) {
        case CURLE_OK:
            break;
        case CURLE_COULDNT_CONNECT:
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_SEND_ERROR:
        case CURLE_RECV_ERROR:
        case CURLE_GOT_NOTHING:
            return true;
        default:
            return false;
    }
    switch (response.status) {
        case 408:
        case 429:
        case 500:
        case 502:
        case 503:
        case 504:
        case 529:
            return true;
        default:
            return false;
    }
}

// One running transfer of a perform() call.
struct Client::Active {
    size_t index = 0;
    CURL *easy = nullptr;
    Transfer transfer;
};

// The running transfers of one perform() call. Its destructor is what keeps the client usable
// when the wait hook throws: every handle leaves the multi handle before the exception leaves
// perform(), and nothing is left for curl to call back into.
class Client::ActiveSet {
  public:
    explicit ActiveSet(Client &client) : client_(client) {}
    ~ActiveSet() {
        for (auto &a : items_)
            client_.easy_pool_.release(client_.multi_, a->easy);
    }
    ActiveSet(const ActiveSet &) = delete;
    ActiveSet &operator=(const ActiveSet &) = delete;

    size_t size() const { return items_.size(); }
    bool empty() const { return items_.empty(); }

    Active &add(size_t index, CURL *easy) {
        auto a = std::make_unique<Active>();
        a->index = index;
        a->easy = easy;
        items_.push_back(std::move(a));
        return *items_.back();
    }

    // Releases the handle, then destroys the record, in that order: curl may still point into
    // the Transfer until the handle is reset.
    void remove(Active &active) {
        client_.easy_pool_.release(client_.multi_, active.easy);
        auto it = std::find_if(items_.begin(), items_.end(), [&](const std::unique_ptr<Active> &p) {
            return p.get() == &active;
        });
        std::swap(*it, items_.back());
        items_.pop_back();
    }

  private:
    Client &client_;
    std::vector<std::unique_ptr<Active>> items_;
};

Client::Client() : jitter_(std::random_device{}()) {
    global_init();
    multi_ = curl_multi_init();
    if (multi_ == nullptr)
        throw Error(sqlstate::kInternalError, "could not initialize a libcurl multi handle");
}

Client::~Client() {
    easy_pool_.clear();
    curl_multi_cleanup(multi_);
}

CURL *EasyPool::acquire() {
    if (!idle_.empty()) {
        CURL *easy = idle_.back();
        idle_.pop_back();
        return easy;
    }
    return curl_easy_init();
}

void EasyPool::release(CURLM *multi, CURL *easy) {
    curl_multi_remove_handle(multi, easy);
    curl_easy_reset(easy);
    try {
        idle_.push_back(easy);
    } catch (...) {
        curl_easy_cleanup(easy);
    }
}

void EasyPool::clear() {
    for (CURL *easy : idle_)
        curl_easy_cleanup(easy);
    idle_.clear();
}

CURL *Client::acquire_easy() {
    CURL *easy = easy_pool_.acquire();
    if (easy == nullptr)
        throw Error(sqlstate::kInternalError, "could not initialize a libcurl easy handle");
    return easy;
}

long backoff_ms(const Response &response, int retry_number, const RetryPolicy &retry,
                std::minstd_rand &jitter) {
    long after = retry_after_ms(response);
    if (after >= 0)
        return after;
    long cap = std::max(0L, retry.base_backoff_ms);
    for (int i = 0; i < retry_number && cap < retry.max_backoff_ms; i++)
        cap *= 2;
    cap = std::min(cap, std::max(0L, retry.max_backoff_ms));
    // Full jitter: clients that failed together should not come back together.
    return std::uniform_int_distribution<long>(0, cap)(jitter);
}

// One request of a run() call: what to send, the caller's id for it and its attempts so far.
struct Client::Job {
    size_t id = 0;
    const Request *request = nullptr;
    std::unique_ptr<Request> owned;  // set for fed requests; request points into it
    int attempts = 0;
};

std::vector<Response> Client::perform(const std::vector<Request> &requests, size_t max_concurrency,
                                      const WaitHook &wait, const RetryPolicy &retry,
                                      const DoneHook &on_done) {
    std::vector<Response> results(requests.size());
    bool handed = false;
    run(
        [&](std::vector<Job> &out) {
            if (!handed) {
                handed = true;
                out.reserve(requests.size());
                for (size_t i = 0; i < requests.size(); i++) {
                    out.emplace_back();
                    out.back().id = i;
                    out.back().request = &requests[i];
                }
            }
            return false;
        },
        max_concurrency, wait, retry,
        [&](size_t index, Response &response) {
            results[index] = std::move(response);
            if (on_done)
                on_done(index, results[index]);
        });
    return results;
}

Response Client::perform_one(const Request &request, const WaitHook &wait,
                             const RetryPolicy &retry) {
    Response result;
    bool handed = false;
    run(
        [&](std::vector<Job> &out) {
            if (!handed) {
                handed = true;
                out.emplace_back();
                out.back().request = &request;
            }
            return false;
        },
        1, wait, retry, [&](size_t, Response &response) { result = std::move(response); });
    return result;
}

void Client::perform_feed(const Feeder &feeder, size_t max_concurrency, const WaitHook &wait,
                          const RetryPolicy &retry, const DoneHook &on_done) {
    std::vector<FedRequest> fed;
    run(
        [&](std::vector<Job> &out) {
            fed.clear();
            const bool more = feeder(fed);
            for (auto &f : fed) {
                out.emplace_back();
                out.back().id = f.id;
                out.back().owned = std::make_unique<Request>(std::move(f.request));
                out.back().request = out.back().owned.get();
            }
            return more;
        },
        max_concurrency, wait, retry,
        [&](size_t id, Response &response) {
            if (on_done)
                on_done(id, response);
        });
}

void Client::run(const std::function<bool(std::vector<Job> &)> &source, size_t max_concurrency,
                 const WaitHook &wait, const RetryPolicy &retry,
                 const std::function<void(size_t, Response &)> &on_done) {
    const size_t limit = std::max<size_t>(1, max_concurrency);
    // Keyed by the loop's own sequence number: fed ids need not be unique.
    std::unordered_map<size_t, Job> jobs;
    size_t next_key = 0;
    bool more = true;
    std::vector<Job> incoming;
    std::deque<size_t> ready;
    struct Sleeper {
        Clock::time_point wake;
        size_t key;
    };
    std::vector<Sleeper> sleeping;
    ActiveSet active(*this);

    // A settled job leaves the table before on_done runs: on_done may throw.
    auto settle = [&](size_t key, Response &response) {
        auto it = jobs.find(key);
        const size_t id = it->second.id;
        response.attempts = it->second.attempts;
        jobs.erase(it);
        if (on_done)
            on_done(id, response);
    };

    auto start = [&](size_t key) {
        Job &job = jobs.at(key);
        CURL *easy = acquire_easy();
        Active *a;
        try {
            a = &active.add(key, easy);
        } catch (...) {
            easy_pool_.release(multi_, easy);
            throw;
        }
        a->transfer.owner = a;
        job.attempts++;
        apply_request(easy, *job.request, a->transfer);
        CURLMcode mc = curl_multi_add_handle(multi_, easy);
        if (mc != CURLM_OK) {
            Response r;
            r.curl_code = CURLE_FAILED_INIT;
            r.transport_error = curl_multi_strerror(mc);
            active.remove(*a);
            settle(key, r);
        }
    };

    auto finish = [&](CURL *easy, CURLcode code) {
        Transfer *t = transfer_of(easy);
        Active &a = *static_cast<Active *>(t->owner);
        finish_transfer(easy, code, *t);
        long connects = 0;
        if (curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK)
            connections_opened_ += connects;
        const size_t key = a.index;
        Response response = std::move(t->response);
        active.remove(a);
        const int attempts = jobs.at(key).attempts;
        if (attempts > retry.max_retries || !is_retryable(response))
            return settle(key, response);
        long delay = backoff_ms(response, attempts - 1, retry, jitter_);
        if (delay > kMaxRetryAfterMs)
            return settle(key, response);
        Clock::time_point now = Clock::now();
        // Past the deadline the caller gets the last answer rather than an error of ours.
        if (retry.deadline - now < std::chrono::milliseconds(delay))
            return settle(key, response);
        sleeping.push_back({now + std::chrono::milliseconds(delay), key});
    };

    for (;;) {
        if (more) {
            incoming.clear();
            more = source(incoming);
            for (auto &job : incoming) {
                const size_t key = next_key++;
                jobs.emplace(key, std::move(job));
                ready.push_back(key);
            }
        }
        Clock::time_point now = Clock::now();
        for (auto it = sleeping.begin(); it != sleeping.end();) {
            if (it->wake <= now) {
                ready.push_back(it->key);
                it = sleeping.erase(it);
            } else {
                ++it;
            }
        }
        while (active.size() < limit && !ready.empty()) {
            size_t key = ready.front();
            ready.pop_front();
            start(key);
        }
        if (!active.empty()) {
            int running = 0;
            curl_multi_perform(multi_, &running);
            int queued = 0;
            while (CURLMsg *msg = curl_multi_info_read(multi_, &queued)) {
                if (msg->msg == CURLMSG_DONE)
                    finish(msg->easy_handle, msg->data.result);
            }
        }
        if (!more && active.empty() && ready.empty() && sleeping.empty())
            break;
        if (wait)
            wait();
        if (!ready.empty() && active.size() < limit)
            continue;

        long timeout = kPollSliceMs;
        now = Clock::now();
        for (const auto &s : sleeping) {
            auto until = std::chrono::ceil<std::chrono::milliseconds>(s.wake - now).count();
            timeout = std::min(timeout, std::max(0L, static_cast<long>(until)));
        }
        // With no handles, curl_multi_poll just sleeps for the timeout: the backoff sleep.
        curl_multi_poll(multi_, nullptr, 0, static_cast<int>(timeout), nullptr);
    }
}

}  // namespace pgi::http
