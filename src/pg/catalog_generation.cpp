#include "catalog_generation.h"

#include "cpp_wall.h"

extern "C" {
#include "access/xact.h"
#include "commands/trigger.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
}

#include "error.h"

namespace pgi::pg {

namespace {

struct GenerationShared {
    pg_atomic_uint64 generation;
};

GenerationShared *shared = nullptr;
bool bump_at_commit = false;
bool callback_registered = false;

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

}  // namespace

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
    return shared ? pg_atomic_read_u64(&shared->generation) : 0;
}

}  // namespace pgi::pg

// inference._catalog_changed(): statement trigger on the catalog tables.
PGI_FUNCTION(pgi_catalog_changed) {
    using namespace pgi::pg;
    if (!CALLED_AS_TRIGGER(fcinfo))
        throw pgi::Error(pgi::sqlstate::kFeatureNotSupported,
                         "_catalog_changed() may only be called as a trigger");
    if (!callback_registered) {
        pg_guard_void([]() { RegisterXactCallback(on_xact_event, nullptr); });
        callback_registered = true;
    }
    bump_at_commit = true;
    return PointerGetDatum(nullptr);
}
