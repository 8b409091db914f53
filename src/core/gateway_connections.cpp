// The gateway's client connections before a request reaches its handler: accepting (and pausing
// when descriptors run out), the checks a request's headers get before its body is read (key,
// size, target), the header and body deadlines that cut slow clients off, refusals that are
// written and drained before the connection closes, and the warnings the listener rate-limits.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "crypto.h"
#include "gateway_internal.h"
#include "redact.h"
#include "upstream_error.h"
#include "wall_clock.h"

namespace pgi::gateway {

void on_connection_close(evhttp_connection *conn, void *arg) {
    auto *impl = static_cast<Server::Impl *>(arg);
    if (impl->connections > 0)
        impl->connections--;
    impl->untrack(conn);
}

namespace {

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

}  // namespace

// ------------------------------------------------------------------------------------------------
// Server::Impl

Server::Impl::Lingering::~Lingering() {
    if (ev != nullptr)
        event_free(ev);
    if (fd >= 0)
        ::close(fd);
}

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
    if (it->second.expires_at_ms && *it->second.expires_at_ms <= unix_ms())
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
        if (catalog_check)
            catalog_check();
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
        if (cc.refusal_status == 401) {
            Finished f;
            f.status = 401;
            governor.finished(f);
        }
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

}  // namespace pgi::gateway
