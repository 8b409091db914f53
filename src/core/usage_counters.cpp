#include "usage_counters.h"

#include <algorithm>

#include "saturating.h"

namespace pgi::governance {

void UsageCounts::add(const UsageCounts &o) {
    requests += o.requests;
    prompt_tokens = add_counts(prompt_tokens, o.prompt_tokens);
    completion_tokens = add_counts(completion_tokens, o.completion_tokens);
    total_tokens = add_counts(total_tokens, o.total_tokens);
    cached_tokens = add_counts(cached_tokens, o.cached_tokens);
    errors += o.errors;
    rate_limited += o.rate_limited;
    last_access_ms = std::max(last_access_ms, o.last_access_ms);
}

Tokens tokens_of(const translate::Usage &usage) {
    Tokens t;
    if (!usage.present)
        return t;
    t.prompt = std::max<int64_t>(usage.prompt_tokens, 0);
    t.completion = std::max<int64_t>(usage.completion_tokens, 0);
    t.total = std::max<int64_t>(usage.total_tokens, 0);
    if (t.prompt == 0 && t.completion == 0)
        t.prompt = t.total;
    if (t.total == 0)
        t.total = add_counts(t.prompt, t.completion);
    t.cached = cached_part(usage.cached_tokens, t.prompt);
    return t;
}

UsageCounts usage_of(int status, bool rate_limited, const translate::Usage &usage,
                     int64_t unix_ms) {
    UsageCounts c{};
    Tokens t = tokens_of(usage);
    c.requests = 1;
    c.prompt_tokens = t.prompt;
    c.completion_tokens = t.completion;
    c.total_tokens = t.total;
    c.cached_tokens = t.cached;
    c.rate_limited = rate_limited ? 1 : 0;
    c.errors = !rate_limited && status >= 400 ? 1 : 0;
    c.last_access_ms = unix_ms;
    return c;
}

int32_t utc_day(int64_t unix_ms) {
    constexpr int64_t kDayMs = 86'400'000;
    int64_t day = unix_ms / kDayMs;
    if (unix_ms % kDayMs < 0)
        day--;  // floor for times before 1970
    return static_cast<int32_t>(day);
}

UsageKey usage_key(std::string_view key, std::string_view service, int64_t price, int32_t day,
                   std::string_view user) {
    return UsageKey{PayerName::of(key), Name::of(service), day, EndUser::of(user), price};
}

uint64_t hash_of(const UsageKey &k) {
    static constexpr char kSeparator = '\0';  // ("ab", "c") and ("a", "bc") differ
    uint64_t h = hash_of(k.key);
    h = hash_bytes(&kSeparator, 1, h);
    h = hash_of(k.service, h);
    h = hash_bytes(&k.day, sizeof(k.day), h);
    h = hash_bytes(&k.price, sizeof(k.price), h);
    return hash_of(k.user, h);
}

bool add_usage(UsageTable &table, const UsageKey &k, uint64_t hash, const UsageCounts &counts) {
    UsageEntry *e = table.find_or_insert(k, hash);
    if (e == nullptr)
        return false;
    e->counts.add(counts);
    return true;
}

void take_usage(UsageTable &table, std::vector<UsageEntry> &out) {
    table.remove_if([&](UsageEntry &e) {
        if (e.counts.empty())
            return true;
        out.push_back(e);
        e.counts = UsageCounts{};
        return false;
    });
}

}  // namespace pgi::governance
