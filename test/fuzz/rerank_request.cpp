// A gateway caller's rerank body in either shape (the input, as JSON), read by parse_rerank_call
// and turned into the upstream request on each route.
#include <nlohmann/json.hpp>

#include "error.h"
#include "fuzz_common.h"
#include "translate_rerank.h"

using nlohmann::json;
using namespace pgi;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FuzzedDataProvider in(data, size);
    const Protocol protocol =
        in.PickValueInArray({Protocol::kOpenAiV1, Protocol::kOpenAiV1, Protocol::kGeminiV1Beta,
                             Protocol::kAnthropicV1});
    const translate::RerankRoute route =
        in.ConsumeBool() ? translate::RerankRoute::kRanking : translate::RerankRoute::kRerank;
    json body = json::parse(in.ConsumeRemainingBytesAsString(), nullptr, false);
    if (body.is_discarded())
        return 0;
    const bool nim_shape =
        body.is_object() && body.contains("passages") && !body["passages"].is_null();
    translate::RerankCall call;
    try {
        call = translate::parse_rerank_call(std::move(body));
    } catch (const Error &) {
        return 0;
    }
    FUZZ_CHECK(!call.query.empty());
    FUZZ_CHECK(!call.documents.empty());
    FUZZ_CHECK(!call.top_n || *call.top_n >= 1);
    FUZZ_CHECK((call.shape == translate::RerankRoute::kRanking) == nim_shape);

    const ServiceEndpoint service = fuzz::endpoint(protocol);
    translate::UpstreamRequest request;
    try {
        request = translate::rerank_request(service, route, call.query, call.documents, call.top_n);
    } catch (const Error &e) {
        FUZZ_CHECK(protocol != Protocol::kOpenAiV1);  // the call was already judged valid
        return 0;
    }
    FUZZ_CHECK(protocol == Protocol::kOpenAiV1);
    const json sent = json::parse(request.body, nullptr, false);
    FUZZ_CHECK(sent.is_object());
    FUZZ_CHECK(sent.value("model", json()) == service.model);
    if (route == translate::RerankRoute::kRanking) {
        FUZZ_CHECK(sent["query"].value("text", json()) == call.query);
        const json &passages = sent["passages"];
        FUZZ_CHECK(passages.is_array() && passages.size() == call.documents.size());
        for (std::size_t i = 0; i < passages.size(); ++i)
            FUZZ_CHECK(passages[i].value("text", json()) == call.documents[i]);
    } else {
        FUZZ_CHECK(sent.value("query", json()) == call.query);
        FUZZ_CHECK(sent.value("documents", json()) == json(call.documents));
        if (call.top_n)
            FUZZ_CHECK(sent.value("top_n", json()) == *call.top_n);
    }
    return 0;
}
