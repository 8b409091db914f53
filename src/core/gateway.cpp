// The gateway's listener: starting and stopping it (sockets, TLS, evhttp, the listener processes'
// limits), its configuration and snapshot, the libevent callbacks that lead into Server::Impl,
// and the helpers every gateway file shares (answers, times). What happens to a connection
// before its request is handled is gateway_connections.cpp, the handling gateway_requests.cpp,
// the upstream calls and answers gateway_exchanges.cpp.
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
#include <random>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "crypto.h"
#include "gateway_internal.h"
#include "redact.h"
#include "upstream_error.h"
#include "wall_clock.h"

namespace pgi::gateway {

namespace {

std::string openssl_error() {
    unsigned long code = ERR_get_error();
    char text[256] = "unknown error";
    if (code != 0)
        ERR_error_string_n(code, text, sizeof(text));
    ERR_clear_error();
    return text;
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

double ms_since(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

namespace {

void free_string(const void *, size_t, void *string) {
    delete static_cast<std::string *>(string);
}

}  // namespace

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

// ------------------------------------------------------------------------------------------------
// Defaults for the host's hooks

Governor::~Governor() = default;

Admission Governor::admit(const AccessKey *, const std::string &, std::string_view, int64_t,
                          const std::string &) {
    return {};
}

void Governor::finished(const Finished &) {}

std::string Governor::metrics_text() {
    return {};
}

void Governor::rerank_route_learned(const std::string &, translate::RerankRoute) {}

void Governor::warning(const std::string &) {}

routing::Pass Governor::breaker_may_try(const std::string &service, int64_t cooldown_us) {
    auto it = breakers_.find(service);
    if (it == breakers_.end())
        return routing::Pass::kClosed;
    return routing::may_try(it->second.breaker, unix_ms() * 1000, cooldown_us);
}

void Governor::breaker_report(const std::string &service, bool failed, int64_t cooldown_us) {
    if (!failed) {
        breakers_.erase(service);
        return;
    }
    LocalBreaker &b = breakers_[service];
    if (cooldown_us > 0)
        b.cooldown_us = cooldown_us;
    routing::failed(b.breaker, unix_ms() * 1000, routing::kDefaultBreakerFailures, b.cooldown_us);
}

void Governor::breaker_probe_abandoned(const std::string &service) {
    if (auto it = breakers_.find(service); it != breakers_.end())
        routing::probe_abandoned(it->second.breaker, unix_ms() * 1000);
}

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

Server::Impl::Impl(event_base *b, Config c, Governor &g)
    : base(b), config(std::move(c)), governor(g), client(b) {
    // Listeners draw routes' attempt orders independently of each other.
    route_draws = (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
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
            Finished f = finished_of(ex->context, 503, false);
            f.usage = ex->usage;
            f.upstream_ms = ex->upstream_ms;
            governor.finished(f);
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

void Server::set_catalog_check(std::function<void()> check) {
    impl_->catalog_check = std::move(check);
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
