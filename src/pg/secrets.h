// API keys at rest: AES-256-GCM under a per-cluster key, bound to the service name,
// or an `env:NAME` reference resolved from the server's environment at call time.
#pragma once

#include <string>

namespace pgi::pg {

// Encrypts a plain API key for storage in inference.service_secrets.
std::string seal_api_key(const std::string &service, const std::string &api_key);
// Decrypts a stored key. Errors never contain key material.
std::string open_api_key(const std::string &service, const std::string &sealed);
// Reads an `env:NAME` key; errors when the variable is unset or empty.
std::string read_env_api_key(const std::string &env_name);

}  // namespace pgi::pg
