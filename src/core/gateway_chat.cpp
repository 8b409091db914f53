// The gateway's chat routes, one exchange for every dialect: POST /v1/chat/completions (OpenAI),
// POST /v1/messages (Anthropic) and models/{model}:generateContent or :streamGenerateContent
// (Gemini), to a service of any protocol. chat_call decides whether the
// caller's request passes through or is translated; this file moves the bytes: whole answers,
// streams with backpressure and callers who leave (the exchange plumbing's), and failures in the
// caller's dialect.
#include <event2/http.h>
#include <memory>

#include "chat_call.h"
#include "gateway_internal.h"
#include "redact.h"

namespace pgi::gateway {

namespace {

using json = nlohmann::json;

struct ChatExchange : Exchange {
    using Exchange::Exchange;

    chat_call::Call call;
    std::unique_ptr<chat_call::Stream> stream;  // set for streams

    void on_caller_left() override {
        if (stream)
            usage = stream->charged();
    }

    bool on_body(const http::Response &, const char *data, std::size_t size) override {
        if (!streaming)
            server.start_stream(*this, 200, kSseHeaders);
        out.clear();
        stream->feed(std::string_view(data, size), out);
        if (stream->verbatim())
            server.send_chunk(*this, data, size);
        server.send_chunk(*this, out.data(), out.size());
        // A stream that failed is over for the caller; the rest is not read.
        return !stream->failed();
    }

    void on_done(http::Response &r) override {
        const ServiceEndpoint &service = *context.service;
        if (stream) {
            if (!streaming) {
                if (!upstream_ok(r)) {
                    server.respond_upstream_failure(*this, r);
                    return;
                }
                server.start_stream(*this, 200, kSseHeaders);
            }
            out.clear();
            if (r.curl_code == 0)
                stream->finish(out);
            else
                stream->fail(
                    "the upstream stream broke off: " + redact_key(r.transport_error, service),
                    out);
            server.send_chunk(*this, out.data(), out.size());
            usage = stream->charged();
            server.end_stream(*this, stream->failed() ? 502 : 200);
            return;
        }
        if (!upstream_ok(r)) {
            server.respond_upstream_failure(*this, r);
            return;
        }
        chat_call::Answer answer = chat_call::answer(call, service, std::move(r.body));
        usage = answer.usage;
        server.respond(*this, 200, std::move(answer.body));
    }
};

}  // namespace

void start_chat(Server::Impl &server, RequestContext &&context, json body,
                const protocols::Module &caller, bool stream_route) {
    auto &ex = static_cast<ChatExchange &>(
        server.adopt(std::make_unique<ChatExchange>(server, std::move(context))));
    ex.begin = [&server, &ex, &caller, stream_route, body = std::move(body)]() mutable {
        const ServiceEndpoint &service = *ex.context.service;
        chat::Defaults defaults;
        defaults.default_max_tokens = server.config.default_max_tokens;
        // Planning may take the body apart; a route's next target needs it whole.
        json planned = ex.context.route != nullptr ? body : std::move(body);
        ex.call = chat_call::plan(caller, service, planned, defaults, raw_body(ex), stream_route);
        if (ex.call.passed())
            forward_dialect_headers(ex, ex.call.request);
        ex.stream.reset();
        if (ex.call.stream)
            ex.stream = chat_call::stream(ex.call, service);
        server.call_upstream(ex, to_http(std::move(ex.call.request)), ex.call.stream);
    };
    guarded_start(server, ex, ex.begin);
}

}  // namespace pgi::gateway
