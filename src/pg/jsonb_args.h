// jsonb arguments and results of SQL functions as nlohmann documents.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "cpp_wall.h"

namespace pgi::pg {

// Argument n, or nullopt when it is NULL or not passed.
std::optional<nlohmann::json> jsonb_arg(FunctionCallInfo fcinfo, int n);
// A jsonb Datum from JSON text.
Datum jsonb_datum(const std::string &text);

}  // namespace pgi::pg
