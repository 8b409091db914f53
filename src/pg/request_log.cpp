#include "request_log.h"

#include "cpp_wall.h"

extern "C" {
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
}

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

#include "error.h"
#include "governance.h"
#include "json_array.h"
#include "lwlock_guard.h"
#include "shared_table.h"
#include "spi_connection.h"
#include "translate_util.h"
#include "usage_counters.h"
#include "wall_clock.h"
#include "worker_transaction.h"

namespace pgi::pg {

namespace {

namespace gov = pgi::governance;

enum { kLogOff = 0, kLogMetadata = 1 };
const struct config_enum_entry kLogModes[] = {
    {"off", kLogOff, false}, {"metadata", kLogMetadata, false}, {nullptr, 0, false}};

int setting_mode = kLogOff;
int setting_retention_s = 14 * 86400;
int setting_buffer = 8192;

// Rows per INSERT: a batch is one statement of one JSON parameter.
constexpr std::size_t kBatchRows = 2000;
constexpr int64_t kMaintainIntervalMs = 60000;

struct Row {
    int64_t at_us;  // unix microseconds
    gov::Name key, tenant, service, route;
    gov::EndUser user;
    gov::FixedText<48> error;
    int16_t status;
    uint8_t dialect;
    int64_t latency_us;
    int64_t ttft_us;  // < 0: not a stream
    int64_t prompt, completion, cached;
    int64_t price;  // inference.price_store id, 0: unpriced
};

struct RingShared {
    LWLock *lock;
    uint32_t capacity;
    uint32_t head;   // the oldest queued row
    uint32_t count;  // queued rows
    uint64_t written;
    uint64_t dropped;
};

RingShared *shared = nullptr;
int64_t next_maintenance_ms = 0;

Row *rows() {
    return reinterpret_cast<Row *>(reinterpret_cast<char *>(shared) + MAXALIGN(sizeof(RingShared)));
}

Size region_size() {
    return MAXALIGN(sizeof(RingShared)) + sizeof(Row) * static_cast<Size>(setting_buffer);
}

// The batch as the JSON array inference_internal.record_requests reads; text members are null
// when empty.
std::string batch_json(const Row *first, std::size_t n) {
    JsonArray out;
    out.reserve(n * 300);
    char ms[32];
    for (std::size_t i = 0; i < n; i++) {
        const Row &r = first[i];
        out.object()
            .raw("t", std::to_string(r.at_us))
            .text_or_null("k", r.key.view())
            .text_or_null("u", r.user.view())
            .text_or_null("n", r.tenant.view())
            .text_or_null("s", r.service.view())
            .text_or_null("o", r.route.view())
            .text_or_null("g", gateway::kDialectLabels[r.dialect])
            .raw("c", std::to_string(r.status));
        std::snprintf(ms, sizeof(ms), "%.3f", static_cast<double>(r.latency_us) / 1000.0);
        out.raw("l", ms);
        if (r.ttft_us >= 0) {
            std::snprintf(ms, sizeof(ms), "%.3f", static_cast<double>(r.ttft_us) / 1000.0);
            out.raw("f", ms);
        }
        out.raw("p", std::to_string(r.prompt))
            .raw("q", std::to_string(r.completion))
            .raw("h", std::to_string(r.cached));
        if (r.price != 0)
            out.raw("v", std::to_string(r.price));
        out.text_or_null("e", r.error.view());
    }
    return out.take();
}

std::string date_of_us(int64_t us) {
    const int32_t day = gov::utc_day(us / 1000);
    // Days since 1970-01-01 as a date: PostgreSQL adds them to its epoch in SQL.
    return std::to_string(day);
}

// Runs `sql` with text arguments through SPI in the current transaction.
void exec(const char *sql, const std::vector<std::string> &args) {
    SpiConnection spi;
    spi.exec(sql, spi_texts(args), false);
}

bool log_exists() {
    return pg_guard([]() {
        Oid nsp = get_namespace_oid("inference", true);
        return OidIsValid(nsp) && OidIsValid(get_relname_relid("request_log", nsp));
    });
}

void maintain() {
    TransactionLimits limits;
    limits.lock_timeout_ms = 1000;
    limits.statement_timeout_ms = 30000;
    run_in_transaction("pg_inference usage writer: request log partitions", limits, [&]() {
        if (!log_exists())
            return;
        exec("SELECT inference_internal.request_log_maintain(make_interval(secs => $1::int))",
             {std::to_string(setting_retention_s)});
    });
}

}  // namespace

void request_log_define_settings() {
    DefineCustomEnumVariable(
        "inference.gateway_request_log",
        "Whether the gateway logs each request in inference.request_log.",
        "metadata: one row per request (time, key, end user, tenant, service, route, dialect, "
        "status, latency, time to first token, tokens, cost, error type), never a body or a key.",
        &setting_mode, kLogOff, kLogModes, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable(
        "inference.request_log_retention", "How long inference.request_log keeps a day's rows.",
        "A day's partition is dropped once the day ended this long ago.", &setting_retention_s,
        14 * 86400, 3600, INT_MAX, PGC_SIGHUP, GUC_UNIT_S, nullptr, nullptr, nullptr);
    // PostgreSQL refuses postmaster-only settings defined after startup (CREATE EXTENSION
    // without preloading): the ring exists only when preloaded anyway.
    if (!process_shared_preload_libraries_in_progress)
        return;
    DefineCustomIntVariable("inference.request_log_buffer",
                            "Request log rows shared memory holds until the usage writer takes "
                            "them; past it rows are dropped and counted.",
                            nullptr, &setting_buffer, 8192, 128, 1 << 20, PGC_POSTMASTER, 0,
                            nullptr, nullptr, nullptr);
}

void request_log_request_shmem() {
    RequestAddinShmemSpace(region_size());
    RequestNamedLWLockTranche("pg_inference_request_log", 1);
}

void request_log_init_shmem() {
    bool found = false;
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    shared = static_cast<RingShared *>(
        ShmemInitStruct("pg_inference request log", region_size(), &found));
    if (!found) {
        std::memset(shared, 0, sizeof(RingShared));
        shared->lock = &(GetNamedLWLockTranche("pg_inference_request_log"))->lock;
        shared->capacity = static_cast<uint32_t>(setting_buffer);
    }
    LWLockRelease(AddinShmemInitLock);
}

void log_request(const gateway::Finished &f) {
    if (setting_mode == kLogOff || shared == nullptr)
        return;
    Row r;
    std::memset(static_cast<void *>(&r), 0, sizeof(r));
    r.at_us = unix_us();
    if (f.key != nullptr) {
        r.key = gov::Name::of(f.key->name);
        r.tenant = gov::Name::of(f.key->tenant);
    }
    r.user = gov::EndUser::of(f.user);
    if (f.service != nullptr) {
        r.service = gov::Name::of(f.service->name);
        r.price = f.service->price.id;
    }
    r.route = gov::Name::of(f.route);
    r.error = gov::FixedText<48>::of(f.error);
    r.status = static_cast<int16_t>(f.status);
    r.dialect = static_cast<uint8_t>(f.dialect);
    r.latency_us = static_cast<int64_t>(f.total_ms * 1000.0);
    r.ttft_us = f.first_byte_ms < 0 ? -1 : static_cast<int64_t>(f.first_byte_ms * 1000.0);
    r.prompt = f.usage.prompt_tokens;
    r.completion = f.usage.completion_tokens;
    r.cached = f.usage.cached_tokens;
    bool wake = false;
    {
        LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
        if (shared->count == shared->capacity) {
            shared->dropped++;
        } else {
            rows()[(shared->head + shared->count) % shared->capacity] = r;
            shared->count++;
            // An eighth full: the writer comes now rather than at its interval.
            wake = shared->count == shared->capacity / 8;
        }
    }
    if (wake) {
        if (Latch *latch = usage_writer_latch())
            SetLatch(latch);
    }
}

void write_request_log(bool reloaded) {
    if (shared == nullptr)
        return;
    const int64_t now_ms = unix_us() / 1000;
    const bool standby = pg_guard([]() { return RecoveryInProgress(); });
    if (!standby && setting_mode != kLogOff && (reloaded || now_ms >= next_maintenance_ms)) {
        next_maintenance_ms = now_ms + kMaintainIntervalMs;
        maintain();
    }
    std::vector<Row> batch;
    for (;;) {
        batch.clear();
        {
            LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
            const std::size_t n = std::min<std::size_t>(shared->count, kBatchRows);
            for (std::size_t i = 0; i < n; i++)
                batch.push_back(rows()[(shared->head + i) % shared->capacity]);
            shared->head = static_cast<uint32_t>((shared->head + n) % shared->capacity);
            shared->count -= static_cast<uint32_t>(n);
        }
        if (batch.empty())
            return;
        if (standby) {
            // A hot standby cannot write: its rows are dropped, and counted.
            LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
            shared->dropped += batch.size();
            continue;
        }
        int64_t first = batch.front().at_us, last = first;
        for (const Row &r : batch) {
            first = std::min(first, r.at_us);
            last = std::max(last, r.at_us);
        }
        const std::string json = batch_json(batch.data(), batch.size());
        try {
            TransactionLimits limits;
            limits.lock_timeout_ms = 1000;
            limits.statement_timeout_ms = 30000;
            run_in_transaction("pg_inference usage writer: writing the request log", limits, [&]() {
                if (!log_exists())
                    throw Error(sqlstate::kUndefinedObject, "inference.request_log does not exist");
                exec(
                    "SELECT inference_internal.record_requests($1::json, "
                    "'1970-01-01'::date + $2::int, '1970-01-01'::date + $3::int)",
                    {json, date_of_us(first), date_of_us(last)});
            });
        } catch (...) {
            LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
            shared->dropped += batch.size();
            throw;
        }
        LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
        shared->written += batch.size();
    }
}

RequestLogCounters request_log_counters() {
    RequestLogCounters c;
    if (shared == nullptr)
        return c;
    LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
    c.written = shared->written;
    c.dropped = shared->dropped;
    c.pending = shared->count;
    return c;
}

}  // namespace pgi::pg
