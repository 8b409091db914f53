// Rerank: the two wire shapes OPENAI_V1 upstreams serve (NVIDIA NIM's /v1/ranking; /v1/rerank
// on vLLM, Cohere and Jina), for inference.rerank and for the gateway's /v1/rerank and
// /v1/ranking, which answer in whichever shape their caller used.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "protocol.h"
#include "translate.h"

namespace pgi::translate {

enum class RerankRoute {
    kRanking,  // POST /v1/ranking {query:{text}, passages:[{text}]} -> {rankings:[{index, logit}]}
    kRerank,   // POST /v1/rerank {query, documents, top_n} -> {results:[{index, relevance_score}]}
};

// The upstream call on one route. Only OPENAI_V1 services rerank (others: 0A000). kRanking
// always sends truncate "END" (NIM otherwise refuses a passage longer than the model's window)
// and has no top_n on the wire: rerank_response applies it. An empty query or no documents, or
// top_n < 1, is 22023.
UpstreamRequest rerank_request(const ServiceEndpoint &service, RerankRoute route,
                               const std::string &query, const std::vector<std::string> &documents,
                               std::optional<int> top_n);

struct RerankResult {
    int index;     // 0-based position in the documents sent
    double score;  // on the scale of Ranking::scale
};

struct Ranking {
    // The route the scores came from: kRanking scores are logits (unbounded), kRerank scores are
    // relevance_score as the upstream gave it (usually 0-1). inference.rerank returns them as is.
    RerankRoute scale = RerankRoute::kRerank;
    std::vector<RerankResult> results;  // best first, at most top_n
    Usage usage;
};

// Reads the upstream's 2xx body for a call with document_count documents. Indexes outside the
// documents, repeated indexes or missing scores are PI400 errors naming the service.
Ranking rerank_response(const ServiceEndpoint &service, RerankRoute route,
                        std::string_view upstream_body, std::size_t document_count,
                        std::optional<int> top_n);

// A gateway caller's rerank body, in either shape: {query, documents:[string | {text}], top_n,
// return_documents} or NIM's {query:{text}, passages:[{text}]}. The list's name decides the
// shape the answer takes; query may be a string or {text} in both.
struct RerankCall {
    RerankRoute shape = RerankRoute::kRerank;
    std::string query;
    std::vector<std::string> documents;
    std::optional<int> top_n;
    bool return_documents = false;
};

// Bad input is 22023. Taken by value so the documents are moved out rather than copied.
RerankCall parse_rerank_call(nlohmann::json body);

// The answer in the caller's shape, serialised. Scores move between scales where they must:
// relevance_score = sigmoid(logit), and logit = ln(p / (1 - p)) for a relevance score p in
// [0, 1] (clamped to stay finite); a relevance score outside [0, 1] is already unbounded and is
// passed as the logit unchanged. kRanking: {"rankings":[{index, logit}]}. kRerank: {"id",
// "model", "results":[{index, relevance_score, document:{text} when return_documents}],
// "usage" when the upstream reported it}.
std::string rerank_caller_response(const RerankCall &call, const Ranking &ranking,
                                   std::string_view model);

}  // namespace pgi::translate
