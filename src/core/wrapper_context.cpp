#include "wrapper_context.h"

namespace pgi {

namespace {

constexpr std::string_view kPlpgsql = "PL/pgSQL function ";
constexpr std::string_view kSqlFunction = "SQL function \"";
constexpr std::string_view kSqlStatement = "SQL statement \"";

bool starts_with(std::string_view text, std::string_view prefix) noexcept {
    return text.substr(0, prefix.size()) == prefix;
}

// A PL/pgSQL function's line names it with its schema.
bool own_plpgsql_line(std::string_view line) noexcept {
    if (!starts_with(line, kPlpgsql))
        return false;
    line.remove_prefix(kPlpgsql.size());
    return starts_with(line, "inference.") || starts_with(line, "inference_internal.");
}

bool own_sql_line(std::string_view line) noexcept {
    if (!starts_with(line, kSqlFunction))
        return false;
    line.remove_prefix(kSqlFunction.size());
    for (std::string_view name : kSqlWrappers) {
        if (starts_with(line, name) && line.substr(name.size(), 2) == "\" ")
            return true;
    }
    return false;
}

// The line starting at `at`, without its line break.
std::string_view line_at(std::string_view text, std::size_t at) noexcept {
    const std::size_t end = text.find('\n', at);
    return text.substr(at, end == std::string_view::npos ? std::string_view::npos : end - at);
}

// Past the line starting at `at` and its line break.
std::size_t after_line(std::string_view text, std::size_t at) noexcept {
    const std::size_t end = text.find('\n', at);
    return end == std::string_view::npos ? text.size() : end + 1;
}

}  // namespace

std::size_t wrapper_context_length(std::string_view context) noexcept {
    std::size_t at = 0;
    while (at < context.size()) {
        const std::string_view line = line_at(context, at);
        if (own_plpgsql_line(line) || own_sql_line(line)) {
            at = after_line(context, at);
            continue;
        }
        if (!starts_with(line, kSqlStatement))
            break;
        // A statement a PL/pgSQL function ran is quoted whole, line breaks included, and the
        // function's own line follows it: the statement is the wrapper's when that function is.
        const std::size_t function = context.find("\nPL/pgSQL function ", at);
        if (function == std::string_view::npos || !own_plpgsql_line(line_at(context, function + 1)))
            break;
        at = after_line(context, function + 1);
    }
    return at;
}

}  // namespace pgi
