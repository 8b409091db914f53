#include "translate_rerank.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "translate_util.h"

namespace pgi::translate {

namespace {

using detail::member;
using nlohmann::json;

[[noreturn]] void invalid(const std::string &message, const char *hint = "") {
    throw Error(sqlstate::kInvalidParameterValue, message, hint);
}

void append_double(std::string &out, double d) {
    // dump() writes the shortest text that reads back as the same double.
    out += std::isfinite(d) ? json(d).dump() : std::string("null");
}

std::string body_for(const ServiceEndpoint &s, RerankRoute route, const std::string &query,
                     const std::vector<std::string> &documents, std::optional<int> top_n) {
    std::size_t size = query.size() + 128;
    for (const std::string &d : documents)
        size += d.size() + 16;
    std::string body;
    body.reserve(size);
    body += "{\"model\":";
    detail::append_json_string(body, s.model);
    if (route == RerankRoute::kRanking) {
        body += ",\"query\":{\"text\":";
        detail::append_json_string(body, query);
        body += "},\"passages\":[";
        for (std::size_t i = 0; i < documents.size(); ++i) {
            body += i > 0 ? ",{\"text\":" : "{\"text\":";
            detail::append_json_string(body, documents[i]);
            body += '}';
        }
        body += "],\"truncate\":\"END\"}";
        return body;
    }
    body += ",\"query\":";
    detail::append_json_string(body, query);
    body += ",\"documents\":[";
    for (std::size_t i = 0; i < documents.size(); ++i) {
        if (i > 0)
            body += ',';
        detail::append_json_string(body, documents[i]);
    }
    body += ']';
    if (top_n)
        body += ",\"top_n\":" + std::to_string(*top_n);
    body += '}';
    return body;
}

double sigmoid(double logit) {
    return 1.0 / (1.0 + std::exp(-logit));
}

double logit_of(double p) {
    if (p < 0.0 || p > 1.0)
        return p;
    constexpr double kEdge = 1e-12;  // keeps 0 and 1 finite (about +-27.6)
    p = std::clamp(p, kEdge, 1.0 - kEdge);
    return std::log(p / (1.0 - p));
}

}  // namespace

UpstreamRequest rerank_request(const ServiceEndpoint &s, RerankRoute route,
                               const std::string &query, const std::vector<std::string> &documents,
                               std::optional<int> top_n) {
    if (s.protocol != Protocol::kOpenAiV1) {
        throw Error(sqlstate::kFeatureNotSupported,
                    "service \"" + s.name + "\" does not support rerank",
                    "Rerank is served by OPENAI_V1 services: NVIDIA NIM's /v1/ranking, or "
                    "/v1/rerank on vLLM, Cohere and Jina.");
    }
    if (query.empty())
        invalid("the rerank query is empty");
    if (documents.empty())
        invalid("there are no documents to rerank");
    if (top_n && *top_n < 1)
        invalid("top_n must be a positive integer");
    return detail::post_json(s, route == RerankRoute::kRanking ? "/v1/ranking" : "/v1/rerank",
                             false, body_for(s, route, query, documents, top_n));
}

Ranking rerank_response(const ServiceEndpoint &s, RerankRoute route, std::string_view body,
                        std::size_t document_count, std::optional<int> top_n) {
    const bool ranking = route == RerankRoute::kRanking;
    const char *list_key = ranking ? "rankings" : "results";
    const char *score_key = ranking ? "logit" : "relevance_score";
    json j = detail::parse_upstream_body(s, body, "rerank");
    const json *list = member(j, list_key);
    if (list == nullptr || !list->is_array()) {
        detail::bad_response(s, "rerank",
                             std::string("the body has no \"") + list_key + "\" array");
    }
    Ranking r;
    r.scale = route;
    r.results.reserve(list->size());
    std::vector<bool> seen(document_count, false);
    for (const json &item : *list) {
        const json *index = member(item, "index");
        const json *score = member(item, score_key);
        if (index == nullptr || !index->is_number_unsigned() ||
            index->get<std::size_t>() >= document_count || seen[index->get<std::size_t>()]) {
            detail::bad_response(s, "rerank",
                                 "a result's index is missing, out of range or repeated");
        }
        if (score == nullptr || !score->is_number()) {
            detail::bad_response(s, "rerank", std::string("a result has no \"") + score_key + "\"");
        }
        seen[index->get<std::size_t>()] = true;
        r.results.push_back({index->get<int>(), score->get<double>()});
    }
    // Upstreams sort already, but nothing obliges them to; ties keep document order.
    std::stable_sort(
        r.results.begin(), r.results.end(),
        [](const RerankResult &a, const RerankResult &b) { return a.score > b.score; });
    if (top_n && *top_n >= 0 && static_cast<std::size_t>(*top_n) < r.results.size()) {
        r.results.resize(static_cast<std::size_t>(*top_n));
    }
    if (const json *usage = member(j, "usage"))
        r.usage = detail::usage_from_openai(*usage);
    return r;
}

RerankCall parse_rerank_call(json body) {
    static constexpr const char *kHint =
        "Send {\"query\": \"...\", \"documents\": [\"...\"]} or NIM's "
        "{\"query\": {\"text\": \"...\"}, \"passages\": [{\"text\": \"...\"}]}.";
    if (!body.is_object())
        invalid("the rerank request must be a JSON object", kHint);
    RerankCall call;
    auto query = body.find("query");
    if (query != body.end() && query->is_string()) {
        call.query = std::move(query->get_ref<std::string &>());
    } else if (query != body.end() && query->is_object()) {
        call.query = detail::string_member(*query, "text");
    }
    if (call.query.empty())
        invalid("the rerank request has no query text", kHint);

    auto passages = body.find("passages");
    auto documents = body.find("documents");
    auto list = documents;
    if (passages != body.end() && !passages->is_null()) {
        call.shape = RerankRoute::kRanking;
        list = passages;
    }
    if (list == body.end() || !list->is_array() || list->empty()) {
        invalid("the rerank request needs a non-empty \"documents\" (or \"passages\") array",
                kHint);
    }
    call.documents.reserve(list->size());
    for (std::size_t i = 0; i < list->size(); ++i) {
        json &item = (*list)[i];
        if (item.is_string()) {
            call.documents.push_back(std::move(item.get_ref<std::string &>()));
            continue;
        }
        const json *text = member(item, "text");
        if (text == nullptr || !text->is_string()) {
            invalid("document " + std::to_string(i) + " must be a string or {\"text\": \"...\"}",
                    kHint);
        }
        call.documents.push_back(text->get<std::string>());
    }
    if (auto top_n = body.find("top_n"); top_n != body.end() && !top_n->is_null()) {
        if (!top_n->is_number_integer() || top_n->get<long long>() < 1 ||
            top_n->get<long long>() > std::numeric_limits<int>::max()) {
            invalid("top_n must be a positive integer");
        }
        call.top_n = top_n->get<int>();
    }
    if (auto v = body.find("return_documents"); v != body.end() && !v->is_null()) {
        if (!v->is_boolean())
            invalid("return_documents must be a boolean");
        call.return_documents = v->get<bool>();
    }
    return call;
}

std::string rerank_caller_response(const RerankCall &call, const Ranking &ranking,
                                   std::string_view model) {
    std::string out;
    if (call.shape == RerankRoute::kRanking) {
        out += "{\"rankings\":[";
        for (std::size_t i = 0; i < ranking.results.size(); ++i) {
            const RerankResult &r = ranking.results[i];
            out += i > 0 ? ",{\"index\":" : "{\"index\":";
            out += std::to_string(r.index);
            out += ",\"logit\":";
            append_double(out,
                          ranking.scale == RerankRoute::kRanking ? r.score : logit_of(r.score));
            out += '}';
        }
        out += "]}";
        return out;
    }
    out += "{\"id\":";
    detail::append_json_string(out, "rerank-" + detail::completion_id().substr(9));
    out += ",\"model\":";
    detail::append_json_string(out, model);
    out += ",\"results\":[";
    for (std::size_t i = 0; i < ranking.results.size(); ++i) {
        const RerankResult &r = ranking.results[i];
        out += i > 0 ? ",{\"index\":" : "{\"index\":";
        out += std::to_string(r.index);
        out += ",\"relevance_score\":";
        append_double(out, ranking.scale == RerankRoute::kRerank ? r.score : sigmoid(r.score));
        if (call.return_documents && static_cast<std::size_t>(r.index) < call.documents.size()) {
            out += ",\"document\":{\"text\":";
            detail::append_json_string(out, call.documents[static_cast<std::size_t>(r.index)]);
            out += '}';
        }
        out += '}';
    }
    out += ']';
    if (ranking.usage.present) {
        out += ",\"usage\":{\"prompt_tokens\":";
        out += std::to_string(ranking.usage.prompt_tokens);
        out += ",\"total_tokens\":";
        out += std::to_string(ranking.usage.total_tokens);
        out += '}';
    }
    out += '}';
    return out;
}

}  // namespace pgi::translate
