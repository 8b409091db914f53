#include "budgets.h"

#include "cpp_wall.h"

extern "C" {
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"
}

#include <cstring>
#include <nlohmann/json.hpp>
#include <vector>

#include "budget.h"
#include "governance.h"
#include "lwlock_guard.h"
#include "wall_clock.h"
#include "worker_transaction.h"

namespace pgi::pg {

namespace {

namespace gov = pgi::governance;

int setting_clock_offset_s = 0;

// Alerts wait here for the usage writer; past this many unsent, new ones are dropped (and
// counted): they are news, and a writer that cannot keep up has a bigger problem.
constexpr uint32_t kAlertQueue = 256;

struct Alert {
    gov::Name key;
    char tenant[64];  // empty: the key's own budget
    gov::Period period;
    uint8_t threshold;
    int64_t spent_nano;
    int64_t limit_nano;
    char currency[16];
};

struct BudgetsShared {
    LWLock *lock;
    uint32_t max_entries;
    uint32_t alert_head;   // the oldest unsent alert
    uint32_t alert_count;  // unsent alerts
    uint64_t alerts_sent;
    uint64_t alerts_dropped;
    uint64_t refused_full;
    Alert alerts[kAlertQueue];
};

BudgetsShared *shared = nullptr;

Size table_offset() {
    return MAXALIGN(sizeof(BudgetsShared));
}
// Every key and every tenant may have a budget.
uint32_t max_entries() {
    return 2 * static_cast<uint32_t>(governance_max_keys());
}
Size region_size() {
    return table_offset() + MAXALIGN(gov::BudgetTable::bytes(max_entries()));
}
gov::BudgetTable table() {
    return gov::BudgetTable(reinterpret_cast<char *>(shared) + table_offset());
}

// One budget a request is under: the key's own or its tenant's.
struct Subject {
    const gov::Budget *budget;
    gov::Name name;
    uint64_t hash;
    bool tenant;
};

int subjects_of(const gateway::AccessKey &key, Subject (&out)[2]) {
    int n = 0;
    if (key.budget.any()) {
        const gov::Name name = gov::Name::of(key.name);
        out[n++] = {&key.budget, name, gov::hash_of(name), false};
    }
    if (key.tenant_budget.any() && !key.tenant.empty()) {
        const gov::Name name = gov::tenant_entry_name(key.tenant);
        out[n++] = {&key.tenant_budget, name, gov::hash_of(name), true};
    }
    return n;
}

// Under the lock: the subject's state brought up to now; null when the table is full.
gov::BudgetState *state_of(gov::BudgetTable &t, const Subject &s, int64_t now_ms) {
    uint32_t before = t.count();
    gov::BudgetEntry *e = t.find_or_insert(s.name, s.hash);
    if (e == nullptr) {
        // Full: forget the states whose period is over (keys gone, or idle since).
        t.remove_if([&](const gov::BudgetEntry &x) { return gov::stale(x.state, now_ms); });
        before = t.count();
        e = t.find_or_insert(s.name, s.hash);
        if (e == nullptr)
            return nullptr;
    }
    gov::bring_up_to_date(e->state, t.count() != before, *s.budget, now_ms);
    return &e->state;
}

void copy_text(char *to, std::size_t size, std::string_view from) {
    const std::size_t n = from.size() < size - 1 ? from.size() : size - 1;
    std::memcpy(to, from.data(), n);
    to[n] = '\0';
}

// Under the lock: queues an alert per threshold in `crossed`. True when one was queued.
bool queue_alerts(const gateway::AccessKey &key, const Subject &s, const gov::BudgetState &state,
                  uint8_t crossed, const std::string &currency) {
    bool queued = false;
    for (int i = 0; i < gov::kThresholdCount; i++) {
        if ((crossed & (1u << i)) == 0)
            continue;
        if (shared->alert_count == kAlertQueue) {
            shared->alerts_dropped++;
            continue;
        }
        Alert &a = shared->alerts[(shared->alert_head + shared->alert_count) % kAlertQueue];
        shared->alert_count++;
        a.key = gov::Name::of(key.name);
        copy_text(a.tenant, sizeof(a.tenant), s.tenant ? std::string_view(key.tenant) : "");
        a.period = s.budget->period;
        a.threshold = static_cast<uint8_t>(gov::kThresholds[i]);
        a.spent_nano = state.spent_nano;
        a.limit_nano = s.budget->limit_nano;
        copy_text(a.currency, sizeof(a.currency), currency);
        queued = true;
    }
    return queued;
}

}  // namespace

void budgets_define_settings() {
    DefineCustomIntVariable(
        "inference.budget_clock_offset",
        "Moves the calendar that budgets renew on by this many seconds (for testing renewals).",
        "Only the periods of budgets are reckoned in the moved time; leave it at 0 in production.",
        &setting_clock_offset_s, 0, -400 * 86400, 400 * 86400, PGC_SIGHUP,
        GUC_UNIT_S | GUC_NOT_IN_SAMPLE, nullptr, nullptr, nullptr);
}

void budgets_request_shmem() {
    RequestAddinShmemSpace(region_size());
    RequestNamedLWLockTranche("pg_inference_budgets", 1);
}

void budgets_init_shmem() {
    bool found = false;
    LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
    shared = static_cast<BudgetsShared *>(
        ShmemInitStruct("pg_inference budgets", region_size(), &found));
    if (!found) {
        std::memset(shared, 0, sizeof(BudgetsShared));
        shared->lock = &(GetNamedLWLockTranche("pg_inference_budgets"))->lock;
        shared->max_entries = max_entries();
        gov::BudgetTable::format(reinterpret_cast<char *>(shared) + table_offset(),
                                 shared->max_entries);
    }
    LWLockRelease(AddinShmemInitLock);
}

int64_t budget_clock_ms() {
    return unix_ms() + static_cast<int64_t>(setting_clock_offset_s) * 1000;
}

BudgetDecision reserve_budget(const gateway::AccessKey &key, int64_t cost,
                              const std::string &currency) {
    BudgetDecision d;
    Subject subjects[2];
    const int n = subjects_of(key, subjects);
    if (n == 0 || shared == nullptr)
        return d;
    const int64_t now = budget_clock_ms();
    LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
    gov::BudgetTable t = table();
    gov::BudgetState *states[2] = {nullptr, nullptr};
    for (int i = 0; i < n; i++) {
        states[i] = state_of(t, subjects[i], now);
        if (states[i] == nullptr) {
            // Refusing is the safe side: admitting would ignore the budget.
            shared->refused_full++;
            d.allowed = false;
            d.untracked = true;
            d.retry_after_s = 1;
            d.message =
                "The gateway cannot track the budgets of more access keys right now "
                "(inference.gateway_max_keys). Please try again later.";
            return d;
        }
        // Making room for a later entry may move an earlier one: look the earlier ones up again.
        for (int j = 0; j < i; j++)
            states[j] = &t.find(subjects[j].name, subjects[j].hash)->state;
    }
    for (int i = 0; i < n; i++) {
        if (gov::fits(*states[i], *subjects[i].budget, cost))
            continue;
        const gov::Budget &b = *subjects[i].budget;
        d.allowed = false;
        d.message = gov::budget_refusal_message(
            b, *states[i], cost, key.name, subjects[i].tenant ? key.tenant : "", currency, now);
        d.retry_after_s = gov::seconds_to_renewal(b, now).value_or(0);
        return d;
    }
    d.reservation.nano = cost;
    for (int i = 0; i < n; i++) {
        states[i]->reserved_nano += cost;
        (subjects[i].tenant ? d.reservation.tenant_period : d.reservation.key_period) =
            states[i]->period_id;
    }
    return d;
}

void settle_budget(const gateway::AccessKey &key, const gateway::Reservation &reservation,
                   int64_t cost, const std::string &currency) {
    Subject subjects[2];
    const int n = subjects_of(key, subjects);
    if (n == 0 || shared == nullptr || (reservation.nano == 0 && cost == 0))
        return;
    const int64_t now = budget_clock_ms();
    Latch *wake = nullptr;
    {
        LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
        gov::BudgetTable t = table();
        for (int i = 0; i < n; i++) {
            gov::BudgetState *s = state_of(t, subjects[i], now);
            if (s == nullptr)
                continue;
            const int32_t period =
                subjects[i].tenant ? reservation.tenant_period : reservation.key_period;
            const uint8_t crossed =
                gov::settle(*s, *subjects[i].budget, period, reservation.nano, cost);
            if (crossed != 0 && queue_alerts(key, subjects[i], *s, crossed, currency))
                wake = usage_writer_latch();
        }
    }
    if (wake != nullptr)
        SetLatch(wake);
}

void send_budget_alerts() {
    if (shared == nullptr)
        return;
    std::vector<Alert> alerts;
    {
        LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
        if (shared->alert_count == 0)
            return;
        for (uint32_t i = 0; i < shared->alert_count; i++)
            alerts.push_back(shared->alerts[(shared->alert_head + i) % kAlertQueue]);
        shared->alert_head = (shared->alert_head + shared->alert_count) % kAlertQueue;
        shared->alert_count = 0;
    }
    if (pg_guard([]() { return RecoveryInProgress(); })) {
        LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
        shared->alerts_dropped += alerts.size();
        return;
    }
    std::vector<std::string> payloads;
    for (const Alert &a : alerts) {
        nlohmann::json p = {
            {"key", std::string(a.key.view())},
            {"tenant", a.tenant[0] != '\0' ? nlohmann::json(a.tenant) : nullptr},
            {"budget_of", a.tenant[0] != '\0' ? "tenant" : "key"},
            {"period", gov::period_name(a.period)},
            {"threshold", a.threshold},
            {"spent", gov::decimal_of_nano(a.spent_nano)},
            {"budget", gov::decimal_of_nano(a.limit_nano)},
            {"currency", a.currency[0] != '\0' ? nlohmann::json(a.currency) : nullptr}};
        payloads.push_back(p.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    }
    try {
        TransactionLimits limits;
        limits.statement_timeout_ms = 10000;
        run_in_transaction("pg_inference usage writer: sending budget alerts", limits, [&]() {
            pg_guard_void([&]() {
                for (const std::string &p : payloads)
                    Async_Notify("inference_budget", p.c_str());
            });
        });
    } catch (const std::exception &) {
        LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
        shared->alerts_dropped += alerts.size();
        throw;
    }
    LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
    shared->alerts_sent += alerts.size();
}

BudgetCounters budget_counters() {
    BudgetCounters c;
    if (shared == nullptr)
        return c;
    LwLockGuard lock(shared->lock, LW_EXCLUSIVE);
    c.alerts_sent = shared->alerts_sent;
    c.alerts_dropped = shared->alerts_dropped;
    c.refused = shared->refused_full;
    return c;
}

}  // namespace pgi::pg
