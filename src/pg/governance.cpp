#include "governance.h"

#include "cpp_wall.h"

extern "C" {
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/pmsignal.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
}

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <time.h>
#include <vector>

#include "breakers.h"
#include "budget.h"
#include "budgets.h"
#include "gateway_request.h"
#include "lwlock_guard.h"
#include "metrics.h"
#include "primary_link.h"
#include "rate_limiter.h"
#include "request_log.h"
#include "spi_connection.h"
#include "usage_counters.h"
#include "wall_clock.h"
#include "worker_transaction.h"

namespace pgi::pg {

namespace {

namespace gov = pgi::governance;

// Every end user id the gateway takes fits the usage counters whole.
static_assert(sizeof(gov::EndUser) == gateway::kMaxEndUser + 1);

int setting_max_keys = 1000;
int setting_max_users = 10000;
int setting_flush_interval_ms = 2000;
int setting_limits_scope = 0;  // kScopeNode or kScopeCluster
int setting_lease_requests = 10;
int setting_lease_tokens = 10000;

enum { kScopeNode = 0, kScopeCluster = 1 };
const struct config_enum_entry kScopes[] = {
    {"node", kScopeNode, false}, {"cluster", kScopeCluster, false}, {nullptr, 0, false}};

// A standby tops up a lease used within this long once it is half spent.
constexpr int64_t kLeaseActiveUs = 60'000'000;

constexpr int kMaxListeners = 64;  // inference.gateway_workers' maximum
// Services with their own metrics series; any beyond share the series service="(other)".
constexpr uint32_t kMetricServices = 512;
// How long a flush waits for a lock (another flush, or someone holding ledger or key rows)
// before giving its counts back for the next try.
constexpr int kFlushLockTimeoutMs = 1000;
// At exit there is no next try.
constexpr int kExitFlushLockTimeoutMs = 10000;
// A flush is two statements over at most a few thousand rows.
constexpr int kFlushStatementTimeoutMs = 30000;
// Listener 1 forgets the states of keys whose buckets are all full again this often.
constexpr int64_t kReclaimIntervalMs = 60000;

// Everything in one region after this header: the rate limiter's key states, the usage counters
// (twice as many key-service-day entries as keys, and as many again of end users') and the
// per-service metrics. One LWLock guards it all; every hot-path call takes it once, for well under
// a microsecond.
struct GovernanceShared {
    LWLock *lock;
    uint32_t max_keys;
    uint32_t max_usage;
    Size limiter_offset;
    Size usage_offset;
    Size metrics_offset;
    uint64_t usage_dropped;
    // A standby's batch that could not be sent, with its id, for whichever process flushes
    // next: it outlives the process that failed (an ERROR, a pg_terminate_backend). Empty when
    // parked_entries is 0.
    Size parked_offset;
    uint32_t parked_entries;
    char parked_id[40];
    uint64_t limiter_full;
    uint64_t users_full;
    uint32_t max_users;
    Size users_offset;
    // End users' usage, in a table of its own so that many users never crowd out keys' usage.
    Size user_usage_offset;
    uint64_t user_usage_dropped;
    Latch *writer_latch;   // the usage writer's; null while it is not running
    bool flush_requested;  // a listener found the counters filling up
    gov::ServiceMetrics other_services;
    gov::ListenerGauges listeners[kMaxListeners];
};

GovernanceShared *shared = nullptr;

// Usage taken out of shared memory by this process and not committed yet. Static so that the
// exit callback can give it back when a FATAL (a SIGTERM) cut the flush short.
std::vector<gov::UsageEntry> batch;
// A standby's batch has an id, under which the primary records it once: a batch whose sending
// failed is kept whole with its id and sent again (given back to shared memory, it could be
// counted twice when only the answer was lost). Empty for a primary's own batch.
std::string batch_id;

struct Layout {
    uint32_t max_keys, max_usage, max_users;
    Size limiter, usage, metrics, parked, users, user_usage, total;
};

Layout layout() {
    Layout l;
    l.max_keys = static_cast<uint32_t>(setting_max_keys);
    l.max_usage = 2 * l.max_keys;
    l.limiter = MAXALIGN(sizeof(GovernanceShared));
    l.usage = l.limiter + MAXALIGN(gov::LimiterTable::bytes(l.max_keys));
    l.metrics = l.usage + MAXALIGN(gov::UsageTable::bytes(l.max_usage));
    l.parked = l.metrics + MAXALIGN(gov::MetricsTable::bytes(kMetricServices));
    l.max_users = static_cast<uint32_t>(setting_max_users);
    // A parked batch holds what both usage tables can hold.
    l.users = l.parked + MAXALIGN(sizeof(gov::UsageEntry) * 2 * l.max_usage);
    l.user_usage = l.users + MAXALIGN(gov::LimiterTable::bytes(l.max_users));
    l.total = l.user_usage + MAXALIGN(gov::UsageTable::bytes(l.max_usage));
    return l;
}

void *at_offset(Size offset) {
    return reinterpret_cast<char *>(shared) + offset;
}
gov::LimiterTable limiter_table() {
    return gov::LimiterTable(at_offset(shared->limiter_offset));
}
// The buckets of (key, end user) pairs: a table of their own, so that many users never crowd
// out keys.
gov::LimiterTable users_table() {
    return gov::LimiterTable(at_offset(shared->users_offset));
}
gov::UsageTable usage_table() {
    return gov::UsageTable(at_offset(shared->usage_offset));
}
gov::UsageTable user_usage_table() {
    return gov::UsageTable(at_offset(shared->user_usage_offset));
}
// Under the region's lock: when the usage counters fill up past half, asks the usage writer to
// flush now rather than at its interval, so that busy periods drop nothing. Returns the latch to
// set once the lock is released, or null.
Latch *ask_flush_if_filling() {
    const uint32_t fullest = std::max(usage_table().count(), user_usage_table().count());
    if (fullest * 2 <= shared->max_usage || shared->flush_requested)
        return nullptr;
    shared->flush_requested = true;
    return shared->writer_latch;
}

// An entry of the end users' table (else the keys').
bool of_user(const gov::UsageEntry &e) {
    return e.key.user.text[0] != '\0';
}
// Every entry both usage tables can hold: a batch's room.
std::size_t max_batch() {
    return 2 * static_cast<std::size_t>(shared->max_usage);
}
gov::MetricsTable metrics_table() {
    return gov::MetricsTable(at_offset(shared->metrics_offset));
}

// CLOCK_MONOTONIC is one clock for every process of the machine, so buckets updated by several
// listeners agree on time.
int64_t monotonic_us() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1'000'000 + ts.tv_nsec / 1000;
}

// A key's own limits, or its tenant's.
gov::Limits limits_of(const gateway::LimitValues &v) {
    gov::Limits l;
    l.requests_per_minute = v.rpm.value_or(0);
    l.burst = v.burst.value_or(0);
    l.requests_per_hour = v.rph.value_or(0);
    l.tokens_per_hour = v.tokens_per_hour.value_or(0);
    return l;
}

// A tenant's buckets live in the limiter table beside the keys' (gov::tenant_entry_name).
using gov::tenant_entry_name;

// ------------------------------------------------------------------------------------------------
// Flushing usage to inference.usage_ledger

// The ledger's one writer, inference_internal.record_usage, on this server or (from a hot standby)
// on the primary.
constexpr const char *kRecordUsage =
    "SELECT inference_internal.record_usage($1::uuid, $2, $3::jsonb)";

std::string batch_json() {
    nlohmann::json rows = nlohmann::json::array();
    for (const gov::UsageEntry &e : batch) {
        const gov::UsageCounts &c = e.counts;
        nlohmann::json row = {{"k", e.key.key.view()}, {"s", e.key.service.view()},
                              {"d", e.key.day},        {"r", c.requests},
                              {"p", c.prompt_tokens},  {"c", c.completion_tokens},
                              {"t", c.total_tokens},   {"e", c.errors},
                              {"l", c.rate_limited},   {"a", c.last_access_ms}};
        if (of_user(e))
            row["u"] = e.key.user.view();
        if (c.cached_tokens != 0)
            row["h"] = c.cached_tokens;
        if (e.key.price != 0)
            row["v"] = e.key.price;
        rows.push_back(std::move(row));
    }
    // The gateway takes only UTF-8 user ids; a replacement character rather than an exception
    // is the safe side should anything else ever get here, since a batch that cannot be written
    // would hold every count back.
    return rows.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void give_back() {
    if (batch.empty() || !batch_id.empty())
        return;
    LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
    gov::UsageTable keys = usage_table();
    gov::UsageTable users = user_usage_table();
    for (const gov::UsageEntry &e : batch) {
        const bool user = of_user(e);
        if (!gov::add_usage(user ? users : keys, e.key, e.hash, e.counts))
            (user ? shared->user_usage_dropped : shared->usage_dropped) +=
                static_cast<uint64_t>(e.counts.requests);
    }
    batch.clear();
}

gov::UsageEntry *parked_entries() {
    return static_cast<gov::UsageEntry *>(at_offset(shared->parked_offset));
}

// A standby's batch that failed goes to shared memory, unless another one is parked there (it
// then stays with this process, for its next flush).
void park() {
    if (batch.empty() || batch_id.empty() || batch.size() > max_batch() ||
        batch_id.size() >= sizeof(shared->parked_id))
        return;
    LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
    if (shared->parked_entries != 0)
        return;
    std::copy(batch.begin(), batch.end(), parked_entries());
    shared->parked_entries = static_cast<uint32_t>(batch.size());
    std::memcpy(shared->parked_id, batch_id.c_str(), batch_id.size() + 1);
    batch.clear();
    batch_id.clear();
}

// Takes the parked batch, if any, into this process (which has none of its own).
void unpark() {
    if (!batch.empty())
        return;
    batch.reserve(max_batch());
    LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
    if (shared->parked_entries == 0)
        return;
    batch.assign(parked_entries(), parked_entries() + shared->parked_entries);
    batch_id = shared->parked_id;
    shared->parked_entries = 0;
}

// Writes the batch in one transaction. False when the ledger does not exist (the extension is
// not installed in inference.database): there is nowhere to keep the counts.
bool write_batch(const std::string &rows, int lock_timeout_ms) {
    bool ledger_exists = false;
    TransactionLimits limits;
    limits.lock_timeout_ms = lock_timeout_ms;
    limits.statement_timeout_ms = kFlushStatementTimeoutMs;
    run_in_transaction("pg_inference usage writer: flushing usage", limits, [&]() {
        pg_guard_void([&]() {
            Oid nsp = get_namespace_oid("inference", true);
            ledger_exists = OidIsValid(nsp) && OidIsValid(get_relname_relid("usage_ledger", nsp));
        });
        if (!ledger_exists)
            return;
        // A batch left from before a promotion keeps its id: the primary it was sent to may
        // have recorded it, and its records came here by replication.
        std::optional<std::string> id;
        if (!batch_id.empty())
            id = batch_id;
        SpiConnection spi;
        spi.exec(kRecordUsage, {spi_text(id), spi_text("local"), spi_text(rows)}, false);
    });
    return ledger_exists;
}

uint64_t batch_requests() {
    uint64_t requests = 0;
    for (const auto &e : batch)
        requests += static_cast<uint64_t>(e.counts.requests);
    return requests;
}

// A random uuid in its text form.
std::string new_batch_id() {
    uint8_t b[16];
    if (!pg_guard([&]() { return pg_strong_random(b, sizeof(b)); }))
        throw Error(sqlstate::kInternalError, "could not generate a random batch id");
    b[6] = static_cast<uint8_t>((b[6] & 0x0F) | 0x40);  // version 4
    b[8] = static_cast<uint8_t>((b[8] & 0x3F) | 0x80);  // variant 1
    static const char hex[] = "0123456789abcdef";
    std::string out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out += '-';
        out += hex[b[i] >> 4];
        out += hex[b[i] & 0x0F];
    }
    return out;
}

// Records the batch where this server's ledger is: here, or on the primary of a standby.
void record_batch(int lock_timeout_ms) {
    if (pg_guard([]() { return RecoveryInProgress(); })) {
        if (batch_id.empty())
            batch_id = new_batch_id();
        (void)record_usage_on_primary(batch_id, node_name(), batch_json());
    } else if (!write_batch(batch_json(), lock_timeout_ms)) {
        const uint64_t requests = batch_requests();
        pg_guard_void([&]() {
            ereport(LOG, (errmsg("pg_inference gateway: usage of %llu requests not recorded: "
                                 "inference.usage_ledger does not exist",
                                 static_cast<unsigned long long>(requests))));
        });
    }
    batch.clear();
    batch_id.clear();
}

// Takes every count out of shared memory and adds it to the ledger. On failure the counts go
// back to shared memory (a standby's batch stays with this process) and the error is thrown.
void flush_usage(int lock_timeout_ms) {
    // A standby's batch that failed before goes first, alone.
    unpark();
    if (!batch.empty() && !batch_id.empty()) {
        try {
            record_batch(lock_timeout_ms);
        } catch (...) {
            park();
            throw;
        }
    }
    // Room for everything the table can hold, reserved before taking the lock: nothing is
    // allocated under it.
    batch.reserve(batch.size() + max_batch());
    {
        LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
        gov::UsageTable keys = usage_table();
        gov::take_usage(keys, batch);
        gov::UsageTable users = user_usage_table();
        gov::take_usage(users, batch);
        shared->flush_requested = false;
    }
    if (batch.empty())
        return;
    try {
        record_batch(lock_timeout_ms);
    } catch (...) {
        give_back();
        park();
        throw;
    }
}

// Nothing may escape an exit callback: PostgreSQL's C code called it.
// A standby's counts parked in shared memory wait there for the next flush (unless the whole
// server is stopping): with its primary away, that is news for the log, not a warning.
void warn_at_exit(int index, const char *why) noexcept {
    try {
        std::string msg = why;
        std::string who = index > 0 ? "gateway listener " + std::to_string(index) : "usage writer";
        const bool kept = batch.empty();  // given back or parked
        const bool standby = pg_guard([]() { return RecoveryInProgress(); });
        pg_guard_void([&]() {
            ereport(kept && standby ? LOG : WARNING,
                    (errmsg("pg_inference %s could not flush usage at exit: %s", who.c_str(),
                            msg.c_str()),
                     kept ? errdetail("The counts wait in shared memory for the next flush, "
                                      "unless the server is stopping.")
                          : errdetail("The counts of this process are lost.")));
        });
    } catch (...) {
    }
}

// The last flush of a listener (index >= 1) or of the usage writer (0), from before_shmem_exit:
// it runs on every exit (SIGTERM at shutdown, an ERROR, pg_terminate_backend) while the process
// can still run transactions. Each flushes what is in shared memory when it exits, whichever
// exits last: a request a listener finished is counted before that listener's own last flush.
// A listener that exits serves nobody any more, so its wait on the ledger harms no caller.
void flush_at_exit(int, Datum arg) {
    int index = DatumGetInt32(arg);
    try {
        // A FATAL may have cut a transaction (a flush, a catalog reload) short, and after an
        // ERROR the background worker's handler exits with the error still stacked and
        // ErrorContext current.
        MemoryContextSwitchTo(TopMemoryContext);
        pg_guard_void([]() {
            FlushErrorState();
            AbortOutOfAnyTransaction();
            LWLockReleaseAll();
        });
        {
            LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
            if (index > 0) {
                gov::ListenerGauges &g = shared->listeners[index - 1];
                g.active = false;
                g.in_flight = 0;
            } else {
                shared->writer_latch = nullptr;
            }
        }
        give_back();
        if (PostmasterIsAlive())
            flush_usage(kExitFlushLockTimeoutMs);
    } catch (const std::exception &e) {
        warn_at_exit(index, e.what());
    } catch (...) {
        warn_at_exit(index, "unknown error");
    }
}

// A standby's lease is its only state for a key: an entry keeps it while it is in use.
void reclaim_idle(gov::LimiterTable &table, int64_t now_us) {
    table.remove_if([&](const gov::LimiterEntry &e) {
        return gov::idle(e.buckets, now_us) && now_us - e.lease_seen_us > kLeaseActiveUs;
    });
}

// A key's entry, made if new; when the table is full, idle entries are forgotten first. Null
// when it is still full. Under the region's lock.
gov::LimiterEntry *key_entry(gov::LimiterTable &table, const gov::Name &name, uint64_t hash,
                             int64_t now_us) {
    gov::LimiterEntry *e = table.find_or_insert(name, hash);
    if (e == nullptr) {
        reclaim_idle(table, now_us);
        e = table.find_or_insert(name, hash);
    }
    return e;
}

// Whether a lease is half spent (or was never granted): time to ask for the next block.
bool lease_low(const gov::Lease &lease, const gov::Limits &limits) {
    const bool request_limit = limits.requests_per_minute > 0 || limits.requests_per_hour > 0;
    return !lease.granted || (request_limit && lease.requests * 2 < setting_lease_requests) ||
           (limits.tokens_per_hour > 0 && lease.tokens * 2 < setting_lease_tokens);
}

}  // namespace

void governance_define_settings() {
    if (process_shared_preload_libraries_in_progress) {
        DefineCustomIntVariable(
            "inference.gateway_max_keys",
            "Access keys whose rate limits shared memory tracks at once.",
            "Usage counters hold twice as many key-service pairs between two flushes, and as many "
            "end users' rows.",
            &setting_max_keys, 1000, 16, 100000, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
        DefineCustomIntVariable(
            "inference.gateway_max_users",
            "End users (access key and user id pairs) whose per-user limits shared memory tracks "
            "at once.",
            "When it is full, a request of a new end user is refused with 503 until idle ones "
            "are forgotten.",
            &setting_max_users, 10000, 16, 1000000, PGC_POSTMASTER, 0, nullptr, nullptr, nullptr);
    }
    DefineCustomEnumVariable(
        "inference.limits_scope", "Whether access keys' limits hold per server or for the cluster.",
        "node: each server (a primary, each hot standby) applies every limit on its own. cluster: "
        "standbys spend blocks of the limits lent by the primary.",
        &setting_limits_scope, kScopeNode, kScopes, PGC_SIGHUP, 0, nullptr, nullptr, nullptr);
    DefineCustomIntVariable("inference.limits_lease_requests",
                            "Requests a standby borrows from the primary at a time under "
                            "cluster-wide limits.",
                            "The cluster may exceed a request limit by this much per standby.",
                            &setting_lease_requests, 10, 1, 1000000, PGC_SIGHUP, 0, nullptr,
                            nullptr, nullptr);
    DefineCustomIntVariable("inference.limits_lease_tokens",
                            "Tokens a standby borrows from the primary at a time under "
                            "cluster-wide limits.",
                            "The cluster may exceed a token limit by this much per standby.",
                            &setting_lease_tokens, 10000, 1, INT_MAX, PGC_SIGHUP, 0, nullptr,
                            nullptr, nullptr);
    DefineCustomIntVariable("inference.gateway_usage_flush_interval",
                            "Time between two flushes of the gateway's usage counters to "
                            "inference.usage_ledger.",
                            nullptr, &setting_flush_interval_ms, 2000, 100, 3600 * 1000, PGC_SIGHUP,
                            GUC_UNIT_MS, nullptr, nullptr, nullptr);
}

int governance_max_keys() {
    return setting_max_keys;
}

Latch *usage_writer_latch() {
    if (shared == nullptr)
        return nullptr;
    LwLockGuard lock(shared->lock, LW_SHARED);
    return shared->writer_latch;
}

void governance_request_shmem() {
    RequestAddinShmemSpace(layout().total);
    RequestNamedLWLockTranche("pg_inference_governance", 1);
}

void governance_init_shmem() {
    Layout l = layout();
    bool found = false;
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    shared = static_cast<GovernanceShared *>(
        ShmemInitStruct("pg_inference governance", l.total, &found));
    if (!found) {
        memset(shared, 0, sizeof(GovernanceShared));
        shared->lock = &(GetNamedLWLockTranche("pg_inference_governance"))->lock;
        shared->max_keys = l.max_keys;
        shared->max_usage = l.max_usage;
        shared->limiter_offset = l.limiter;
        shared->usage_offset = l.usage;
        shared->metrics_offset = l.metrics;
        shared->parked_offset = l.parked;
        shared->max_users = l.max_users;
        shared->users_offset = l.users;
        shared->user_usage_offset = l.user_usage;
        gov::UsageTable::format(at_offset(l.user_usage), l.max_usage);
        gov::LimiterTable::format(at_offset(l.users), l.max_users);
        gov::LimiterTable::format(at_offset(l.limiter), l.max_keys);
        gov::UsageTable::format(at_offset(l.usage), l.max_usage);
        gov::MetricsTable::format(at_offset(l.metrics), kMetricServices);
    }
    LWLockRelease(AddinShmemInitLock);
}

// ------------------------------------------------------------------------------------------------
// Governance

void Governance::start(int index) {
    index_ = index;
    index_text_ = std::to_string(index);
    if (shared == nullptr || index < 1 || index > kMaxListeners)
        return;
    {
        LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
        gov::ListenerGauges &g = shared->listeners[index - 1];
        g.active = true;
        g.in_flight = 0;
    }
    next_reclaim_ms_ = unix_ms() + kReclaimIntervalMs;
    pg_guard_void([&]() { before_shmem_exit(flush_at_exit, Int32GetDatum(index)); });
}

void Governance::snapshot_loaded() {
    if (shared == nullptr || index_ < 1)
        return;
    int64_t now = unix_ms();
    LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
    shared->listeners[index_ - 1].snapshot_loaded_ms = now;
}

void Governance::housekeeping(std::size_t in_flight,
                              const gateway::Server::ConnectionStats &connections) {
    if (shared == nullptr || index_ < 1)
        return;
    Latch *wake = nullptr;
    {
        LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
        gov::ListenerGauges &g = shared->listeners[index_ - 1];
        g.in_flight = static_cast<int64_t>(in_flight);
        g.open_connections = static_cast<int64_t>(connections.open);
        g.connections_refused = connections.refused;
        g.accept_failures = connections.accept_failures;
        wake = ask_flush_if_filling();
    }
    if (wake != nullptr)
        SetLatch(wake);
    if (index_ != 1)
        return;
    int64_t now = unix_ms();
    if (now >= next_reclaim_ms_) {
        next_reclaim_ms_ = now + kReclaimIntervalMs;
        int64_t now_us = monotonic_us();
        LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
        gov::LimiterTable table = limiter_table();
        reclaim_idle(table, now_us);
        gov::LimiterTable users = users_table();
        reclaim_idle(users, now_us);
    }
}

namespace {

// One set of limits a request is under: its key's, its tenant's, its end user's.
struct Subject {
    enum Kind { kKey, kTenant, kUser } kind;
    bool users_table;  // in the users' table (else the keys')
    gov::Name name;
    uint64_t hash;
    gov::Limits limits;
    bool leased;  // spends the lease (a key's, on a standby under cluster-wide limits)
};

gov::Limits user_limits_of(const gateway::AccessKey &k) {
    gov::Limits l;
    l.requests_per_minute = k.user_rpm.value_or(0);
    l.tokens_per_hour = k.user_tokens_per_hour.value_or(0);
    return l;
}

// A (key, end user) pair's entry name: two independent 64-bit hashes in hex, since a key's name
// and a user id together do not fit a Name. A collision (1 in 2^128 by chance) would only make
// two users of one key share their limits.
gov::Name user_entry_name(const std::string &key, std::string_view user) {
    std::string both = key;
    both += '\0';
    both.append(user.data(), user.size());
    const uint64_t h1 = gov::hash_bytes(both.data(), both.size());
    const uint64_t h2 = gov::hash_bytes(both.data(), both.size(), 0x9E3779B97F4A7C15ull);
    char text[33];
    std::snprintf(text, sizeof(text), "%016llx%016llx", static_cast<unsigned long long>(h1),
                  static_cast<unsigned long long>(h2));
    return gov::Name::of(text);
}

// The sets of limits a request of `key` for `user` is under, in the order they are decided.
// A tenant's and a user's limits hold on each server by itself (they are not lent under
// inference.limits_scope = 'cluster'): docs/routing.md.
int subjects_of(const gateway::AccessKey &key, std::string_view user, Subject (&out)[3]) {
    int n = 0;
    if (gov::Limits l = limits_of(key.limits); l.any()) {
        const gov::Name name = gov::Name::of(key.name);
        out[n++] = {Subject::kKey, false, name, gov::hash_of(name), l, limits_leased()};
    }
    if (gov::Limits l = limits_of(key.tenant_limits); l.any()) {
        const gov::Name name = tenant_entry_name(key.tenant);
        out[n++] = {Subject::kTenant, false, name, gov::hash_of(name), l, false};
    }
    if (gov::Limits l = user_limits_of(key); l.any() && !user.empty()) {
        const gov::Name name = user_entry_name(key.name, user);
        out[n++] = {Subject::kUser, true, name, gov::hash_of(name), l, false};
    }
    return n;
}

}  // namespace

gateway::Admission Governance::admit(const gateway::AccessKey *key, const std::string &,
                                     std::string_view user, int64_t cost,
                                     const std::string &currency) {
    gateway::Admission a;
    a.headers.reserve(8);
    // Which listener answered: both share the port, and the limits hold across them.
    a.headers.emplace_back("x-pg-inference-listener", index_text_);
    if (key == nullptr || shared == nullptr)
        return a;
    // Budgets first: a request they refuse takes nothing from the rate limits.
    if (key->budgeted()) {
        BudgetDecision b = reserve_budget(*key, cost, currency);
        if (!b.allowed) {
            a.allowed = false;
            a.status = b.untracked ? 503 : 429;
            a.code = b.untracked ? "budget_tracker_full" : "budget_exceeded";
            a.message = std::move(b.message);
            if (b.retry_after_s > 0)
                a.headers.emplace_back("retry-after", std::to_string(b.retry_after_s));
            return a;
        }
        a.reservation = b.reservation;
    }
    Subject subjects[3];
    const int n = subjects_of(*key, user, subjects);
    if (n == 0)
        return a;
    const int64_t now = monotonic_us();
    gov::Decision d;
    const Subject *refused_by = nullptr;
    const Subject *untracked = nullptr;
    Latch *wake = nullptr;
    {
        LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
        gov::LimiterTable keys = limiter_table();
        gov::LimiterTable users = users_table();
        bool took[3] = {false, false, false};
        for (int i = 0; i < n && untracked == nullptr; i++) {
            const Subject &s = subjects[i];
            gov::LimiterTable &table = s.users_table ? users : keys;
            gov::LimiterEntry *e = key_entry(table, s.name, s.hash, now);
            if (e == nullptr) {
                untracked = &s;
                break;
            }
            gov::Decision sd;
            if (s.leased) {
                // First sight of the key: one request goes in on credit, paid back from the
                // first block, so that a key's first request does not wait for the primary.
                if (!e->lease.granted && e->lease_seen_us == 0)
                    e->lease = {1, 1, false};
                e->lease_seen_us = now;
                sd = gov::admit_leased(e->lease, s.limits);
                wake = lease_low(e->lease, s.limits) ? shared->writer_latch : nullptr;
            } else {
                sd = gov::admit(e->buckets, s.limits, now);
            }
            took[i] = sd.allowed;
            if (!sd.allowed && (refused_by == nullptr || sd.retry_after_us > d.retry_after_us))
                refused_by = &s;
            d = i == 0 ? sd : gov::tighter(d, sd);
        }
        // Refused (or not tracked): what the others took goes back. Each entry is looked up
        // again, since making a later one may have moved it.
        if (refused_by != nullptr || untracked != nullptr) {
            for (int i = 0; i < n; i++) {
                if (!took[i])
                    continue;
                const Subject &s = subjects[i];
                gov::LimiterEntry *e = (s.users_table ? users : keys).find(s.name, s.hash);
                if (e == nullptr)
                    continue;
                if (s.leased)
                    gov::give_back_leased(e->lease, s.limits);
                else
                    gov::give_back(e->buckets, s.limits);
            }
        }
        if (untracked != nullptr) {
            if (untracked->kind == Subject::kUser)
                shared->users_full++;
            else
                shared->limiter_full++;
        }
    }
    if (wake != nullptr)
        SetLatch(wake);  // the usage writer tops the lease up
    if ((untracked != nullptr || !d.allowed) && a.reservation.nano > 0) {
        // Refused by its limits: what it reserved of its budgets goes back.
        settle_budget(*key, a.reservation, 0, currency);
        a.reservation = {};
    }
    if (untracked != nullptr) {
        // Refusing is the safe side: letting the request in would ignore its limits.
        a.allowed = false;
        a.status = 503;
        a.headers.emplace_back("retry-after", "1");
        if (untracked->kind == Subject::kUser) {
            a.code = "user_limiter_full";
            a.message =
                "The gateway cannot track the limits of more end users right now "
                "(inference.gateway_max_users). Please try again later.";
        } else {
            a.code = "rate_limiter_full";
            a.message =
                "The gateway cannot track the limits of more access keys right now "
                "(inference.gateway_max_keys). Please try again later.";
        }
        return a;
    }
    gov::append_rate_limit_headers(d, a.headers);
    if (!d.allowed) {
        a.allowed = false;
        a.status = 429;
        a.code = "rate_limit_exceeded";
        switch (refused_by->kind) {
            case Subject::kKey:
                a.message = gov::refusal_message(d, refused_by->limits, key->name);
                break;
            case Subject::kTenant:
                a.message = gov::refusal_message(d, refused_by->limits, key->name, key->tenant);
                break;
            case Subject::kUser:
                a.message =
                    gov::refusal_message(d, refused_by->limits, key->name, {}, std::string(user));
                break;
        }
    }
    return a;
}

void Governance::finished(const gateway::Finished &request) {
    if (shared == nullptr || index_ < 1)
        return;
    log_request(request);
    const gateway::AccessKey *key = request.key;
    const ServiceEndpoint *endpoint = request.service;
    const std::string_view user = request.user;
    const int status = request.status;
    const translate::Usage &usage = request.usage;
    const bool rate_limited = request.rate_limited;
    // Only the 429s of the limits are "rate limited"; the 503 of a full limiter is an error.
    bool limited = rate_limited && status == 429;
    int64_t now_ms = unix_ms();
    const std::string_view service = endpoint != nullptr ? std::string_view(endpoint->name) : "";
    const int64_t price = endpoint != nullptr ? endpoint->price.id : 0;
    gov::Name service_name = gov::Name::of(service);
    uint64_t service_hash = gov::hash_of(service_name);
    // Requests with neither a key nor a service (a 401, an unknown path) belong to nobody's
    // usage; /metrics still counts them.
    bool ledger = key != nullptr || !service.empty();
    const std::string_view key_name = key != nullptr ? std::string_view(key->name) : "";
    const int32_t day = gov::utc_day(now_ms);
    gov::UsageKey usage_key = gov::usage_key(key_name, service, price, day);
    uint64_t usage_hash = gov::hash_of(usage_key);
    // The end user's row too, when the request named one (the gateway took the id only if it
    // fits gov::EndUser).
    const bool user_ledger = ledger && !user.empty();
    gov::UsageKey user_key =
        user_ledger ? gov::usage_key(key_name, service, price, day, user) : usage_key;
    uint64_t user_hash = user_ledger ? gov::hash_of(user_key) : 0;
    gov::UsageCounts counts = gov::usage_of(status, limited, usage, now_ms);
    // The token limits the answer is charged to.
    Subject charged[3];
    int n = 0;
    if (key != nullptr && counts.total_tokens > 0) {
        Subject all[3];
        const int m = subjects_of(*key, user, all);
        for (int i = 0; i < m; i++) {
            if (all[i].limits.tokens_per_hour > 0)
                charged[n++] = all[i];
        }
    }
    const int64_t now_us = n > 0 ? monotonic_us() : 0;
    if (key != nullptr && key->budgeted() && endpoint != nullptr)
        settle_budget(*key, request.reservation, gov::cost_nano(usage, endpoint->price),
                      endpoint->price.currency);
    else if (key != nullptr && key->budgeted())
        settle_budget(*key, request.reservation, 0, {});

    LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
    gov::MetricsTable metrics = metrics_table();
    gov::MetricsEntry *m = metrics.find_or_insert(service_name, service_hash);
    (m != nullptr ? m->metrics : shared->other_services).record(request);
    shared->listeners[index_ - 1].requests++;
    if (ledger) {
        gov::UsageTable table = usage_table();
        if (!gov::add_usage(table, usage_key, usage_hash, counts))
            shared->usage_dropped++;
    }
    if (user_ledger) {
        gov::UsageTable table = user_usage_table();
        if (!gov::add_usage(table, user_key, user_hash, counts))
            shared->user_usage_dropped++;
    }
    for (int i = 0; i < n; i++) {
        const Subject &c = charged[i];
        gov::LimiterTable table = c.users_table ? users_table() : limiter_table();
        gov::LimiterEntry *e = table.find_or_insert(c.name, c.hash);
        if (e == nullptr)
            continue;
        if (c.leased)
            gov::charge_leased(e->lease, c.limits, counts.total_tokens);
        else
            gov::charge_tokens(e->buckets, c.limits, counts.total_tokens, now_us);
    }
}

std::string Governance::metrics_text() {
    gov::MetricsView view;
    if (shared == nullptr)
        return gov::render_prometheus(view);
    view.services.reserve(kMetricServices + 1);
    gov::ServiceMetrics other;
    {
        LwLockGuard lock(shared->lock, LW_SHARED);
        metrics_table().for_each([&](const gov::MetricsEntry &e) {
            view.services.emplace_back(std::string(e.key.view()), e.metrics);
        });
        other = shared->other_services;
        view.listeners.assign(shared->listeners, shared->listeners + kMaxListeners);
        view.usage_dropped = shared->usage_dropped;
        view.user_usage_dropped = shared->user_usage_dropped;
        // Requests, so the keys' counts alone: end users' rows count the same requests again.
        usage_table().for_each([&](const gov::UsageEntry &e) {
            view.usage_pending += static_cast<uint64_t>(e.counts.requests);
        });
        for (uint32_t i = 0; i < shared->parked_entries; i++) {
            const gov::UsageEntry &e = parked_entries()[i];
            if (!of_user(e))
                view.usage_pending += static_cast<uint64_t>(e.counts.requests);
        }
        view.limiter_full = shared->limiter_full;
        view.users_full = shared->users_full;
    }
    const BudgetCounters budgets = budget_counters();
    view.budget_alerts_sent = budgets.alerts_sent;
    view.budget_alerts_dropped = budgets.alerts_dropped;
    view.budget_tracker_full = budgets.refused;
    const RequestLogCounters log = request_log_counters();
    view.request_log_written = log.written;
    view.request_log_dropped = log.dropped;
    std::sort(view.services.begin(), view.services.end(),
              [](const auto &a, const auto &b) { return a.first < b.first; });
    if (other.total.count > 0)
        view.services.emplace_back("(other)", other);
    while (!view.listeners.empty() && !view.listeners.back().active &&
           view.listeners.back().requests == 0)
        view.listeners.pop_back();
    view.now_ms = unix_ms();
    return gov::render_prometheus(view);
}

void Governance::warning(const std::string &message) {
    pg_guard_void(
        [&]() { ereport(WARNING, (errmsg("pg_inference gateway: %s", message.c_str()))); });
}

routing::Pass Governance::breaker_may_try(const std::string &service, int64_t cooldown_us) {
    return pgi::pg::breaker_may_try(service, cooldown_us);
}

void Governance::breaker_report(const std::string &service, bool failed, int64_t cooldown_us) {
    pgi::pg::breaker_report(service, failed, cooldown_us);
}

void Governance::breaker_probe_abandoned(const std::string &service) {
    pgi::pg::breaker_probe_abandoned(service);
}

void record_sql_usage(const std::string &service, int64_t price, bool failed,
                      const translate::Usage &usage) {
    if (shared == nullptr)
        return;
    // The functions run as SECURITY DEFINER: the caller is the role outside them (SET ROLE
    // included), not the extension's owner. A role dropped meanwhile is named by its oid rather
    // than failing a call that was answered.
    const std::string role = pg_guard([]() {
        const Oid id = GetOuterUserId();
        const char *name = GetUserNameFromId(id, true);
        return name != nullptr ? std::string(name) : std::to_string(id);
    });
    const int64_t now_ms = unix_ms();
    gov::UsageKey key = gov::usage_key(std::string(gov::kSqlPayerPrefix) + role, service, price,
                                       gov::utc_day(now_ms));
    const uint64_t hash = gov::hash_of(key);
    // A failed call is an error whatever its status was; 502 stands for all of them.
    gov::UsageCounts counts = gov::usage_of(failed ? 502 : 200, false, usage, now_ms);
    Latch *wake = nullptr;
    {
        LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
        gov::UsageTable table = usage_table();
        if (!gov::add_usage(table, key, hash, counts))
            shared->usage_dropped++;
        wake = ask_flush_if_filling();
    }
    if (wake != nullptr)
        SetLatch(wake);
}

// ------------------------------------------------------------------------------------------------
// The usage writer's side

void usage_writer_attach() {
    if (shared == nullptr)
        return;
    {
        LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
        shared->writer_latch = MyLatch;
    }
    pg_guard_void([&]() { before_shmem_exit(flush_at_exit, Int32GetDatum(0)); });
}

int usage_flush_interval_ms() {
    return setting_flush_interval_ms;
}

bool usage_flush_requested() {
    if (shared == nullptr)
        return false;
    LwLockGuard lock(shared->lock, LW_SHARED);
    return shared->flush_requested;
}

void usage_writer_flush(UsageWriterState &state) {
    if (shared == nullptr)
        return;
    int64_t now = unix_ms();
    try {
        flush_usage(kFlushLockTimeoutMs);
    } catch (const std::exception &e) {
        // The counts are back in shared memory for the next flush; say so at most every 10 s.
        // A standby whose primary is away (a restart, a failover) waits for it: that is news
        // for the log, not a warning.
        if (now - state.last_warning_ms >= 10000) {
            state.last_warning_ms = now;
            std::string msg = e.what();
            const bool standby = pg_guard([]() { return RecoveryInProgress(); });
            pg_guard_void([&]() {
                ereport(
                    standby ? LOG : WARNING,
                    (errmsg("pg_inference usage writer: could not flush usage: %s", msg.c_str()),
                     errdetail("The counts stay in shared memory until a flush succeeds.")));
            });
        }
    }
    uint64_t dropped = 0, user_dropped = 0;
    {
        LwLockGuard lock(shared->lock, LW_SHARED);
        dropped = shared->usage_dropped;
        user_dropped = shared->user_usage_dropped;
    }
    if (dropped > state.reported_dropped) {
        pg_guard_void([&]() {
            ereport(WARNING,
                    (errmsg("pg_inference gateway: usage of %llu requests did not fit in "
                            "shared memory and was not recorded",
                            static_cast<unsigned long long>(dropped - state.reported_dropped)),
                     errhint("Raise inference.gateway_max_keys and restart the server.")));
        });
        state.reported_dropped = dropped;
    }
    if (user_dropped > state.reported_user_dropped) {
        pg_guard_void([&]() {
            ereport(WARNING,
                    (errmsg("pg_inference gateway: the end users' usage of %llu requests did not "
                            "fit in shared memory and was not recorded",
                            static_cast<unsigned long long>(user_dropped -
                                                            state.reported_user_dropped)),
                     errdetail("Their access keys' usage was recorded."),
                     errhint("Raise inference.gateway_max_keys and restart the server.")));
        });
        state.reported_user_dropped = user_dropped;
    }
}

// ------------------------------------------------------------------------------------------------
// Limits held for the whole cluster

bool limits_leased() {
    return setting_limits_scope == kScopeCluster && shared != nullptr &&
           pg_guard([]() { return RecoveryInProgress(); });
}

gov::Lease lend_limits(const std::string &key, const gov::Limits &limits, int64_t requests,
                       int64_t tokens) {
    if (shared == nullptr || !limits.any())
        return {requests, tokens, true};
    gov::Name name = gov::Name::of(key);
    uint64_t hash = gov::hash_of(name);
    int64_t now = monotonic_us();
    LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
    gov::LimiterTable table = limiter_table();
    gov::LimiterEntry *e = key_entry(table, name, hash, now);
    if (e == nullptr) {
        shared->limiter_full++;
        return {0, 0, true};  // as the primary's own listeners would refuse: nothing to lend
    }
    return gov::lend(e->buckets, limits, requests, tokens, now);
}

std::vector<LeaseNeed> leases_needed() {
    std::vector<LeaseNeed> out;
    if (shared == nullptr)
        return out;
    const int64_t now = monotonic_us();
    LwLockGuard lock(shared->lock, LW_SHARED);
    limiter_table().for_each([&](const gov::LimiterEntry &e) {
        if (e.lease_seen_us == 0 || now - e.lease_seen_us > kLeaseActiveUs)
            return;
        // What the key's limits are is the primary's to know: both halves are asked for, and
        // an unlimited one comes back in full and is never spent.
        if (e.lease.granted && e.lease.requests * 2 >= setting_lease_requests &&
            e.lease.tokens * 2 >= setting_lease_tokens)
            return;
        out.push_back(
            {std::string(e.key.view()),
             std::max<int64_t>(setting_lease_requests - std::max<int64_t>(e.lease.requests, 0), 1),
             std::max<int64_t>(setting_lease_tokens - std::max<int64_t>(e.lease.tokens, 0), 1)});
    });
    return out;
}

void add_lease(const std::string &key, const gov::Lease &lent) {
    if (shared == nullptr)
        return;
    gov::Name name = gov::Name::of(key);
    uint64_t hash = gov::hash_of(name);
    LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
    gov::LimiterTable table = limiter_table();
    gov::LimiterEntry *e = table.find_or_insert(name, hash);
    if (e == nullptr)
        return;  // the block is lost: the safe side
    // The first block pays back the request let in on credit.
    const int64_t credit = e->lease.granted ? 0 : 1;
    e->lease.requests += lent.requests - credit;
    e->lease.tokens += lent.tokens - credit;
    e->lease.granted = true;
}

}  // namespace pgi::pg
