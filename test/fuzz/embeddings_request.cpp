// An OpenAI embeddings request, as the gateway receives it (the input, as JSON), read by
// parse_embeddings_call and turned into each protocol's upstream request; and the SQL path, where
// the inputs and the options object are the caller's own.
#include <nlohmann/json.hpp>

#include "error.h"
#include "fuzz_common.h"
#include "translate_embeddings.h"

using nlohmann::json;
using namespace pgi;

namespace {

void check_request(Protocol protocol, const std::vector<std::string> &inputs, const json &options,
                   bool ask_base64) {
    const ServiceEndpoint service = fuzz::endpoint(protocol);
    translate::UpstreamRequest request;
    try {
        request = translate::embeddings_request(service, inputs, options, ask_base64);
    } catch (const Error &) {
        return;
    }
    FUZZ_CHECK(protocol != Protocol::kAnthropicV1);  // Anthropic has no embeddings
    FUZZ_CHECK(!inputs.empty());
    FUZZ_CHECK(request.url.compare(0, service.base_url.size(), service.base_url) == 0);
    const json body = json::parse(request.body, nullptr, false);
    FUZZ_CHECK(body.is_object());
    if (protocol == Protocol::kOpenAiV1) {
        FUZZ_CHECK(body.value("model", json()) == service.model);
        FUZZ_CHECK(body.value("input", json()) == json(inputs));
    } else {
        const json requests = body.value("requests", json());
        FUZZ_CHECK(requests.is_array() && requests.size() == inputs.size());
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FuzzedDataProvider in(data, size);
    const Protocol protocol =
        in.PickValueInArray({Protocol::kOpenAiV1, Protocol::kGeminiV1Beta, Protocol::kAnthropicV1});
    const bool sql_path = in.ConsumeBool();
    const bool ask_base64 = in.ConsumeBool();
    json request = json::parse(in.ConsumeRemainingBytesAsString(), nullptr, false);
    if (request.is_discarded())
        return 0;
    if (sql_path) {
        // inference.embed(service, texts, options): {"input": [...], "options": {...}} here.
        std::vector<std::string> inputs;
        if (request.is_object() && request.contains("input") && request["input"].is_array()) {
            for (const json &v : request["input"]) {
                if (v.is_string())
                    inputs.push_back(v.get<std::string>());
            }
        }
        const json options = request.is_object() ? request.value("options", json()) : json();
        check_request(protocol, inputs, options, ask_base64);
        return 0;
    }
    const bool base64_format =
        request.is_object() && request.value("encoding_format", json()) == "base64";
    translate::EmbeddingsCall call;
    try {
        call = translate::parse_embeddings_call(std::move(request));
    } catch (const Error &) {
        return 0;
    }
    FUZZ_CHECK(!call.inputs.empty());
    for (const std::string &input : call.inputs)
        FUZZ_CHECK(!input.empty());
    FUZZ_CHECK(call.base64_out == base64_format);
    FUZZ_CHECK(call.options.is_object());
    check_request(protocol, call.inputs, call.options, call.base64_out);
    return 0;
}
