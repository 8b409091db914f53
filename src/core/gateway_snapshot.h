// A gateway Snapshot from JSON: the format of gateway_standalone's --snapshot file, and a
// convenient way for tests to describe a catalog.
//
//   {"services": [{"name", "model", "base_url", "protocol" (default OPENAI_V1), "api_key",
//                  "allow_insecure", "rerank_route" ("ranking" | "rerank"),
//                  "request_timeout_ms", "ca_file", "client_cert_file", "client_key_file"}],
//    "keys": [{"name", "key" (plain text, hashed here) or "key_hash" (SHA-256 hex), "tenant",
//              "services" (array, or null for every service), "expires_at_ms", "revoked",
//              "requests_per_minute", "requests_per_hour", "burst", "tokens_per_hour"}],
//    "routes": [{"name", "targets" ([{"service", "weight", "priority"}]), "fallback_on",
//                "cooldown_ms"}]}
#pragma once

#include <nlohmann/json.hpp>

#include "gateway.h"

namespace pgi::gateway {

// Throws pgi::Error (22023) naming the entry and field that is wrong.
Snapshot snapshot_from_json(const nlohmann::json &document);

}  // namespace pgi::gateway
