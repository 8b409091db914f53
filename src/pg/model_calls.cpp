// Calling registered services from SQL: encode_text, encode_text_batch, chat, chat_batch,
// chat_completion, rerank. Requests and answers go through the one translation layer in
// src/core, and the wire through the backend's curl-multi client (backend_http).
#include "cpp_wall.h"

extern "C" {
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/jsonb.h"
}

#include <map>
#include <set>

#include "address_filter.h"
#include "backend_http.h"
#include "chat_call.h"
#include "chat_prompt.h"
#include "error.h"
#include "jsonb_args.h"
#include "model_calls.h"
#include "redact.h"
#include "route_calls.h"
#include "service_catalog.h"
#include "settings.h"
#include "translate_embeddings.h"
#include "translate_rerank.h"

namespace pgi::pg {

namespace {

// Services that answered 400 to encoding_format "base64": this backend asks them for floats.
std::set<std::string> refuses_base64;
// Rerank routes learned in this backend, ahead of (or instead of) the catalog's memory.
std::map<std::string, translate::RerankRoute> learned_routes;

// The options argument: NULL is no option.
nlohmann::json options_arg(FunctionCallInfo fcinfo, int n) {
    return jsonb_arg(fcinfo, n).value_or(nlohmann::json::object());
}

Datum float4_array_datum(const std::vector<float> &values) {
    std::vector<Datum> datums;
    datums.reserve(values.size());
    for (float v : values)
        datums.push_back(Float4GetDatum(v));
    return pg_guard([&]() {
        return PointerGetDatum(construct_array(datums.data(), static_cast<int>(datums.size()),
                                               FLOAT4OID, sizeof(float4), true, TYPALIGN_INT));
    });
}

pgi::Error call_error(const ServiceEndpoint &service, const http::Response &r) {
    if (r.too_large)
        return pgi::Error(
            sqlstate::kUpstreamBadResponse,
            "response from service \"" + service.name + "\" exceeds inference.max_response_size",
            "Raise inference.max_response_size or ask for less.");
    if (r.blocked)
        return pgi::Error(
            sqlstate::kInsufficientPrivilege,
            "request to service \"" + service.name + "\" refused: " + r.transport_error,
            net::kBlockedCallHint);
    if (r.status == 0)
        return pgi::Error(sqlstate::kUpstreamUnreachable,
                          "request to service \"" + service.name +
                              "\" failed: " + redact_key(r.transport_error, service),
                          r.tls_error ? tls::failure_hint(service.tls)
                                      : "Run inference.check_service() for a diagnosis.");
    return translate::upstream_failure(service, r.status, r.body);
}

// The error for a failed transfer: unreachable, too large, or the upstream's own error.
AttemptFailed call_failure(const ServiceEndpoint &service, const http::Response &r) {
    return AttemptFailed(call_error(service, r), routing::failure_of(r));
}

// A complete 2xx answer; a transfer cut short (size cap, timeout after the status) is not.
bool ok(const http::Response &r) {
    return r.curl_code == 0 && !r.too_large && r.status >= 200 && r.status < 300;
}

http::Response call_one(const ServiceEndpoint &service, const translate::UpstreamRequest &call) {
    auto responses = perform_calls({make_request(call, service)});
    return std::move(responses.front());
}

}  // namespace

std::vector<std::vector<float>> embed(const ServiceEndpoint &service,
                                      const std::vector<std::string> &inputs,
                                      const nlohmann::json &options, translate::Usage &usage) {
    size_t batch = static_cast<size_t>(setting_embedding_batch_size);
    std::vector<std::vector<std::string>> batches;
    for (size_t i = 0; i < inputs.size(); i += batch)
        batches.emplace_back(inputs.begin() + i,
                             inputs.begin() + std::min(inputs.size(), i + batch));

    // Base64 is a quarter of the JSON to read; upstreams that refuse it get floats.
    bool base64 = service.protocol == Protocol::kOpenAiV1 && !refuses_base64.count(service.name);
    auto requests_for = [&](bool ask_base64, const std::vector<size_t> &which) {
        std::vector<http::Request> requests;
        for (size_t b : which)
            requests.push_back(make_request(
                translate::embeddings_request(service, batches[b], options, ask_base64), service));
        return requests;
    };
    std::vector<size_t> all(batches.size());
    for (size_t b = 0; b < all.size(); b++)
        all[b] = b;
    std::vector<http::Response> responses = perform_calls(requests_for(base64, all));

    if (base64) {
        std::vector<size_t> refused;
        for (size_t b = 0; b < responses.size(); b++)
            if (responses[b].status == 400 || responses[b].status == 422)
                refused.push_back(b);
        if (!refused.empty()) {
            refuses_base64.insert(service.name);
            auto retried = perform_calls(requests_for(false, refused));
            for (size_t i = 0; i < refused.size(); i++)
                responses[refused[i]] = std::move(retried[i]);
        }
    }

    std::vector<std::vector<float>> vectors;
    vectors.reserve(inputs.size());
    // Every batch that answered spent its tokens, even when another failed. After a failure the
    // other answers are read for their usage alone: the failure is what the call ends with.
    std::optional<AttemptFailed> failed;
    for (size_t b = 0; b < responses.size(); b++) {
        if (!ok(responses[b])) {
            if (!failed)
                failed = call_failure(service, responses[b]);
            continue;
        }
        if (failed) {
            translate::add_usage(usage, translate::usage_from_openai_body(responses[b].body));
            continue;
        }
        auto e = translate::embeddings_response(service, responses[b].body, batches[b].size());
        translate::add_usage(usage, e.usage);
        for (auto &v : e.vectors)
            vectors.push_back(std::move(v));
    }
    if (failed)
        throw *failed;
    return vectors;
}

namespace {

chat_call::Call plan_chat(const ServiceEndpoint &service, nlohmann::json &request) {
    chat::Defaults defaults;
    defaults.default_max_tokens = setting_default_max_tokens;
    return chat_call::plan(protocols::module_for(Protocol::kOpenAiV1), service, request, defaults);
}

nlohmann::json complete_chat(const ServiceEndpoint &service, nlohmann::json request,
                             translate::Usage &usage) {
    chat_call::Call call = plan_chat(service, request);
    http::Response r = call_one(service, call.request);
    if (!ok(r))
        throw call_failure(service, r);
    return chat_call::answer_document(call, service, r.body, &usage);
}

// One reply per prompt, or (throw_on_error false) the error of each prompt that failed: every
// prompt is one request, up to inference.max_concurrency in flight. With throw_on_error, the
// first failure ends the try (a route then tries its next service with every prompt).
struct BatchReplies {
    std::vector<std::optional<std::string>> replies, errors;
};

BatchReplies chat_prompts(const ServiceEndpoint &service, const std::vector<std::string> &prompts,
                          const nlohmann::json &options, bool throw_on_error,
                          translate::Usage &usage) {
    std::vector<chat_call::Call> calls;
    std::vector<http::Request> requests;
    calls.reserve(prompts.size());
    requests.reserve(prompts.size());
    for (const std::string &prompt : prompts) {
        nlohmann::json request = translate::chat_request_from_prompt(prompt, options);
        calls.push_back(plan_chat(service, request));
        requests.push_back(make_request(calls.back().request, service));
    }
    std::vector<http::Response> responses = perform_calls(requests);
    BatchReplies out;
    out.replies.resize(prompts.size());
    out.errors.resize(prompts.size());
    std::optional<AttemptFailed> failed;
    for (size_t i = 0; i < responses.size(); i++) {
        if (!ok(responses[i])) {
            AttemptFailed f = call_failure(service, responses[i]);
            if (!throw_on_error)
                out.errors[i] = f.what();
            else if (!failed)
                failed = std::move(f);
            continue;
        }
        try {
            out.replies[i] = translate::chat_text(
                service, chat_call::answer_document(calls[i], service, responses[i].body, &usage));
        } catch (const pgi::Error &e) {
            // An answer that cannot be read ends the call, as it does for inference.chat.
            if (throw_on_error)
                throw;
            out.errors[i] = e.what();
        }
    }
    if (failed)
        throw *failed;
    return out;
}

const char *route_name(translate::RerankRoute route) {
    return route == translate::RerankRoute::kRanking ? "ranking" : "rerank";
}

// The first rerank call on a service tries NIM's /v1/ranking, falls back to /v1/rerank on 404,
// and remembers the route that answered (in this backend, and in the catalog when writable).
translate::Ranking rank(const ServiceRow &row, const ServiceEndpoint &service,
                        const std::string &query, const std::vector<std::string> &documents,
                        std::optional<int> top_n) {
    using translate::RerankRoute;
    std::vector<RerankRoute> routes = {RerankRoute::kRanking, RerankRoute::kRerank};
    bool known = false;
    if (auto it = learned_routes.find(service.name); it != learned_routes.end()) {
        routes = {it->second};
        known = true;
    } else if (row.rerank_route) {
        routes = {*row.rerank_route == "ranking" ? RerankRoute::kRanking : RerankRoute::kRerank};
        known = true;
    }
    for (RerankRoute route : routes) {
        http::Response r =
            call_one(service, translate::rerank_request(service, route, query, documents, top_n));
        if ((r.status == 404 || r.status == 405) && !known)
            continue;
        if (!ok(r))
            throw call_failure(service, r);
        if (!known) {
            learned_routes[service.name] = route;
            if (!RecoveryInProgress() && !XactReadOnly)
                remember_rerank_route(service.name, route_name(route));
        }
        return translate::rerank_response(service, route, r.body, documents.size(), top_n);
    }
    throw pgi::Error(sqlstate::kFeatureNotSupported,
                     "service \"" + service.name + "\" serves neither /v1/ranking nor /v1/rerank",
                     "Register a reranking model (NVIDIA NIM, vLLM, Cohere or Jina) for rerank.");
}

std::vector<std::string> documents_arg(FunctionCallInfo fcinfo, int n, const char *what) {
    auto raw = text_array_arg(fcinfo, n);
    if (!raw)
        throw pgi::Error("22004", std::string(what) + " must not be NULL");
    std::vector<std::string> out;
    out.reserve(raw->size());
    for (size_t i = 0; i < raw->size(); i++) {
        if (!(*raw)[i] || (*raw)[i]->empty())
            throw pgi::Error(sqlstate::kInvalidParameterValue,
                             std::string(what) + " element " + std::to_string(i + 1) + " is " +
                                 ((*raw)[i] ? "empty" : "NULL"),
                             "Remove or replace it; nothing was sent upstream.");
        out.push_back(std::move(*(*raw)[i]));
    }
    return out;
}

}  // namespace

}  // namespace pgi::pg

using namespace pgi;
using namespace pgi::pg;

// inference.encode_text(service, input, options) RETURNS real[]
PGI_FUNCTION(pgi_encode_text) {
    std::string name = required_text_arg(fcinfo, 0, "service");
    std::string input = required_text_arg(fcinfo, 1, "input");
    if (input.empty())
        throw pgi::Error(sqlstate::kInvalidParameterValue, "input must not be empty",
                         "Pass some text, or NULL for a NULL embedding.");
    nlohmann::json options = options_arg(fcinfo, 2);
    std::vector<std::vector<float>> vectors;
    call_named(name, [&](const ServiceRow &row, translate::Usage &usage) {
        vectors = embed(endpoint_of(row), {input}, options, usage);
    });
    return float4_array_datum(vectors.front());
}

// inference.encode_text_batch(service, inputs, options) RETURNS TABLE(id int, embedding real[])
PGI_FUNCTION(pgi_encode_text_batch) {
    std::string name = required_text_arg(fcinfo, 0, "service");
    std::vector<std::string> inputs = documents_arg(fcinfo, 1, "inputs");
    nlohmann::json options = options_arg(fcinfo, 2);
    std::vector<std::vector<float>> vectors;
    call_named(name, [&](const ServiceRow &row, translate::Usage &usage) {
        ServiceEndpoint service = endpoint_of(row);
        if (!inputs.empty())
            vectors = embed(service, inputs, options, usage);
    });
    std::vector<Datum> arrays;
    arrays.reserve(vectors.size());
    for (const auto &v : vectors)
        arrays.push_back(float4_array_datum(v));
    pg_guard_void([&]() {
        InitMaterializedSRF(fcinfo, 0);
        auto *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
        for (size_t i = 0; i < arrays.size(); i++) {
            Datum values[2] = {Int32GetDatum(static_cast<int32>(i + 1)), arrays[i]};
            bool nulls[2] = {false, false};
            tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
        }
    });
    return static_cast<Datum>(0);
}

// inference.chat(service, prompt, options) RETURNS text
PGI_FUNCTION(pgi_chat) {
    std::string name = required_text_arg(fcinfo, 0, "service");
    std::string prompt = required_text_arg(fcinfo, 1, "prompt");
    nlohmann::json request = translate::chat_request_from_prompt(prompt, options_arg(fcinfo, 2));
    std::string text;
    call_named(name, [&](const ServiceRow &row, translate::Usage &usage) {
        ServiceEndpoint service = endpoint_of(row);
        text = translate::chat_text(service, complete_chat(service, request, usage));
    });
    return text_datum(text);
}

// inference.chat_batch(service, prompts, options, throw_on_error)
//   RETURNS TABLE(id int, reply text, error text), in the prompts' order
PGI_FUNCTION(pgi_chat_batch) {
    std::string name = required_text_arg(fcinfo, 0, "service");
    std::vector<std::string> prompts = documents_arg(fcinfo, 1, "prompts");
    nlohmann::json options = options_arg(fcinfo, 2);
    const bool throw_on_error = bool_arg(fcinfo, 3).value_or(true);
    BatchReplies out;
    call_named(name, [&](const ServiceRow &row, translate::Usage &usage) {
        if (!prompts.empty())
            out = chat_prompts(endpoint_of(row), prompts, options, throw_on_error, usage);
    });
    std::vector<Datum> replies(out.replies.size()), errors(out.errors.size());
    for (size_t i = 0; i < out.replies.size(); i++) {
        if (out.replies[i])
            replies[i] = text_datum(*out.replies[i]);
        if (out.errors[i])
            errors[i] = text_datum(*out.errors[i]);
    }
    pg_guard_void([&]() {
        InitMaterializedSRF(fcinfo, 0);
        auto *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
        for (size_t i = 0; i < replies.size(); i++) {
            Datum values[3] = {Int32GetDatum(static_cast<int32>(i + 1)), replies[i], errors[i]};
            bool nulls[3] = {false, !out.replies[i].has_value(), !out.errors[i].has_value()};
            tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
        }
    });
    return static_cast<Datum>(0);
}

// inference.chat_completion(service, request) RETURNS jsonb
PGI_FUNCTION(pgi_chat_completion) {
    std::string name = required_text_arg(fcinfo, 0, "service");
    nlohmann::json request = options_arg(fcinfo, 1);
    if (request.contains("stream") && request["stream"] == true)
        throw pgi::Error(sqlstate::kFeatureNotSupported, "chat_completion does not stream",
                         "Remove \"stream\", or stream through the gateway's "
                         "/v1/chat/completions.");
    std::string answer;
    call_named(name, [&](const ServiceRow &row, translate::Usage &usage) {
        answer = complete_chat(endpoint_of(row), request, usage).dump();
    });
    return jsonb_datum(answer);
}

// inference.rerank(service, query, documents, top_n)
//   RETURNS TABLE(id int, document text, score double precision), best first
PGI_FUNCTION(pgi_rerank) {
    std::string name = required_text_arg(fcinfo, 0, "service");
    std::string query = required_text_arg(fcinfo, 1, "query");
    std::vector<std::string> documents = documents_arg(fcinfo, 2, "documents");
    std::optional<int> top_n;
    if (!PG_ARGISNULL(3)) {
        top_n = PG_GETARG_INT32(3);
        if (*top_n < 1)
            throw pgi::Error(sqlstate::kInvalidParameterValue, "top_n must be at least 1",
                             "Pass NULL to rank every document.");
    }
    translate::Ranking ranking;
    call_named(name, [&](const ServiceRow &row, translate::Usage &usage) {
        ServiceEndpoint service = endpoint_of(row);
        if (!documents.empty()) {
            ranking = rank(row, service, query, documents, top_n);
            usage = ranking.usage;
        }
    });

    std::vector<Datum> docs;
    for (const auto &r : ranking.results)
        docs.push_back(text_datum(documents.at(r.index)));
    pg_guard_void([&]() {
        InitMaterializedSRF(fcinfo, 0);
        auto *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
        for (size_t i = 0; i < docs.size(); i++) {
            Datum values[3] = {Int32GetDatum(ranking.results[i].index + 1), docs[i],
                               Float8GetDatum(ranking.results[i].score)};
            bool nulls[3] = {false, false, false};
            tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
        }
    });
    return static_cast<Datum>(0);
}
