// Budgets' arithmetic: calendar periods, exact decimal amounts, costs rounded up, reservations
// settled, thresholds announced once per period.
#include "budget.h"

#include <gtest/gtest.h>

namespace gov = pgi::governance;

namespace {

constexpr int64_t kDayMs = 86400000;
// 2026-12-01T10:00:00Z, a Tuesday.
constexpr int64_t kTuesday = 20788 * kDayMs + 10 * 3600000;

gov::Budget budget_of(const char *amount, gov::Period period) {
    gov::Budget b;
    b.amount = amount;
    b.limit_nano = *gov::nano_of_decimal(amount, false);
    b.period = period;
    return b;
}

pgi::Price price(const char *in, const char *out, const char *cached) {
    pgi::Price p;
    p.id = 1;
    p.input_nano = *gov::nano_of_decimal(in, true);
    p.output_nano = *gov::nano_of_decimal(out, true);
    p.cached_input_nano = *gov::nano_of_decimal(cached, true);
    return p;
}

}  // namespace

TEST(Budget, PeriodsAreCalendarUtc) {
    EXPECT_EQ(gov::period_first_day(gov::Period::kDay, kTuesday), 20788);
    EXPECT_EQ(gov::period_first_day(gov::Period::kWeek, kTuesday), 20787);   // Monday 11-30
    EXPECT_EQ(gov::period_first_day(gov::Period::kMonth, kTuesday), 20788);  // 12-01
    EXPECT_EQ(*gov::period_end_ms(gov::Period::kDay, kTuesday), 20789 * kDayMs);
    EXPECT_EQ(*gov::period_end_ms(gov::Period::kWeek, kTuesday), 20794 * kDayMs);
    EXPECT_EQ(*gov::period_end_ms(gov::Period::kMonth, kTuesday), 20819 * kDayMs);  // 2027-01-01
    EXPECT_FALSE(gov::period_end_ms(gov::Period::kTotal, kTuesday).has_value());
    // February of a leap year, and the turn of a century that is not one.
    const int64_t feb_2028 = 21215 * kDayMs;  // 2028-02-01
    EXPECT_EQ(*gov::period_end_ms(gov::Period::kMonth, feb_2028), 21244 * kDayMs);
    EXPECT_EQ(gov::period_id(gov::Period::kMonth, 0), 0);
    EXPECT_EQ(gov::period_id(gov::Period::kMonth, kTuesday), (2026 - 1970) * 12 + 11);
    EXPECT_NE(gov::period_id(gov::Period::kDay, kTuesday),
              gov::period_id(gov::Period::kDay, kTuesday + 14 * 3600000));
    EXPECT_EQ(gov::period_id(gov::Period::kWeek, kTuesday),
              gov::period_id(gov::Period::kWeek, kTuesday + 5 * kDayMs));  // Sunday
    EXPECT_NE(gov::period_id(gov::Period::kWeek, kTuesday),
              gov::period_id(gov::Period::kWeek, kTuesday + 6 * kDayMs));  // next Monday
}

TEST(Budget, DecimalsAreExact) {
    EXPECT_EQ(*gov::nano_of_decimal("2.5", false), 2500000000);
    EXPECT_EQ(*gov::nano_of_decimal("0.000000001", false), 1);
    EXPECT_EQ(*gov::nano_of_decimal("0.0000000011", false), 1);
    EXPECT_EQ(*gov::nano_of_decimal("0.0000000011", true), 2);
    EXPECT_EQ(*gov::nano_of_decimal("0.0000000010", true), 1);
    EXPECT_EQ(*gov::nano_of_decimal("7", true), 7000000000);
    EXPECT_EQ(*gov::nano_of_decimal("99999999999999999999", false),
              std::numeric_limits<int64_t>::max());
    EXPECT_FALSE(gov::nano_of_decimal("-1", false));
    EXPECT_FALSE(gov::nano_of_decimal("1e3", false));
    EXPECT_FALSE(gov::nano_of_decimal("NaN", false));
    EXPECT_FALSE(gov::nano_of_decimal("", false));
    EXPECT_EQ(gov::decimal_of_nano(2500000000), "2.5");
    EXPECT_EQ(gov::decimal_of_nano(1), "0.000000001");
    EXPECT_EQ(gov::decimal_of_nano(0), "0");
}

TEST(Budget, CostIsRoundedUpAndPricesCachedTokens) {
    const pgi::Price p = price("2.5", "10", "1.25");
    pgi::translate::Usage u{100, 50, 150, true};
    // 100 x 2.5 + 50 x 10 per million: 0.00075, exactly.
    EXPECT_EQ(gov::cost_nano(u, p), 750000);
    u.cached_tokens = 40;  // 60 x 2.5 + 40 x 1.25 + 50 x 10 = 700 per million
    EXPECT_EQ(gov::cost_nano(u, p), 700000);
    const pgi::Price tiny = price("0.0000001", "0", "0");  // 1e-13 a token
    EXPECT_EQ(gov::cost_nano(pgi::translate::Usage{1, 0, 1, true}, tiny), 1);
    EXPECT_EQ(gov::cost_nano(u, pgi::Price{}), 0);  // unpriced
    EXPECT_EQ(gov::worst_cost_nano(100, 50, p), 750000);
    pgi::translate::Usage huge{std::numeric_limits<long long>::max(), 0, 0, true};
    EXPECT_EQ(gov::cost_nano(huge, price("1000", "0", "0")), std::numeric_limits<int64_t>::max());
}

TEST(Budget, ReservationsHoldTheBudgetExactly) {
    gov::Budget b = budget_of("0.001", gov::Period::kDay);  // 1,000,000 nano
    gov::BudgetState s{};
    gov::bring_up_to_date(s, true, b, kTuesday);
    int admitted = 0;
    for (int i = 0; i < 150; i++) {
        if (!gov::fits(s, b, 10000))
            continue;
        s.reserved_nano += 10000;
        admitted++;
    }
    EXPECT_EQ(admitted, 100);
    for (int i = 0; i < 100; i++)
        gov::settle(s, b, s.period_id, 10000, 10000);
    EXPECT_EQ(s.spent_nano, 1000000);
    EXPECT_EQ(s.reserved_nano, 0);
    EXPECT_FALSE(gov::fits(s, b, 0));  // used up: nothing more, not even a free request
    // The next day renews it.
    gov::bring_up_to_date(s, false, b, kTuesday + kDayMs);
    EXPECT_EQ(s.spent_nano, 0);
    EXPECT_TRUE(gov::fits(s, b, 10000));
}

TEST(Budget, ThresholdsAreAnnouncedOncePerPeriod) {
    gov::Budget b = budget_of("10", gov::Period::kMonth);
    gov::BudgetState s{};
    gov::bring_up_to_date(s, true, b, kTuesday);
    EXPECT_EQ(gov::settle(s, b, s.period_id, 0, 4999999999), 0);
    EXPECT_EQ(gov::settle(s, b, s.period_id, 0, 1), 0b001);  // 50 %
    EXPECT_EQ(gov::settle(s, b, s.period_id, 0, 1), 0);
    EXPECT_EQ(gov::settle(s, b, s.period_id, 0, 6000000000), 0b110);  // 80 and 100 at once
    EXPECT_EQ(gov::settle(s, b, s.period_id, 0, 1), 0);
    gov::bring_up_to_date(s, false, b, kTuesday + 31 * kDayMs);
    EXPECT_EQ(gov::settle(s, b, s.period_id, 0, 5000000000), 0b001);  // a new month
}

TEST(Budget, AStateStartsFromTheLedgerOfItsPeriodOnly) {
    gov::Budget b = budget_of("10", gov::Period::kDay);
    b.spent_at_load_nano = 8000000000;
    b.loaded_period = gov::period_id(gov::Period::kDay, kTuesday);
    gov::BudgetState s{};
    gov::bring_up_to_date(s, true, b, kTuesday);
    EXPECT_EQ(s.spent_nano, 8000000000);
    EXPECT_EQ(s.alerted, 0b011);  // passed before: not announced again
    gov::BudgetState later{};
    gov::bring_up_to_date(later, true, b, kTuesday + kDayMs);  // the load was yesterday's
    EXPECT_EQ(later.spent_nano, 0);
    // A reservation made before a renewal is not taken from the new period's.
    gov::BudgetState r{};
    gov::bring_up_to_date(r, true, budget_of("10", gov::Period::kDay), kTuesday);
    const int32_t before = r.period_id;
    r.reserved_nano = 100;
    gov::bring_up_to_date(r, false, budget_of("10", gov::Period::kDay), kTuesday + kDayMs);
    r.reserved_nano = 7;
    gov::settle(r, budget_of("10", gov::Period::kDay), before, 100, 50);
    EXPECT_EQ(r.reserved_nano, 7);
    EXPECT_EQ(r.spent_nano, 50);
    EXPECT_TRUE(
        gov::stale(gov::BudgetState{gov::Period::kDay, before, 1, 0, 0}, kTuesday + kDayMs));
    EXPECT_FALSE(gov::stale(gov::BudgetState{gov::Period::kTotal, 0, 1, 0, 0}, kTuesday));
}

TEST(Budget, RefusalSaysWhoseBudgetAndWhenItRenews) {
    gov::Budget b = budget_of("10", gov::Period::kMonth);
    gov::BudgetState s{gov::Period::kMonth, 0, 10000000000, 0, 0};
    const std::string m = gov::budget_refusal_message(b, s, 5, "app", "", "USD", kTuesday);
    EXPECT_EQ(m,
              "The month budget of access key 'app', 10 USD, is used up: 10 spent. It renews at "
              "2027-01-01T00:00:00Z.");
    s.spent_nano = 9000000000;
    s.reserved_nano = 500000000;
    const std::string t =
        gov::budget_refusal_message(b, s, 600000000, "app", "team", "USD", kTuesday);
    EXPECT_NE(t.find("tenant 'team' (of access key 'app')"), std::string::npos) << t;
    EXPECT_NE(t.find("9 spent, 0.5 held by requests in progress, and this one may cost up to 0.6"),
              std::string::npos)
        << t;
    EXPECT_EQ(*gov::seconds_to_renewal(b, kTuesday), (20819 * kDayMs - kTuesday) / 1000);
}
