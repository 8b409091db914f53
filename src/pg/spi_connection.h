// The one way src/pg runs SQL through SPI: a connection for the length of one operation, its
// parameters typed, its results read as C++ values. Callers run inside a transaction (a
// function's own, or run_in_transaction's in a worker).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cpp_wall.h"

namespace pgi::pg {

// One parameter of a statement: its type, its value and whether it is NULL.
struct SpiArg {
    Oid type;
    Datum value;
    bool isnull;
};

SpiArg spi_text(const char *s);
SpiArg spi_text(const std::string &s);
SpiArg spi_text(const std::optional<std::string> &s);  // NULL when empty
SpiArg spi_bytea(const std::optional<std::string> &s);
SpiArg spi_text_array(const std::optional<std::vector<std::string>> &v);
SpiArg spi_bool(bool b);
SpiArg spi_int8(const std::optional<int64_t> &v);
// Every argument as text, for statements that cast their parameters themselves.
std::vector<SpiArg> spi_texts(const std::vector<std::string> &args);

// A row of a result, each column in its text form (NULL as nullopt).
using SpiTextRow = std::vector<std::optional<std::string>>;

// One SPI connection for the duration of an operation. SPI_finish runs on every exit; an error
// inside it is swallowed because a destructor must not throw and transaction abort cleans SPI up
// anyway. Work stays in the caller's memory context instead of SPI's: SPI_finish deletes SPI's
// context during unwinding, and the copy of an error that pg_guard makes there would be freed
// before the PgError carrying it is caught.
class SpiConnection {
  public:
    SpiConnection();
    ~SpiConnection();
    SpiConnection(const SpiConnection &) = delete;
    SpiConnection &operator=(const SpiConnection &) = delete;

    // Runs `sql` (at most `limit` rows, 0 for all); the number of rows it returned or changed.
    uint64 exec(const char *sql, const std::vector<SpiArg> &args, bool read_only, long limit = 0);

    // Columns of the last result's rows, numbered from 1. A text or bytea column (both share the
    // varlena layout):
    std::optional<std::string> string_at(uint64 row, int col);
    bool bool_at(uint64 row, int col);  // NULL reads as false
    std::optional<int64_t> int64_at(uint64 row, int col);
    std::vector<std::string> strings_at(uint64 row, int col);  // a text[]; NULL elements skipped
    // Every row of the last result in text form; none for a statement without RETURNING.
    std::vector<SpiTextRow> text_rows();
};

}  // namespace pgi::pg
