// The library and the extension's SQL objects must be of one version: a library that calls
// functions of another version's SQL would read arguments that are not there. After a new
// library is installed, the SQL objects stay at the old version until ALTER EXTENSION
// pg_inference UPDATE (docs/operations.md, Upgrades); until then every SQL function refuses with
// a hint saying so, and the background workers wait.
#pragma once

#include <optional>
#include <string>

extern "C" {
#include "postgres_ext.h"
}

namespace pgi::pg {

// The library's version (the control file's default_version when it was built).
const char *library_version();

// What a background worker finds in the current database: the extension (its oid and version;
// none when it is not installed) and whether it is at the library's version. A worker that finds
// it at another version logs that once and waits.
struct ExtensionState {
    struct Installed {
        Oid oid;
        std::string version;
    };
    std::optional<Installed> installed;
    bool ready = false;
};
ExtensionState extension_state(const char *worker_name);
inline bool extension_ready(const char *worker_name) {
    return extension_state(worker_name).ready;
}

// For every SQL-callable function, before it reads an argument (a C frame: reports with
// ereport). Passes while CREATE EXTENSION or ALTER EXTENSION runs the scripts.
void require_matching_sql();

}  // namespace pgi::pg
