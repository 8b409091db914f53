// Validation of the user-supplied fields of a service. Registration, update
// and the gateway's snapshot loader all call these, so a value is judged the same way everywhere.
// Every refusal is a pgi::Error with SQLSTATE 22023 (invalid_parameter_value), a PostgreSQL-style
// message that quotes the offending value (escaped, and never an API key or URL credentials) and a
// hint that says what to do instead.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace pgi::validate {

// Upper bounds, exported so the SQL layer and the tests state the same numbers.
inline constexpr std::size_t kMaxServiceName = 63;
inline constexpr std::size_t kMaxModel = 256;
inline constexpr std::size_t kMaxBaseUrl = 2048;
inline constexpr std::size_t kMaxApiKey = 4096;
inline constexpr std::size_t kMaxLabel = 256;

// DNS-style name: segments of [a-z0-9-] separated by '.', no empty segment, no segment starting
// or ending with '-', 1 to 63 characters in all. Routes share the form (and the namespace);
// `what` names the kind in the messages.
void service_name(const std::string &name, const char *what = "service");

// The upstream's own model id, case-sensitive: 1 to 256 characters, no whitespace (ASCII or
// Unicode) or control characters, no '?' or '#'; '/' separates segments, none of which may be
// empty, "." or ".." (also when written as %2e). Callers still percent-encode it in URL paths.
void model(const std::string &model);

// Checks a base URL and returns its normal form: lowercase scheme and host, the port as a plain
// number if one was given, the path prefix without trailing '/'. Only http and https, a host name,
// IPv4 address or [IPv6] address, no credentials, query, fragment, whitespace, control or
// non-ASCII characters, no "." or ".." or empty path segment, and no trailing "/v1" or "/v1beta"
// (each protocol appends its own version path).
std::string base_url(const std::string &url);

// An upstream API key as stored: the key alone (printable ASCII, no whitespace, so it cannot
// inject a header line, at most 4096 characters, not prefixed with "Bearer "), or "env:NAME" to
// read it from the server's environment at call time. Messages never contain the key.
void api_key(const std::string &key);

// NAME for a valid "env:NAME" api_key, nullopt for a literal key (api_key() refuses an "env:"
// value whose NAME is not [A-Za-z_][A-Za-z0-9_]*, so such a value is never stored).
std::optional<std::string> env_key_name(const std::string &api_key);

// Elements of a text[] of labels (functions, tags): no NULL elements, no control characters,
// each at most 256 characters. `what` names the argument in messages ("functions").
void labels(const std::vector<std::optional<std::string>> &values, const char *what);

// A user-supplied value made safe to put between quotes in an error message: control characters
// and invalid UTF-8 escaped (\n, \r, \t, \xNN, \uNNNN) so a message can never carry a raw line
// break or break the server's encoding, and cut after max_chars characters with "..." appended.
std::string display_value(const std::string &value, std::size_t max_chars = 64);

}  // namespace pgi::validate
