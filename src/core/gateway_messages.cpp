// The gateway's Anthropic Messages dialect: POST /v1/messages for callers that speak Anthropic's
// API (the Anthropic SDKs, Claude Code), whatever protocol the named service speaks. An Anthropic
// service gets the caller's own bytes with only "model" rewritten; any other service is called
// through the protocol modules (protocols/modules.h): the caller's request read into the chat
// form, written in the service's protocol, and the answer or stream read back and written as
// Anthropic's. Access, admission and errors in Anthropic's shape are gateway.cpp's (the request
// context carries the dialect); streaming, backpressure and callers who leave are the exchange
// plumbing's, as for chat completions.
#include <event2/http.h>
#include <memory>
#include <optional>

#include "anthropic.h"
#include "gateway_internal.h"
#include "redact.h"
#include "translate_util.h"

namespace pgi::gateway {

namespace {

using json = nlohmann::json;

// Anthropic model objects carry a creation date; services have none worth exposing.
constexpr const char *kModelCreatedAt = "2025-01-01T00:00:00Z";

struct MessagesExchange : Exchange {
    using Exchange::Exchange;

    // The service's protocol module when the call is translated; null on the fast path, where
    // the upstream's bytes go to the caller as they are.
    const protocols::Module *target = nullptr;
    bool stream = false;
    std::unique_ptr<protocols::EventReader> reader;  // streams: the upstream's events
    std::unique_ptr<protocols::EventWriter> writer;  // translated streams: the caller's bytes
    bool reader_broken = false;  // the fast path's observer gave up (its events are not needed)
    protocols::StreamTally tally;
    std::vector<chat::Event> events;

    void on_caller_left() override {
        if (stream)
            usage = tally.charged();
    }

    // Upstream stream bytes (or their end) through the reader; a translated stream's bytes for
    // the caller go to `out` (the fast path sends the upstream's own).
    void pump(std::string_view bytes, bool end) {
        out.clear();
        if (reader_broken)
            return;
        events.clear();
        try {
            if (end)
                reader->finish(events);
            else
                reader->feed(bytes, events);
        } catch (const std::exception &e) {
            if (writer == nullptr) {
                // Only usage was being watched: the bytes still go through, and the stream is
                // charged by its length.
                reader_broken = true;
                return;
            }
            fail(std::string("service \"") + context.service->name + "\": " + e.what());
        }
        for (const chat::Event &e : events) {
            tally.see(e);
            if (writer != nullptr)
                writer->write(e, out);
        }
    }

    // Ends a stream with an error event: the caller must not take a cut answer for a whole one.
    void fail(const std::string &message) {
        chat::Event e;
        e.kind = chat::Event::Kind::kError;
        e.error.status = 502;
        e.error.message = message;
        tally.see(e);
        if (writer != nullptr) {
            writer->write(e, out);
        } else {
            out += "event: error\ndata: ";
            out += context.dialect->error_body(502, message);
            out += "\n\n";
        }
    }

    bool on_body(const http::Response &, const char *data, std::size_t size) override {
        if (!streaming)
            server.start_stream(*this, 200, kSseHeaders);
        pump(std::string_view(data, size), false);
        if (writer == nullptr)
            server.send_chunk(*this, data, size);
        else
            server.send_chunk(*this, out.data(), out.size());
        // A translated stream that failed is over for the caller; the rest is not read.
        return !(writer != nullptr && tally.failed());
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
            bool broke = false;
            if (r.curl_code == 0) {
                pump({}, true);
            } else {
                out.clear();
                if (!tally.failed() && !tally.ended()) {
                    broke = true;
                    fail("the upstream stream broke off: " +
                         redact_key(r.transport_error, service));
                }
            }
            server.send_chunk(*this, out.data(), out.size());
            usage = tally.charged();
            server.end_stream(*this, broke || tally.failed() ? 502 : 200);
            return;
        }
        if (!upstream_ok(r)) {
            server.respond_upstream_failure(*this, r);
            return;
        }
        if (target == nullptr) {
            usage = translate::usage_from_answer_body(service.protocol, r.body);
            server.respond(*this, 200, std::move(r.body));
            return;
        }
        chat::Response answer = target->read_response(service, r.body);
        usage = answer.usage;
        server.respond(*this, 200, context.dialect->write_response(answer).dump());
    }
};

// The caller's body for a service of its own protocol: its bytes with only "model" set to the
// service's model, so that fields only that provider knows (thinking, cache_control, betas'
// fields) reach it unchanged.
std::string with_service_model(const ServiceEndpoint &service, std::string_view raw, json &body) {
    std::string model;
    translate::detail::append_json_string(model, service.model);
    const translate::detail::MemberEdit edit = {"model", model};
    std::optional<std::string> edited;
    if (!raw.empty())
        edited = translate::detail::with_members(raw, &edit, 1);
    if (edited)
        return std::move(*edited);
    body["model"] = service.model;
    return translate::detail::serialise(body);
}

}  // namespace

void start_messages(Server::Impl &server, RequestContext &&context, json body) {
    auto &ex = static_cast<MessagesExchange &>(
        server.adopt(std::make_unique<MessagesExchange>(server, std::move(context))));
    guarded_start(server, ex, [&] {
        const ServiceEndpoint &service = *ex.context.service;
        const protocols::Module &caller = *ex.context.dialect;
        const protocols::Module &target = protocols::module_for(service.protocol);
        translate::ChatDefaults defaults;
        defaults.default_max_tokens = server.config.default_max_tokens;

        if (target.protocol == caller.protocol) {
            // Fast path: nothing is translated, so nothing the form cannot carry is refused; the
            // upstream judges the request. Only "stream" is read, to know how to read the answer.
            auto s = body.find("stream");
            if (s != body.end() && !s->is_boolean() && !s->is_null())
                throw Error(sqlstate::kInvalidParameterValue, "\"stream\" must be a boolean");
            ex.stream = s != body.end() && s->is_boolean() && s->get<bool>();
            translate::UpstreamRequest up =
                translate::detail::post_json(service, "/v1/messages", ex.stream,
                                             with_service_model(service, raw_body(ex), body));
            // Beta features the caller turned on (Claude Code sends several) go with its body.
            evkeyvalq *in = evhttp_request_get_input_headers(ex.req);
            const char *beta = evhttp_find_header(in, "anthropic-beta");
            if (beta != nullptr &&
                std::string_view(beta).find_first_of("\r\n") == std::string::npos)
                up.headers.push_back(std::string("anthropic-beta: ") + beta);
            if (ex.stream)
                ex.reader = target.stream_reader(service);
            server.call_upstream(ex, to_http(std::move(up)), ex.stream);
            return;
        }

        chat::Request request = caller.read_request(body);
        ex.target = &target;
        ex.stream = request.stream;
        translate::UpstreamRequest up = target.write_request(service, request, defaults);
        if (ex.stream) {
            ex.reader = target.stream_reader(service);
            ex.writer = caller.stream_writer(request);
        }
        server.call_upstream(ex, to_http(std::move(up)), ex.stream);
    });
}

json anthropic_model_object(const std::string &name) {
    return json{
        {"type", "model"}, {"id", name}, {"display_name", name}, {"created_at", kModelCreatedAt}};
}

json anthropic_model_list(const std::vector<std::string> &names) {
    json data = json::array();
    for (const std::string &name : names)
        data.push_back(anthropic_model_object(name));
    return json{{"data", std::move(data)},
                {"has_more", false},
                {"first_id", names.empty() ? json(nullptr) : json(names.front())},
                {"last_id", names.empty() ? json(nullptr) : json(names.back())}};
}

}  // namespace pgi::gateway
