#include "catalog_generation.h"

#include "cpp_wall.h"

extern "C" {
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_extension.h"
#include "commands/trigger.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
}

#include "error.h"
#include "worker_transaction.h"

namespace pgi::pg {

namespace {

struct GenerationShared {
    pg_atomic_uint64 generation;
};

GenerationShared *shared = nullptr;
bool bump_at_commit = false;
bool callback_registered = false;
object_access_hook_type prev_object_access_hook = nullptr;

// The tables whose changes reload the listeners: each carries the
// inference_internal.catalog_changed() statement trigger.
constexpr const char *kCatalogTables[] = {"services", "service_secrets", "access_key_store",
                                          "route_store", "tenant_limit_store"};
constexpr int kCatalogTableCount = sizeof(kCatalogTables) / sizeof(kCatalogTables[0]);

// Replay watching, per process.
uint64_t replayed = 0;  // changes this process saw replayed
bool watching = false;  // the relcache callback is registered
bool invalidated = false;
Oid watched[kCatalogTableCount];
int watched_count = 0;  // 0: the extension's tables are not known (absent, or not looked up)

// Called while this process reads invalidation messages; it may not look anything up, so it
// only notes the change.
void on_relcache_invalidation(Datum, Oid relid) {
    if (relid == InvalidOid || watched_count == 0) {
        invalidated = true;  // a cache reset, or anything while the tables are unknown
        return;
    }
    for (int i = 0; i < watched_count; i++) {
        if (watched[i] == relid)
            invalidated = true;
    }
}

void look_up_watched() {
    watched_count = 0;
    Oid nsp = get_namespace_oid("inference", true);
    if (!OidIsValid(nsp))
        return;
    for (const char *name : kCatalogTables) {
        Oid relid = get_relname_relid(name, nsp);
        if (OidIsValid(relid))
            watched[watched_count++] = relid;
    }
}

// The bump waits for commit: a listener that reloaded at statement time would read the old rows
// and then never reload again.
void on_xact_event(XactEvent event, void *) {
    if (!bump_at_commit)
        return;
    if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT) {
        if (shared)
            pg_atomic_fetch_add_u64(&shared->generation, 1);
        bump_at_commit = false;
    } else if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT) {
        bump_at_commit = false;
    }
}

void bump_when_committed() {
    if (!callback_registered) {
        RegisterXactCallback(on_xact_event, nullptr);
        callback_registered = true;
    }
    bump_at_commit = true;
}

// CREATE EXTENSION, ALTER EXTENSION (an UPDATE to the library's version, after which the workers
// that waited for it go to work) and DROP EXTENSION (also through DROP SCHEMA ... CASCADE or DROP
// OWNED) fire no statement trigger of ours: the extension's tables come, change or go whole. Any
// extension's counts, since the object's name may not be readable yet (create) or any more
// (drop); a needless reload costs the listeners one catalog read.
void on_object_access(ObjectAccessType access, Oid class_id, Oid object_id, int sub_id, void *arg) {
    if (prev_object_access_hook)
        prev_object_access_hook(access, class_id, object_id, sub_id, arg);
    if (class_id == ExtensionRelationId &&
        (access == OAT_POST_CREATE || access == OAT_POST_ALTER || access == OAT_DROP))
        bump_when_committed();
}

}  // namespace

void catalog_generation_install_hooks() {
    prev_object_access_hook = object_access_hook;
    object_access_hook = on_object_access;
}

void catalog_generation_request_shmem() {
    RequestAddinShmemSpace(MAXALIGN(sizeof(GenerationShared)));
}

void catalog_generation_init_shmem() {
    bool found = false;
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    shared = static_cast<GenerationShared *>(
        ShmemInitStruct("pg_inference catalog generation", sizeof(GenerationShared), &found));
    if (!found)
        pg_atomic_init_u64(&shared->generation, 1);
    LWLockRelease(AddinShmemInitLock);
}

uint64_t catalog_generation() {
    return shared ? pg_atomic_read_u64(&shared->generation) + replayed : 0;
}

void catalog_poll_replay() {
    if (shared == nullptr || !pg_guard([]() { return RecoveryInProgress(); }))
        return;
    const bool first = !watching;
    if (first) {
        pg_guard_void([]() { CacheRegisterRelcacheCallback(on_relcache_invalidation, 0); });
        watching = true;
    }
    // Starting a transaction reads the invalidations queued since the last one.
    run_in_transaction("pg_inference: reading replayed catalog changes", {}, [&]() {
        if (first || invalidated)
            pg_guard_void([]() { look_up_watched(); });
    });
    if (invalidated && !first)
        replayed++;
    invalidated = false;
}

}  // namespace pgi::pg

// inference_internal.catalog_changed(): statement trigger on the catalog tables.
PGI_FUNCTION(pgi_catalog_changed) {
    using namespace pgi::pg;
    if (!CALLED_AS_TRIGGER(fcinfo))
        throw pgi::Error(pgi::sqlstate::kFeatureNotSupported,
                         "inference_internal.catalog_changed() may only be called as a trigger");
    pg_guard_void([&]() {
        bump_when_committed();
        // For hot standbys: sent at commit, and carried there by the commit record.
        CacheInvalidateRelcache(reinterpret_cast<TriggerData *>(fcinfo->context)->tg_relation);
    });
    return PointerGetDatum(nullptr);
}
