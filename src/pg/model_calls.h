// What the SQL functions that call services share with the pipeline worker.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "protocol.h"
#include "translate.h"

namespace pgi::pg {

// Embeds inputs in batches of inference.embedding_batch_size, up to inference.max_concurrency
// requests in flight; vectors come back in input order. The answers' usage is added to usage.
// An upstream failure is thrown as AttemptFailed (route_calls.h).
std::vector<std::vector<float>> embed(const ServiceEndpoint &service,
                                      const std::vector<std::string> &inputs,
                                      const nlohmann::json &options, translate::Usage &usage);

}  // namespace pgi::pg
