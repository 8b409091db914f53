#include "redact.h"

#include <algorithm>
#include <cstddef>

namespace pgi {

namespace {

struct Range {
    std::size_t begin;
    std::size_t end;
};

// How many characters of a shortened echo stand for the hidden middle of the key.
constexpr std::size_t kTail = 4;
constexpr std::string_view kEllipsis = "\xE2\x80\xA6";  // U+2026 in UTF-8

// Where one kept string occurs in the text, found once and only when a match needs asking about.
class Kept {
  public:
    Kept(std::string_view text, std::string_view kept) : text_(text), kept_(kept) {}

    // Whether [begin, end) lies wholly inside one occurrence of the kept string.
    bool covers(std::size_t begin, std::size_t end) {
        if (kept_.empty() || end - begin > kept_.size())
            return false;
        if (!found_) {
            for (std::size_t at = text_.find(kept_); at != std::string_view::npos;
                 at = text_.find(kept_, at + 1))
                at_.push_back(at);
            found_ = true;
        }
        // An occurrence p covers the range when end - size <= p <= begin.
        const std::size_t lowest = end > kept_.size() ? end - kept_.size() : 0;
        auto it = std::lower_bound(at_.begin(), at_.end(), lowest);
        return it != at_.end() && *it <= begin;
    }

  private:
    std::string_view text_;
    std::string_view kept_;
    std::vector<std::size_t> at_;
    bool found_ = false;
};

class Matches {
  public:
    Matches(std::string_view text, const std::vector<std::string_view> &keep) {
        kept_.reserve(keep.size());
        for (std::string_view k : keep)
            kept_.emplace_back(text, k);
    }

    // Records a match unless a kept string covers it. Matches of one secret arrive in ascending
    // order, so touching ones are merged here and a text full of a one-letter key stays a
    // handful of ranges.
    void add(std::size_t begin, std::size_t end) {
        for (Kept &k : kept_) {
            if (k.covers(begin, end))
                return;
        }
        if (!ranges_.empty() && begin >= ranges_.back().begin && begin <= ranges_.back().end) {
            ranges_.back().end = std::max(ranges_.back().end, end);
            return;
        }
        ranges_.push_back({begin, end});
    }

    std::string apply(std::string_view text) {
        if (ranges_.empty())
            return std::string(text);
        std::sort(ranges_.begin(), ranges_.end(),
                  [](const Range &a, const Range &b) { return a.begin < b.begin; });
        std::string out;
        out.reserve(text.size());
        std::size_t copied = 0;
        for (std::size_t i = 0; i < ranges_.size();) {
            const std::size_t begin = ranges_[i].begin;
            std::size_t end = ranges_[i].end;
            for (++i; i < ranges_.size() && ranges_[i].begin <= end; ++i)
                end = std::max(end, ranges_[i].end);
            out.append(text.substr(copied, begin - copied));
            out.append(kRedacted);
            copied = end;
        }
        out.append(text.substr(copied));
        return out;
    }

  private:
    std::vector<Kept> kept_;
    std::vector<Range> ranges_;
};

// Every occurrence, overlapping ones included: "aaa" holds "aa" twice.
void whole_matches(std::string_view text, std::string_view secret, Matches &matches) {
    for (std::size_t at = text.find(secret); at != std::string_view::npos;
         at = text.find(secret, at + 1))
        matches.add(at, at + secret.size());
}

// Where the mask that ends at `end` begins: "…", or a run of three or more '.' or '*'.
// npos when no mask ends there.
std::size_t mask_start(std::string_view text, std::size_t end) {
    if (end >= kEllipsis.size() &&
        text.substr(end - kEllipsis.size(), kEllipsis.size()) == kEllipsis)
        return end - kEllipsis.size();
    if (end == 0 || (text[end - 1] != '.' && text[end - 1] != '*'))
        return std::string_view::npos;
    const char c = text[end - 1];
    std::size_t start = end;
    while (start > 0 && text[start - 1] == c)
        --start;
    return end - start >= 3 ? start : std::string_view::npos;
}

// The KMP failure function: fail[i] is the length of the longest proper prefix of
// secret[0..i] that is also its suffix.
std::vector<std::size_t> failure_function(std::string_view secret) {
    std::vector<std::size_t> fail(secret.size(), 0);
    for (std::size_t i = 1, k = 0; i < secret.size(); ++i) {
        while (k > 0 && secret[i] != secret[k])
            k = fail[k - 1];
        if (secret[i] == secret[k])
            ++k;
        fail[i] = k;
    }
    return fail;
}

// Shortened echoes: a mask, then the secret's last characters, after the visible start of the
// secret. The visible start is the longest prefix of the secret that ends where the mask
// begins, found by one KMP pass over the text (linear, whatever the text or the key).
void shortened_matches(std::string_view text, std::string_view secret, Matches &matches) {
    if (secret.size() <= kTail)
        return;
    const std::string_view tail = secret.substr(secret.size() - kTail);
    std::vector<Range> echoes;  // begin: where the mask begins
    for (std::size_t at = text.find(tail); at != std::string_view::npos;
         at = text.find(tail, at + 1)) {
        const std::size_t mask = mask_start(text, at);
        if (mask != std::string_view::npos)
            echoes.push_back({mask, at + kTail});
    }
    if (echoes.empty())
        return;
    std::sort(echoes.begin(), echoes.end(),
              [](const Range &a, const Range &b) { return a.begin < b.begin; });
    const std::vector<std::size_t> fail = failure_function(secret);
    std::size_t state = 0;  // length of the longest prefix of the secret ending at text[i - 1]
    std::size_t i = 0;
    for (const Range &echo : echoes) {
        for (; i < echo.begin; ++i) {
            if (state == secret.size())
                state = fail[state - 1];
            while (state > 0 && text[i] != secret[state])
                state = fail[state - 1];
            if (text[i] == secret[state])
                ++state;
        }
        matches.add(echo.begin - state, echo.end);
    }
}

}  // namespace

std::string redact(std::string_view text, const std::vector<std::string_view> &secrets,
                   const std::vector<std::string_view> &keep) {
    Matches matches(text, keep);
    for (std::string_view secret : secrets) {
        if (secret.empty())
            continue;
        whole_matches(text, secret, matches);
        shortened_matches(text, secret, matches);
    }
    return matches.apply(text);
}

std::string redact_key(std::string_view text, const ServiceEndpoint &service) {
    return redact(text, {service.api_key}, {service.name});
}

}  // namespace pgi
