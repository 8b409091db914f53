// Budgets in money per access key and per tenant (docs/spend.md). Amounts are whole
// nano-units of the currency (1e-9), so every sum is exact integer arithmetic: a cost is rounded
// up to the next nano-unit, never down, so what a budget counts is never less than what the
// ledger's numeric cost says.
//
// Enforcement is by reservation: before a request goes upstream its worst-case cost (the prompt
// estimate at the input price plus its max_tokens at the output price) is reserved; once it is
// answered the reservation is released and the real cost spent. A request that cannot reserve is
// refused, so concurrent requests cannot overrun a budget between admission and answer.
//
// Plain structs and pure functions: the host keeps the states in shared memory (a FixedTable of
// BudgetEntry) and serialises calls with its own lock.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "protocol.h"
#include "shared_table.h"
#include "translate.h"

namespace pgi::governance {

// The calendar periods a budget renews on (UTC; weeks start on Monday), or never.
enum class Period : uint8_t { kDay, kWeek, kMonth, kTotal };

// The SQL spelling ("day", "week", "month", "total"); nullopt for anything else.
std::optional<Period> period_of(std::string_view name);
const char *period_name(Period p);

// Which period `unix_ms` falls in: days since 1970-01-01, Monday-based weeks since then, months
// since January 1970, 0 for total.
int32_t period_id(Period p, int64_t unix_ms);
// The first UTC day (days since 1970-01-01) of the period `unix_ms` falls in (0 for total): the
// ledger's rows from that day on are the period's spending.
int32_t period_first_day(Period p, int64_t unix_ms);
// When the period `unix_ms` falls in ends (unix ms); nullopt for total.
std::optional<int64_t> period_end_ms(Period p, int64_t unix_ms);

// A decimal without exponent ("12.5", "0.000001") in nano-units: rounded up when it has more
// than 9 decimals (a price), or down (round_up false: a budget). Saturates; nullopt when the text
// is not such a decimal or is negative.
std::optional<int64_t> nano_of_decimal(std::string_view text, bool round_up);
// Nano-units as the shortest decimal: 2500000000 -> "2.5".
std::string decimal_of_nano(int64_t nano);

// What tokens cost in nano-units, rounded up: prices are nano-units per million tokens; cached
// prompt tokens are a part of the prompt tokens, at their own price.
int64_t cost_nano(const translate::Usage &usage, const Price &price);
// The most a request may cost: every prompt token at the dearer of the input prices and
// max_output tokens at the output price.
int64_t worst_cost_nano(int64_t prompt_tokens, int64_t max_output_tokens, const Price &price);

// A budget as the catalog holds it, on a key or a tenant.
struct Budget {
    int64_t limit_nano = 0;  // 0: none
    Period period = Period::kMonth;
    // The ledger's cost in the current period when the snapshot was read: where a budget's count
    // starts when this server has none yet (after a restart).
    int64_t spent_at_load_nano = 0;
    int32_t loaded_period = 0;  // the period_id that spending is of
    std::string amount;         // the budget as written, for messages

    bool any() const { return limit_nano > 0; }
};

// The thresholds that send an alert, as bits of alerted masks.
constexpr int kThresholds[] = {50, 80, 100};
constexpr int kThresholdCount = 3;

struct BudgetState {
    Period period;
    int32_t period_id;
    int64_t spent_nano;
    int64_t reserved_nano;
    uint8_t alerted;  // bit i: kThresholds[i] was announced in this period
};

struct BudgetEntry {
    bool used;
    uint64_t hash;
    Name key;  // the key's name, or "\x01" and the tenant's
    BudgetState state;
};
using BudgetTable = FixedTable<BudgetEntry>;

// Whether forgetting a state changes nothing: nothing is reserved and its period is over (a
// state made again starts from the ledger, or from nothing in a new period).
bool stale(const BudgetState &s, int64_t unix_ms);

// Brings a state up to now: a fresh state (`fresh`: just made), or one kept for another kind of
// period, starts from the ledger's count when that count is of the current period (with the
// thresholds it passed already announced); a new period starts from nothing.
void bring_up_to_date(BudgetState &s, bool fresh, const Budget &b, int64_t unix_ms);
// Whether `cost` more fits beside what is spent and reserved.
bool fits(const BudgetState &s, const Budget &b, int64_t cost);
// Releases a reservation made in period `reserved_in` (nothing if that period is over) and
// spends `cost`. Returns the thresholds crossed now and not announced before (bits), marking
// them announced.
uint8_t settle(BudgetState &s, const Budget &b, int32_t reserved_in, int64_t reserved,
               int64_t cost);

// The 429's message: whose budget, how much, when it renews; `cost` is what the refused request
// would have reserved. `tenant` empty: the key's own.
std::string budget_refusal_message(const Budget &b, const BudgetState &s, int64_t cost,
                                   const std::string &key_name, const std::string &tenant,
                                   const std::string &currency, int64_t unix_ms);
// Seconds until the budget renews (retry-after), or nullopt for total.
std::optional<int64_t> seconds_to_renewal(const Budget &b, int64_t unix_ms);

}  // namespace pgi::governance
