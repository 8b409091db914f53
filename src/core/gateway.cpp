#include "gateway.h"

#include <algorithm>
#include <arpa/inet.h>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <mutex>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "crypto.h"
#include "gateway_internal.h"
#include "redact.h"
#include "upstream_error.h"

namespace pgi::gateway {

namespace {

// OpenAI model objects need a creation time; services have none worth exposing.
constexpr long long kModelCreated = 1735689600;  // 2025-01-01T00:00:00Z

const std::string kNoService;

// How long listening pauses after accept() failed: long enough not to spin while descriptors are
// exhausted, short enough that a freed descriptor is soon used again.
constexpr long kAcceptPauseMs = 100;
// How long a refused connection is drained before it is closed, so that what the client sent
// does not turn the close into a reset that could destroy the 503 before it is read.
constexpr auto kLingerTime = std::chrono::seconds(2);
// The longest header block evhttp accepts (evhttp_set_max_headers_size); a longer one is refused
// with 431 before libevent reads it (Server::Impl::client_input).
constexpr size_t kMaxHeaderBytes = 64 * 1024;
// The methods any route serves; libevent refuses others before a route is looked up.
constexpr unsigned kServedMethods = kGet | kPost | kHead | kPut | kDelete | kOptions | kPatch;
// A streamed answer pauses its upstream while more than this waits for a slow caller, and
// resumes below the low mark: a slow reader costs at most about this much memory.
constexpr size_t kStreamHighWater = 1u << 20;
constexpr size_t kStreamLowWater = 256u << 10;

double ms_since(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

int64_t unix_ms_now() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

void free_string(const void *, size_t, void *string) {
    delete static_cast<std::string *>(string);
}

// Moves the body into the request's output buffer: small bodies are copied, large ones are handed
// over without a copy.
void set_body(evhttp_request *req, std::string &&body) {
    evbuffer *out = evhttp_request_get_output_buffer(req);
    if (body.size() < 16384) {
        evbuffer_add(out, body.data(), body.size());
        return;
    }
    auto *owned = new std::string(std::move(body));
    if (evbuffer_add_reference(out, owned->data(), owned->size(), free_string, owned) != 0)
        delete owned;
}

void add_headers(evhttp_request *req,
                 const std::vector<std::pair<std::string, std::string>> &headers) {
    evkeyvalq *out = evhttp_request_get_output_headers(req);
    for (const auto &h : headers)
        evhttp_add_header(out, h.first.c_str(), h.second.c_str());
}

void send_response(evhttp_request *req, int status, std::string &&body, const char *content_type,
                   const std::vector<std::pair<std::string, std::string>> &headers) {
    add_headers(req, headers);
    if (content_type != nullptr)
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", content_type);
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        // libevent writes whatever is in the output buffer, even for HEAD: a body there would be
        // read as the start of the next answer on a kept-alive connection. The length says what
        // a GET would have carried.
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Length",
                          std::to_string(body.size()).c_str());
        evhttp_send_reply(req, status, nullptr, nullptr);
        return;
    }
    set_body(req, std::move(body));
    evhttp_send_reply(req, status, nullptr, nullptr);
}

std::string error_body(std::string_view message, int status, std::string_view code,
                       std::string_view param) {
    return translate::openai_error_json(message, error_type(status), code, param);
}

std::string openssl_error() {
    unsigned long code = ERR_get_error();
    char text[256] = "unknown error";
    if (code != 0)
        ERR_error_string_n(code, text, sizeof(text));
    ERR_clear_error();
    return text;
}

// A watched client connection closes (Server::Impl::watch).
void on_connection_close(evhttp_connection *conn, void *arg) {
    auto *impl = static_cast<Server::Impl *>(arg);
    if (impl->connections > 0)
        impl->connections--;
    impl->untrack(conn);
}

void on_close(evhttp_connection *conn, void *arg) {
    auto *ex = static_cast<Exchange *>(arg);
    Server::Impl *impl = &ex->server;
    evhttp_connection_set_closecb(conn, nullptr, nullptr);
    // A request whose reply was under way is detached from its dying connection by libevent and
    // left for its owner to free; one still attached goes with the connection.
    if (ex->req != nullptr && evhttp_request_get_connection(ex->req) == nullptr)
        evhttp_request_free(ex->req);
    impl->drop_drain_cb(*ex);
    ex->req = nullptr;
    ex->conn = nullptr;
    if (!ex->done)
        ex->on_caller_left();
    ex->server.finish(*ex, 499);
    on_connection_close(conn, impl);
}

void restore_timeouts(evhttp_request *req, void *arg) {
    auto *impl = static_cast<Server::Impl *>(arg);
    evhttp_connection *conn = evhttp_request_get_connection(req);
    if (conn != nullptr && impl->config.client_timeout_s > 0)
        evhttp_connection_set_timeout(conn, impl->config.client_timeout_s);
    impl->request_completed(req);
}

void on_request_complete(evhttp_request *req, void *arg) {
    static_cast<Server::Impl *>(arg)->request_completed(req);
}

void on_client_input(evbuffer *, const evbuffer_cb_info *info, void *arg) {
    if (info->n_added == 0)
        return;
    auto *cc = static_cast<ClientConnection *>(arg);
    cc->impl->client_input(*cc);
}

void on_client_timer(evutil_socket_t, short, void *arg) {
    auto *cc = static_cast<ClientConnection *>(arg);
    cc->impl->client_timer(*cc);
}

// A refusal written through a TLS bufferevent: the connection goes once it is sent.
void on_refusal_written(bufferevent *bev, void *arg) {
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        evhttp_connection_free(static_cast<evhttp_connection *>(arg));
}

void on_refusal_event(bufferevent *, short, void *arg) {
    evhttp_connection_free(static_cast<evhttp_connection *>(arg));
}

void on_stream_drained(evbuffer *buffer, const evbuffer_cb_info *info, void *arg) {
    if (info->n_deleted == 0 || evbuffer_get_length(buffer) >= kStreamLowWater)
        return;
    auto *ex = static_cast<Exchange *>(arg);
    ex->server.stream_drained(*ex);
}

void on_request(evhttp_request *req, void *arg) {
    static_cast<Server::Impl *>(arg)->handle(req);
}

void on_flush(evutil_socket_t, short, void *arg) {
    static_cast<Server::Impl *>(arg)->flush_chunks();
}

void on_accepted(evutil_socket_t, short, void *arg) {
    static_cast<Server::Impl *>(arg)->on_accepted();
}

void on_resume(evutil_socket_t, short, void *arg) {
    static_cast<Server::Impl *>(arg)->resume_accepting();
}

void on_warn_timer(evutil_socket_t, short, void *arg) {
    static_cast<Server::Impl *>(arg)->flush_warnings();
}

// The Servers of the process (it has one; tests have more). libevent's own warnings (it logs to
// stderr by default, which is the server log) go through the throttle of the newest.
std::mutex servers_mutex;
std::vector<Server::Impl *> servers;

void on_libevent_log(int severity, const char *message) {
    if (severity < EVENT_LOG_WARN)
        return;
    std::lock_guard<std::mutex> lock(servers_mutex);
    if (!servers.empty())
        servers.back()->warn(std::string("libevent: ") + message, true);
}

// A listener's callbacks share one argument, which evhttp_bind_listener sets to the evhttp.
void on_accept_error(evconnlistener *, void *arg) {
    int error = EVUTIL_SOCKET_ERROR();
    Server::Impl *impl = nullptr;
    {
        std::lock_guard<std::mutex> lock(servers_mutex);
        for (Server::Impl *s : servers) {
            if (s->http == arg)
                impl = s;
        }
    }
    if (impl != nullptr)
        impl->accept_failed(error);
}

// libevent answers some requests itself, before any callback of ours runs: bodies over the limit
// (413), malformed requests (400), unknown methods (501, answered as 405). Its answer is an HTML
// page; the gateway's errors are always OpenAI-shaped, so the page is rewritten in the connection's
// output buffer before it reaches the socket. The page is recognised by libevent's fixed error
// format.
void rewrite_error_page(evbuffer *buffer, const evbuffer_cb_info *info, void *arg) {
    static bool rewriting = false;
    static constexpr char kPageEnd[] = "</BODY></HTML>\n";
    constexpr size_t kPageEndSize = sizeof(kPageEnd) - 1;
    if (rewriting || info->n_added == 0)
        return;
    size_t length = evbuffer_get_length(buffer);
    if (length < 32 || length > 4096)
        return;
    // A socket bufferevent keeps the front of its output frozen except while it writes, which
    // makes reading and draining the front fail; thaw it for the rewrite, and freeze it again.
    struct Thaw {
        evbuffer *buffer = nullptr;
        ~Thaw() {
            if (buffer != nullptr)
                evbuffer_freeze(buffer, 1);
        }
    } thaw;
    char head[10];
    if (evbuffer_copyout(buffer, head, sizeof(head)) != static_cast<ev_ssize_t>(sizeof(head))) {
        evbuffer_unfreeze(buffer, 1);
        thaw.buffer = buffer;
        if (evbuffer_copyout(buffer, head, sizeof(head)) != static_cast<ev_ssize_t>(sizeof(head)))
            return;
    }
    if (std::memcmp(head, "HTTP/1.", 7) != 0 || (head[9] != '4' && head[9] != '5'))
        return;
    evbuffer_ptr end = evbuffer_search(buffer, kPageEnd, kPageEndSize, nullptr);
    if (end.pos < 0 || static_cast<size_t>(end.pos) + kPageEndSize != length)
        return;
    std::string page(length, '\0');
    if (evbuffer_copyout(buffer, page.data(), length) != static_cast<ev_ssize_t>(length))
        return;
    if (page.find("\r\nContent-Type: text/html\r\n") == std::string::npos)
        return;
    size_t line_end = page.find("\r\n");
    int status = std::atoi(page.c_str() + 9);
    std::string reason = line_end > 13 ? page.substr(13, line_end - 13) : std::string("Error");

    auto *impl = static_cast<Server::Impl *>(arg);
    std::string message;
    std::string extra;  // more header lines
    const char *code = nullptr;
    if (status == 413) {
        message = "Request too large: the gateway accepts bodies and headers up to " +
                  std::to_string(impl->config.max_body_size) + " bytes";
        code = "request_too_large";
    } else if (status == 501) {
        // libevent's answer to a method it does not know or the gateway does not serve. For the
        // caller that is a request error like the routes' own 405, not a server failure.
        status = 405;
        reason = "Method Not Allowed";
        message = std::string("The request method is not one the gateway serves; use ") +
                  allow_header(kServedMethods);
        code = "method_not_allowed";
        extra = "Allow: " + allow_header(kServedMethods) + "\r\n";
    } else {
        message = "Malformed HTTP request (" + reason + ")";
        code = "bad_request";
    }
    std::string body = error_body(message, status, code, {});
    std::string response = page.substr(0, 9) + std::to_string(status) + " " + reason +
                           "\r\nContent-Type: application/json\r\nConnection: close\r\n" + extra +
                           "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    rewriting = true;
    evbuffer_drain(buffer, length);
    evbuffer_add(buffer, response.data(), response.size());
    rewriting = false;
}

bufferevent *make_bufferevent(event_base *base, void *arg) {
    auto *impl = static_cast<Server::Impl *>(arg);
    bufferevent *bev = nullptr;
    if (impl->ssl_ctx != nullptr) {
        SSL *ssl = SSL_new(impl->ssl_ctx);
        if (ssl == nullptr)
            return nullptr;
        bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE);
        if (bev == nullptr) {
            SSL_free(ssl);
            return nullptr;
        }
        // Clients that close without close_notify are common and harmless: bodies are framed.
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    } else {
        bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
        if (bev == nullptr)
            return nullptr;
    }
    evbuffer_add_cb(bufferevent_get_output(bev), rewrite_error_page, impl);
    // evhttp makes its connection around this bufferevent once we return; on_accepted finds it
    // there (the callbacks' argument) at the end of this loop turn. The reference keeps the
    // bufferevent readable even if evhttp gives up on the connection first.
    impl->connections++;
    bufferevent_incref(bev);
    impl->accepted.push_back(bev);
    event_active(impl->accept_event, EV_TIMEOUT, 0);
    return bev;
}

// A listening socket shared with the other listener processes (SO_REUSEPORT). Accepted sockets
// inherit TCP_NODELAY on Linux: SSE chunks must not wait for the previous one's ACK.
int open_listener(const addrinfo &ai, std::string &error) {
    int fd = ::socket(ai.ai_family, ai.ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai.ai_protocol);
    if (fd < 0) {
        error = std::strerror(errno);
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (ai.ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (::bind(fd, ai.ai_addr, ai.ai_addrlen) != 0 || ::listen(fd, 1024) != 0) {
        error = std::strerror(errno);
        ::close(fd);
        return -1;
    }
    return fd;
}

int local_port(int fd) {
    sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, reinterpret_cast<sockaddr *>(&ss), &len) != 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(reinterpret_cast<sockaddr_in *>(&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(reinterpret_cast<sockaddr_in6 *>(&ss)->sin6_port);
    return 0;
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// Defaults for the host's hooks

Governor::~Governor() = default;

Admission Governor::admit(const AccessKey *, const std::string &) {
    return {};
}

void Governor::finished(const AccessKey *, const std::string &, int, const translate::Usage &,
                        double, double, bool) {}

std::string Governor::metrics_text() {
    return {};
}

void Governor::rerank_route_learned(const std::string &, translate::RerankRoute) {}

void Governor::warning(const std::string &) {}

bool AccessKey::allows(const std::string &service) const {
    if (!services)
        return true;
    return std::find(services->begin(), services->end(), service) != services->end();
}

// ------------------------------------------------------------------------------------------------
// Exchange

Exchange::Exchange(Server::Impl &s, RequestContext &&c)
    : server(s),
      context(std::move(c)),
      req(context.req),
      conn(evhttp_request_get_connection(context.req)) {
    chunk = evbuffer_new();
    if (chunk == nullptr)
        throw std::bad_alloc();
}

Exchange::~Exchange() {
    evbuffer_free(chunk);
}

bool Exchange::on_body(const http::Response &, const char *, std::size_t) {
    return true;
}

// ------------------------------------------------------------------------------------------------
// Server::Impl

// A refused connection: the 503 is written, the write side shut, and what the client still sends
// is read and dropped until it closes or kLingerTime passes.
struct Server::Impl::Lingering {
    Server::Impl *impl = nullptr;
    int fd = -1;
    event *ev = nullptr;
    Clock::time_point until;

    ~Lingering() {
        if (ev != nullptr)
            event_free(ev);
        if (fd >= 0)
            ::close(fd);
    }
};

namespace {

void on_linger(evutil_socket_t fd, short what, void *arg) {
    auto *l = static_cast<Server::Impl::Lingering *>(arg);
    bool done = (what & EV_TIMEOUT) != 0 || Clock::now() >= l->until;
    for (int reads = 0; !done && reads < 16; reads++) {
        char buf[4096];
        ssize_t n = ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0)
            continue;
        done = n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
        break;
    }
    if (done) {
        l->impl->lingering.erase(l);
        delete l;
    }
}

}  // namespace

void Server::Impl::on_accepted() {
    std::vector<bufferevent *> batch;
    batch.swap(accepted);
    for (bufferevent *bev : batch) {
        bufferevent_data_cb read_cb = nullptr, write_cb = nullptr;
        bufferevent_event_cb event_cb = nullptr;
        void *arg = nullptr;
        bufferevent_getcb(bev, &read_cb, &write_cb, &event_cb, &arg);
        auto *conn = static_cast<evhttp_connection *>(arg);
        if (conn == nullptr) {
            // evhttp could not set the connection up and has freed it (its callbacks are gone).
            if (connections > 0)
                connections--;
        } else if (config.max_connections > 0 && connections > config.max_connections) {
            refuse(conn, bev);
        } else {
            watch(conn);
            track(conn, bev);
        }
        bufferevent_decref(bev);
    }
}

void Server::Impl::watch(evhttp_connection *conn) {
    evhttp_connection_set_closecb(conn, on_connection_close, this);
}

void Server::Impl::refuse(evhttp_connection *conn, bufferevent *bev) {
    connections--;
    refused++;
    std::string message = "The gateway has reached inference.gateway_max_connections (" +
                          std::to_string(config.max_connections) +
                          " open connections per listener); try again shortly.";
    int fd = bufferevent_getfd(bev);
    // Over TLS nothing can be said before a handshake: the connection is just closed.
    if (ssl_ctx == nullptr && fd >= 0) {
        std::string body = translate::openai_error_json(message, "service_unavailable",
                                                        "too_many_connections", {});
        std::string response =
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            "Content-Length: " +
            std::to_string(body.size()) + "\r\nRetry-After: 1\r\nConnection: close\r\n\r\n" + body;
        // A fresh socket's send buffer takes this whole; if not, the caller gets a cut answer.
        if (::send(fd, response.data(), response.size(), MSG_DONTWAIT | MSG_NOSIGNAL) > 0)
            linger_on(fd);
    }
    evhttp_connection_free(conn);
    warn("refused a connection: " + message);
}

void Server::Impl::linger_on(int fd) {
    // evhttp closes its descriptor; a duplicate keeps the socket for draining.
    int kept = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (kept < 0)
        return;
    ::shutdown(kept, SHUT_WR);
    auto *l = new Lingering;
    l->impl = this;
    l->fd = kept;
    l->until = Clock::now() + kLingerTime;
    l->ev = event_new(base, kept, EV_READ | EV_PERSIST, on_linger, l);
    timeval timeout = {static_cast<time_t>(kLingerTime.count()), 0};
    if (l->ev == nullptr || event_add(l->ev, &timeout) != 0)
        delete l;
    else
        lingering.insert(l);
}

// ------------------------------------------------------------------------------------------------
// Client connections: checks before the body, header and body deadlines

namespace {

// Where the header block in buffer ends (just past its empty line), or 0 while incomplete.
// libevent accepts lines ending in "\n" as well as "\r\n". Searching starts at from.
size_t header_end(evbuffer *buffer, size_t from) {
    size_t best = 0;
    for (const char *pattern : {"\n\r\n", "\n\n"}) {
        evbuffer_ptr start;
        if (evbuffer_ptr_set(buffer, &start, from, EVBUFFER_PTR_SET) != 0)
            return 0;
        evbuffer_ptr found = evbuffer_search(buffer, pattern, std::strlen(pattern), &start);
        if (found.pos >= 0) {
            size_t end = static_cast<size_t>(found.pos) + std::strlen(pattern);
            if (best == 0 || end < best)
                best = end;
        }
    }
    return best;
}

unsigned method_bit(std::string_view name) {
    static const std::pair<const char *, unsigned> kMethods[] = {
        {"GET", kGet},       {"POST", kPost},       {"HEAD", kHead},  {"PUT", kPut},
        {"DELETE", kDelete}, {"OPTIONS", kOptions}, {"PATCH", kPatch}};
    for (const auto &m : kMethods) {
        if (name == m.first)
            return m.second;
    }
    return 0;
}

std::string raw_response(int status, const char *reason, const std::string &body) {
    return "HTTP/1.1 " + std::to_string(status) + " " + reason +
           "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\nConnection: close\r\n\r\n" + body;
}

// The caller's dialect for a route: null for the gateway's own OpenAI shape.
// Who lists models on the OpenAI path says so by a header: anthropic-version on every Anthropic
// SDK request, x-goog-api-key or x-goog-api-client on every Google Gen AI SDK request.
enum class ModelsCaller { kOpenAi, kAnthropic, kGemini };

const protocols::Module *dialect_for(const Route &r, ModelsCaller caller) {
    if (r.endpoint == Endpoint::kMessages || r.endpoint == Endpoint::kCountTokens)
        return &protocols::anthropic_module();
    if (is_gemini_route(r))
        return &protocols::module_for(Protocol::kGeminiV1Beta);
    if (r.endpoint == Endpoint::kModels || r.endpoint == Endpoint::kModel) {
        if (caller == ModelsCaller::kAnthropic)
            return &protocols::anthropic_module();
        if (caller == ModelsCaller::kGemini)
            return &protocols::module_for(Protocol::kGeminiV1Beta);
    }
    return nullptr;
}

ModelsCaller models_caller(bool anthropic_version, bool goog_header) {
    return anthropic_version ? ModelsCaller::kAnthropic
           : goog_header     ? ModelsCaller::kGemini
                             : ModelsCaller::kOpenAi;
}

}  // namespace

const char *Server::Impl::check_key(const Snapshot &snap, const char *authorization,
                                    const char *x_api_key, const AccessKey **key) const {
    std::string_view presented = access_key(authorization, x_api_key);
    if (presented.empty()) {
        return "You didn't provide an access key. Send it as 'Authorization: Bearer "
               "<key>', 'X-API-Key: <key>' or 'x-goog-api-key: <key>'.";
    }
    std::string hash = crypto::sha256(std::string(presented));
    auto it = snap.keys.find(hash);
    if (it == snap.keys.end() || !crypto::constant_time_equal(it->second.key_hash, hash))
        return "Incorrect access key provided.";
    if (it->second.revoked)
        return "This access key has been revoked.";
    if (it->second.expires_at_ms && *it->second.expires_at_ms <= unix_ms_now())
        return "This access key has expired.";
    *key = &it->second;
    return nullptr;
}

std::string Server::Impl::precheck(std::string_view block, int &status,
                                   long long &body_length) const {
    size_t eol = block.find('\n');
    if (eol == std::string_view::npos)
        return {};
    std::string_view line = trim(block.substr(0, eol));
    size_t sp1 = line.find(' ');
    size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos)
        return {};  // malformed: libevent answers it
    unsigned method = method_bit(line.substr(0, sp1));
    // A request line without a target, or with one that is no URI, would make libevent close
    // while the caller may still be sending: it is refused here, with a lingering close.
    std::string uri(line.substr(sp1 + 1, sp2 - sp1 - 1));
    std::string path;
    evhttp_uri *parsed =
        uri.empty() ? nullptr : evhttp_uri_parse_with_flags(uri.c_str(), EVHTTP_URI_NONCONFORMANT);
    if (parsed == nullptr) {
        status = 400;
        return raw_response(
            400, "Bad Request",
            error_body("The request line has no valid target: send METHOD /path HTTP/1.1", 400,
                       "invalid_request", {}));
    }
    if (const char *p = evhttp_uri_get_path(parsed))
        path = p;
    const char *query_text = evhttp_uri_get_query(parsed);
    std::string query = query_text != nullptr ? query_text : "";
    evhttp_uri_free(parsed);

    std::string authorization, x_api_key, content_length, goog_api_key;
    bool have_authorization = false, have_x_api_key = false, have_length = false;
    bool have_goog_api_key = false, goog_client = false;
    std::string query_key;
    bool chunked = false, anthropic_version = false;
    std::string transfer_encoding;
    size_t pos = eol + 1;
    while (pos < block.size()) {
        size_t end = block.find('\n', pos);
        if (end == std::string_view::npos)
            end = block.size();
        std::string_view header = block.substr(pos, end - pos);
        pos = end + 1;
        if (trim(header).empty())
            break;
        if (header.front() == ' ' || header.front() == '\t')
            return {};  // a folded header: left to libevent's reading
        size_t colon = header.find(':');
        if (colon == std::string_view::npos)
            return {};
        std::string_view name = header.substr(0, colon);
        std::string_view value = trim(header.substr(colon + 1));
        // The first of repeated headers counts, as with evhttp_find_header.
        if (iequals(name, "Authorization") && !have_authorization) {
            authorization = value;
            have_authorization = true;
        } else if (iequals(name, "X-API-Key") && !have_x_api_key) {
            x_api_key = value;
            have_x_api_key = true;
        } else if (iequals(name, "x-goog-api-key") && !have_goog_api_key) {
            goog_api_key = value;
            have_goog_api_key = true;
        } else if (iequals(name, "Content-Length") && !have_length) {
            content_length = value;
            have_length = true;
        } else if (iequals(name, "Transfer-Encoding")) {
            chunked = true;
            transfer_encoding = value;
        } else if (iequals(name, "anthropic-version")) {
            anthropic_version = true;
        } else if (iequals(name, "x-goog-api-client")) {
            goog_client = true;
        }
    }
    // The route decides the shape of a refusal: each dialect's callers get their own errors.
    Route r = route(path);
    RequestContext shape;
    shape.dialect =
        dialect_for(r, models_caller(anthropic_version, goog_client || have_goog_api_key));
    query_key = gemini_query_key(r, query.c_str());
    crypto::wipe(query);

    // Only chunked framing is read. libevent would close on any other transfer coding (or a
    // HEAD's body, which it reads as the next request) while the caller is still sending, and
    // the reset would destroy the answer: both are refused here with a lingering close, the
    // 400 and close that HTTP/1.1 asks of a server for a framing it cannot read.
    const char *framing_error = nullptr;
    if (chunked && !iequals(transfer_encoding, "chunked"))
        framing_error =
            "The request's Transfer-Encoding is not one the gateway reads: send the "
            "body with a Content-Length, or with Transfer-Encoding: chunked";
    else if (method == kHead && (chunked || (have_length && trim(content_length) != "0")))
        framing_error = "A HEAD request cannot carry a body";
    if (framing_error != nullptr) {
        status = 400;
        return raw_response(400, "Bad Request",
                            error_json(shape, 400, framing_error, "invalid_request", {}));
    }

    body_length = chunked ? -1 : 0;
    if (have_length && !chunked) {
        char *end = nullptr;
        errno = 0;
        unsigned long long length = std::strtoull(content_length.c_str(), &end, 10);
        bool numeric = !content_length.empty() && *end == '\0' && errno == 0 &&
                       std::isdigit(static_cast<unsigned char>(content_length[0]));
        body_length = numeric ? static_cast<long long>(std::min<unsigned long long>(
                                    length, static_cast<unsigned long long>(LLONG_MAX)))
                              : -1;
        if (numeric && length > config.max_body_size) {
            status = 413;
            return raw_response(
                413, "Payload Too Large",
                error_json(shape, 413,
                           "Request too large: the gateway accepts bodies and headers up to " +
                               std::to_string(config.max_body_size) + " bytes",
                           "request_too_large", {}));
        }
    }
    if (method == 0) {
        // A method the gateway does not serve: refused here with a lingering close, so that a
        // caller still sending a body reads the answer instead of meeting a reset.
        status = 405;
        std::string allow = allow_header(kServedMethods);
        std::string response = raw_response(
            405, "Method Not Allowed",
            error_json(shape, 405, "The request method is not one the gateway serves; use " + allow,
                       "method_not_allowed", {}));
        return response.insert(response.find("\r\n") + 2, "Allow: " + allow + "\r\n");
    }
    if (!config.require_key || snapshot->unavailable)
        return {};
    // What handle() answers before it looks at the key is left to it.
    if (r.endpoint == Endpoint::kUnknown || (r.allowed & method) == 0 ||
        r.endpoint == Endpoint::kHealth || r.endpoint == Endpoint::kMetrics ||
        (r.endpoint == Endpoint::kPassthrough && r.bad_path))
        return {};
    // Gemini's clients send their key as x-goog-api-key or ?key=; it stands in for X-API-Key.
    if (!have_x_api_key && have_goog_api_key) {
        x_api_key = goog_api_key;
        have_x_api_key = true;
    }
    if (!have_x_api_key && !query_key.empty()) {
        x_api_key = query_key;
        have_x_api_key = true;
    }
    const AccessKey *key = nullptr;
    const char *refusal = check_key(*snapshot, have_authorization ? authorization.c_str() : nullptr,
                                    have_x_api_key ? x_api_key.c_str() : nullptr, &key);
    crypto::wipe(query_key);
    crypto::wipe(goog_api_key);
    if (refusal == nullptr)
        return {};
    status = 401;
    return raw_response(401, "Unauthorized",
                        error_json(shape, 401, refusal, "invalid_api_key", {}));
}

void Server::Impl::track(evhttp_connection *conn, bufferevent *bev) {
    auto cc = std::make_unique<ClientConnection>();
    cc->impl = this;
    cc->conn = conn;
    cc->bev = bev;
    cc->timer = event_new(base, -1, 0, on_client_timer, cc.get());
    if (cc->timer == nullptr)
        return;  // unchecked: libevent's own limits still apply
    cc->input_cb = evbuffer_add_cb(bufferevent_get_input(bev), on_client_input, cc.get());
    if (cc->input_cb == nullptr) {
        event_free(cc->timer);
        return;
    }
    bufferevent_setwatermark(bev, EV_READ, kMaxHeaderBytes + 1, 0);
    clients[conn] = cc.release();
}

void Server::Impl::untrack(evhttp_connection *conn) {
    auto it = clients.find(conn);
    if (it == clients.end())
        return;
    ClientConnection *cc = it->second;
    clients.erase(it);
    event_free(cc->timer);
    evbuffer_remove_cb_entry(bufferevent_get_input(cc->bev), cc->input_cb);
    delete cc;
}

void Server::Impl::arm_deadline(ClientConnection &cc, int factor) {
    if (config.header_timeout_s <= 0) {
        event_del(cc.timer);
        return;
    }
    timeval tv = {static_cast<time_t>(config.header_timeout_s) * factor, 0};
    event_add(cc.timer, &tv);
}

// Runs inside the bufferevent's read, as bytes are added to the input: nothing here may free the
// connection (a refusal is sent from the timer's callback, made active at once).
void Server::Impl::client_input(ClientConnection &cc) {
    if (cc.phase == ClientConnection::Phase::kIdle) {
        cc.phase = ClientConnection::Phase::kHeaders;
        cc.scanned = 0;
        arm_deadline(cc);
    }
    if (cc.phase != ClientConnection::Phase::kHeaders || !cc.refusal.empty())
        return;
    evbuffer *input = bufferevent_get_input(cc.bev);
    size_t length = evbuffer_get_length(input);
    size_t end = header_end(input, cc.scanned);
    if ((end == 0 && length > kMaxHeaderBytes) || end > kMaxHeaderBytes + 4) {
        // Too long. Refused here rather than by libevent, which would close at once on a caller
        // still sending its headers: the reset then destroys the answer before it is read. A
        // refusal is sent with a lingering close that drains what the caller still sends.
        cc.refusal =
            raw_response(431, "Request Header Fields Too Large",
                         error_body("Request headers too large: the gateway accepts up to " +
                                        std::to_string(kMaxHeaderBytes) + " bytes of headers",
                                    431, "headers_too_large", {}));
        cc.refusal_status = 431;
        bufferevent_disable(cc.bev, EV_READ);
        event_active(cc.timer, EV_TIMEOUT, 0);
        return;
    }
    if (end == 0) {
        cc.scanned = length > 2 ? length - 2 : 0;
        return;
    }
    std::string block(end, '\0');
    evbuffer_copyout(input, block.data(), end);
    int status = 0;
    long long body_length = -1;
    std::string response;
    try {
        response = precheck(block, status, body_length);
    } catch (const std::exception &) {
        response.clear();  // libevent and handle() decide
    }
    // A refused key only costs the connection when the body has not all arrived: a request whose
    // body is here already (a GET, a small POST) is answered by handle() and keeps it.
    if (status == 401 && body_length >= 0 &&
        static_cast<unsigned long long>(length - end) >=
            static_cast<unsigned long long>(body_length))
        response.clear();
    if (!response.empty()) {
        cc.refusal = std::move(response);
        cc.refusal_status = status;
        bufferevent_disable(cc.bev, EV_READ);
        event_active(cc.timer, EV_TIMEOUT, 0);
        return;
    }
    cc.phase = ClientConnection::Phase::kBody;
    arm_deadline(cc);
    bufferevent_setwatermark(cc.bev, EV_READ, 0, 0);
}

void Server::Impl::client_timer(ClientConnection &cc) {
    std::string response;
    if (!cc.refusal.empty()) {
        response = std::move(cc.refusal);
        if (cc.refusal_status == 401)
            governor.finished(nullptr, kNoService, 401, translate::Usage(), 0, 0, false);
    } else if (cc.phase == ClientConnection::Phase::kHeaders) {
        response = raw_response(408, "Request Timeout",
                                error_body("The request headers did not arrive within "
                                           "inference.gateway_header_timeout (" +
                                               std::to_string(config.header_timeout_s) + " s)",
                                           408, "request_timeout", {}));
    } else if (cc.phase != ClientConnection::Phase::kBody &&
               cc.phase != ClientConnection::Phase::kUnchecked) {
        return;
    }
    // Past the headers libevent may have answered already (a malformed body, say): the
    // connection is just closed.
    close_client(cc, response);
}

void Server::Impl::close_client(ClientConnection &cc, const std::string &response) {
    evhttp_connection *conn = cc.conn;
    bufferevent *bev = cc.bev;
    if (response.empty()) {
        evhttp_connection_free(conn);  // untracks cc
        return;
    }
    if (ssl_ctx != nullptr) {
        // Through TLS: written by the bufferevent, the connection goes once it is sent.
        event_del(cc.timer);
        bufferevent_write(bev, response.data(), response.size());
        bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
        bufferevent_setcb(bev, nullptr, on_refusal_written, on_refusal_event, conn);
        bufferevent_disable(bev, EV_READ);
        bufferevent_enable(bev, EV_WRITE);
        timeval limit = {5, 0};
        bufferevent_set_timeouts(bev, nullptr, &limit);
        return;
    }
    int fd = bufferevent_getfd(bev);
    // A socket that has only received has room in its send buffer for this small answer.
    if (fd >= 0 && ::send(fd, response.data(), response.size(), MSG_DONTWAIT | MSG_NOSIGNAL) > 0)
        linger_on(fd);
    evhttp_connection_free(conn);  // untracks cc
}

void Server::Impl::request_dispatched(evhttp_request *req) {
    evhttp_connection *conn = evhttp_request_get_connection(req);
    auto it = clients.find(conn);
    if (it == clients.end())
        return;
    it->second->phase = ClientConnection::Phase::kServing;
    event_del(it->second->timer);
}

void Server::Impl::request_completed(evhttp_request *req) {
    evhttp_connection *conn = evhttp_request_get_connection(req);
    auto it = clients.find(conn);
    if (it == clients.end())
        return;
    ClientConnection &cc = *it->second;
    if (evbuffer_get_length(bufferevent_get_input(cc.bev)) == 0) {
        cc.phase = ClientConnection::Phase::kIdle;
        bufferevent_setwatermark(cc.bev, EV_READ, kMaxHeaderBytes + 1, 0);
    } else {
        // libevent parses an already buffered (pipelined) request straight from the buffer:
        // only the deadline applies, for headers and body together.
        cc.phase = ClientConnection::Phase::kUnchecked;
        arm_deadline(cc, 2);
    }
}

void Server::Impl::accept_failed(int error) {
    accept_failures++;
    warn(std::string("could not accept a connection: ") + std::strerror(error) + " (" +
         std::to_string(connections) + " client connections open; pausing " +
         std::to_string(kAcceptPauseMs) + " ms)");
    if (accept_paused)
        return;
    for (evhttp_bound_socket *socket : bound)
        evconnlistener_disable(evhttp_bound_socket_get_listener(socket));
    accept_paused = true;
    timeval pause = {0, kAcceptPauseMs * 1000};
    event_add(resume_event, &pause);
}

void Server::Impl::resume_accepting() {
    if (!accept_paused)
        return;
    accept_paused = false;
    for (evhttp_bound_socket *socket : bound)
        evconnlistener_enable(evhttp_bound_socket_get_listener(socket));
}

void Server::Impl::warn(const std::string &message, bool from_libevent) {
    std::optional<std::string> line = throttle.note(message);
    if (line) {
        try {
            governor.warning(*line);
        } catch (...) {
            // A warning that cannot be logged must not take the loop down.
        }
    }
    if (!from_libevent)
        schedule_warnings();
}

void Server::Impl::schedule_warnings() {
    if (throttle.pending() && !event_pending(warn_event, EV_TIMEOUT, nullptr)) {
        auto wait = std::chrono::duration_cast<std::chrono::microseconds>(throttle.next_flush() -
                                                                          Clock::now());
        long long us = std::max<long long>(wait.count(), 1000);
        timeval tv = {static_cast<time_t>(us / 1000000), static_cast<suseconds_t>(us % 1000000)};
        event_add(warn_event, &tv);
    }
}

void Server::Impl::flush_warnings() {
    for (const std::string &line : throttle.flush()) {
        try {
            governor.warning(line);
        } catch (...) {
        }
    }
    schedule_warnings();
}

Server::Impl::Impl(event_base *b, Config c, Governor &g)
    : base(b), config(std::move(c)), governor(g), client(b) {
    http = evhttp_new(base);
    if (http == nullptr)
        throw Error(sqlstate::kInternalError, "could not create the gateway's HTTP server");
    evhttp_set_allowed_methods(http, kServedMethods);
    evhttp_set_max_headers_size(http, 64 * 1024);
    apply_http_limits();
    evhttp_set_gencb(http, on_request, this);
    evhttp_set_bevcb(http, make_bufferevent, this);
    // Over-long bodies are read to their end before the 413, so the caller can read it rather
    // than meet a reset connection while still sending.
    evhttp_set_flags(http, EVHTTP_SERVER_LINGERING_CLOSE);
    flush_event = event_new(base, -1, 0, on_flush, this);
    accept_event = event_new(base, -1, 0, gateway::on_accepted, this);
    resume_event = event_new(base, -1, 0, on_resume, this);
    warn_event = event_new(base, -1, 0, on_warn_timer, this);
    if (flush_event == nullptr || accept_event == nullptr || resume_event == nullptr ||
        warn_event == nullptr) {
        for (event *e : {flush_event, accept_event, resume_event, warn_event}) {
            if (e != nullptr)
                event_free(e);
        }
        evhttp_free(http);
        throw Error(sqlstate::kInternalError, "could not create the gateway's events");
    }
    snapshot = std::make_shared<Snapshot>();
    std::lock_guard<std::mutex> lock(servers_mutex);
    servers.push_back(this);
    event_set_log_callback(on_libevent_log);
}

Server::Impl::~Impl() {
    // Exchanges first: their upstream calls stop and their close callbacks go, so freeing the
    // connections below calls nothing of ours.
    for (Exchange *ex : exchanges) {
        if (!ex->done) {
            governor.finished(
                ex->context.key,
                ex->context.service != nullptr ? ex->context.service->name : kNoService, 503,
                ex->usage, ms_since(ex->context.started), ex->upstream_ms, false);
        }
        if (ex->upstream != 0)
            client.cancel(ex->upstream);
        drop_drain_cb(*ex);
        if (ex->conn != nullptr)
            watch(ex->conn);
        delete ex;
    }
    exchanges.clear();
    {
        std::lock_guard<std::mutex> lock(servers_mutex);
        servers.erase(std::find(servers.begin(), servers.end(), this));
        if (servers.empty())
            event_set_log_callback(nullptr);
    }
    for (bufferevent *bev : accepted)
        bufferevent_decref(bev);
    accepted.clear();
    for (Lingering *l : lingering)
        delete l;
    lingering.clear();
    event_free(flush_event);
    event_free(accept_event);
    event_free(resume_event);
    event_free(warn_event);
    evhttp_free(http);  // closes the connections, which untracks them
    for (auto &entry : clients) {
        event_free(entry.second->timer);
        delete entry.second;
    }
    clients.clear();
    if (ssl_ctx != nullptr)
        SSL_CTX_free(ssl_ctx);
}

void Server::Impl::handle(evhttp_request *req) {
    // libevent takes a request whose target is an absolute URI ("POST http://host/v1/models")
    // for a proxy request and closes the connection after answering it, without saying so: a
    // caller's next request on that connection was lost. The gateway is no proxy; such a target
    // names one of its own routes (HTTP/1.1 servers must accept the absolute form) and keeps the
    // connection like any other.
    req->flags &= ~EVHTTP_PROXY_REQUEST;
    request_dispatched(req);
    evhttp_request_set_on_complete_cb(req, on_request_complete, this);
    RequestContext context;
    context.req = req;
    context.started = Clock::now();
    context.snapshot = snapshot;
    try {
        const evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
        const char *path = uri != nullptr ? evhttp_uri_get_path(uri) : nullptr;
        std::string_view raw_path = path != nullptr ? path : "";
        unsigned method = static_cast<unsigned>(evhttp_request_get_command(req));
        Route r = route(raw_path);
        evkeyvalq *in = evhttp_request_get_input_headers(req);
        context.dialect = dialect_for(
            r, models_caller(evhttp_find_header(in, "anthropic-version") != nullptr,
                             evhttp_find_header(in, "x-goog-api-key") != nullptr ||
                                 evhttp_find_header(in, "x-goog-api-client") != nullptr));

        if (context.snapshot->unavailable &&
            !(r.endpoint == Endpoint::kMetrics && method == kGet)) {
            // Nothing can be served, and there is no ledger to count it in.
            context.ledger = false;
            reply(context, 503,
                  context.dialect != nullptr
                      ? context.dialect->error_body(503, *context.snapshot->unavailable)
                      : translate::openai_error_json(*context.snapshot->unavailable,
                                                     "service_unavailable",
                                                     "extension_not_installed", {}));
            return;
        }
        if (r.endpoint == Endpoint::kUnknown) {
            reply_error(context, 404,
                        "Invalid URL (" + std::string(method_name(method)) + " " +
                            std::string(raw_path) + ")",
                        "unknown_url");
            return;
        }
        if ((r.allowed & method) == 0) {
            context.headers.emplace_back("Allow", allow_header(r.allowed));
            reply_error(context, 405,
                        std::string("Method ") + method_name(method) + " is not allowed on " +
                            std::string(raw_path) + "; use " + allow_header(r.allowed),
                        "method_not_allowed");
            return;
        }
        if (r.endpoint == Endpoint::kHealth) {
            context.ledger = false;
            reply(context, 200, "{\"status\":\"ok\"}");
            return;
        }
        if (r.endpoint == Endpoint::kMetrics) {
            context.ledger = false;
            reply(context, 200, governor.metrics_text(),
                  "text/plain; version=0.0.4; charset=utf-8");
            return;
        }
        if (r.endpoint == Endpoint::kPassthrough && r.bad_path) {
            reply_error(context, 400,
                        "Invalid pass-through path: it must stay below /inferenceservices/"
                        "<service>/ (no '.' or '..' segments, no encoded '/' or '\\\\')",
                        "invalid_path");
            return;
        }

        // The caller's access key.
        const char *x_api_key = evhttp_find_header(in, "X-API-Key");
        if (x_api_key == nullptr)
            x_api_key = evhttp_find_header(in, "x-goog-api-key");
        std::string query_key =
            gemini_query_key(r, uri != nullptr ? evhttp_uri_get_query(uri) : nullptr);
        if (x_api_key == nullptr && !query_key.empty())
            x_api_key = query_key.c_str();
        const char *refusal = check_key(*context.snapshot, evhttp_find_header(in, "Authorization"),
                                        x_api_key, &context.key);
        crypto::wipe(query_key);
        // Without required keys a bad key is ignored rather than refused: the caller could
        // simply have sent none.
        if (refusal != nullptr && config.require_key) {
            reply_error(context, 401, refusal, "invalid_api_key");
            return;
        }

        if (r.endpoint == Endpoint::kModels || r.endpoint == Endpoint::kModel ||
            r.endpoint == Endpoint::kGeminiModels || r.endpoint == Endpoint::kGeminiModel) {
            handle_models(context, r);
            return;
        }
        handle_service_call(r, context);
    } catch (const std::exception &e) {
        // Only answers a request nobody answered yet (the starters catch their own).
        if (context.req != nullptr) {
            reply_error(context, 500, std::string("internal gateway error: ") + e.what(),
                        "internal_error");
        }
    }
}

void Server::Impl::handle_models(RequestContext &context, const Route &r) {
    auto model_object = [](const std::string &name) {
        return nlohmann::json{{"id", name},
                              {"object", "model"},
                              {"created", kModelCreated},
                              {"owned_by", "pg_inference"}};
    };
    const Snapshot &snap = *context.snapshot;
    const bool anthropic = context.dialect == &protocols::anthropic_module();
    const bool gemini = context.dialect == &protocols::module_for(Protocol::kGeminiV1Beta);
    if (r.endpoint == Endpoint::kModel || r.endpoint == Endpoint::kGeminiModel) {
        auto it = snap.services.find(r.model_id);
        if (it == snap.services.end() ||
            (context.key != nullptr && !context.key->allows(it->first))) {
            reply_error(
                context, 404,
                "The model '" + r.model_id + "' does not exist or you do not have access to it.",
                "model_not_found", "model");
            return;
        }
        context.service = &it->second;
        reply(context, 200,
              (gemini      ? gemini_model_object(it->first)
               : anthropic ? anthropic_model_object(it->first)
                           : model_object(it->first))
                  .dump());
        return;
    }
    std::vector<std::string> names;
    for (const auto &entry : snap.services) {
        if (context.key == nullptr || context.key->allows(entry.first))
            names.push_back(entry.first);
    }
    if (anthropic) {
        reply(context, 200, anthropic_model_list(names).dump());
        return;
    }
    if (gemini) {
        reply(context, 200, gemini_model_list(names).dump());
        return;
    }
    nlohmann::json data = nlohmann::json::array();
    for (const std::string &name : names)
        data.push_back(model_object(name));
    reply(context, 200, nlohmann::json{{"object", "list"}, {"data", std::move(data)}}.dump());
}

void Server::Impl::handle_service_call(const Route &r, RequestContext &context) {
    evhttp_request *req = context.req;
    const Snapshot &snap = *context.snapshot;
    std::string name;
    nlohmann::json body;

    if (r.endpoint == Endpoint::kPassthrough) {
        if (context.key != nullptr && !context.key->passthrough) {
            reply_error(context, 403,
                        "This access key may not use pass-through (/inferenceservices/) paths; "
                        "use the OpenAI-compatible /v1/ endpoints, or a key created with "
                        "passthrough => true.",
                        "passthrough_not_allowed");
            return;
        }
        name = r.service;
    } else {
        evbuffer *input = evhttp_request_get_input_buffer(req);
        size_t size = evbuffer_get_length(input);
        const char *data =
            size == 0 ? "" : reinterpret_cast<const char *>(evbuffer_pullup(input, -1));
        std::string_view text(data, size);
        const char *type =
            evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
        if (json_body_type(type, text) != BodyType::kJson) {
            reply_error(context, 415,
                        std::string("Unsupported Content-Type '") + type +
                            "': send a JSON body with Content-Type: application/json",
                        "unsupported_media_type");
            return;
        }
        // nlohmann's parser ends its input at a NUL and would accept what precedes it, while
        // the whole body may be forwarded: JSON text cannot hold a raw NUL, so it is refused.
        if (text.find('\0') != std::string_view::npos) {
            reply_error(context, 400,
                        "The JSON body of your request contains a NUL byte: JSON text cannot "
                        "hold one; write it as \\u0000 inside a string.",
                        "invalid_json");
            return;
        }
        body = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
        if (body.is_discarded()) {
            reply_error(context, 400,
                        "We could not parse the JSON body of your request: it is not valid JSON.",
                        "invalid_json");
            return;
        }
        if (!body.is_object()) {
            reply_error(context, 400, "The request body must be a JSON object.", "invalid_json");
            return;
        }
        if (is_gemini_route(r)) {
            // Gemini names the model in the path, not the body.
            name = r.model_id;
        } else {
            auto model = body.find("model");
            if (model == body.end() || !model->is_string() ||
                model->get_ref<const std::string &>().empty()) {
                reply_error(context, 400, "You must provide a model parameter (a service name).",
                            "missing_required_parameter", "model");
                return;
            }
            name = model->get<std::string>();
        }
    }

    auto it = snap.services.find(name);
    if (it == snap.services.end()) {
        reply_error(context, 404,
                    "The model '" + name + "' does not exist or you do not have access to it.",
                    "model_not_found", r.endpoint == Endpoint::kPassthrough ? "" : "model");
        return;
    }
    context.service = &it->second;
    if (context.key != nullptr && !context.key->allows(name)) {
        reply_error(context, 403, "This access key may not use the model '" + name + "'.",
                    "model_not_allowed");
        return;
    }
    if (r.endpoint == Endpoint::kPassthrough && context.key != nullptr &&
        context.key->tokens_per_hour && !passthrough_usage_shape(r.rest)) {
        // The limit could not be kept: the gateway cannot count the tokens of such an answer.
        reply_error(context, 403,
                    "This access key has a token limit, and the gateway cannot count the tokens "
                    "of answers on this pass-through path; with a token limit, pass-through "
                    "serves only chat completions, completions, embeddings, messages and "
                    "generateContent paths.",
                    "passthrough_path_not_metered");
        return;
    }
    Admission admission = governor.admit(context.key, name);
    context.headers = std::move(admission.headers);
    if (!admission.allowed) {
        reply_error(context, admission.status, admission.message, admission.code, {}, true);
        return;
    }

    RequestContext handed = std::move(context);
    context.req = nullptr;
    switch (r.endpoint) {
        case Endpoint::kChat:
            start_chat(*this, std::move(handed), std::move(body),
                       protocols::module_for(Protocol::kOpenAiV1));
            break;
        case Endpoint::kMessages:
            start_chat(*this, std::move(handed), std::move(body), protocols::anthropic_module());
            break;
        case Endpoint::kCountTokens:
            start_count_tokens(*this, std::move(handed), std::move(body),
                               protocols::anthropic_module());
            break;
        case Endpoint::kGeminiCount:
            start_count_tokens(*this, std::move(handed), std::move(body),
                               protocols::module_for(Protocol::kGeminiV1Beta));
            break;
        case Endpoint::kEmbedContent:
        case Endpoint::kBatchEmbed:
            start_gemini_embeddings(*this, std::move(handed), std::move(body),
                                    r.endpoint == Endpoint::kBatchEmbed);
            break;
        case Endpoint::kResponses:
            start_chat(*this, std::move(handed), std::move(body), protocols::responses_module());
            break;
        case Endpoint::kCompletions:
            start_chat(*this, std::move(handed), std::move(body), protocols::completions_module());
            break;
        case Endpoint::kGenerate:
        case Endpoint::kStreamGenerate:
            start_chat(*this, std::move(handed), std::move(body),
                       protocols::module_for(Protocol::kGeminiV1Beta),
                       r.endpoint == Endpoint::kStreamGenerate);
            break;
        case Endpoint::kEmbeddings:
            start_embeddings(*this, std::move(handed), std::move(body));
            break;
        case Endpoint::kRerank:
        case Endpoint::kRanking:
            start_rerank(*this, std::move(handed), std::move(body));
            break;
        default:
            start_passthrough(*this, std::move(handed), r);
            break;
    }
}

void Server::Impl::reply(RequestContext &context, int status, std::string body,
                         const char *content_type, bool rate_limited) {
    evhttp_request *req = context.req;
    if (req == nullptr)
        return;
    context.req = nullptr;
    send_response(req, status, std::move(body), content_type, context.headers);
    if (context.ledger) {
        governor.finished(context.key,
                          context.service != nullptr ? context.service->name : kNoService, status,
                          translate::Usage(), ms_since(context.started), 0, rate_limited);
    }
}

void Server::Impl::reply_error(RequestContext &context, int status, std::string_view message,
                               std::string_view code, std::string_view param, bool rate_limited) {
    reply(context, status, error_json(context, status, message, code, param), "application/json",
          rate_limited);
}

std::string Server::Impl::error_json(const RequestContext &context, int status,
                                     std::string_view message, std::string_view code,
                                     std::string_view param) {
    if (context.dialect != nullptr)
        return context.dialect->error_body(status, message);
    return error_body(message, status, code, param);
}

http::Request to_http(translate::UpstreamRequest &&request) {
    http::Request r;
    r.method = std::move(request.method);
    r.url = std::move(request.url);
    r.headers = std::move(request.headers);
    r.body = std::move(request.body);
    return r;
}

// ------------------------------------------------------------------------------------------------
// Exchange plumbing

Exchange &Server::Impl::adopt(std::unique_ptr<Exchange> exchange) {
    Exchange *ex = exchange.get();
    exchanges.insert(ex);
    exchange.release();
    if (ex->conn != nullptr) {
        evhttp_connection_set_closecb(ex->conn, on_close, ex);
        // libevent stops reading a connection while its request is served, so a caller who
        // leaves before the answer starts would go unnoticed and the upstream call (an LLM
        // generating for a minute, say) would run on for nobody. Reading is turned back on with
        // no read callback, as libevent itself does while it writes an answer: data waits in the
        // buffer, and EOF reaches libevent's error callback, which drops the connection and so
        // calls on_close. The read timeout goes meanwhile (a waiting caller sends nothing); the
        // write timeout stays, and both are restored when the answer is complete.
        bufferevent *bev = evhttp_connection_get_bufferevent(ex->conn);
        bufferevent_data_cb read_cb = nullptr, write_cb = nullptr;
        bufferevent_event_cb event_cb = nullptr;
        void *cb_arg = nullptr;
        bufferevent_getcb(bev, &read_cb, &write_cb, &event_cb, &cb_arg);
        bufferevent_setcb(bev, nullptr, write_cb, event_cb, cb_arg);
        timeval write_timeout = {config.client_timeout_s, 0};
        bufferevent_set_timeouts(bev, nullptr,
                                 config.client_timeout_s > 0 ? &write_timeout : nullptr);
        bufferevent_enable(bev, EV_READ);
        evhttp_request_set_on_complete_cb(ex->req, restore_timeouts, this);
    }
    return *ex;
}

void Server::Impl::call_upstream(Exchange &ex, http::Request request, bool streamed) {
    request.connect_timeout_ms = config.connect_timeout_ms;
    request.max_response_size = config.max_response_size;
    request.insecure = ex.context.service->allow_insecure;
    request.blocked_networks = ex.context.service->blocked_networks;
    http::AsyncClient::Options options;
    options.retry.max_retries = config.max_retries;
    if (streamed) {
        options.idle_timeout_ms = config.request_timeout_ms;
    } else {
        request.timeout_ms = config.request_timeout_ms;
    }
    ex.upstream_started = Clock::now();
    Exchange *p = &ex;
    http::AsyncClient::Handlers handlers;
    if (streamed) {
        handlers.on_body = [this, p](const http::Response &head, const char *data, size_t size) {
            if (p->done)
                return false;
            p->busy++;
            bool more = p->on_body(head, data, size);
            p->busy--;
            more = more && !p->done;
            reap(p);
            return more;
        };
    }
    handlers.on_done = [this, p](http::Response &response) {
        p->upstream = 0;
        p->upstream_ms += ms_since(p->upstream_started);
        if (p->done) {
            reap(p);
            return;
        }
        p->busy++;
        try {
            p->on_done(response);
        } catch (const Error &e) {
            if (!p->done && !p->streaming)
                respond_translate_error(*p, e);
        } catch (const std::exception &e) {
            if (!p->done && !p->streaming)
                respond_error(*p, 500, std::string("internal gateway error: ") + e.what(),
                              "internal_error");
        }
        if (!p->done && p->upstream == 0) {
            // A handler that neither answered nor called again must not leave the caller waiting.
            if (p->streaming)
                abort_stream(*p, 500);
            else
                respond_error(*p, 500, "internal gateway error: no answer", "internal_error");
        }
        p->busy--;
        reap(p);
    };
    ex.upstream = client.start(std::move(request), std::move(handlers), options);
}

void Server::Impl::respond(Exchange &ex, int status, std::string body, const char *content_type) {
    if (ex.done)
        return;
    if (ex.req != nullptr) {
        if (ex.conn != nullptr)
            watch(ex.conn);
        send_response(ex.req, status, std::move(body), content_type, ex.context.headers);
        ex.req = nullptr;
    }
    finish(ex, status);
}

void Server::Impl::respond_error(Exchange &ex, int status, std::string_view message,
                                 std::string_view code, std::string_view param) {
    respond(ex, status, error_json(ex.context, status, message, code, param));
}

void Server::Impl::respond_upstream_failure(Exchange &ex, const http::Response &r) {
    const ServiceEndpoint &service = *ex.context.service;
    if (r.curl_code != 0 && r.status < 300) {
        std::string message = "service \"" + service.name + "\" ";
        int status = 502;
        const char *code = "upstream_unreachable";
        if (r.too_large) {
            message += "returned a response larger than " +
                       std::to_string(config.max_response_size) + " bytes";
            code = "upstream_response_too_large";
        } else if (r.blocked) {
            message += "may not be reached: " + r.transport_error;
            code = "upstream_address_blocked";
        } else if (r.curl_code == CURLE_OPERATION_TIMEDOUT) {
            message += "did not answer in time: " + redact_key(r.transport_error, service);
            status = 504;
            code = "upstream_timeout";
        } else {
            message += "is unreachable: " + redact_key(r.transport_error, service);
        }
        respond_error(ex, status, message, code);
        return;
    }
    Error e = translate::upstream_failure(service, r.status, r.body);
    int status = caller_status(r.status);
    const char *code = "upstream_error";
    if (r.status == 429) {
        // From the raw error: the message's detail is redacted, and a short key can hide a code.
        const UpstreamError raw = parse_upstream_error(r.body);
        code = raw.type == "insufficient_quota" || raw.code == "insufficient_quota"
                   ? "insufficient_quota"
                   : "rate_limit_exceeded";
    } else if (e.sqlstate() == sqlstate::kUpstreamAuth ||
               e.sqlstate() == sqlstate::kUpstreamForbidden) {
        // Gemini refuses a bad key with 400 API_KEY_INVALID: still the gateway's problem.
        status = 502;
        code = "upstream_auth_failed";
    }
    if (status == 429 || status == 503) {
        std::string after = r.header("retry-after");
        if (!after.empty())
            ex.context.headers.emplace_back("Retry-After", std::move(after));
    }
    respond_error(ex, status, e.what(), code);
}

void Server::Impl::respond_translate_error(Exchange &ex, const Error &e) {
    std::string message = e.what();
    if (!e.hint().empty())
        message += ". " + e.hint();
    const std::string &state = e.sqlstate();
    if (state == sqlstate::kInvalidParameterValue) {
        respond_error(ex, 400, message, "invalid_value");
    } else if (state == sqlstate::kFeatureNotSupported) {
        respond_error(ex, 400, message, "unsupported_value");
    } else if (state.compare(0, 2, "PI") == 0) {
        // The upstream's words in these errors were redacted where they were read.
        if (!e.detail().empty())
            message += " (" + e.detail() + ")";
        respond_error(ex, 502, message, "bad_upstream_response");
    } else {
        respond_error(ex, 500, message, "internal_error");
    }
}

void Server::Impl::start_stream(Exchange &ex, int status,
                                const std::vector<std::pair<std::string, std::string>> &headers) {
    if (ex.req == nullptr || ex.streaming)
        return;
    add_headers(ex.req, ex.context.headers);
    add_headers(ex.req, headers);
    // The read timeout is already off (adopt): a caller listening to a stream sends nothing.
    evhttp_send_reply_start(ex.req, status, nullptr);
    ex.streaming = true;
}

void Server::Impl::send_chunk(Exchange &ex, const char *data, std::size_t size) {
    if (ex.req == nullptr || size == 0)
        return;
    evbuffer_add(ex.chunk, data, size);
    // What one upstream read produced goes out as one chunk when the current callbacks are done
    // (same loop turn, no added latency): libcurl hands a stream over one upstream chunk (an SSE
    // event) at a time, and a chunk each cost evhttp a formatted size line and a callback round.
    if (!ex.chunk_pending) {
        ex.chunk_pending = true;
        to_flush.push_back(&ex);
        event_active(flush_event, EV_TIMEOUT, 0);
    }
}

void Server::Impl::flush_chunk(Exchange &ex) {
    if (!ex.chunk_pending)
        return;
    ex.chunk_pending = false;
    if (ex.req != nullptr) {
        evhttp_send_reply_chunk(ex.req, ex.chunk);
        check_backpressure(ex);
    }
}

void Server::Impl::check_backpressure(Exchange &ex) {
    if (ex.upstream_paused || ex.upstream == 0 || ex.conn == nullptr)
        return;
    evbuffer *output = bufferevent_get_output(evhttp_connection_get_bufferevent(ex.conn));
    if (evbuffer_get_length(output) <= kStreamHighWater)
        return;
    if (ex.drain_cb == nullptr) {
        ex.drain_cb = evbuffer_add_cb(output, on_stream_drained, &ex);
        if (ex.drain_cb == nullptr)
            return;
    }
    ex.upstream_paused = true;
    client.pause(ex.upstream, true);
}

void Server::Impl::stream_drained(Exchange &ex) {
    if (!ex.upstream_paused)
        return;
    ex.upstream_paused = false;
    // Resuming may deliver buffered bytes (and chunks) at once: the exchange must survive it.
    ex.busy++;
    if (ex.upstream != 0)
        client.pause(ex.upstream, false);
    ex.busy--;
    reap(&ex);
}

void Server::Impl::drop_drain_cb(Exchange &ex) {
    if (ex.drain_cb == nullptr || ex.conn == nullptr)
        return;
    evbuffer_remove_cb_entry(bufferevent_get_output(evhttp_connection_get_bufferevent(ex.conn)),
                             ex.drain_cb);
    ex.drain_cb = nullptr;
}

void Server::Impl::flush_chunks() {
    flushing.swap(to_flush);
    for (Exchange *ex : flushing) {
        if (exchanges.count(ex) != 0)  // not reaped since
            flush_chunk(*ex);
    }
    flushing.clear();
}

void Server::Impl::end_stream(Exchange &ex, int ledger_status) {
    if (ex.done)
        return;
    if (ex.req != nullptr) {
        if (ex.conn != nullptr)
            watch(ex.conn);
        flush_chunk(ex);
        // The connection may go with the reply's end; its buffer's callback goes first.
        drop_drain_cb(ex);
        evhttp_request *req = ex.req;
        ex.req = nullptr;
        evhttp_send_reply_end(req);
    }
    finish(ex, ledger_status);
}

void Server::Impl::abort_stream(Exchange &ex, int ledger_status) {
    if (ex.done)
        return;
    // A body cut short must not look complete: drop the connection instead of ending it.
    ex.chunk_pending = false;
    if (ex.req != nullptr && ex.conn != nullptr) {
        watch(ex.conn);
        drop_drain_cb(ex);
        evhttp_connection *conn = ex.conn;
        ex.req = nullptr;
        ex.conn = nullptr;
        evhttp_connection_free(conn);
    }
    finish(ex, ledger_status);
}

void Server::Impl::finish(Exchange &ex, int status, bool rate_limited) {
    if (ex.done)
        return;
    ex.done = true;
    if (ex.upstream != 0) {
        client.cancel(ex.upstream);
        ex.upstream = 0;
        ex.upstream_ms += ms_since(ex.upstream_started);
    }
    governor.finished(ex.context.key,
                      ex.context.service != nullptr ? ex.context.service->name : kNoService, status,
                      ex.usage, ms_since(ex.context.started), ex.upstream_ms, rate_limited);
    reap(&ex);
}

void Server::Impl::reap(Exchange *ex) {
    if (!ex->done || ex->busy > 0)
        return;
    drop_drain_cb(*ex);
    exchanges.erase(ex);
    delete ex;
}

// ------------------------------------------------------------------------------------------------
// Server

event_base *new_event_base() {
    event_config *cfg = event_config_new();
    if (cfg == nullptr)
        return nullptr;
    event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    event_base *base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    return base;
}

Server::Server(event_base *base, Config config, Governor &governor)
    : impl_(std::make_unique<Impl>(base, std::move(config), governor)) {}

Server::~Server() = default;

void Server::listen() {
    Impl &s = *impl_;
    const Config &c = s.config;
    // Client connections and upstream transfers each hold a descriptor; the soft limit (often
    // 1024) would run out long before max_connections. The hard limit is what the administrator
    // allows; nothing here uses select(), so descriptors above 1024 are fine.
    rlimit files{};
    if (getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
        rlim_t was = files.rlim_cur;
        files.rlim_cur = files.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &files) != 0) {
            s.warn("could not raise the limit of open files from " + std::to_string(was) + " to " +
                   std::to_string(files.rlim_max) + ": " + std::strerror(errno));
        }
    }
    if (!c.tls_cert_file.empty() && !c.tls_key_file.empty()) {
        SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
        if (ctx == nullptr)
            throw Error(sqlstate::kInternalError,
                        "could not create a TLS context: " + openssl_error());
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
        SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
        if (SSL_CTX_use_certificate_chain_file(ctx, c.tls_cert_file.c_str()) != 1) {
            std::string why = openssl_error();
            SSL_CTX_free(ctx);
            throw Error(sqlstate::kConfigFileError,
                        "could not load the gateway's TLS certificate \"" + c.tls_cert_file + "\"",
                        "Check inference.gateway_tls_cert_file: a PEM certificate chain.", why);
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, c.tls_key_file.c_str(), SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1) {
            std::string why = openssl_error();
            SSL_CTX_free(ctx);
            throw Error(sqlstate::kConfigFileError,
                        "could not load the gateway's TLS key \"" + c.tls_key_file + "\"",
                        "Check inference.gateway_tls_key_file: the PEM private key of the "
                        "certificate.",
                        why);
        }
        if (s.ssl_ctx != nullptr)
            SSL_CTX_free(s.ssl_ctx);
        s.ssl_ctx = ctx;
    }

    int port = c.port;
    for (const std::string &address : c.listen_addresses) {
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE;
        std::string port_text = std::to_string(port);
        addrinfo *found = nullptr;
        const char *host = address == "*" || address.empty() ? nullptr : address.c_str();
        int rc = getaddrinfo(host, port_text.c_str(), &hints, &found);
        if (rc != 0) {
            throw Error(
                sqlstate::kConfigFileError,
                "could not resolve gateway listen address \"" + address + "\": " + gai_strerror(rc),
                "Check inference.gateway_listen_addresses.");
        }
        int bound_here = 0;
        std::string error;
        std::vector<std::string> seen;
        for (addrinfo *ai = found; ai != nullptr; ai = ai->ai_next) {
            std::string key(reinterpret_cast<const char *>(ai->ai_addr), ai->ai_addrlen);
            if (std::find(seen.begin(), seen.end(), key) != seen.end())
                continue;
            seen.push_back(key);
            if (port == 0 && s.bound_port != 0) {
                // Every address of an ephemeral-port server shares the first one's port.
                if (ai->ai_family == AF_INET)
                    reinterpret_cast<sockaddr_in *>(ai->ai_addr)->sin_port = htons(s.bound_port);
                else if (ai->ai_family == AF_INET6)
                    reinterpret_cast<sockaddr_in6 *>(ai->ai_addr)->sin6_port = htons(s.bound_port);
            }
            int fd = open_listener(*ai, error);
            if (fd < 0)
                continue;
            // The listener is made here rather than by evhttp so that it gets an error callback:
            // without one, libevent retries a failing accept() (descriptors exhausted) at once
            // and forever, logging each failure.
            evconnlistener *listener =
                evconnlistener_new(s.base, nullptr, nullptr, LEV_OPT_CLOSE_ON_FREE, 0, fd);
            if (listener == nullptr) {
                ::close(fd);
                error = "libevent refused the socket";
                continue;
            }
            evhttp_bound_socket *socket = evhttp_bind_listener(s.http, listener);
            if (socket == nullptr) {
                evconnlistener_free(listener);
                error = "libevent refused the socket";
                continue;
            }
            evconnlistener_set_error_cb(listener, on_accept_error);
            s.bound.push_back(socket);
            if (s.bound_port == 0)
                s.bound_port = local_port(fd);
            bound_here++;
        }
        freeaddrinfo(found);
        if (bound_here == 0) {
            throw Error(
                sqlstate::kConfigFileError,
                "could not listen on " + address + " port " + std::to_string(port) + ": " + error,
                "Another program may hold the port; check inference.gateway_port and "
                "inference.gateway_listen_addresses.");
        }
    }
}

void Server::stop_listening() {
    for (evhttp_bound_socket *socket : impl_->bound)
        evhttp_del_accept_socket(impl_->http, socket);
    impl_->bound.clear();
    event_del(impl_->resume_event);
    impl_->accept_paused = false;
}

int Server::port() const {
    return impl_->bound_port;
}

void Server::Impl::apply_http_limits() {
    evhttp_set_max_body_size(http, static_cast<ev_ssize_t>(config.max_body_size));
    if (config.client_timeout_s > 0)
        evhttp_set_timeout(http, config.client_timeout_s);
    else
        evhttp_set_timeout_tv(http, nullptr);
}

void Server::reconfigure(const Config &next) {
    Config &c = impl_->config;
    c.require_key = next.require_key;
    c.max_body_size = next.max_body_size;
    c.max_response_size = next.max_response_size;
    c.connect_timeout_ms = next.connect_timeout_ms;
    c.request_timeout_ms = next.request_timeout_ms;
    c.client_timeout_s = next.client_timeout_s;
    c.header_timeout_s = next.header_timeout_s;
    c.default_max_tokens = next.default_max_tokens;
    c.max_retries = next.max_retries;
    c.max_connections = next.max_connections;
    impl_->apply_http_limits();
}

void Server::set_snapshot(std::shared_ptr<const Snapshot> snapshot) {
    if (snapshot)
        impl_->snapshot = std::move(snapshot);
}

std::size_t Server::in_flight() const {
    return impl_->exchanges.size();
}

Server::ConnectionStats Server::connection_stats() const {
    ConnectionStats stats;
    stats.open = impl_->connections;
    stats.refused = impl_->refused;
    stats.accept_failures = impl_->accept_failures;
    return stats;
}

}  // namespace pgi::gateway
