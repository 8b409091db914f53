// Budgets in money held in shared memory for every listener of this server (docs/spend.md): the
// reservations and spending of each budgeted key and tenant, and the alerts the usage writer
// sends as NOTIFY inference_budget. The arithmetic is the core's (budget.h).
#pragma once

#include <cstdint>
#include <string>

#include "gateway.h"

namespace pgi::pg {

// Defines inference.budget_clock_offset (a testing aid that moves the budgets' calendar).
void budgets_define_settings();
void budgets_request_shmem();  // from the shmem_request_hook, after governance's settings
void budgets_init_shmem();     // from the shmem_startup_hook

// The time budgets' periods are reckoned in (unix ms): the clock, moved by the offset setting.
int64_t budget_clock_ms();

struct BudgetDecision {
    bool allowed = true;
    gateway::Reservation reservation;
    std::string message;        // a refusal's
    int64_t retry_after_s = 0;  // a refusal's: until the refusing budget renews; 0: never
    bool untracked = false;     // refused because the table is full
};

// Reserves `cost` (nano-units of `currency`) of the key's and its tenant's budgets, or refuses
// the request when either cannot hold it. Nothing is reserved on a refusal.
BudgetDecision reserve_budget(const gateway::AccessKey &key, int64_t cost,
                              const std::string &currency);
// Releases a reservation and spends what the request cost; queues the alerts of the thresholds
// this crosses and wakes the usage writer for them.
void settle_budget(const gateway::AccessKey &key, const gateway::Reservation &reservation,
                   int64_t cost, const std::string &currency);

// From the usage writer: sends the queued alerts as NOTIFY inference_budget, in a transaction of
// its own. On a standby (which cannot notify) they are dropped and counted.
void send_budget_alerts();

// For /metrics: alerts dropped (the queue was full, or a standby), refusals for a full table.
struct BudgetCounters {
    uint64_t alerts_sent = 0;
    uint64_t alerts_dropped = 0;
    uint64_t refused = 0;
};
BudgetCounters budget_counters();

}  // namespace pgi::pg
