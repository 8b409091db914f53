#include "extension_version.h"

#include "cpp_wall.h"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
}

#include <cstring>

#ifndef PGI_VERSION
#error "PGI_VERSION is set by the Makefile from pg_inference.control"
#endif

namespace pgi::pg {

namespace {

// pg_extension's row of pg_inference, by the unique index on its name: a few microseconds.
// Returns a palloc'd string, or NULL when the extension is not installed.
char *read_installed_version() {
    char *version = nullptr;
    Relation rel = table_open(ExtensionRelationId, AccessShareLock);
    ScanKeyData key;
    ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
                CStringGetDatum("pg_inference"));
    SysScanDesc scan = systable_beginscan(rel, ExtensionNameIndexId, true, nullptr, 1, &key);
    HeapTuple tuple = systable_getnext(scan);
    if (HeapTupleIsValid(tuple)) {
        bool isnull = true;
        Datum d = heap_getattr(tuple, Anum_pg_extension_extversion, RelationGetDescr(rel), &isnull);
        if (!isnull)
            version = text_to_cstring(DatumGetTextPP(d));
    }
    systable_endscan(scan);
    table_close(rel, AccessShareLock);
    return version;
}

bool mismatch_logged = false;

}  // namespace

const char *library_version() {
    return PGI_VERSION;
}

std::optional<std::string> installed_version() {
    return pg_guard([]() -> std::optional<std::string> {
        char *v = read_installed_version();
        if (v == nullptr)
            return std::nullopt;
        std::string out(v);
        pfree(v);
        return out;
    });
}

bool extension_ready(const char *worker_name) {
    const std::optional<std::string> installed = installed_version();
    if (!installed)
        return false;
    if (*installed == PGI_VERSION) {
        mismatch_logged = false;
        return true;
    }
    if (!mismatch_logged) {
        mismatch_logged = true;
        const std::string message = std::string(worker_name) + ": the extension is at version " +
                                    *installed + ", the library at " + PGI_VERSION +
                                    "; waiting for ALTER EXTENSION pg_inference UPDATE";
        pg_guard_void([&]() { ereport(LOG, (errmsg("%s", message.c_str()))); });
    }
    return false;
}

void require_matching_sql() {
    if (creating_extension)
        return;  // the scripts of CREATE EXTENSION or ALTER EXTENSION ... UPDATE are running
    char *installed = read_installed_version();
    if (installed == nullptr || std::strcmp(installed, PGI_VERSION) == 0)
        return;
    ereport(ERROR,
            (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
             errmsg("pg_inference's library is at version %s, but the extension in this database "
                    "is at version %s",
                    PGI_VERSION, installed),
             errhint("Run ALTER EXTENSION pg_inference UPDATE to bring the extension to the "
                     "library's version.")));
}

}  // namespace pgi::pg

// inference.version(): the library's version (refused, like every function, while the
// extension's SQL objects are at another).
PGI_FUNCTION(pgi_version) {
    (void)fcinfo;
    return CStringGetTextDatum(pgi::pg::library_version());
}
