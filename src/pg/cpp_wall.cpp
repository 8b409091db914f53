#include "cpp_wall.h"

extern "C" {
#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
}

#include <new>

#include "error.h"
#include "validation.h"

namespace pgi::pg {

int sqlstate_code(const std::string &s) {
    if (s.size() != 5)
        return ERRCODE_INTERNAL_ERROR;
    return MAKE_SQLSTATE(s[0], s[1], s[2], s[3], s[4]);
}

pgi::Error to_error(const PgError &e) {
    const ErrorData *d = e.data();
    return pgi::Error(unpack_sql_state(d->sqlerrcode), d->message ? d->message : "error",
                      d->hint ? d->hint : "", d->detail ? d->detail : "");
}

bool is_cancel(const std::exception &e) {
    if (auto *pg = dynamic_cast<const PgError *>(&e))
        return pg->data()->sqlerrcode == ERRCODE_QUERY_CANCELED;
    if (auto *core = dynamic_cast<const pgi::Error *>(&e))
        return sqlstate_code(core->sqlstate()) == ERRCODE_QUERY_CANCELED;
    return false;
}

namespace {

// What a C++ body failed with, held in C++ memory until every destructor has run. Nothing in
// the catch handlers below may call PostgreSQL: an ERROR there (palloc out of memory) would
// longjmp out of a C++ catch block.
struct Failure {
    ErrorData *pg_error = nullptr;
    int code = ERRCODE_INTERNAL_ERROR;
    std::string message, hint, detail;
};

void capture(Failure &f, const char *message, int code) noexcept {
    f.code = code;
    try {
        f.message = message;
    } catch (...) {
        f.code = ERRCODE_OUT_OF_MEMORY;
    }
}

// Runs body; a failure is described in f instead of thrown.
Datum run_body(Datum (*body)(FunctionCallInfo), FunctionCallInfo fcinfo, Failure &f,
               bool &failed) noexcept {
    failed = true;
    try {
        Datum result = body(fcinfo);
        failed = false;
        return result;
    } catch (const PgError &e) {
        f.pg_error = e.data();
    } catch (const pgi::Interrupted &) {
        capture(f, "canceling statement due to an interrupt", ERRCODE_QUERY_CANCELED);
    } catch (const pgi::Error &e) {
        capture(f, e.what(), sqlstate_code(e.sqlstate()));
        try {
            f.hint = e.hint();
            f.detail = e.detail();
        } catch (...) {
        }
    } catch (const std::bad_alloc &) {
        f.code = ERRCODE_OUT_OF_MEMORY;
    } catch (const std::exception &e) {
        capture(f, e.what(), ERRCODE_INTERNAL_ERROR);
    } catch (...) {
        capture(f, "unknown C++ exception", ERRCODE_INTERNAL_ERROR);
    }
    return 0;
}

}  // namespace

Datum invoke_cpp(Datum (*body)(FunctionCallInfo), FunctionCallInfo fcinfo) {
    ErrorData *pg_error = nullptr;
    int code = ERRCODE_INTERNAL_ERROR;
    char *message = nullptr, *hint = nullptr, *detail = nullptr;
    {
        Failure f;
        bool failed = false;
        Datum result = run_body(body, fcinfo, f, failed);
        if (!failed)
            return result;
        pg_error = f.pg_error;
        code = f.code;
        // Copied into the function's memory context while no C++ exception is active. Running
        // out of memory here would skip f's destructor: a leak of a few bytes, never a crash.
        if (!pg_error) {
            message = pstrdup(f.message.empty() ? "out of memory" : f.message.c_str());
            hint = f.hint.empty() ? nullptr : pstrdup(f.hint.c_str());
            detail = f.detail.empty() ? nullptr : pstrdup(f.detail.c_str());
        }
    }
    // Every C++ destructor has run by now; it is safe to longjmp.
    // The statement text of a failing call may hold an API key (register/update take one as an
    // argument), so errors from these functions never log the statement.
    if (pg_error) {
        pg_error->hide_stmt = true;
        ReThrowError(pg_error);
    }
    ereport_domain(ERROR, kReportDomain,
                   (errcode(code), errmsg_internal("%s", message), hint ? errhint("%s", hint) : 0,
                    detail ? errdetail_internal("%s", detail) : 0, errhidestmt(true)));
    pg_unreachable();
}

void check_for_interrupts() {
    pg_guard_void([]() { CHECK_FOR_INTERRUPTS(); });
}

std::optional<std::string> text_arg(FunctionCallInfo fcinfo, int n) {
    if (PG_NARGS() <= n || PG_ARGISNULL(n))
        return std::nullopt;
    text *t = pg_guard([&]() { return PG_GETARG_TEXT_PP(n); });  // detoasting may fail
    return std::string(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

std::string required_text_arg(FunctionCallInfo fcinfo, int n, const char *name) {
    auto v = text_arg(fcinfo, n);
    if (!v)
        throw pgi::Error("22004", std::string(name) + " must not be NULL");
    return *v;
}

std::optional<std::vector<std::optional<std::string>>> text_array_arg(FunctionCallInfo fcinfo,
                                                                      int n) {
    if (PG_NARGS() <= n || PG_ARGISNULL(n))
        return std::nullopt;
    Datum *elems = nullptr;
    bool *nulls = nullptr;
    int count = 0;
    pg_guard_void([&]() {
        ArrayType *arr = PG_GETARG_ARRAYTYPE_P(n);
        if (ARR_NDIM(arr) > 1)
            ereport(ERROR, (errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
                            errmsg("array must be one-dimensional")));
        deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &count);
    });
    std::vector<std::optional<std::string>> out;
    out.reserve(count);
    for (int i = 0; i < count; i++) {
        if (nulls[i]) {
            out.emplace_back(std::nullopt);
        } else {
            text *t = pg_guard([&]() { return DatumGetTextPP(elems[i]); });
            out.emplace_back(std::string(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)));
        }
    }
    return out;
}

std::vector<std::string> labels_arg(FunctionCallInfo fcinfo, int n, const char *what) {
    auto raw = text_array_arg(fcinfo, n);
    std::vector<std::string> out;
    if (!raw)
        return out;
    validate::labels(*raw, what);
    for (auto &v : *raw)
        out.push_back(*v);
    return out;
}

std::optional<int64_t> interval_arg_us(FunctionCallInfo fcinfo, int n) {
    if (PG_NARGS() <= n || PG_ARGISNULL(n))
        return std::nullopt;
    const Interval *iv = PG_GETARG_INTERVAL_P(n);
    return iv->time + static_cast<int64_t>(iv->day) * USECS_PER_DAY +
           static_cast<int64_t>(iv->month) * DAYS_PER_MONTH * USECS_PER_DAY;
}

std::optional<bool> bool_arg(FunctionCallInfo fcinfo, int n) {
    if (PG_NARGS() <= n || PG_ARGISNULL(n))
        return std::nullopt;
    return PG_GETARG_BOOL(n);
}

Datum text_datum(const std::string &s) {
    return pg_guard(
        [&]() { return PointerGetDatum(cstring_to_text_with_len(s.data(), s.size())); });
}

Datum composite_datum(FunctionCallInfo fcinfo, Datum *values, bool *nulls) {
    return pg_guard([&]() {
        TupleDesc desc;
        if (get_call_result_type(fcinfo, nullptr, &desc) != TYPEFUNC_COMPOSITE)
            elog(ERROR, "return type must be a row type");
        desc = BlessTupleDesc(desc);
        return HeapTupleGetDatum(heap_form_tuple(desc, values, nulls));
    });
}

Datum text_array_datum(const std::vector<std::string> &items) {
    std::vector<Datum> datums;
    datums.reserve(items.size());
    for (const auto &s : items)
        datums.push_back(text_datum(s));
    return pg_guard([&]() {
        return PointerGetDatum(construct_array(datums.data(), static_cast<int>(datums.size()),
                                               TEXTOID, -1, false, TYPALIGN_INT));
    });
}

}  // namespace pgi::pg
