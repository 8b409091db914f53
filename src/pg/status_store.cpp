#include "status_store.h"

extern "C" {
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
}

#include <cstring>

#include "cpp_wall.h"
#include "settings.h"

namespace pgi::pg {

namespace {

constexpr size_t kNameLen = 64;       // service names are at most 63 characters
constexpr size_t kMessageLen = 1024;  // status messages are truncated beyond this

// Keyed by database as well as name: two databases of one cluster may each have the extension
// and a service of the same name.
struct StatusKey {
    Oid dboid;
    char name[kNameLen];
};

struct StatusEntry {
    StatusKey key;
    char status;
    bool has_checked_at;
    TimestampTz checked_at;
    char message[kMessageLen];
};

struct StatusShared {
    LWLock *lock;
};

StatusShared *shared = nullptr;
HTAB *table = nullptr;

StatusKey make_key(const std::string &service) {
    StatusKey key;
    std::memset(&key, 0, sizeof(key));
    key.dboid = MyDatabaseId;
    std::strncpy(key.name, service.c_str(), kNameLen - 1);
    return key;
}

}  // namespace

const char *health_status_name(HealthStatus s) {
    switch (s) {
        case HealthStatus::kReady:
            return "Ready";
        case HealthStatus::kFailed:
            return "Failed";
        case HealthStatus::kPending:
            return "Pending";
        case HealthStatus::kUnknown:
            return "Unknown";
    }
    return "Unknown";
}

void status_store_request_shmem() {
    Size size = MAXALIGN(sizeof(StatusShared));
    size = add_size(size, hash_estimate_size(setting_max_services, sizeof(StatusEntry)));
    RequestAddinShmemSpace(size);
    RequestNamedLWLockTranche("pg_inference_status", 1);
}

void status_store_init_shmem() {
    bool found = false;
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    shared = static_cast<StatusShared *>(
        ShmemInitStruct("pg_inference status", sizeof(StatusShared), &found));
    if (!found)
        shared->lock = &(GetNamedLWLockTranche("pg_inference_status"))->lock;
    HASHCTL info;
    std::memset(&info, 0, sizeof(info));
    info.keysize = sizeof(StatusKey);
    info.entrysize = sizeof(StatusEntry);
    table = ShmemInitHash("pg_inference status table", setting_max_services, setting_max_services,
                          &info, HASH_ELEM | HASH_BLOBS);
    LWLockRelease(AddinShmemInitLock);
}

bool status_store_available() {
    return shared != nullptr && table != nullptr;
}

StatusRecord status_get(const std::string &service) {
    StatusRecord record;
    if (!status_store_available()) {
        record.status = HealthStatus::kUnknown;
        record.message = "health checks are off: pg_inference is not in shared_preload_libraries";
        return record;
    }
    StatusKey key = make_key(service);
    bool found = false;
    StatusEntry copy;
    pg_guard_void([&]() {
        LWLockAcquire(shared->lock, LW_SHARED);
        auto *entry = static_cast<StatusEntry *>(hash_search(table, &key, HASH_FIND, nullptr));
        if (entry) {
            found = true;
            copy = *entry;
        }
        LWLockRelease(shared->lock);
    });
    if (!found) {
        record.status = HealthStatus::kPending;
        record.message = kPendingMessage;
        return record;
    }
    record.status = static_cast<HealthStatus>(copy.status);
    record.message = copy.message;
    if (copy.has_checked_at)
        record.checked_at = copy.checked_at;
    return record;
}

void status_put(const std::string &service, const StatusRecord &record) {
    if (!status_store_available())
        return;
    StatusKey key = make_key(service);
    bool full = false;
    pg_guard_void([&]() {
        LWLockAcquire(shared->lock, LW_EXCLUSIVE);
        auto *entry =
            static_cast<StatusEntry *>(hash_search(table, &key, HASH_ENTER_NULL, nullptr));
        if (entry) {
            entry->status = static_cast<char>(record.status);
            entry->has_checked_at = record.checked_at.has_value();
            entry->checked_at = record.checked_at.value_or(0);
            strlcpy(entry->message, record.message.c_str(), kMessageLen);
        } else {
            full = true;
        }
        LWLockRelease(shared->lock);
        if (full)
            ereport(WARNING, (errmsg("pg_inference status table is full; status of \"%s\" not kept",
                                     service.c_str()),
                              errhint("Raise inference.max_services and restart the server.")));
    });
}

void status_forget(const std::string &service) {
    if (!status_store_available())
        return;
    StatusKey key = make_key(service);
    pg_guard_void([&]() {
        LWLockAcquire(shared->lock, LW_EXCLUSIVE);
        hash_search(table, &key, HASH_REMOVE, nullptr);
        LWLockRelease(shared->lock);
    });
}

}  // namespace pgi::pg
