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
// Returns the extension's oid (InvalidOid when it is not installed) and sets *version to a
// palloc'd string.
Oid read_installed(char **version) {
    Oid oid = InvalidOid;
    *version = nullptr;
    Relation rel = table_open(ExtensionRelationId, AccessShareLock);
    ScanKeyData key;
    ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
                CStringGetDatum("pg_inference"));
    SysScanDesc scan = systable_beginscan(rel, ExtensionNameIndexId, true, nullptr, 1, &key);
    HeapTuple tuple = systable_getnext(scan);
    if (HeapTupleIsValid(tuple)) {
        oid = reinterpret_cast<Form_pg_extension>(GETSTRUCT(tuple))->oid;
        bool isnull = true;
        Datum d = heap_getattr(tuple, Anum_pg_extension_extversion, RelationGetDescr(rel), &isnull);
        if (!isnull)
            *version = text_to_cstring(DatumGetTextPP(d));
    }
    systable_endscan(scan);
    table_close(rel, AccessShareLock);
    return oid;
}

std::optional<ExtensionState::Installed> installed_extension() {
    // Only PostgreSQL calls inside the guard: a C++ allocation that threw there would leave
    // PostgreSQL's error handler pointing into a frame that is gone.
    char *v = nullptr;
    const Oid oid = pg_guard([&v]() { return read_installed(&v); });
    if (!OidIsValid(oid))
        return std::nullopt;
    ExtensionState::Installed out{oid, v != nullptr ? std::string(v) : std::string()};
    if (v != nullptr)
        pg_guard_void([v]() { pfree(v); });
    return out;
}

bool mismatch_logged = false;

}  // namespace

const char *library_version() {
    return PGI_VERSION;
}

ExtensionState extension_state(const char *worker_name) {
    ExtensionState state;
    state.installed = installed_extension();
    if (!state.installed)
        return state;
    const std::string &version = state.installed->version;
    if (version == PGI_VERSION) {
        mismatch_logged = false;
        state.ready = true;
        return state;
    }
    if (!mismatch_logged) {
        mismatch_logged = true;
        const std::string message = std::string(worker_name) + ": the extension is at version " +
                                    version + ", the library at " + PGI_VERSION +
                                    "; waiting for ALTER EXTENSION pg_inference UPDATE";
        pg_guard_void([&]() { ereport(LOG, (errmsg("%s", message.c_str()))); });
    }
    return state;
}

void require_matching_sql() {
    if (creating_extension)
        return;  // the scripts of CREATE EXTENSION or ALTER EXTENSION ... UPDATE are running
    char *installed = nullptr;
    read_installed(&installed);
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
