// An emit_log_hook that keeps upstream keys out of the server log. PostgreSQL logs statement text
// on its own: the STATEMENT line of any failed statement (log_min_error_statement defaults to
// error), and with log_statement or log_min_duration_statement the "statement:", "duration:" and
// "execute <name>:" lines, with the bound values in a "parameters: $1 = '...'" detail. A failed
// register_external_service(..., api_key => 'sk-...') (no privilege, a misspelt argument, a bad
// tags value, a syntax error elsewhere in the statement) fails before or outside the extension's
// code, so only a log hook sees all of these.
//
// When the statement being run is key-bearing (it names a function that takes a key, or an
// api_key argument; or it EXECUTEs a prepared statement that does), or a text of the report is:
//   - hide_stmt drops the STATEMENT line (stderr, csvlog and jsonlog all honour it);
//   - every string literal in the message, detail, hint, context and internal query becomes
//     '[redacted]': the "statement:"/"duration:"/"execute" lines, bound parameter values, a
//     syntax error quoting the key token, PL/pgSQL's CONTEXT "SQL statement "..."" and QUERY.
// The hook runs before the report is sent to the client, so the client sees the same text.
//
// It runs inside error reporting, perhaps while reporting an out-of-memory error or recursing
// through one: it holds no C++ object with a destructor, calls only noexcept core functions that
// allocate nothing, allocates its replacements in ErrorContext without raising an error when
// memory is short (a field it cannot copy is overwritten in place instead), and never reports.
#include "log_redaction.h"

#include "cpp_wall.h"

extern "C" {
#include "commands/prepare.h"
#include "parser/parser.h"
#include "tcop/tcopprot.h"
#include "utils/elog.h"
#include "utils/memutils.h"
#include "utils/plancache.h"
}

#include <algorithm>
#include <cstring>
#include <string_view>

#include "redact.h"
#include "statement_redact.h"

namespace pgi::pg {

namespace {

emit_log_hook_type previous_emit_log_hook = nullptr;

// Whether the report was raised by this extension's own C++ code (through the C++/PostgreSQL
// wall, which reports in kReportDomain). Its texts are already free of keys (errors from the
// core pass through the key scrubber before they become a report) and are left readable:
// `service "x" already exists` stays as it is. An error from PostgreSQL that the extension caught
// and re-threw keeps PostgreSQL's domain, so it is scrubbed like any other. The report's file
// name cannot serve: PostgreSQL keeps only its base name.
bool raised_by_extension(const ErrorData *edata) {
    return edata->domain != nullptr && std::strcmp(edata->domain, kReportDomain) == 0;
}

bool key_bearing(const char *text) {
    return text != nullptr && pgi::is_key_bearing(std::string_view(text));
}

// The statement this backend is running, or the prepared statement it EXECUTEs.
bool statement_is_key_bearing() {
    if (debug_query_string == nullptr)
        return false;
    if (key_bearing(debug_query_string))
        return true;
    char name[NAMEDATALEN];
    if (!pgi::executed_statement_name(debug_query_string, name, sizeof name))
        return false;
    // A hash lookup: no allocation, and no error when the name is unknown.
    PreparedStatement *prepared = FetchPreparedStatement(name, false);
    return prepared != nullptr && prepared->plansource != nullptr &&
           key_bearing(prepared->plansource->query_string);
}

// Replaces the string literals of one palloc'd field of the report.
void scrub(char **field, bool sql_only, bool quoted_values = false) {
    if (*field == nullptr)
        return;
    const std::size_t size = std::strlen(*field);
    const std::string_view text(*field, size);
    if (text.find_first_of(quoted_values ? "'$\"" : "'$") == std::string_view::npos)
        return;  // no literal can start here
    pgi::LiteralSyntax syntax;
    syntax.standard_strings = standard_conforming_strings || pgi::quotes_parameters(text);
    syntax.sql_only = sql_only;
    syntax.quoted_values = quoted_values;
    const std::size_t need = pgi::redact_literals(text, syntax, nullptr, 0);
    char *copy = nullptr;
    if (need < MaxAllocSize - 1)
        copy = static_cast<char *>(
            MemoryContextAllocExtended(ErrorContext, need + 1, MCXT_ALLOC_NO_OOM));
    if (copy == nullptr) {
        // Out of memory: the field's text is lost rather than logged.
        const std::size_t keep = std::min(size, pgi::kRedacted.size());
        std::memcpy(*field, pgi::kRedacted.data(), keep);
        (*field)[keep] = '\0';
        return;
    }
    pgi::redact_literals(text, syntax, copy, need);
    copy[need] = '\0';
    pfree(*field);  // errfinish frees the report's fields: the replacement must be palloc'd too
    *field = copy;
}

void redact_report(ErrorData *edata) {
    if (statement_is_key_bearing() || key_bearing(edata->message) || key_bearing(edata->detail) ||
        key_bearing(edata->detail_log) || key_bearing(edata->context) ||
        key_bearing(edata->internalquery)) {
        edata->hide_stmt = true;
        if (!raised_by_extension(edata)) {
            // PostgreSQL's own errors quote the value they refuse ("malformed array literal"),
            // which is the key itself when it went into the wrong argument.
            scrub(&edata->message, false, true);
            scrub(&edata->detail, false, true);
            scrub(&edata->detail_log, false, true);
            scrub(&edata->hint, false, true);
        }
        // Context and query quote the caller's SQL, whoever raised the error.
        scrub(&edata->context, false);
        scrub(&edata->internalquery, true);
        if (edata->internalquery != nullptr &&
            static_cast<std::size_t>(edata->internalpos) > std::strlen(edata->internalquery))
            edata->internalpos = 0;
    }
    if (previous_emit_log_hook)
        previous_emit_log_hook(edata);
}

}  // namespace

void log_redaction_install() {
    previous_emit_log_hook = emit_log_hook;
    emit_log_hook = redact_report;
}

}  // namespace pgi::pg
