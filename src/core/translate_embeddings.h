// Embeddings: inputs to each protocol's embeddings call, the answer back to float vectors, and
// the OpenAI-shaped answer the gateway sends.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "protocol.h"
#include "translate.h"

namespace pgi::translate {

// Builds the upstream call for a batch of inputs. options (a JSON object, or null):
//   dimensions  positive integer (Gemini: outputDimensionality)
//   input_type  text; Gemini takes query, passage or one of its task types (query ->
//               RETRIEVAL_QUERY, passage -> RETRIEVAL_DOCUMENT)
//   truncate    NONE, START or END (any case), OPENAI_V1 only (NIM)
// Anything else is a 22023 error listing the valid options. ask_base64 asks an OPENAI_V1
// upstream for base64 floats, a quarter of the JSON to read; Gemini always answers in floats.
// ANTHROPIC_V1 has no embeddings: 0A000.
UpstreamRequest embeddings_request(const ServiceEndpoint &service,
                                   const std::vector<std::string> &inputs,
                                   const nlohmann::json &options, bool ask_base64);

struct Embeddings {
    std::vector<std::vector<float>> vectors;  // in input order
    Usage usage;                              // Gemini reports none
};

// Reads the upstream's 2xx body. OpenAI data[] is put in index order, each embedding a float
// array or base64 floats. Not exactly expected_count vectors, indexes that are missing or
// repeated, or a body that cannot be read are PI400 errors naming the service.
Embeddings embeddings_response(const ServiceEndpoint &service, std::string_view upstream_body,
                               std::size_t expected_count);

// The gateway's answer, serialised: {"object":"list","data":[{"object":"embedding","index",
// "embedding"}],"model","usage":{prompt_tokens,total_tokens}}, each embedding as base64 floats
// when base64_out (whatever the upstream sent) or as a float array in shortest round-trip form.
std::string embeddings_openai_response(const Embeddings &embeddings, bool base64_out,
                                       std::string_view model);

// An OpenAI embeddings request as the gateway receives it. "model" is the gateway's business
// and other unknown fields (user, vLLM's extras) are ignored.
struct EmbeddingsCall {
    std::vector<std::string> inputs;
    nlohmann::json options = nlohmann::json::object();  // dimensions, input_type, truncate
    bool base64_out = false;                            // encoding_format "base64"
};

// "input" must be a non-empty string or a non-empty array of non-empty strings (token arrays are
// 0A000); encoding_format "float" or "base64". Bad input is a 22023 error naming the position.
// Taken by value so the input strings are moved out rather than copied.
EmbeddingsCall parse_embeddings_call(nlohmann::json openai_request);

}  // namespace pgi::translate
