// An upstream's rerank answer on either route (the input) read into a ranking, and the caller's
// answer written from it in either shape.
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "error.h"
#include "fuzz_common.h"
#include "translate_rerank.h"

using nlohmann::json;
using namespace pgi;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FuzzedDataProvider in(data, size);
    const translate::RerankRoute route =
        in.ConsumeBool() ? translate::RerankRoute::kRanking : translate::RerankRoute::kRerank;
    translate::RerankCall call;
    call.shape =
        in.ConsumeBool() ? translate::RerankRoute::kRanking : translate::RerankRoute::kRerank;
    call.return_documents = in.ConsumeBool();
    call.query = "q";
    const std::size_t documents = in.ConsumeIntegralInRange<std::size_t>(0, 16);
    for (std::size_t i = 0; i < documents; ++i)
        call.documents.push_back("doc " + std::to_string(i));
    if (in.ConsumeBool())
        call.top_n = in.ConsumeIntegralInRange<int>(1, 20);
    const std::string body = in.ConsumeRemainingBytesAsString();
    const ServiceEndpoint service = fuzz::endpoint(Protocol::kOpenAiV1);

    translate::Ranking ranking;
    try {
        ranking = translate::rerank_response(service, route, body, documents, call.top_n);
    } catch (const Error &) {
        return 0;
    }
    FUZZ_CHECK(ranking.scale == route);
    FUZZ_CHECK(!call.top_n || ranking.results.size() <= static_cast<std::size_t>(*call.top_n));
    std::set<int> seen;
    for (std::size_t i = 0; i < ranking.results.size(); ++i) {
        const translate::RerankResult &r = ranking.results[i];
        FUZZ_CHECK(r.index >= 0 && static_cast<std::size_t>(r.index) < documents);
        FUZZ_CHECK(seen.insert(r.index).second);  // no document twice
        if (i > 0)
            FUZZ_CHECK(!(ranking.results[i - 1].score < r.score));  // best first
    }

    const std::string answer = translate::rerank_caller_response(call, ranking, service.model);
    const json j = json::parse(answer, nullptr, false);
    FUZZ_CHECK(j.is_object());
    const json &list = j[call.shape == translate::RerankRoute::kRanking ? "rankings" : "results"];
    FUZZ_CHECK(list.is_array() && list.size() == ranking.results.size());
    for (std::size_t i = 0; i < list.size(); ++i) {
        FUZZ_CHECK(list[i].value("index", json()) == ranking.results[i].index);
        if (call.shape == translate::RerankRoute::kRerank) {
            const json score = list[i].value("relevance_score", json());
            // A logit becomes a probability; a relevance score is passed as it came.
            if (route == translate::RerankRoute::kRanking)
                FUZZ_CHECK(score.is_null() || (score >= 0.0 && score <= 1.0));
            if (call.return_documents)
                FUZZ_CHECK(list[i]["document"].value("text", json()) ==
                           call.documents[ranking.results[i].index]);
        }
    }
    return 0;
}
