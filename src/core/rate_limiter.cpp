#include "rate_limiter.h"

#include <algorithm>

#include "saturating.h"

namespace pgi::governance {

namespace {

constexpr int64_t kMinuteUs = 60'000'000;
constexpr int64_t kHourUs = 3'600'000'000;

// GCC and Clang's 128-bit integers: elapsed time times a rate overflows 64 bits for large
// token budgets.
using Wide = __int128;

// (a * b + c) / d, rounded down, and its remainder, for a, b >= 0, a * b + c >= 0 and d > 0: in
// 64 bits when they suffice (the usual case: 128-bit division is a slow library call).
Wide muldiv(int64_t a, int64_t b, int64_t c, int64_t d, int64_t *remainder) {
    int64_t p;
    if (!__builtin_mul_overflow(a, b, &p) && !__builtin_add_overflow(p, c, &p)) {
        *remainder = p % d;
        return p / d;
    }
    Wide w = static_cast<Wide>(a) * b + c;
    *remainder = static_cast<int64_t>(w % d);
    return w / d;
}

int64_t ceil_div(int64_t a, int64_t b) {
    return a <= 0 ? 0 : (a + b - 1) / b;
}

// The buckets a key's limits use, with where each one lives.
struct Active {
    Bucket *bucket;
    BucketSpec spec;
    Refusal refusal;
};

int active_buckets(KeyBuckets &k, const Limits &l, Active (&out)[3]) {
    int n = 0;
    if (l.requests_per_minute > 0) {
        int64_t capacity = l.burst > 0 ? l.burst : l.requests_per_minute;
        out[n++] = {
            &k.minute, {capacity, l.requests_per_minute, kMinuteUs}, Refusal::kRequestsPerMinute};
    }
    if (l.requests_per_hour > 0) {
        out[n++] = {&k.hour,
                    {l.requests_per_hour, l.requests_per_hour, kHourUs},
                    Refusal::kRequestsPerHour};
    }
    if (l.tokens_per_hour > 0) {
        out[n++] = {
            &k.tokens, {l.tokens_per_hour, l.tokens_per_hour, kHourUs}, Refusal::kTokensPerHour};
    }
    return n;
}

// Records when a bucket that needs reset_us to be full again will be.
void note_full_at(KeyBuckets &k, const Bucket &b, int64_t reset_us) {
    k.full_at_us = std::max(k.full_at_us, b.updated_us + reset_us);
}

}  // namespace

void refill(Bucket &b, const BucketSpec &spec, int64_t now_us) {
    if (!b.live) {
        b = Bucket{spec.capacity, now_us, 0, true};
        return;
    }
    // Processes read the clock before taking the host's lock, so a caller may come with a time
    // a little older than the last update: it then finds the bucket as it is.
    if (now_us > b.updated_us && b.level < spec.capacity) {
        int64_t carry;
        Wide units = muldiv(now_us - b.updated_us, spec.rate, b.carry, spec.period_us, &carry);
        if (units >= static_cast<Wide>(spec.capacity) - b.level) {
            b.level = spec.capacity;
        } else {
            b.level += static_cast<int64_t>(units);
            b.carry = carry;
        }
    }
    b.updated_us = std::max(b.updated_us, now_us);
    if (b.level >= spec.capacity) {
        b.level = spec.capacity;
        b.carry = 0;
    }
}

int64_t time_until(const Bucket &b, const BucketSpec &spec, int64_t level) {
    if (b.level >= level)
        return 0;
    // ceil(((level - b.level) * period - carry) / rate); carry < period, so the numerator is
    // positive.
    int64_t missing;
    if (__builtin_sub_overflow(level, b.level, &missing))
        return INT64_MAX;  // a debt near the end of the range: as good as never
    int64_t unused;
    Wide us = muldiv(missing, spec.period_us, spec.rate - 1 - b.carry, spec.rate, &unused);
    return us > INT64_MAX ? INT64_MAX : static_cast<int64_t>(us);
}

Decision admit(KeyBuckets &k, const Limits &limits, int64_t now_us) {
    Active active[3];
    int n = active_buckets(k, limits, active);
    Decision d;
    const Active *refused_by = nullptr;
    for (int i = 0; i < n; i++) {
        Active &a = active[i];
        refill(*a.bucket, a.spec, now_us);
        // Requests take one unit; a token budget only has to be not yet spent.
        if (a.bucket->level < 1) {
            int64_t wait = time_until(*a.bucket, a.spec, 1);
            if (refused_by == nullptr || wait > d.retry_after_us) {
                refused_by = &a;
                d.retry_after_us = wait;
            }
        }
    }
    if (refused_by != nullptr) {
        d.allowed = false;
        d.refusal = refused_by->refusal;
    }
    k.full_at_us = now_us;
    bool refused_by_requests =
        refused_by != nullptr && refused_by->refusal != Refusal::kTokensPerHour;
    for (int i = 0; i < n; i++) {
        Active &a = active[i];
        Quota q{a.spec.capacity, 0, 0};
        if (a.refusal != Refusal::kTokensPerHour && d.allowed)
            a.bucket->level--;
        q.remaining = std::max<int64_t>(a.bucket->level, 0);
        q.reset_us = time_until(*a.bucket, a.spec, a.spec.capacity);
        note_full_at(k, *a.bucket, q.reset_us);
        if (a.refusal == Refusal::kTokensPerHour) {
            d.has_tokens = true;
            d.tokens = q;
            continue;
        }
        // The headers show the request limit that refused, else the one closest to refusing
        // (the later reset on a tie).
        bool pick = refused_by_requests ? &a == refused_by
                                        : !d.has_requests || q.remaining < d.requests.remaining ||
                                              (q.remaining == d.requests.remaining &&
                                               q.reset_us > d.requests.reset_us);
        if (pick) {
            d.has_requests = true;
            d.requests = q;
        }
    }
    return d;
}

void give_back(KeyBuckets &k, const Limits &limits) {
    Active active[3];
    int n = active_buckets(k, limits, active);
    for (int i = 0; i < n; i++) {
        Active &a = active[i];
        if (a.refusal != Refusal::kTokensPerHour && a.bucket->live)
            a.bucket->level = std::min(a.bucket->level + 1, a.spec.capacity);
    }
}

Decision tighter(const Decision &a, const Decision &b) {
    if (!a.allowed || !b.allowed) {
        if (a.allowed)
            return b;
        if (b.allowed)
            return a;
        return a.retry_after_us >= b.retry_after_us ? a : b;
    }
    Decision d = a;
    if (b.has_requests && (!a.has_requests || b.requests.remaining < a.requests.remaining)) {
        d.has_requests = true;
        d.requests = b.requests;
    }
    if (b.has_tokens && (!a.has_tokens || b.tokens.remaining < a.tokens.remaining)) {
        d.has_tokens = true;
        d.tokens = b.tokens;
    }
    return d;
}

void charge_tokens(KeyBuckets &k, const Limits &limits, int64_t tokens, int64_t now_us) {
    if (limits.tokens_per_hour <= 0 || tokens <= 0)
        return;
    BucketSpec spec{limits.tokens_per_hour, limits.tokens_per_hour, kHourUs};
    refill(k.tokens, spec, now_us);
    // An upstream may report any count: the debt saturates rather than overflow.
    k.tokens.level = add_counts(k.tokens.level, -tokens);
    note_full_at(k, k.tokens, time_until(k.tokens, spec, spec.capacity));
}

Lease lend(KeyBuckets &k, const Limits &limits, int64_t requests, int64_t tokens, int64_t now_us) {
    Active active[3];
    int n = active_buckets(k, limits, active);
    Lease lent{requests, tokens, true};
    bool request_limit = false;
    for (int i = 0; i < n; i++) {
        Active &a = active[i];
        refill(*a.bucket, a.spec, now_us);
        const int64_t held = std::max<int64_t>(a.bucket->level, 0);
        if (a.refusal == Refusal::kTokensPerHour) {
            lent.tokens = std::min(lent.tokens, held);
        } else {
            request_limit = true;
            lent.requests = std::min(lent.requests, held);
        }
    }
    // A block of requests without tokens to spend them on (or the reverse) would only be
    // held: lend nothing then.
    if ((request_limit && lent.requests == 0) || (limits.tokens_per_hour > 0 && lent.tokens == 0))
        lent.requests = lent.tokens = 0;
    k.full_at_us = now_us;
    for (int i = 0; i < n; i++) {
        Active &a = active[i];
        a.bucket->level -= a.refusal == Refusal::kTokensPerHour ? lent.tokens : lent.requests;
        note_full_at(k, *a.bucket, time_until(*a.bucket, a.spec, a.spec.capacity));
    }
    return lent;
}

Decision admit_leased(Lease &lease, const Limits &limits) {
    Decision d;
    const bool request_limit = limits.requests_per_minute > 0 || limits.requests_per_hour > 0;
    if ((request_limit && lease.requests < 1) ||
        (limits.tokens_per_hour > 0 && lease.tokens <= 0)) {
        d.allowed = false;
        d.refusal = request_limit && lease.requests < 1
                        ? (limits.requests_per_minute > 0 ? Refusal::kRequestsPerMinute
                                                          : Refusal::kRequestsPerHour)
                        : Refusal::kTokensPerHour;
        d.retry_after_us = 1'000'000;
        return d;
    }
    if (request_limit) {
        lease.requests--;
        d.has_requests = true;
        d.requests = {
            limits.requests_per_minute > 0 ? limits.requests_per_minute : limits.requests_per_hour,
            lease.requests, 0};
    }
    if (limits.tokens_per_hour > 0) {
        d.has_tokens = true;
        d.tokens = {limits.tokens_per_hour, std::max<int64_t>(lease.tokens, 0), 0};
    }
    return d;
}

void give_back_leased(Lease &lease, const Limits &limits) {
    if (limits.requests_per_minute > 0 || limits.requests_per_hour > 0)
        lease.requests++;
}

void charge_leased(Lease &lease, const Limits &limits, int64_t tokens) {
    if (limits.tokens_per_hour > 0 && tokens > 0)
        lease.tokens = add_counts(lease.tokens, -tokens);
}

std::string format_reset(int64_t us) {
    if (us <= 0)
        return "0s";
    if (us < 1'000'000) {
        int64_t ms = ceil_div(us, 1000);
        return ms >= 1000 ? "1s" : std::to_string(ms) + "ms";
    }
    int64_t s = ceil_div(us, 1'000'000);
    int64_t h = s / 3600, m = s % 3600 / 60, sec = s % 60;
    if (h > 0)
        return std::to_string(h) + "h" + std::to_string(m) + "m" + std::to_string(sec) + "s";
    if (m > 0)
        return std::to_string(m) + "m" + std::to_string(sec) + "s";
    return std::to_string(sec) + "s";
}

void append_rate_limit_headers(const Decision &d,
                               std::vector<std::pair<std::string, std::string>> &headers) {
    if (d.has_requests) {
        headers.emplace_back("x-ratelimit-limit-requests", std::to_string(d.requests.limit));
        headers.emplace_back("x-ratelimit-remaining-requests",
                             std::to_string(d.requests.remaining));
        headers.emplace_back("x-ratelimit-reset-requests", format_reset(d.requests.reset_us));
    }
    if (d.has_tokens) {
        headers.emplace_back("x-ratelimit-limit-tokens", std::to_string(d.tokens.limit));
        headers.emplace_back("x-ratelimit-remaining-tokens", std::to_string(d.tokens.remaining));
        headers.emplace_back("x-ratelimit-reset-tokens", format_reset(d.tokens.reset_us));
    }
    if (!d.allowed) {
        headers.emplace_back("retry-after", std::to_string(std::max<int64_t>(
                                                1, ceil_div(d.retry_after_us, 1'000'000))));
    }
}

std::string refusal_message(const Decision &d, const Limits &limits, const std::string &key_name,
                            const std::string &tenant, const std::string &user) {
    std::string what;
    switch (d.refusal) {
        case Refusal::kRequestsPerMinute:
            what = "requests per minute (limit " + std::to_string(limits.requests_per_minute);
            if (limits.burst > 0 && limits.burst != limits.requests_per_minute)
                what += ", burst " + std::to_string(limits.burst);
            what += ")";
            break;
        case Refusal::kRequestsPerHour:
            what = "requests per hour (limit " + std::to_string(limits.requests_per_hour) + ")";
            break;
        case Refusal::kTokensPerHour:
            what = "tokens per hour (limit " + std::to_string(limits.tokens_per_hour) + ")";
            break;
        case Refusal::kNone:
            return {};
    }
    std::string subject = "access key \"" + key_name + "\"";
    if (!tenant.empty())
        subject = "tenant \"" + tenant + "\" of " + subject;
    else if (!user.empty())
        subject = "end user \"" + user + "\" of " + subject;
    return "Rate limit reached for " + what + " on " + subject + ". Please try again in " +
           format_reset(d.retry_after_us) + ".";
}

}  // namespace pgi::governance
