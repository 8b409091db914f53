// The gateway's request handling: routing a request that reached its handler, the model lists,
// authorising and admitting a service call and handing it to its endpoint's starter, and the
// answers given without an upstream call.
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

#include "crypto.h"
#include "gateway_internal.h"
#include "redact.h"
#include "upstream_error.h"

namespace pgi::gateway {

namespace {

void on_request_complete(evhttp_request *req, void *arg) {
    static_cast<Server::Impl *>(arg)->request_completed(req);
}

}  // namespace

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
    if (catalog_check)
        catalog_check();
    context.snapshot = snapshot;
    try {
        const evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
        const char *path = uri != nullptr ? evhttp_uri_get_path(uri) : nullptr;
        std::string_view raw_path = path != nullptr ? path : "";
        unsigned method = static_cast<unsigned>(evhttp_request_get_command(req));
        Route r = route(raw_path);
        context.endpoint = r.endpoint;
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
        const bool known = it != snap.services.end() || snap.routes.count(r.model_id) != 0;
        if (!known || (context.key != nullptr && !context.key->allows(r.model_id))) {
            reply_error(
                context, 404,
                "The model '" + r.model_id + "' does not exist or you do not have access to it.",
                "model_not_found", "model");
            return;
        }
        if (it != snap.services.end())
            context.service = &it->second;
        reply(context, 200,
              (gemini      ? gemini_model_object(r.model_id)
               : anthropic ? anthropic_model_object(r.model_id)
                           : model_object(r.model_id))
                  .dump());
        return;
    }
    // Services and routes, in name order (the two share one namespace).
    std::vector<std::string> names;
    for (const auto &entry : snap.services) {
        if (context.key == nullptr || context.key->allows(entry.first))
            names.push_back(entry.first);
    }
    for (const auto &entry : snap.routes) {
        if (context.key == nullptr || context.key->allows(entry.first))
            names.push_back(entry.first);
    }
    std::sort(names.begin(), names.end());
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
    // The model header, when configured and sent, names the service or route for every
    // endpoint; the body's model follows (the planners pin it, pass-through rewrites it).
    if (!config.model_header.empty()) {
        const char *chosen =
            evhttp_find_header(evhttp_request_get_input_headers(req), config.model_header.c_str());
        if (chosen != nullptr && chosen[0] != '\0') {
            name = chosen;
            context.model_from_header = true;
        }
    }

    if (r.endpoint == Endpoint::kPassthrough) {
        if (context.key != nullptr && !context.key->passthrough) {
            reply_error(context, 403,
                        "This access key may not use pass-through (/inferenceservices/) paths; "
                        "use the OpenAI-compatible /v1/ endpoints, or a key created with "
                        "passthrough => true.",
                        "passthrough_not_allowed");
            return;
        }
        if (!context.model_from_header)
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
        if (context.model_from_header) {
            // Named by the header.
        } else if (is_gemini_route(r)) {
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
    // A route is a name for its services on every route but pass-through, whose paths are one
    // service's own API.
    auto route = r.endpoint == Endpoint::kPassthrough ? snap.routes.end() : snap.routes.find(name);
    if (it == snap.services.end() && route == snap.routes.end()) {
        reply_error(context, 404,
                    "The model '" + name + "' does not exist or you do not have access to it.",
                    "model_not_found", r.endpoint == Endpoint::kPassthrough ? "" : "model");
        return;
    }
    if (it != snap.services.end())
        context.service = &it->second;
    if (context.key != nullptr && !context.key->allows(name)) {
        reply_error(context, 403, "This access key may not use the model '" + name + "'.",
                    "model_not_allowed");
        return;
    }
    if (context.service == nullptr) {
        context.route = &route->second;
        context.route_name = name;
        // Attempts draws one number per target from a splitmix64 sequence that steps by the
        // golden gamma: seeds kMaxTargets steps apart never share a draw.
        route_draws += routing::kMaxTargets * 0x9E3779B97F4A7C15ull;
        context.attempts = routing::Attempts(route_draws);
        if (!next_target(context)) {
            reply_error(context, 503,
                        "The model '" + name +
                            "' has no service to try: every one of its services failed again "
                            "and again and is skipped for a while. Retry later.",
                        "no_service_available");
            return;
        }
    }
    // The end user, for per-user limits: the header, else what the body names.
    if (!config.user_header.empty()) {
        const char *user =
            evhttp_find_header(evhttp_request_get_input_headers(req), config.user_header.c_str());
        if (user != nullptr)
            context.end_user = user;
    }
    if (context.end_user.empty())
        context.end_user = end_user_in_body(body);
    if (std::string problem = end_user_problem(context.end_user); !problem.empty()) {
        context.end_user.clear();  // counted for the key alone
        reply_error(context, 400,
                    "The end user id of your request " + problem + ": send UTF-8 text of at most " +
                        std::to_string(kMaxEndUser) + " bytes without control characters (in the " +
                        config.user_header + " header or the body's user).",
                    "invalid_user");
        return;
    }
    if (r.endpoint == Endpoint::kPassthrough && context.key != nullptr &&
        (context.key->limits.tokens_per_hour || context.key->tenant_limits.tokens_per_hour ||
         context.key->user_tokens_per_hour || context.key->budgeted()) &&
        !passthrough_usage_shape(r.rest)) {
        // The limit could not be kept: the gateway cannot count the tokens of such an answer.
        reply_error(context, 403,
                    "This access key (or its tenant, or its end users) has a token limit or a "
                    "budget, and the gateway cannot count the tokens of answers on this "
                    "pass-through path; with a token limit or a budget, pass-through serves only "
                    "chat completions, completions, embeddings, messages and generateContent "
                    "paths.",
                    "passthrough_path_not_metered");
        return;
    }
    int64_t cost = 0;
    std::string currency;
    if (context.key != nullptr && context.key->budgeted()) {
        const std::size_t bytes = evbuffer_get_length(evhttp_request_get_input_buffer(req));
        if (r.endpoint == Endpoint::kPassthrough && bytes > 0) {
            // Pass-through bodies are not parsed on the way; a budget's estimate needs its limit.
            evbuffer *input = evhttp_request_get_input_buffer(req);
            const char *data = reinterpret_cast<const char *>(evbuffer_pullup(input, -1));
            body = nlohmann::json::parse(data, data + bytes, nullptr, false);
        }
        cost =
            worst_cost(snap, context, r.endpoint, body, bytes, config.default_max_tokens, currency);
    }
    Admission admission =
        governor.admit(context.key, context.service->name, context.end_user, cost, currency);
    context.headers = std::move(admission.headers);
    context.reservation = admission.reservation;
    name_service(context);
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

Finished Server::Impl::finished_of(const RequestContext &context, int status, bool rate_limited) {
    Finished f;
    f.key = context.key;
    f.service = context.service;
    f.user = context.end_user;
    f.status = status;
    f.total_ms = ms_since(context.started);
    f.dialect = dialect_of(context.endpoint);
    f.rate_limited = rate_limited;
    f.reservation = context.reservation;
    f.route = context.route_name;
    f.error = context.error_code;
    return f;
}

void Server::Impl::reply(RequestContext &context, int status, std::string body,
                         const char *content_type, bool rate_limited) {
    evhttp_request *req = context.req;
    if (req == nullptr)
        return;
    context.req = nullptr;
    send_response(req, status, std::move(body), content_type, context.headers);
    if (context.ledger)
        governor.finished(finished_of(context, status, rate_limited));
}

void Server::Impl::reply_error(RequestContext &context, int status, std::string_view message,
                               std::string_view code, std::string_view param, bool rate_limited) {
    context.error_code = code;
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

}  // namespace pgi::gateway
