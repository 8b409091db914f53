// The library and the extension's SQL objects must be of one version: a library that calls
// functions of another version's SQL would read arguments that are not there. After a new
// library is installed, the SQL objects stay at the old version until ALTER EXTENSION
// pg_inference UPDATE (docs/operations.md, Upgrades); until then every SQL function refuses with
// a hint saying so, and the background workers wait.
#pragma once

#include <optional>
#include <string>

namespace pgi::pg {

// The library's version (the control file's default_version when it was built).
const char *library_version();

// The version of the extension installed in the current database; none when it is not.
// C++ callers: PostgreSQL errors become PgError.
std::optional<std::string> installed_version();

// Whether the extension is installed in the current database at the library's version. A
// background worker that finds it at another version logs that once and waits.
bool extension_ready(const char *worker_name);

// For every SQL-callable function, before it reads an argument (a C frame: reports with
// ereport). Passes while CREATE EXTENSION or ALTER EXTENSION runs the scripts.
void require_matching_sql();

}  // namespace pgi::pg
