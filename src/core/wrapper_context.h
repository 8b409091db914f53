// Which lines of an error's CONTEXT describe the extension's own SQL wrappers. The API is a layer
// of SQL and PL/pgSQL functions (SECURITY DEFINER, with a fixed search_path) over C functions, so
// every error it raises would otherwise carry lines such as
//   SQL statement "SELECT inference_internal.check_access_key_fields(...)"
//   PL/pgSQL function inference.create_access_key(text,...) line 14 at PERFORM
//   SQL function "register_external_service" statement 1
// which tell a caller nothing but how the extension is built. Those are the innermost lines of
// the context (PostgreSQL writes the innermost call first); the caller's own lines, which follow,
// are kept.
//
// Runs inside PostgreSQL's error reporting: nothing here allocates or throws.
#pragma once

#include <cstddef>
#include <string_view>

namespace pgi {

// The functions of the extension written in SQL (not PL/pgSQL): PostgreSQL names them in a
// context line without their schema.
inline constexpr std::string_view kSqlWrappers[] = {
    "list_models",    "register_external_service", "update_external_service", "check_service",
    "pause_pipeline", "resume_pipeline",
};

// The length of the leading part of `context` made of the wrappers' lines, with the line break
// after them: what to cut so that only the caller's lines remain (all of it when there are none).
std::size_t wrapper_context_length(std::string_view context) noexcept;

}  // namespace pgi
