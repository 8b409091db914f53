// The gateway's OpenAI endpoints: /v1/chat/completions (streamed or not), /v1/embeddings and
// /v1/rerank, /v1/ranking. Translation is pgi::translate's; this file only moves bytes and
// decides when an OpenAI upstream's answer can go to the caller untouched.
#include <event2/buffer.h>
#include <event2/http.h>
#include <memory>
#include <optional>

#include "gateway_internal.h"
#include "redact.h"
#include "translate_chat.h"
#include "translate_embeddings.h"
#include "translate_rerank.h"
#include "translate_stream.h"

namespace pgi::gateway {

namespace {

using json = nlohmann::json;

bool ok(const http::Response &r) {
    return upstream_ok(r);
}

long long int_member(const json &object, const char *key) {
    auto it = object.find(key);
    return it != object.end() && it->is_number() ? it->get<long long>() : 0;
}

translate::Usage usage_of(const json &response) {
    translate::Usage u;
    auto it = response.find("usage");
    if (it == response.end() || !it->is_object())
        return u;
    u.present = true;
    u.prompt_tokens = int_member(*it, "prompt_tokens");
    u.completion_tokens = int_member(*it, "completion_tokens");
    u.total_tokens = int_member(*it, "total_tokens");
    return u;
}

// Whether an OpenAI embeddings body carries base64 strings (true) or float arrays (false),
// judged by the first "embedding" member, without parsing the body.
std::optional<bool> embeddings_are_base64(std::string_view body) {
    static constexpr std::string_view kKey = "\"embedding\"";
    for (size_t at = body.find(kKey); at != std::string_view::npos; at = body.find(kKey, at + 1)) {
        size_t i = at + kKey.size();
        while (i < body.size() && std::isspace(static_cast<unsigned char>(body[i])))
            i++;
        if (i >= body.size() || body[i] != ':')
            continue;  // "object":"embedding", not the member
        i++;
        while (i < body.size() && std::isspace(static_cast<unsigned char>(body[i])))
            i++;
        if (i < body.size() && body[i] == '"')
            return true;
        if (i < body.size() && body[i] == '[')
            return false;
        return std::nullopt;
    }
    return std::nullopt;
}

// ------------------------------------------------------------------------------------------------

struct ChatExchange : Exchange {
    using Exchange::Exchange;

    std::unique_ptr<translate::ChatStream> stream;  // set for stream: true

    void on_caller_left() override {
        if (stream)
            usage = stream->charged_usage();
    }

    bool on_body(const http::Response &, const char *data, std::size_t size) override {
        if (!streaming)
            server.start_stream(*this, 200, kSseHeaders);
        out.clear();
        bool more = true;
        try {
            stream->feed(std::string_view(data, size), out);
        } catch (const std::exception &e) {
            // An event past the parser's size cap: the caller learns why the stream ended.
            if (!stream->done())
                stream->fail(e.what(), out);
            more = false;
        }
        server.send_chunk(*this, out.data(), out.size());
        return more;
    }

    void on_done(http::Response &r) override {
        const ServiceEndpoint &service = *context.service;
        if (stream) {
            if (!streaming) {
                if (!ok(r)) {
                    server.respond_upstream_failure(*this, r);
                    return;
                }
                server.start_stream(*this, 200, kSseHeaders);
            }
            out.clear();
            if (r.curl_code == 0) {
                stream->finish(out);
            } else if (!stream->done()) {
                std::string why =
                    "the upstream stream broke off: " + redact_key(r.transport_error, service);
                stream->fail(why, out);
            }
            server.send_chunk(*this, out.data(), out.size());
            usage = stream->usage();
            server.end_stream(*this, stream->failed() ? 502 : 200);
            return;
        }
        if (!ok(r)) {
            server.respond_upstream_failure(*this, r);
            return;
        }
        if (service.protocol == Protocol::kOpenAiV1) {
            // The caller gets the upstream's own bytes; only the usage is read.
            usage = translate::usage_from_openai_body(r.body);
            server.respond(*this, 200, std::move(r.body));
            return;
        }
        json answer = translate::chat_response(service, r.body);
        usage = usage_of(answer);
        server.respond(*this, 200, answer.dump());
    }
};

// ------------------------------------------------------------------------------------------------

struct EmbeddingsExchange : Exchange {
    using Exchange::Exchange;

    translate::EmbeddingsCall call;
    bool asked_base64 = false;
    bool retried_as_floats = false;

    void send(bool base64) {
        asked_base64 = base64;
        server.call_upstream(*this,
                             to_http(translate::embeddings_request(*context.service, call.inputs,
                                                                   call.options, base64)),
                             false);
    }

    void on_done(http::Response &r) override {
        const ServiceEndpoint &service = *context.service;
        if (!ok(r)) {
            // Some OpenAI-compatible servers refuse encoding_format "base64"; floats encoded
            // here serve the caller just as well.
            if (asked_base64 && !retried_as_floats && r.curl_code == 0 && r.status == 400 &&
                r.body.find("encoding_format") != std::string::npos) {
                retried_as_floats = true;
                send(false);
                return;
            }
            server.respond_upstream_failure(*this, r);
            return;
        }
        if (service.protocol == Protocol::kOpenAiV1) {
            std::optional<bool> base64 = embeddings_are_base64(r.body);
            if (base64 && *base64 == call.base64_out) {
                usage = translate::usage_from_openai_body(r.body);
                server.respond(*this, 200, std::move(r.body));
                return;
            }
        }
        translate::Embeddings embeddings =
            translate::embeddings_response(service, r.body, call.inputs.size());
        usage = embeddings.usage;
        server.respond(
            *this, 200,
            translate::embeddings_openai_response(embeddings, call.base64_out, service.model));
    }
};

// ------------------------------------------------------------------------------------------------

struct RerankExchange : Exchange {
    using Exchange::Exchange;

    translate::RerankCall call;
    translate::RerankRoute route = translate::RerankRoute::kRanking;
    bool probing = false;  // the route is a guess: /v1/ranking first, /v1/rerank on 404

    void send() {
        server.call_upstream(*this,
                             to_http(translate::rerank_request(*context.service, route, call.query,
                                                               call.documents, call.top_n)),
                             false);
    }

    void on_done(http::Response &r) override {
        const ServiceEndpoint &service = *context.service;
        if (probing && route == translate::RerankRoute::kRanking && r.curl_code == 0 &&
            r.status == 404) {
            route = translate::RerankRoute::kRerank;
            send();
            return;
        }
        if (!ok(r)) {
            server.respond_upstream_failure(*this, r);
            return;
        }
        if (probing) {
            probing = false;
            server.learned_routes[service.name] = route;
            server.governor.rerank_route_learned(service.name, route);
        }
        translate::Ranking ranking =
            translate::rerank_response(service, route, r.body, call.documents.size(), call.top_n);
        usage = ranking.usage;
        server.respond(*this, 200, translate::rerank_caller_response(call, ranking, service.model));
    }
};

}  // namespace

const std::vector<std::pair<std::string, std::string>> kSseHeaders = {
    {"Content-Type", "text/event-stream"},
    {"Cache-Control", "no-cache"},
    // Proxies in front of the gateway (nginx) must not buffer the stream either.
    {"X-Accel-Buffering", "no"},
};

bool upstream_ok(const http::Response &r) {
    return r.curl_code == 0 && r.status >= 200 && r.status <= 299;
}

std::string_view raw_body(const Exchange &ex) {
    if (ex.req == nullptr)
        return {};
    evbuffer *input = evhttp_request_get_input_buffer(ex.req);
    std::size_t size = evbuffer_get_length(input);
    if (size == 0)
        return {};
    return std::string_view(reinterpret_cast<const char *>(evbuffer_pullup(input, -1)), size);
}

void start_chat(Server::Impl &server, RequestContext &&context, json body) {
    auto &ex = static_cast<ChatExchange &>(
        server.adopt(std::make_unique<ChatExchange>(server, std::move(context))));
    guarded_start(server, ex, [&] {
        translate::ChatDefaults defaults;
        defaults.default_max_tokens = server.config.default_max_tokens;
        translate::ChatCall call =
            translate::chat_request(*ex.context.service, std::move(body), defaults, raw_body(ex));
        if (call.stream) {
            ex.stream = std::make_unique<translate::ChatStream>(*ex.context.service,
                                                                call.caller_wants_usage);
        }
        server.call_upstream(ex, to_http(std::move(call.request)), call.stream);
    });
}

void start_embeddings(Server::Impl &server, RequestContext &&context, json body) {
    auto &ex = static_cast<EmbeddingsExchange &>(
        server.adopt(std::make_unique<EmbeddingsExchange>(server, std::move(context))));
    guarded_start(server, ex, [&] {
        ex.call = translate::parse_embeddings_call(std::move(body));
        // An OpenAI upstream asked for base64 sends a quarter of the JSON, passed on as is.
        ex.send(ex.call.base64_out && ex.context.service->protocol == Protocol::kOpenAiV1);
    });
}

void start_rerank(Server::Impl &server, RequestContext &&context, json body) {
    auto &ex = static_cast<RerankExchange &>(
        server.adopt(std::make_unique<RerankExchange>(server, std::move(context))));
    guarded_start(server, ex, [&] {
        ex.call = translate::parse_rerank_call(std::move(body));
        const std::string &name = ex.context.service->name;
        auto known = ex.context.snapshot->rerank_routes.find(name);
        auto learned = server.learned_routes.find(name);
        if (known != ex.context.snapshot->rerank_routes.end() &&
            (known->second == "ranking" || known->second == "rerank")) {
            ex.route = known->second == "ranking" ? translate::RerankRoute::kRanking
                                                  : translate::RerankRoute::kRerank;
        } else if (learned != server.learned_routes.end()) {
            ex.route = learned->second;
        } else {
            ex.route = translate::RerankRoute::kRanking;
            ex.probing = true;
        }
        ex.send();
    });
}

}  // namespace pgi::gateway
