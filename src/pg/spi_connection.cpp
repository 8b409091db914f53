#include "spi_connection.h"

extern "C" {
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
}

#include <cstring>

namespace pgi::pg {

SpiArg spi_text(const char *s) {
    return spi_text(std::string(s));
}

SpiArg spi_text(const std::string &s) {
    return {TEXTOID, text_datum(s), false};
}

SpiArg spi_text(const std::optional<std::string> &s) {
    return s ? spi_text(*s) : SpiArg{TEXTOID, 0, true};
}

SpiArg spi_bytea(const std::optional<std::string> &s) {
    if (!s)
        return {BYTEAOID, 0, true};
    bytea *b = pg_guard([&]() {
        auto *v = static_cast<bytea *>(palloc(VARHDRSZ + s->size()));
        SET_VARSIZE(v, VARHDRSZ + s->size());
        memcpy(VARDATA(v), s->data(), s->size());
        return v;
    });
    return {BYTEAOID, PointerGetDatum(b), false};
}

SpiArg spi_text_array(const std::optional<std::vector<std::string>> &v) {
    if (!v)
        return {TEXTARRAYOID, 0, true};
    return {TEXTARRAYOID, text_array_datum(*v), false};
}

SpiArg spi_bool(bool b) {
    return {BOOLOID, BoolGetDatum(b), false};
}

SpiArg spi_int8(const std::optional<int64_t> &v) {
    return v ? SpiArg{INT8OID, Int64GetDatum(*v), false} : SpiArg{INT8OID, 0, true};
}

std::vector<SpiArg> spi_texts(const std::vector<std::string> &args) {
    std::vector<SpiArg> out;
    out.reserve(args.size());
    for (const std::string &a : args)
        out.push_back(spi_text(a));
    return out;
}

SpiConnection::SpiConnection() {
    pg_guard_void([]() {
        MemoryContext caller = CurrentMemoryContext;
        if (SPI_connect() != SPI_OK_CONNECT)
            elog(ERROR, "SPI_connect failed");
        MemoryContextSwitchTo(caller);
    });
}

SpiConnection::~SpiConnection() {
    MemoryContext cxt = CurrentMemoryContext;
    PG_TRY();
    { SPI_finish(); }
    PG_CATCH();
    {
        MemoryContextSwitchTo(cxt);
        FlushErrorState();
    }
    PG_END_TRY();
}

uint64 SpiConnection::exec(const char *sql, const std::vector<SpiArg> &args, bool read_only,
                           long limit) {
    std::vector<Oid> types;
    std::vector<Datum> values;
    std::string nulls;
    for (const SpiArg &a : args) {
        types.push_back(a.type);
        values.push_back(a.value);
        nulls.push_back(a.isnull ? 'n' : ' ');
    }
    return pg_guard([&]() {
        int rc = SPI_execute_with_args(sql, static_cast<int>(args.size()), types.data(),
                                       values.data(), nulls.c_str(), read_only, limit);
        if (rc < 0)
            elog(ERROR, "SPI_execute_with_args failed: %s", SPI_result_code_string(rc));
        return SPI_processed;
    });
}

std::optional<std::string> SpiConnection::string_at(uint64 row, int col) {
    bool isnull = false;
    Datum d = pg_guard([&]() {
        return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);
    });
    if (isnull)
        return std::nullopt;
    auto *t = pg_guard([&]() { return DatumGetTextPP(d); });
    return std::string(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

bool SpiConnection::bool_at(uint64 row, int col) {
    bool isnull = false;
    Datum d = pg_guard([&]() {
        return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);
    });
    return !isnull && DatumGetBool(d);
}

std::optional<int64_t> SpiConnection::int64_at(uint64 row, int col) {
    bool isnull = false;
    Datum d = pg_guard([&]() {
        return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);
    });
    if (isnull)
        return std::nullopt;
    return static_cast<int64_t>(DatumGetInt64(d));
}

std::vector<std::string> SpiConnection::strings_at(uint64 row, int col) {
    bool isnull = false;
    Datum *elems = nullptr;
    bool *nulls = nullptr;
    int count = 0;
    pg_guard_void([&]() {
        Datum d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, &isnull);
        if (!isnull)
            deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT, &elems,
                              &nulls, &count);
    });
    std::vector<std::string> out;
    for (int i = 0; i < count; i++) {
        if (nulls[i])
            continue;
        auto *t = pg_guard([&]() { return DatumGetTextPP(elems[i]); });
        out.emplace_back(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
    }
    return out;
}

std::vector<SpiTextRow> SpiConnection::text_rows() {
    std::vector<SpiTextRow> rows;
    // Statements without RETURNING have a count but no tuple table.
    const uint64 n = SPI_tuptable != nullptr ? SPI_processed : 0;
    const int columns = n > 0 ? SPI_tuptable->tupdesc->natts : 0;
    for (uint64 r = 0; r < n; r++) {
        SpiTextRow row;
        for (int c = 1; c <= columns; c++) {
            // Each value is copied out and freed at once: the values live in the caller's
            // context, which may outlast many statements.
            char *v = pg_guard(
                [&]() { return SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, c); });
            if (v == nullptr) {
                row.emplace_back(std::nullopt);
                continue;
            }
            row.emplace_back(std::string(v));
            pg_guard_void([&]() { pfree(v); });
        }
        rows.push_back(std::move(row));
    }
    return rows;
}

}  // namespace pgi::pg
