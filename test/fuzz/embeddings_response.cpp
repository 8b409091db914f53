// An upstream's embeddings answer (OpenAI or Gemini) read into vectors, and the gateway's OpenAI
// answer written from them, in floats and in base64.
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "base64.h"
#include "error.h"
#include "fuzz_common.h"
#include "translate_embeddings.h"

using nlohmann::json;
using namespace pgi;

namespace {

bool same_bits(float a, float b) {
    return std::memcmp(&a, &b, sizeof a) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FuzzedDataProvider in(data, size);
    const Protocol protocol = in.ConsumeBool() ? Protocol::kGeminiV1Beta : Protocol::kOpenAiV1;
    const std::size_t expected = in.ConsumeIntegralInRange<std::size_t>(0, 8);
    const std::string body = in.ConsumeRemainingBytesAsString();
    const ServiceEndpoint service = fuzz::endpoint(protocol);
    translate::Embeddings e;
    try {
        e = translate::embeddings_response(service, body, expected);
    } catch (const Error &) {
        return 0;
    }
    FUZZ_CHECK(e.vectors.size() == expected);

    // Floats: valid JSON, each finite value read back exactly, the others as null.
    const std::string floats = translate::embeddings_openai_response(e, false, service.model);
    const json as_floats = json::parse(floats, nullptr, false);
    FUZZ_CHECK(as_floats.is_object());
    const json &items = as_floats["data"];
    FUZZ_CHECK(items.is_array() && items.size() == expected);
    for (std::size_t i = 0; i < expected; ++i) {
        FUZZ_CHECK(items[i].value("index", json()) == i);
        const json &values = items[i]["embedding"];
        FUZZ_CHECK(values.is_array() && values.size() == e.vectors[i].size());
        for (std::size_t k = 0; k < values.size(); ++k) {
            const float f = e.vectors[i][k];
            // Numerically equal: JSON readers take "-0" for the integer 0, so the sign of zero
            // survives only in base64.
            if (std::isfinite(f))
                FUZZ_CHECK(values[k].is_number() && values[k].get<float>() == f);
            else
                FUZZ_CHECK(values[k].is_null());
        }
    }

    // Base64: valid JSON, every float back bit for bit (NaN payloads and -0 included).
    const std::string b64 = translate::embeddings_openai_response(e, true, service.model);
    const json as_b64 = json::parse(b64, nullptr, false);
    FUZZ_CHECK(as_b64.is_object());
    for (std::size_t i = 0; i < expected; ++i) {
        const json &text = as_b64["data"][i]["embedding"];
        FUZZ_CHECK(text.is_string());
        const auto back = base64::decode_floats(text.get<std::string>());
        FUZZ_CHECK(back.has_value() && back->size() == e.vectors[i].size());
        for (std::size_t k = 0; k < back->size(); ++k)
            FUZZ_CHECK(same_bits((*back)[k], e.vectors[i][k]));
    }
    return 0;
}
