// The wall between C++ and PostgreSQL. Everything in src/pg includes PostgreSQL
// headers through this file, and every SQL-callable function is defined with PGI_FUNCTION.
//
// Two rules keep a server alive when C++ and PostgreSQL error handling meet:
//  1. A C++ exception must never cross a PostgreSQL frame, and a PostgreSQL longjmp must never
//     skip a live C++ destructor. PGI_FUNCTION runs the body inside `try`; the catch copies the
//     error into palloc'd memory, leaves the catch block (running every destructor), and only
//     then calls ereport.
//  2. PostgreSQL calls made from C++ code with live destructors go through pg_guard(), whose
//     sigsetjmp sits below any RAII object: a PostgreSQL ERROR becomes a PgError exception that
//     carries the original ErrorData (and so the SQLSTATE) up to PGI_FUNCTION, which re-throws it.
#pragma once

extern "C" {
#include "postgres.h"

#include "fmgr.h"
#include "utils/builtins.h"
}

// port.h turns the printf family into macros (snprintf -> pg_snprintf), which breaks C++
// headers that call std::snprintf (nlohmann/json). Every src/pg header reaches postgres.h through
// this file, so the macros are gone before any C++ header can see them; PostgreSQL's own
// reporting goes through errmsg() and is unaffected.
#undef snprintf
#undef vsnprintf
#undef sprintf
#undef vsprintf
#undef fprintf
#undef vfprintf
#undef printf
#undef vprintf

#include <exception>
#include <optional>
#include <string>
#include <vector>

#include "error.h"
#include "extension_version.h"

#if PG_VERSION_NUM < 150000
// PostgreSQL 14 compatibility: InitMaterializedSRF and MarkGUCPrefixReserved arrived in 15.
extern "C" {
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/tuplestore.h"
}
inline void InitMaterializedSRF(FunctionCallInfo fcinfo, bits32) {
    auto *rsinfo = reinterpret_cast<ReturnSetInfo *>(fcinfo->resultinfo);
    if (rsinfo == nullptr || !IsA(rsinfo, ReturnSetInfo) ||
        !(rsinfo->allowedModes & SFRM_Materialize))
        ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
                        errmsg("set-valued function called in context that cannot accept a set")));
    MemoryContext old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
    TupleDesc desc;
    if (get_call_result_type(fcinfo, nullptr, &desc) != TYPEFUNC_COMPOSITE)
        elog(ERROR, "return type must be a row type");
    rsinfo->returnMode = SFRM_Materialize;
    rsinfo->setResult = tuplestore_begin_heap(true, false, work_mem);
    rsinfo->setDesc = desc;
    MemoryContextSwitchTo(old);
}
inline void MarkGUCPrefixReserved(const char *prefix) {
    EmitWarningsOnPlaceholders(prefix);
}
#endif

namespace pgi::pg {

// The message domain of the errors the extension raises from its C++ code. Their texts never
// hold a key (the core scrubs them first); the server-log hook tells them from PostgreSQL's own
// reports by it and leaves them readable. PostgreSQL keeps only a report's file base name, so
// the file cannot serve. No message catalog exists for it: texts are shown as written.
inline constexpr const char kReportDomain[] = "pg_inference";

// A PostgreSQL error caught by pg_guard, travelling as a C++ exception.
class PgError : public std::exception {
  public:
    explicit PgError(ErrorData *data) : data_(data) {}
    const char *what() const noexcept override { return data_->message ? data_->message : "error"; }
    ErrorData *data() const { return data_; }

  private:
    ErrorData *data_;
};

// A PostgreSQL error as a core error: the SQLSTATE, message, detail and hint copied into C++
// memory, so that it outlives the memory context the ErrorData lives in (a transaction's).
pgi::Error to_error(const PgError &e);
// Whether e is a query cancel (pg_cancel_backend, a statement timeout) in either form.
bool is_cancel(const std::exception &e);
// SQLSTATE text ("22023") to PostgreSQL's code; XX000 for anything malformed.
int sqlstate_code(const std::string &sqlstate);

// Runs a callable that makes PostgreSQL calls; turns a PostgreSQL ERROR into PgError. The callable
// must not own objects with destructors: a longjmp out of it would skip them.
template <typename F>
void pg_guard_void(F &&f) {
    MemoryContext cxt = CurrentMemoryContext;
    ErrorData *volatile caught = nullptr;
    PG_TRY();
    { f(); }
    PG_CATCH();
    {
        MemoryContextSwitchTo(cxt);
        caught = CopyErrorData();
        FlushErrorState();
    }
    PG_END_TRY();
    if (caught)
        throw PgError(caught);
}

template <typename F>
auto pg_guard(F &&f) -> decltype(f()) {
    decltype(f()) result{};
    pg_guard_void([&]() { result = f(); });
    return result;
}

// The body of every SQL-callable function runs through here (see PGI_FUNCTION).
Datum invoke_cpp(Datum (*body)(FunctionCallInfo), FunctionCallInfo fcinfo);

// The WaitHook that curl loops call while waiting: it lets PostgreSQL process interrupts, so
// statement_timeout, pg_cancel_backend and termination raise PostgreSQL's own error (as PgError,
// after the HTTP client has released its transfers).
void check_for_interrupts();

// Argument helpers. They copy into std::string, so the C++ side never holds pointers into
// PostgreSQL memory.
std::optional<std::string> text_arg(FunctionCallInfo fcinfo, int n);
std::string required_text_arg(FunctionCallInfo fcinfo, int n, const char *name);
std::optional<std::vector<std::optional<std::string>>> text_array_arg(FunctionCallInfo fcinfo,
                                                                      int n);
// A text[] of labels (functions, tags, fallback conditions), checked by validate::labels (no
// NULL elements, no control characters); empty when NULL.
std::vector<std::string> labels_arg(FunctionCallInfo fcinfo, int n, const char *what);
std::optional<bool> bool_arg(FunctionCallInfo fcinfo, int n);
// An interval argument in microseconds (a month counts 30 days); nullopt when NULL.
std::optional<int64_t> interval_arg_us(FunctionCallInfo fcinfo, int n);
Datum text_datum(const std::string &s);
// One row of the function's composite result type.
Datum composite_datum(FunctionCallInfo fcinfo, Datum *values, bool *nulls);
Datum text_array_datum(const std::vector<std::string> &items);

}  // namespace pgi::pg

// Defines an SQL-callable function `fname` whose C++ body follows the macro. It first refuses
// when the extension's SQL objects are at another version than the library (before the body
// could read an argument that version does not pass).
#define PGI_FUNCTION(fname)                               \
    extern "C" {                                          \
    PG_FUNCTION_INFO_V1(fname);                           \
    }                                                     \
    static Datum fname##_body(FunctionCallInfo fcinfo);   \
    extern "C" Datum fname(PG_FUNCTION_ARGS) {            \
        pgi::pg::require_matching_sql();                  \
        return pgi::pg::invoke_cpp(fname##_body, fcinfo); \
    }                                                     \
    static Datum fname##_body(FunctionCallInfo fcinfo)
