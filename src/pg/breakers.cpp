#include "breakers.h"

#include "cpp_wall.h"

extern "C" {
#include "miscadmin.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"
}

#include <cstring>

#include "service_key.h"
#include "settings.h"

namespace pgi::pg {

int setting_breaker_failures = routing::kDefaultBreakerFailures;

namespace {

struct BreakerEntry {
    ServiceKey key;
    routing::Breaker breaker;
    int64_t cooldown_us;  // the last one a request reported; 0 until then
};

LWLock *lock = nullptr;
HTAB *table = nullptr;

int64_t cooldown_of(const BreakerEntry &e) {
    return e.cooldown_us > 0 ? e.cooldown_us : routing::kDefaultCooldownUs;
}

// Runs f on the service's entry (created closed when absent) under the exclusive lock; nothing
// when the table is full or absent.
template <class F>
void with_entry(const std::string &service, F &&f) {
    if (table == nullptr)
        return;
    ServiceKey key = service_key(service);
    pg_guard_void([&]() {
        LWLockAcquire(lock, LW_EXCLUSIVE);
        bool found = false;
        auto *e = static_cast<BreakerEntry *>(hash_search(table, &key, HASH_ENTER_NULL, &found));
        if (e != nullptr) {
            if (!found) {
                e->breaker = routing::Breaker{0, 0};
                e->cooldown_us = 0;
            }
            f(*e);
        }
        LWLockRelease(lock);
    });
}

}  // namespace

void breakers_define_settings() {
    DefineCustomIntVariable("inference.breaker_failures",
                            "Failures in a row after which a service is skipped for its "
                            "route's cooldown.",
                            nullptr, &setting_breaker_failures, routing::kDefaultBreakerFailures, 1,
                            1000, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
}

void breakers_request_shmem() {
    RequestAddinShmemSpace(hash_estimate_size(setting_max_services, sizeof(BreakerEntry)));
    RequestNamedLWLockTranche("pg_inference_breakers", 1);
}

void breakers_init_shmem() {
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    lock = &(GetNamedLWLockTranche("pg_inference_breakers"))->lock;
    HASHCTL info;
    std::memset(&info, 0, sizeof(info));
    info.keysize = sizeof(ServiceKey);
    info.entrysize = sizeof(BreakerEntry);
    table = ShmemInitHash("pg_inference breakers", setting_max_services, setting_max_services,
                          &info, HASH_ELEM | HASH_BLOBS);
    LWLockRelease(AddinShmemInitLock);
}

namespace {

// The service's breaker as it is now, under the shared lock (closed when it has no entry): the
// hot path of a service that never failed takes no exclusive lock and adds no entry.
routing::Breaker peek(const std::string &service) {
    routing::Breaker b{0, 0};
    if (table == nullptr)
        return b;
    ServiceKey key = service_key(service);
    pg_guard_void([&]() {
        LWLockAcquire(lock, LW_SHARED);
        auto *e = static_cast<BreakerEntry *>(hash_search(table, &key, HASH_FIND, nullptr));
        if (e != nullptr)
            b = e->breaker;
        LWLockRelease(lock);
    });
    return b;
}

}  // namespace

routing::Pass breaker_may_try(const std::string &service, int64_t cooldown_us) {
    const routing::Breaker seen = peek(service);
    if (seen.open_until_us == 0)
        return routing::Pass::kClosed;
    const int64_t now = GetCurrentTimestamp();
    if (now < seen.open_until_us)
        return routing::Pass::kOpen;
    // Cooled down: the probe's slot is taken under the exclusive lock, by one request only.
    routing::Pass pass = routing::Pass::kClosed;
    with_entry(service,
               [&](BreakerEntry &e) { pass = routing::may_try(e.breaker, now, cooldown_us); });
    return pass;
}

void breaker_report(const std::string &service, bool failed, int64_t cooldown_us) {
    if (!failed) {
        const routing::Breaker seen = peek(service);
        if (seen.failures == 0 && seen.open_until_us == 0)
            return;
    }
    const int64_t now = GetCurrentTimestamp();
    with_entry(service, [&](BreakerEntry &e) {
        if (cooldown_us > 0)
            e.cooldown_us = cooldown_us;
        if (failed)
            routing::failed(e.breaker, now, setting_breaker_failures, cooldown_of(e));
        else
            routing::succeeded(e.breaker);
    });
}

void breaker_probe_abandoned(const std::string &service) {
    const int64_t now = GetCurrentTimestamp();
    with_entry(service, [&](BreakerEntry &e) { routing::probe_abandoned(e.breaker, now); });
}

void breaker_mark_failed(const std::string &service) {
    const int64_t now = GetCurrentTimestamp();
    with_entry(service,
               [&](BreakerEntry &e) { routing::marked_failed(e.breaker, now, cooldown_of(e)); });
}

}  // namespace pgi::pg
