// The gateway's OpenAI endpoints besides chat (gateway_chat.cpp): /v1/embeddings and /v1/rerank,
// /v1/ranking. Translation is pgi::translate's; this file only moves bytes and decides when an
// OpenAI upstream's answer can go to the caller untouched.
#include <event2/buffer.h>
#include <event2/http.h>
#include <memory>
#include <optional>

#include "gateway_internal.h"
#include "redact.h"
#include "translate_embeddings.h"
#include "translate_rerank.h"

namespace pgi::gateway {

namespace {

using json = nlohmann::json;

bool ok(const http::Response &r) {
    return upstream_ok(r);
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

void start_embeddings(Server::Impl &server, RequestContext &&context, json body) {
    auto &ex = static_cast<EmbeddingsExchange &>(
        server.adopt(std::make_unique<EmbeddingsExchange>(server, std::move(context))));
    ex.begin = [&ex] {
        ex.retried_as_floats = false;
        // An OpenAI upstream asked for base64 sends a quarter of the JSON, passed on as is.
        ex.send(ex.call.base64_out && ex.context.service->protocol == Protocol::kOpenAiV1);
    };
    guarded_start(server, ex, [&] {
        ex.call = translate::parse_embeddings_call(std::move(body));
        ex.begin();
    });
}

void start_rerank(Server::Impl &server, RequestContext &&context, json body) {
    auto &ex = static_cast<RerankExchange &>(
        server.adopt(std::make_unique<RerankExchange>(server, std::move(context))));
    ex.begin = [&server, &ex] {
        ex.probing = false;
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
    };
    guarded_start(server, ex, [&] {
        ex.call = translate::parse_rerank_call(std::move(body));
        ex.begin();
    });
}

}  // namespace pgi::gateway
