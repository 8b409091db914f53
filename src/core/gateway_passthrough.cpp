// ANY /inferenceservices/{name}/{path...}: the request goes to the service's base_url/{path...}
// as it came, with the caller's credentials replaced by the service's, and the answer comes back
// as it arrives. Only hop-by-hop headers and credentials are filtered. On paths whose answers
// carry usage in a shape the gateway knows (passthrough_usage_shape), the answer is read on its
// way through for the ledger and the token limits, with the parsers the translated routes use.
#include <algorithm>
#include <cctype>
#include <cstring>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <memory>
#include <optional>

#include "chat_call.h"
#include "gateway_internal.h"
#include "redact.h"
#include "translate_util.h"

namespace pgi::gateway {

namespace {

bool in_list(std::string_view name, std::initializer_list<std::string_view> list) {
    return std::any_of(list.begin(), list.end(),
                       [&](std::string_view n) { return iequals(n, name); });
}

// Hop-by-hop headers (RFC 9110 §7.6.1) and the ones curl computes itself.
bool hop_by_hop(std::string_view name) {
    return in_list(name, {"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
                          "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"});
}

// Caller headers that never reach the upstream: the caller's own credentials (in whatever
// header a provider uses), and what the transfer sets itself.
bool dropped_request_header(std::string_view name) {
    return hop_by_hop(name) || in_list(name, {"host", "content-length", "expect", "authorization",
                                              "x-api-key", "x-goog-api-key", "api-key"});
}

// A body whose model the caller named by the model header: a JSON object's "model" member is
// rewritten to the service's own; any other body goes as it is.
std::string with_model(std::string body, const std::string &model) {
    using namespace translate::detail;
    nlohmann::json parsed = nlohmann::json::parse(body, nullptr, false);
    if (!parsed.is_object() || !parsed.contains("model"))
        return body;
    std::string value;
    append_json_string(value, model);
    const MemberEdit edit{"model", value};
    if (std::optional<std::string> edited = with_members(body, &edit, 1))
        return *edited;
    parsed["model"] = model;
    return serialise(parsed);
}

std::string_view header_name(std::string_view line) {
    return line.substr(0, line.find(':'));
}

// The upstream's answer headers for the caller. With keep_length the upstream's Content-Length
// goes along (the body is streamed as is); without it libevent computes one for the body sent.
std::vector<std::pair<std::string, std::string>> answer_headers(const http::Response &r,
                                                                bool keep_length) {
    std::vector<std::pair<std::string, std::string>> out;
    bool chunked = !r.header("transfer-encoding").empty();
    for (const auto &h : r.headers) {
        if (hop_by_hop(h.first))
            continue;
        if (h.first == "content-length" && (!keep_length || chunked))
            continue;
        out.push_back(h);
    }
    return out;
}

bool is_event_stream(const http::Response &r) {
    std::string type = r.header("content-type");
    std::string_view kType = "text/event-stream";
    return type.size() >= kType.size() &&
           iequals(std::string_view(type).substr(0, kType.size()), kType);
}

struct PassthroughExchange : Exchange {
    using Exchange::Exchange;

    bool head = false;  // HEAD: the upstream's Content-Length describes a body never sent
    std::optional<Protocol> shape;  // the usage shape of the path's answers, if readable
    // Reading the answer's usage, set with the first bytes of a 2xx answer of a known shape:
    // an SSE answer goes through a usage watch, any other is kept whole (up to the response
    // size cap) and read at its end.
    std::unique_ptr<chat_call::Stream> events;
    bool keep_body = false;
    std::string kept;

    bool on_body(const http::Response &r, const char *data, std::size_t size) override {
        if (!streaming) {
            server.start_stream(*this, static_cast<int>(r.status), answer_headers(r, true));
            if (shape && r.status >= 200 && r.status <= 299) {
                if (is_event_stream(r)) {
                    events = chat_call::usage_watch(*shape, *context.service);
                } else {
                    keep_body = true;
                }
            }
        }
        if (events) {
            out.clear();
            try {
                events->feed(std::string_view(data, size), out);
            } catch (const std::exception &) {
                // Only the count suffers; the caller's bytes go on untouched.
            }
        } else if (keep_body) {
            if (kept.size() + size <= server.config.max_response_size)
                kept.append(data, size);
            else
                keep_body = false;
        }
        server.send_chunk(*this, data, size);
        return true;
    }

    // The tokens of what went through: the upstream's usage, or for a stream that reported none
    // (cut short, or not asked for it) the estimate from its text.
    void count(bool complete) {
        if (events) {
            if (complete) {
                out.clear();
                try {
                    events->finish(out);
                } catch (const std::exception &) {
                }
            }
            usage = events->charged();
        } else if (keep_body && complete) {
            usage = translate::usage_from_answer_body(*shape, kept);
        }
    }

    void on_caller_left() override { count(false); }

    void on_done(http::Response &r) override {
        if (streaming) {
            if (r.curl_code == 0) {
                count(true);
                server.end_stream(*this, static_cast<int>(r.status));
            } else {
                count(false);
                server.abort_stream(*this, 502);
            }
            return;
        }
        if (r.curl_code != 0) {
            server.respond_upstream_failure(*this, r);
            return;
        }
        // Not streamed: an error status (kept whole for a retry), or an answer without a body.
        std::string body = std::move(r.body);
        // Providers sometimes quote the rejected key back.
        if (r.status < 200 || r.status > 299)
            body = redact_key(body, *context.service);
        for (auto &h : answer_headers(r, head))
            context.headers.push_back(std::move(h));
        server.respond(*this, static_cast<int>(r.status), std::move(body), nullptr);
    }
};

}  // namespace

void start_passthrough(Server::Impl &server, RequestContext &&context, const Route &route) {
    auto &ex = static_cast<PassthroughExchange &>(
        server.adopt(std::make_unique<PassthroughExchange>(server, std::move(context))));
    try {
        evhttp_request *req = ex.req;
        const ServiceEndpoint &service = *ex.context.service;
        unsigned method = static_cast<unsigned>(evhttp_request_get_command(req));
        ex.head = method == kHead;
        ex.shape = passthrough_usage_shape(route.rest);

        http::Request request;
        request.method = method_name(method);
        request.url = service.base_url + route.rest;
        const evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
        const char *query = uri != nullptr ? evhttp_uri_get_query(uri) : nullptr;
        if (query != nullptr) {
            request.url += '?';
            request.url += query;
        }

        std::vector<std::string> auth = auth_headers(service);
        bool has_type = false;
        evkeyvalq *in = evhttp_request_get_input_headers(req);
        for (evkeyval *h = in->tqh_first; h != nullptr; h = h->next.tqe_next) {
            std::string_view name = h->key;
            if (dropped_request_header(name) || h->value == nullptr || h->value[0] == '\0')
                continue;
            // The gateway's own choice of service is not the upstream's business.
            if (!server.config.model_header.empty() && iequals(name, server.config.model_header))
                continue;
            // A compressed answer could not be read for its usage.
            if (ex.shape && iequals(name, "accept-encoding"))
                continue;
            if (std::any_of(auth.begin(), auth.end(),
                            [&](const std::string &a) { return iequals(header_name(a), name); }))
                continue;
            if (iequals(name, "content-type"))
                has_type = true;
            request.headers.emplace_back(std::string(name) + ": " + h->value);
        }
        for (std::string &a : auth)
            request.headers.push_back(std::move(a));
        // Without this curl would label a body the caller left untyped as a form.
        if (!has_type)
            request.headers.emplace_back("Content-Type:");

        evbuffer *input = evhttp_request_get_input_buffer(req);
        size_t size = evbuffer_get_length(input);
        if (size > 0) {
            request.body.resize(size);
            evbuffer_copyout(input, request.body.data(), size);
            if (ex.context.model_from_header)
                request.body = with_model(std::move(request.body), service.model);
        }
        server.call_upstream(ex, std::move(request), true);
    } catch (const std::exception &e) {
        server.respond_error(ex, 500, std::string("internal gateway error: ") + e.what(),
                             "internal_error");
    }
}

}  // namespace pgi::gateway
