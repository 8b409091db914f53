// Keeping upstream keys out of the server log when PostgreSQL itself quotes a statement: the
// STATEMENT line of a failed call, log_statement's "statement: ..." lines, the "duration: ..."
// lines of log_min_duration_statement, the "parameters: $1 = '...'" detail of a bound call, a
// syntax error that quotes the key token, the CONTEXT and QUERY lines of PL/pgSQL.
//
// Nothing here knows the key: a statement that could carry one (it names a function that takes
// a key, or an api_key argument) has every string literal of the texts logged about it replaced.
//
// Everything here runs inside PostgreSQL's error reporting (an emit_log_hook), possibly while an
// error is being reported out of memory: no function allocates, throws or calls anything that
// could, except the std::string conveniences at the end, meant for tests.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace pgi {

// Whether a text names register_external_service or update_external_service (the API's or the
// internal C entry points of the same names, the only functions that take an upstream key), or an
// api_key argument. Case-insensitive and matched as whole words anywhere in the text, so a
// schema prefix, double quotes, odd whitespace, a DO block's body or a PL/pgSQL function's
// source all count; deregister_external_service and api_key_env do not.
bool is_key_bearing(std::string_view text) noexcept;

// Whether a text quotes bound parameter values as PostgreSQL logs them ("parameters: $1 = '...'",
// "portal ... with parameters: ..."): their quotes are doubled, never backslash-escaped, whatever
// standard_conforming_strings says.
bool quotes_parameters(std::string_view text) noexcept;

// How a text is scanned for literals.
struct LiteralSyntax {
    // standard_conforming_strings: whether a backslash in '...' is an ordinary character.
    bool standard_strings = true;
    // The text is SQL alone (an internal query), so "..." is an identifier whose quotes are not
    // literals. Off for messages, which quote SQL tokens in double quotes ("at or near "'key'"").
    bool sql_only = false;
    // The text is one of PostgreSQL's own messages, which quote an offending value in double
    // quotes (malformed array literal: "..."): every "..." is replaced as well, since a key
    // passed in the wrong argument comes back that way.
    bool quoted_values = false;
};

// Writes the text with every SQL string literal replaced by '[redacted]': '...' (with ''),
// E'...' (with backslash escapes), U&'...', $$...$$ and $tag$...$tag$; an unterminated literal
// runs to the end of the text. Quotes inside -- and /* */ comments open nothing. Writes at most
// cap bytes to out (no terminating NUL) and returns the length of the whole result, like
// snprintf: call with cap 0 to size a buffer.
std::size_t redact_literals(std::string_view text, const LiteralSyntax &syntax, char *out,
                            std::size_t cap) noexcept;

// For `EXECUTE name [(args)]`: writes the prepared statement's name as PostgreSQL folds it
// (unquoted: lowercased; "quoted": as written, "" unescaped), NUL-terminated and cut to cap - 1
// bytes, and returns true. False for any other statement. Leading whitespace and comments are
// skipped.
bool executed_statement_name(std::string_view text, char *out, std::size_t cap) noexcept;

// redact_literals into a string (allocates; for tests and tools).
std::string redact_literals(std::string_view text, const LiteralSyntax &syntax = {});

}  // namespace pgi
