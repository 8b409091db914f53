// Reading the numbers of a caller's request, for the modules whose dialects share OpenAI's
// conventions (Responses, legacy completions): a member that is absent or null is unset, anything
// else must be of the right kind, or the caller gets a 22023 error naming the member, with the
// dialect's hint.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>

namespace pgi::protocols {

// An integer member of at least `min`.
std::optional<long long> integer_member(const nlohmann::json &object, const char *key,
                                        long long min, const char *hint);
// A number member.
std::optional<double> number_member(const nlohmann::json &object, const char *key,
                                    const char *hint);

}  // namespace pgi::protocols
