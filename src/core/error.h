// Errors raised by the pure C++ core. The PostgreSQL shell turns them into ereport(ERROR) with
// the same SQLSTATE, message, detail and hint, so core code can fail the way PostgreSQL users
// expect without ever including postgres.h.
#pragma once

#include <stdexcept>
#include <string>

namespace pgi {

// SQLSTATEs used by the core, as their five-character text. The PG side maps them with
// MAKE_SQLSTATE; keeping them textual keeps postgres.h out of the core.
namespace sqlstate {
inline constexpr const char *kInvalidParameterValue = "22023";
inline constexpr const char *kUniqueViolation = "23505";
inline constexpr const char *kUndefinedObject = "42704";
inline constexpr const char *kDuplicateObject = "42710";
inline constexpr const char *kFeatureNotSupported = "0A000";
inline constexpr const char *kInsufficientPrivilege = "42501";
inline constexpr const char *kInternalError = "XX000";
inline constexpr const char *kConfigFileError = "F0000";
// Upstream failures. 08001: the endpoint could not be reached at all (DNS, refused, timeout, TLS).
inline constexpr const char *kUpstreamUnreachable = "08001";
// Project-specific class "PI": the upstream answered, but with an error status.
inline constexpr const char *kUpstreamAuth = "PI401";         // key missing or refused
inline constexpr const char *kUpstreamForbidden = "PI403";    // key lacks permission
inline constexpr const char *kUpstreamNotFound = "PI404";     // wrong base URL or model
inline constexpr const char *kUpstreamRateLimit = "PI429";    // rate limited or quota exhausted
inline constexpr const char *kUpstreamServer = "PI500";       // 5xx
inline constexpr const char *kUpstreamBadResponse = "PI400";  // other status or unparsable body
}  // namespace sqlstate

class Error : public std::runtime_error {
  public:
    Error(std::string sqlstate, std::string message, std::string hint = {}, std::string detail = {})
        : std::runtime_error(message),
          sqlstate_(std::move(sqlstate)),
          hint_(std::move(hint)),
          detail_(std::move(detail)) {}

    const std::string &sqlstate() const { return sqlstate_; }
    const std::string &hint() const { return hint_; }
    const std::string &detail() const { return detail_; }

  private:
    std::string sqlstate_;
    std::string hint_;
    std::string detail_;
};

// Thrown by a wait hook when the host (a PostgreSQL backend) has an interrupt pending. Code that
// catches it must release network state and let the host raise its own error.
class Interrupted : public std::exception {
  public:
    const char *what() const noexcept override { return "interrupted"; }
};

}  // namespace pgi
