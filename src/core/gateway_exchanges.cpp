// The exchange plumbing every endpoint shares: adopting an exchange, calling the upstream (with
// the streamed body's backpressure), answering whole or streamed, failures in the caller's
// dialect, and telling the governor how each request ended.
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
#include <sys/socket.h>
#include <unistd.h>

#include "gateway_internal.h"
#include "redact.h"
#include "upstream_error.h"

namespace pgi::gateway {

namespace {

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

void on_stream_drained(evbuffer *buffer, const evbuffer_cb_info *info, void *arg) {
    if (info->n_deleted == 0 || evbuffer_get_length(buffer) >= kStreamLowWater)
        return;
    auto *ex = static_cast<Exchange *>(arg);
    ex->server.stream_drained(*ex);
}

}  // namespace

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
    set_transport(*ex.context.service, request);
    http::AsyncClient::Options options;
    options.retry.max_retries = config.max_retries;
    const long timeout_ms = ex.context.service->request_timeout_ms > 0
                                ? ex.context.service->request_timeout_ms
                                : config.request_timeout_ms;
    if (streamed) {
        options.idle_timeout_ms = timeout_ms;
    } else {
        request.timeout_ms = timeout_ms;
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
            // The caller left: the try has no outcome, and a probe's slot is given back.
            if (p->context.pass == routing::Pass::kProbe)
                governor.breaker_probe_abandoned(p->context.service->name);
            p->context.pass = routing::Pass::kClosed;
            reap(p);
            return;
        }
        report_outcome(*p, response);
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
    ex.context.error_code = code;
    respond(ex, status, error_json(ex.context, status, message, code, param));
}

bool Server::Impl::next_target(RequestContext &context) {
    while (std::optional<std::size_t> index = context.attempts.next(context.route->targets)) {
        const routing::Target &target = context.route->targets[*index];
        auto it = context.snapshot->services.find(target.service);
        if (it == context.snapshot->services.end())
            continue;
        routing::Pass pass = governor.breaker_may_try(target.service, context.route->cooldown_us);
        if (pass == routing::Pass::kOpen)
            continue;
        context.service = &it->second;
        context.pass = pass;
        return true;
    }
    return false;
}

bool Server::Impl::fall_back(Exchange &ex, const http::Response &response) {
    RequestContext &context = ex.context;
    if (context.route == nullptr || ex.streaming || ex.done || !ex.begin ||
        !routing::falls_back(context.route->fallback_on, routing::failure_of(response)) ||
        !next_target(context))
        return false;
    name_service(context);
    ex.usage = translate::Usage();
    guarded_start(*this, ex, ex.begin);
    return true;
}

void Server::Impl::name_service(RequestContext &context) {
    static const std::string kHeader = "x-pg-inference-service";
    auto &headers = context.headers;
    headers.erase(std::remove_if(headers.begin(), headers.end(),
                                 [](const auto &h) { return h.first == kHeader; }),
                  headers.end());
    headers.emplace_back(kHeader, context.service->name);
}

void Server::Impl::report_outcome(Exchange &ex, const http::Response &response) {
    RequestContext &context = ex.context;
    const std::vector<std::string> &conditions =
        context.route != nullptr ? context.route->fallback_on : routing::kDefaultFallbackOn;
    const bool failed =
        !upstream_ok(response) && routing::falls_back(conditions, routing::failure_of(response));
    governor.breaker_report(context.service->name, failed,
                            context.route != nullptr ? context.route->cooldown_us : 0);
    context.pass = routing::Pass::kClosed;
}

void Server::Impl::respond_upstream_failure(Exchange &ex, const http::Response &r) {
    if (fall_back(ex, r))
        return;
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
    if (ex.first_byte_ms < 0)
        ex.first_byte_ms = ms_since(ex.context.started);
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
    Finished f = finished_of(ex.context, status, rate_limited);
    f.usage = ex.usage;
    f.upstream_ms = ex.upstream_ms;
    f.first_byte_ms = ex.first_byte_ms;
    governor.finished(f);
    reap(&ex);
}

void Server::Impl::reap(Exchange *ex) {
    if (!ex->done || ex->busy > 0)
        return;
    drop_drain_cb(*ex);
    exchanges.erase(ex);
    delete ex;
}

}  // namespace pgi::gateway
