// Gemini's embedding routes as a caller dialect: models/{m}:embedContent (one content) and
// :batchEmbedContents (several, as the Gen AI SDK sends a multi-input embedContent), for a
// service of any protocol that embeds. A Gemini service gets the caller's body with only the
// model names set; an OpenAI-protocol service gets an embeddings call for the same texts, and its
// vectors come back in Gemini's shape.
//
// Crossing protocols, only text parts are carried (joined per content, as Gemini embeds a
// content's parts together) and outputDimensionality becomes dimensions; taskType and title have
// no OpenAI counterpart and are dropped (docs/dialects.md).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "protocol.h"
#include "translate.h"
#include "translate_embeddings.h"

namespace pgi::gemini_embeddings {

struct Call {
    bool batch = false;  // :batchEmbedContents
    std::vector<std::string> texts;
    nlohmann::json options = nlohmann::json::object();  // dimensions, for translate's call
};

// The caller's request. Bad input is 22023 naming the member; contents with no text part, or
// requests of one batch asking different dimensions, 0A000 when crossing.
Call read(const nlohmann::json &body, bool batch);

// The upstream call: the caller's body for a Gemini service (each request's model set to the
// service's), else translate's embeddings call. body may be edited.
translate::UpstreamRequest request(const ServiceEndpoint &service, const Call &call,
                                   nlohmann::json &body);

// The caller's answer for the upstream's 2xx body: a Gemini service's own body as it is,
// else {"embedding":{"values":[...]}} or {"embeddings":[{"values":[...]}, ...]}. usage is what
// the upstream reported (Gemini reports none).
std::string answer(const ServiceEndpoint &service, const Call &call, std::string upstream_body,
                   translate::Usage &usage);

}  // namespace pgi::gemini_embeddings
