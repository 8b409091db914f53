#include "http_async.h"

#include <algorithm>
#include <event2/event.h>
#include <mutex>
#include <new>
#include <sys/socket.h>
#include <unistd.h>

#include "error.h"

namespace pgi::http {

namespace {

// An upstream asking to wait longer than this will not recover within one call (as in Client).
constexpr long kMaxRetryAfterMs = 60000;

void global_init() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

timeval to_timeval(long ms) {
    timeval tv;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    return tv;
}

}  // namespace

// What the loop watches on one socket. A connection libcurl keeps alive between transfers stays
// registered for EV_READ while idle ("parked"), instead of being removed when libcurl says
// CURL_POLL_REMOVE and added again for its next transfer: two epoll_ctl calls fewer per request.
// Only sockets libcurl opened through open_socket are parked, because close_socket tells when they
// go; any other socket (a resolver's) is dropped at CURL_POLL_REMOVE as before, since its fd
// number could be reused for a socket the loop would then wrongly believe it watches.
struct AsyncClient::Socket {
    event *ev = nullptr;
    short kind = 0;           // EV_READ / EV_WRITE that ev is added with; 0 when not added
    bool connection = false;  // opened by open_socket: close_socket will report its end
    bool parked = false;      // libcurl has no transfer on it (CURL_POLL_REMOVE)
    ~Socket() {
        if (ev != nullptr)
            event_free(ev);
    }
};

struct AsyncClient::Call {
    AsyncClient *client = nullptr;
    Id id = 0;
    Request request;
    Handlers handlers;
    Options options;
    int attempts = 0;
    CURL *easy = nullptr;  // null while waiting to retry
    Transfer transfer;
    event *timer = nullptr;  // backoff, or a completion that must not run inside start()
    event *idle = nullptr;   // options.idle_timeout_ms: re-armed whenever data arrives
    bool streamed = false;   // body bytes went to on_body: no retry from here on
    bool cancelled = false;
    bool paused = false;   // receiving stopped (pause())
    int pending_code = 0;  // the CURLcode a deferred completion reports

    ~Call() {
        if (timer != nullptr)
            event_free(timer);
        if (idle != nullptr)
            event_free(idle);
    }

    void arm_idle() {
        if (idle == nullptr || paused)
            return;
        timeval tv = to_timeval(options.idle_timeout_ms);
        evtimer_add(idle, &tv);
    }
};

AsyncClient::AsyncClient(event_base *base) : base_(base), jitter_(std::random_device{}()) {
    global_init();
    multi_ = curl_multi_init();
    if (multi_ == nullptr)
        throw Error(sqlstate::kInternalError, "could not initialize a libcurl multi handle");
    timer_ = evtimer_new(base_, &AsyncClient::on_timer, this);
    if (timer_ == nullptr) {
        curl_multi_cleanup(multi_);
        throw Error(sqlstate::kInternalError, "could not create a libevent timer");
    }
    curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &AsyncClient::socket_callback);
    curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
    curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &AsyncClient::timer_callback);
    curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
    // Connections stay cached for reuse; the default (4 x handles added) shrinks the cache when a
    // burst ends, and the next burst pays for new handshakes.
    curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS, 1024L);
}

AsyncClient::~AsyncClient() {
    for (auto &entry : calls_) {
        Call &call = *entry.second;
        if (call.easy != nullptr) {
            curl_multi_remove_handle(multi_, call.easy);
            curl_easy_cleanup(call.easy);
            call.easy = nullptr;
        }
    }
    calls_.clear();
    easy_pool_.clear();
    curl_multi_cleanup(multi_);
    sockets_.clear();
    event_free(timer_);
}

AsyncClient::Id AsyncClient::start(Request request, Handlers handlers, const Options &options) {
    auto call = std::make_unique<Call>();
    call->client = this;
    call->id = next_id_++;
    call->request = std::move(request);
    call->handlers = std::move(handlers);
    call->options = options;
    call->timer = evtimer_new(base_, &AsyncClient::on_call_timer, call.get());
    if (call->timer == nullptr)
        throw std::bad_alloc();
    if (options.idle_timeout_ms > 0) {
        call->idle = evtimer_new(base_, &AsyncClient::on_idle_timer, call.get());
        if (call->idle == nullptr)
            throw std::bad_alloc();
    }
    Call &ref = *call;
    calls_.emplace(ref.id, std::move(call));
    launch(ref);
    return ref.id;
}

void AsyncClient::launch(Call &call) {
    CURL *easy = easy_pool_.acquire();
    call.attempts++;
    call.transfer.response = Response();
    call.transfer.owner = &call;
    CURLMcode mc = CURLM_OUT_OF_MEMORY;
    if (easy != nullptr) {
        call.easy = easy;
        apply_request(easy, call.request, call.transfer);
        curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, &AsyncClient::open_socket);
        // The call, not the client: its transfer's blocked_networks judge the address.
        curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, static_cast<void *>(&call));
        curl_easy_setopt(easy, CURLOPT_CLOSESOCKETFUNCTION, &AsyncClient::close_socket);
        curl_easy_setopt(easy, CURLOPT_CLOSESOCKETDATA, this);
        if (call.idle != nullptr) {
            // Silence is bounded by the idle timer instead (curl's low-speed check averages
            // over seconds and counts the upload, so it cannot say "nothing for N ms").
            curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, 0L);
            call.arm_idle();
        }
        // The streaming sink only ever sees 2xx bodies: an error body is kept whole for the
        // caller's error message, and a retry stays possible until the first byte goes out.
        if (call.handlers.on_body || call.idle != nullptr) {
            Call *c = &call;
            call.transfer.on_body = [c](const char *data, size_t size) -> bool {
                if (c->cancelled)
                    return false;
                c->arm_idle();
                Response &r = c->transfer.response;
                if (!c->handlers.on_body || r.status < 200 || r.status > 299) {
                    r.body.append(data, size);
                    return true;
                }
                c->streamed = true;
                return c->handlers.on_body(r, data, size);
            };
        } else {
            call.transfer.on_body = nullptr;
        }
        mc = curl_multi_add_handle(multi_, easy);
    }
    if (mc != CURLM_OK) {
        if (easy != nullptr)
            easy_pool_.release(multi_, easy);
        call.easy = nullptr;
        call.transfer.response.curl_code = CURLE_FAILED_INIT;
        call.transfer.response.transport_error = curl_multi_strerror(mc);
        // Report on the next loop turn, never from inside start().
        call.pending_code = CURLE_FAILED_INIT;
        timeval zero = {0, 0};
        evtimer_add(call.timer, &zero);
    }
}

void AsyncClient::cancel(Id id) {
    auto it = calls_.find(id);
    if (it == calls_.end())
        return;
    Call &call = *it->second;
    if (in_curl_ > 0 && call.easy != nullptr) {
        // Removing a handle from inside a libcurl callback is not allowed: stop its data now
        // (on_body sees `cancelled`) and remove it once libcurl has returned.
        if (!call.cancelled) {
            call.cancelled = true;
            to_cancel_.push_back(id);
        }
        return;
    }
    if (call.easy != nullptr) {
        easy_pool_.release(multi_, call.easy);
        call.easy = nullptr;
    }
    calls_.erase(it);
}

void AsyncClient::pause(Id id, bool paused) {
    auto it = calls_.find(id);
    if (it == calls_.end())
        return;
    Call &call = *it->second;
    if (call.easy == nullptr || call.cancelled || call.paused == paused)
        return;
    call.paused = paused;
    if (paused) {
        if (call.idle != nullptr)
            evtimer_del(call.idle);
        curl_easy_pause(call.easy, CURLPAUSE_RECV);
        return;
    }
    call.arm_idle();
    // Unpausing may hand buffered bytes to the write callback from inside curl_easy_pause:
    // cancellations from there are deferred as from any libcurl callback.
    in_curl_++;
    curl_easy_pause(call.easy, CURLPAUSE_CONT);
    in_curl_--;
    cancel_deferred();
    // libcurl re-arms its timer to drive the transfer on; a zero timeout makes sure the socket is
    // looked at on the next loop turn even if nothing else wakes it.
    timeval now = {0, 0};
    evtimer_add(timer_, &now);
}

void AsyncClient::cancel_deferred() {
    while (!to_cancel_.empty() && in_curl_ == 0) {
        Id id = to_cancel_.back();
        to_cancel_.pop_back();
        cancel(id);
    }
}

curl_socket_t AsyncClient::open_socket(void *call_p, curlsocktype purpose, curl_sockaddr *address) {
    Call *call = static_cast<Call *>(call_p);
    if (refuse_connection(call->transfer, &address->addr))
        return CURL_SOCKET_BAD;
    curl_socket_t fd =
        ::socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
    if (fd == CURL_SOCKET_BAD || purpose != CURLSOCKTYPE_IPCXN)
        return fd;
    AsyncClient *client = call->client;
    try {
        auto socket = std::make_unique<Socket>();
        socket->connection = true;
        client->sockets_[fd] = std::move(socket);
    } catch (...) {
        ::close(fd);
        return CURL_SOCKET_BAD;
    }
    return fd;
}

int AsyncClient::close_socket(void *client_p, curl_socket_t fd) {
    // The event goes before the fd, so the loop never watches a number that may be reused.
    static_cast<AsyncClient *>(client_p)->sockets_.erase(fd);
    return ::close(fd);
}

int AsyncClient::socket_callback(CURL *, curl_socket_t fd, int what, void *client_p, void *) {
    auto *client = static_cast<AsyncClient *>(client_p);
    auto found = client->sockets_.find(fd);
    Socket *socket = found != client->sockets_.end() ? found->second.get() : nullptr;
    if (what == CURL_POLL_REMOVE) {
        if (socket == nullptr)
            return 0;
        if (!socket->connection) {
            client->sockets_.erase(found);
            return 0;
        }
        socket->parked = true;
        // An idle connection is watched for reading only (the upstream closing it); one that was
        // waiting to write is not watched until libcurl uses it again.
        if (socket->kind != EV_READ && socket->kind != 0) {
            event_del(socket->ev);
            socket->kind = 0;
        }
        return 0;
    }
    short kind = 0;
    if (what & CURL_POLL_IN)
        kind |= EV_READ;
    if (what & CURL_POLL_OUT)
        kind |= EV_WRITE;
    try {
        if (socket == nullptr) {
            auto fresh = std::make_unique<Socket>();
            socket = fresh.get();
            client->sockets_[fd] = std::move(fresh);
        }
        socket->parked = false;
        if (socket->kind == kind)
            return 0;
        if (socket->ev == nullptr) {
            socket->ev = event_new(client->base_, fd, kind | EV_PERSIST,
                                   &AsyncClient::on_socket_event, client);
            if (socket->ev == nullptr)
                return -1;
        } else {
            if (socket->kind != 0)
                event_del(socket->ev);
            event_assign(socket->ev, client->base_, fd, kind | EV_PERSIST,
                         &AsyncClient::on_socket_event, client);
        }
        if (event_add(socket->ev, nullptr) != 0) {
            socket->kind = 0;
            return -1;
        }
        socket->kind = kind;
        return 0;
    } catch (...) {
        return -1;
    }
}

int AsyncClient::timer_callback(CURLM *, long timeout_ms, void *client_p) {
    auto *client = static_cast<AsyncClient *>(client_p);
    if (timeout_ms < 0) {
        evtimer_del(client->timer_);
        return 0;
    }
    if (timeout_ms == 0 && !client->in_timer_) {
        // "As soon as possible" (a new transfer, say) runs in this loop turn, once the current
        // callback has returned, rather than after another epoll_wait. From on_timer itself it
        // waits for the next turn, so that libcurl cannot keep the loop from its sockets.
        evtimer_del(client->timer_);
        event_active(client->timer_, EV_TIMEOUT, 0);
        return 0;
    }
    // Never from here: libcurl does not allow it to be called back from inside itself.
    timeval tv = to_timeval(timeout_ms);
    return evtimer_add(client->timer_, &tv) == 0 ? 0 : -1;
}

void AsyncClient::on_socket_event(int fd, short events, void *client_p) {
    auto *client = static_cast<AsyncClient *>(client_p);
    auto found = client->sockets_.find(fd);
    if (found != client->sockets_.end() && found->second->parked) {
        // An idle connection became readable: the upstream closed it (or sent what it should
        // not). libcurl checks a connection before reusing it and will close this one; until
        // then it must not keep the loop busy.
        Socket &socket = *found->second;
        event_del(socket.ev);
        socket.kind = 0;
        return;
    }
    int flags = 0;
    if (events & EV_READ)
        flags |= CURL_CSELECT_IN;
    if (events & EV_WRITE)
        flags |= CURL_CSELECT_OUT;
    client->socket_action(fd, flags);
}

void AsyncClient::on_timer(int, short, void *client_p) {
    auto *client = static_cast<AsyncClient *>(client_p);
    client->in_timer_ = true;
    client->socket_action(CURL_SOCKET_TIMEOUT, 0);
    client->in_timer_ = false;
}

void AsyncClient::socket_action(int fd, int flags) {
    int running = 0;
    in_curl_++;
    curl_multi_socket_action(multi_, fd, flags, &running);
    in_curl_--;
    cancel_deferred();
    read_messages();
}

void AsyncClient::read_messages() {
    int queued = 0;
    while (CURLMsg *msg = curl_multi_info_read(multi_, &queued)) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode code = msg->data.result;
        Transfer *t = transfer_of(easy);
        finished(*static_cast<Call *>(t->owner), code);
    }
}

void AsyncClient::on_idle_timer(int, short, void *call_p) {
    auto *call = static_cast<Call *>(call_p);
    AsyncClient *client = call->client;
    if (call->easy == nullptr || call->cancelled)
        return;
    // From the loop, not from inside libcurl: the handle may go at once.
    finish_transfer(call->easy, CURLE_OPERATION_TIMEDOUT, call->transfer);
    call->transfer.response.transport_error =
        "no data from the upstream for " + std::to_string(call->options.idle_timeout_ms) + " ms";
    call->transfer.response.attempts = call->attempts;
    client->easy_pool_.release(client->multi_, call->easy);
    call->easy = nullptr;
    client->complete(call->id);
}

void AsyncClient::finished(Call &call, int curl_code) {
    if (call.idle != nullptr)
        evtimer_del(call.idle);
    CURL *easy = call.easy;
    finish_transfer(easy, static_cast<CURLcode>(curl_code), call.transfer);
    long connects = 0;
    if (curl_easy_getinfo(easy, CURLINFO_NUM_CONNECTS, &connects) == CURLE_OK)
        connections_opened_ += connects;
    easy_pool_.release(multi_, easy);
    call.easy = nullptr;
    if (call.cancelled) {
        calls_.erase(call.id);
        return;
    }
    Response &r = call.transfer.response;
    r.attempts = call.attempts;
    const RetryPolicy &retry = call.options.retry;
    if (!call.streamed && call.attempts <= retry.max_retries && is_retryable(r)) {
        long delay = backoff_ms(r, call.attempts - 1, retry, jitter_);
        auto now = std::chrono::steady_clock::now();
        if (delay <= kMaxRetryAfterMs && retry.deadline - now > std::chrono::milliseconds(delay)) {
            call.pending_code = -1;  // the timer relaunches rather than completes
            timeval tv = to_timeval(delay);
            evtimer_add(call.timer, &tv);
            return;
        }
    }
    complete(call.id);
}

void AsyncClient::on_call_timer(int, short, void *call_p) {
    auto *call = static_cast<Call *>(call_p);
    AsyncClient *client = call->client;
    if (call->pending_code == -1) {
        call->pending_code = 0;
        client->launch(*call);
    } else {
        client->complete(call->id);
    }
}

void AsyncClient::complete(Id id) {
    auto it = calls_.find(id);
    if (it == calls_.end())
        return;
    // Out of the table first: the handler may start and cancel calls, this one included.
    std::unique_ptr<Call> call = std::move(it->second);
    calls_.erase(it);
    if (call->handlers.on_done)
        call->handlers.on_done(call->transfer.response);
}

}  // namespace pgi::http
