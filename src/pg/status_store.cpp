#include "status_store.h"

extern "C" {
#include "access/xact.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/hsearch.h"
}

#include <algorithm>
#include <cstring>
#include <new>
#include <vector>

#include "cpp_wall.h"
#include "service_key.h"
#include "settings.h"

namespace pgi::pg {

namespace {

constexpr size_t kMessageLen = 1024;  // status messages are truncated beyond this

struct StatusEntry {
    ServiceKey key;
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

// A write or forget made inside a transaction waits for its commit: a registration or
// deregistration that rolls back must leave the status it found. Each operation remembers the
// subtransaction that made it, so ROLLBACK TO SAVEPOINT drops just the operations of the levels
// it aborts and RELEASE hands them to the parent.
struct PendingOp {
    SubTransactionId subxact;
    bool forget;
    std::string service;
    StatusRecord record;
};

std::vector<PendingOp> pending;

// The last operation of this transaction on a service, if any: a transaction sees its own
// writes, as it sees its own catalog rows.
const PendingOp *latest_pending(const std::string &service) {
    for (auto it = pending.rbegin(); it != pending.rend(); ++it)
        if (it->service == service)
            return &*it;
    return nullptr;
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
    info.keysize = sizeof(ServiceKey);
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
    if (const PendingOp *op = latest_pending(service)) {
        if (!op->forget)
            return op->record;
        record.status = HealthStatus::kPending;
        record.message = kPendingMessage;
        return record;
    }
    ServiceKey key = service_key(service);
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

namespace {

void apply_put(const std::string &service, const StatusRecord &record) {
    ServiceKey key = service_key(service);
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

void apply_forget(const std::string &service) {
    ServiceKey key = service_key(service);
    pg_guard_void([&]() {
        LWLockAcquire(shared->lock, LW_EXCLUSIVE);
        hash_search(table, &key, HASH_REMOVE, nullptr);
        LWLockRelease(shared->lock);
    });
}

bool callbacks_registered = false;

void apply_pending() {
    // Taken out first: whatever happens below, the next transaction starts with nothing.
    std::vector<PendingOp> ops;
    ops.swap(pending);
    for (const PendingOp &op : ops) {
        // At commit the transaction is already durable: a failure here can only be logged (by
        // status_put's own warning) and must not escape into PostgreSQL's commit path.
        try {
            if (op.forget)
                apply_forget(op.service);
            else
                apply_put(op.service, op.record);
        } catch (...) {
        }
    }
}

void on_xact_event(XactEvent event, void *) {
    switch (event) {
        case XACT_EVENT_COMMIT:
        case XACT_EVENT_PARALLEL_COMMIT:
            apply_pending();
            break;
        case XACT_EVENT_ABORT:
        case XACT_EVENT_PARALLEL_ABORT:
        // A prepared transaction may still roll back, and COMMIT PREPARED runs in whatever
        // session without these operations: its services show Pending until the next probe,
        // which is true.
        case XACT_EVENT_PREPARE:
            pending.clear();
            break;
        default:
            break;
    }
}

void on_subxact_event(SubXactEvent event, SubTransactionId mySubid, SubTransactionId parentSubid,
                      void *) {
    if (event == SUBXACT_EVENT_COMMIT_SUB) {
        for (PendingOp &op : pending)
            if (op.subxact == mySubid)
                op.subxact = parentSubid;
    } else if (event == SUBXACT_EVENT_ABORT_SUB) {
        pending.erase(std::remove_if(pending.begin(), pending.end(),
                                     [&](const PendingOp &op) { return op.subxact == mySubid; }),
                      pending.end());
    }
}

// Outside a transaction (the health worker between its own transactions) there is nothing to
// roll back, so the operation takes effect at once.
void put_or_defer(const std::string &service, bool forget, const StatusRecord &record) {
    if (!IsTransactionState()) {
        if (forget)
            apply_forget(service);
        else
            apply_put(service, record);
        return;
    }
    if (!callbacks_registered) {
        pg_guard_void([]() {
            RegisterXactCallback(on_xact_event, nullptr);
            RegisterSubXactCallback(on_subxact_event, nullptr);
        });
        callbacks_registered = true;
    }
    const SubTransactionId subxact = pg_guard([]() { return GetCurrentSubTransactionId(); });
    pending.push_back(PendingOp{subxact, forget, service, record});
}

}  // namespace

void status_put(const std::string &service, const StatusRecord &record) {
    if (!status_store_available())
        return;
    put_or_defer(service, false, record);
}

void status_forget(const std::string &service) {
    if (!status_store_available())
        return;
    put_or_defer(service, true, StatusRecord{});
}

}  // namespace pgi::pg
