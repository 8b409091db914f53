#include "budget.h"

#include <cstdio>
#include <limits>

#include "saturating.h"

namespace pgi::governance {

namespace {

constexpr int64_t kDayMs = 86400000;
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

// The proleptic Gregorian calendar in days since 1970-01-01, counted in 400-year eras of
// 146097 days with years starting in March, so that the leap day is the last of its year.
struct Civil {
    int64_t year;
    int month;  // 1..12
};

Civil civil_of(int64_t days) {
    const int64_t z = days + 719468;  // days since 0000-03-01
    const int64_t era = floor_div(z, 146097);
    const int64_t doe = z - era * 146097;
    const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const int64_t mp = (5 * doy + 2) / 153;  // March = 0
    const int month = static_cast<int>(mp < 10 ? mp + 3 : mp - 9);
    return {yoe + era * 400 + (month <= 2 ? 1 : 0), month};
}

int64_t days_of(int64_t year, int month) {  // the first day of that month
    year -= month <= 2 ? 1 : 0;
    const int64_t era = floor_div(year, 400);
    const int64_t yoe = year - era * 400;
    const int64_t mp = month > 2 ? month - 3 : month + 9;
    const int64_t doy = (153 * mp + 2) / 5;
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int64_t day_of(int64_t unix_ms) {
    return floor_div(unix_ms, kDayMs);
}

int64_t clamp32(int64_t v) {
    return v < std::numeric_limits<int32_t>::min()   ? std::numeric_limits<int32_t>::min()
           : v > std::numeric_limits<int32_t>::max() ? std::numeric_limits<int32_t>::max()
                                                     : v;
}

// tokens x nano-units per million tokens, without overflow.
__int128 times(int64_t tokens, int64_t nano_per_mtok) {
    return static_cast<__int128>(tokens < 0 ? 0 : tokens) * nano_per_mtok;
}

int64_t ceil_mtok(__int128 nano_tokens) {
    const __int128 r = (nano_tokens + 999999) / 1000000;
    return r > kMax ? kMax : static_cast<int64_t>(r);
}

}  // namespace

std::optional<Period> period_of(std::string_view name) {
    if (name == "day")
        return Period::kDay;
    if (name == "week")
        return Period::kWeek;
    if (name == "month")
        return Period::kMonth;
    if (name == "total")
        return Period::kTotal;
    return std::nullopt;
}

const char *period_name(Period p) {
    switch (p) {
        case Period::kDay:
            return "day";
        case Period::kWeek:
            return "week";
        case Period::kMonth:
            return "month";
        case Period::kTotal:
            break;
    }
    return "total";
}

int32_t period_id(Period p, int64_t unix_ms) {
    const int64_t day = day_of(unix_ms);
    switch (p) {
        case Period::kDay:
            return static_cast<int32_t>(clamp32(day));
        case Period::kWeek:  // 1970-01-01 was a Thursday: Monday-based weeks start 3 days later
            return static_cast<int32_t>(clamp32(floor_div(day + 3, 7)));
        case Period::kMonth: {
            const Civil c = civil_of(day);
            return static_cast<int32_t>(clamp32((c.year - 1970) * 12 + (c.month - 1)));
        }
        case Period::kTotal:
            break;
    }
    return 0;
}

int32_t period_first_day(Period p, int64_t unix_ms) {
    const int64_t day = day_of(unix_ms);
    switch (p) {
        case Period::kDay:
            return static_cast<int32_t>(clamp32(day));
        case Period::kWeek:
            return static_cast<int32_t>(clamp32(floor_div(day + 3, 7) * 7 - 3));
        case Period::kMonth: {
            const Civil c = civil_of(day);
            return static_cast<int32_t>(clamp32(days_of(c.year, c.month)));
        }
        case Period::kTotal:
            break;
    }
    return 0;
}

std::optional<int64_t> period_end_ms(Period p, int64_t unix_ms) {
    const int64_t day = day_of(unix_ms);
    switch (p) {
        case Period::kDay:
            return (day + 1) * kDayMs;
        case Period::kWeek:
            return (floor_div(day + 3, 7) * 7 - 3 + 7) * kDayMs;
        case Period::kMonth: {
            const Civil c = civil_of(day);
            const int64_t next =
                c.month == 12 ? days_of(c.year + 1, 1) : days_of(c.year, c.month + 1);
            return next * kDayMs;
        }
        case Period::kTotal:
            break;
    }
    return std::nullopt;
}

std::optional<int64_t> nano_of_decimal(std::string_view text, bool round_up) {
    std::size_t i = 0;
    if (i < text.size() && text[i] == '+')
        i++;
    int64_t whole = 0;
    bool digits = false, overflow = false;
    for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; i++) {
        digits = true;
        if (whole > (kMax - 9) / 10)
            overflow = true;
        else
            whole = whole * 10 + (text[i] - '0');
    }
    int64_t fraction = 0;
    int places = 0;
    bool rest = false;  // nonzero digits past the ninth decimal
    if (i < text.size() && text[i] == '.') {
        for (i++; i < text.size() && text[i] >= '0' && text[i] <= '9'; i++) {
            digits = true;
            if (places < 9) {
                fraction = fraction * 10 + (text[i] - '0');
                places++;
            } else if (text[i] != '0') {
                rest = true;
            }
        }
    }
    if (!digits || i != text.size())
        return std::nullopt;
    for (; places < 9; places++)
        fraction *= 10;
    if (overflow || whole > kMax / 1000000000)
        return kMax;
    const int64_t nano = whole * 1000000000 + fraction;
    return round_up && rest ? add_counts(nano, 1) : nano;
}

std::string decimal_of_nano(int64_t nano) {
    char text[40];
    std::snprintf(text, sizeof(text), "%lld.%09lld", static_cast<long long>(nano / 1000000000),
                  static_cast<long long>(nano % 1000000000));
    std::string s = text;
    while (s.back() == '0')
        s.pop_back();
    if (s.back() == '.')
        s.pop_back();
    return s;
}

int64_t cost_nano(const translate::Usage &usage, const Price &price) {
    if (price.id == 0)
        return 0;
    const int64_t cached = cached_part(usage.cached_tokens, usage.prompt_tokens);
    const int64_t plain = usage.prompt_tokens < 0 ? 0 : usage.prompt_tokens - cached;
    return ceil_mtok(times(plain, price.input_nano) + times(cached, price.cached_input_nano) +
                     times(usage.completion_tokens, price.output_nano));
}

int64_t worst_cost_nano(int64_t prompt_tokens, int64_t max_output_tokens, const Price &price) {
    if (price.id == 0)
        return 0;
    const int64_t input =
        price.cached_input_nano > price.input_nano ? price.cached_input_nano : price.input_nano;
    return ceil_mtok(times(prompt_tokens, input) + times(max_output_tokens, price.output_nano));
}

namespace {

uint8_t passed_mask(const Budget &b, int64_t spent) {
    uint8_t mask = 0;
    for (int i = 0; i < kThresholdCount; i++) {
        // spent >= limit x threshold / 100, exactly
        if (static_cast<__int128>(spent) * 100 >=
            static_cast<__int128>(b.limit_nano) * kThresholds[i])
            mask |= static_cast<uint8_t>(1u << i);
    }
    return mask;
}

}  // namespace

void bring_up_to_date(BudgetState &s, bool fresh, const Budget &b, int64_t unix_ms) {
    const int32_t id = period_id(b.period, unix_ms);
    if (fresh || s.period != b.period) {
        s.period = b.period;
        s.period_id = id;
        s.spent_nano = id == b.loaded_period ? b.spent_at_load_nano : 0;
        s.reserved_nano = 0;
        s.alerted = passed_mask(b, s.spent_nano);
    } else if (s.period_id != id) {
        s.period_id = id;
        s.spent_nano = 0;
        s.reserved_nano = 0;
        s.alerted = 0;
    }
}

bool stale(const BudgetState &s, int64_t unix_ms) {
    return s.reserved_nano == 0 && s.period != Period::kTotal &&
           s.period_id != period_id(s.period, unix_ms);
}

bool fits(const BudgetState &s, const Budget &b, int64_t cost) {
    if (s.spent_nano >= b.limit_nano)
        return false;
    return add_counts(add_counts(s.spent_nano, s.reserved_nano), cost) <= b.limit_nano;
}

uint8_t settle(BudgetState &s, const Budget &b, int32_t reserved_in, int64_t reserved,
               int64_t cost) {
    if (reserved_in == s.period_id) {
        s.reserved_nano -= reserved;
        if (s.reserved_nano < 0)
            s.reserved_nano = 0;
    }
    s.spent_nano = add_counts(s.spent_nano, cost);
    const uint8_t now = passed_mask(b, s.spent_nano);
    const uint8_t fresh = static_cast<uint8_t>(now & ~s.alerted);
    s.alerted |= now;
    return fresh;
}

std::optional<int64_t> seconds_to_renewal(const Budget &b, int64_t unix_ms) {
    std::optional<int64_t> end = period_end_ms(b.period, unix_ms);
    if (!end)
        return std::nullopt;
    return (*end - unix_ms + 999) / 1000;
}

std::string budget_refusal_message(const Budget &b, const BudgetState &s, int64_t cost,
                                   const std::string &key_name, const std::string &tenant,
                                   const std::string &currency, int64_t unix_ms) {
    std::string whose = tenant.empty()
                            ? "access key '" + key_name + "'"
                            : "tenant '" + tenant + "' (of access key '" + key_name + "')";
    std::string m = "The " + std::string(period_name(b.period)) + " budget of " + whose + ", " +
                    b.amount + (currency.empty() ? "" : " " + currency);
    if (s.spent_nano >= b.limit_nano) {
        m += ", is used up: " + decimal_of_nano(s.spent_nano) + " spent";
    } else {
        m += ", cannot cover this request: " + decimal_of_nano(s.spent_nano) + " spent, " +
             decimal_of_nano(s.reserved_nano) +
             " held by requests in progress, and this one may cost up to " + decimal_of_nano(cost);
    }
    std::optional<int64_t> end = period_end_ms(b.period, unix_ms);
    if (!end)
        return m + ". It does not renew: ask an administrator to raise it (budget => ...).";
    const int64_t day = floor_div(*end, kDayMs);
    const Civil c = civil_of(day);
    const int dom = static_cast<int>(day - days_of(c.year, c.month)) + 1;
    char when[40];
    std::snprintf(when, sizeof(when), "%04lld-%02d-%02dT00:00:00Z", static_cast<long long>(c.year),
                  c.month, dom);
    return m + ". It renews at " + when + ".";
}

}  // namespace pgi::governance
