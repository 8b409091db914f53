#include "log_throttle.h"

#include <cctype>
#include <utility>

namespace pgi {

namespace {

// Bounds the memory of messages seen: past it, entries with nothing to report are dropped.
constexpr std::size_t kMaxEntries = 256;

std::string fold_digits(const std::string &message) {
    std::string key;
    key.reserve(message.size());
    for (char c : message) {
        if (std::isdigit(static_cast<unsigned char>(c))) {
            if (key.empty() || key.back() != '#')
                key.push_back('#');
        } else {
            key.push_back(c);
        }
    }
    return key;
}

}  // namespace

LogThrottle::LogThrottle(std::chrono::milliseconds window, Now now)
    : window_(window), now_(std::move(now)) {}

std::string LogThrottle::summary(const Entry &entry, uint64_t times) const {
    auto seconds = std::chrono::duration_cast<std::chrono::seconds>(window_).count();
    return entry.message + " (" + std::to_string(times) + (times == 1 ? " time" : " times") +
           " in the last " + std::to_string(seconds > 0 ? seconds : 1) + " s)";
}

std::optional<std::string> LogThrottle::note(const std::string &message) {
    Clock::time_point now = now_();
    std::string key = fold_digits(message);
    auto it = entries_.find(key);
    if (it == entries_.end()) {
        if (entries_.size() >= kMaxEntries)
            forget_idle(now);
        Entry entry;
        entry.logged = now;
        entry.message = message;
        entries_.emplace(std::move(key), std::move(entry));
        return message;
    }
    Entry &entry = it->second;
    entry.message = message;
    if (now - entry.logged < window_) {
        entry.repeats++;
        return std::nullopt;
    }
    uint64_t times = entry.repeats + 1;
    entry.repeats = 0;
    entry.logged = now;
    return times > 1 ? summary(entry, times) : message;
}

std::vector<std::string> LogThrottle::flush() {
    Clock::time_point now = now_();
    std::vector<std::string> lines;
    for (auto &item : entries_) {
        Entry &entry = item.second;
        if (entry.repeats == 0 || now - entry.logged < window_)
            continue;
        lines.push_back(summary(entry, entry.repeats));
        entry.repeats = 0;
        entry.logged = now;
    }
    return lines;
}

bool LogThrottle::pending() const {
    for (const auto &item : entries_) {
        if (item.second.repeats > 0)
            return true;
    }
    return false;
}

LogThrottle::Clock::time_point LogThrottle::next_flush() const {
    Clock::time_point next = Clock::time_point::max();
    for (const auto &item : entries_) {
        if (item.second.repeats > 0 && item.second.logged + window_ < next)
            next = item.second.logged + window_;
    }
    return next;
}

void LogThrottle::forget_idle(Clock::time_point now) {
    for (auto it = entries_.begin(); it != entries_.end();) {
        if (it->second.repeats == 0 && now - it->second.logged >= window_)
            it = entries_.erase(it);
        else
            ++it;
    }
    // Everything is recent or waiting for a summary: drop the quiet ones all the same, rather
    // than grow without bound.
    if (entries_.size() >= kMaxEntries) {
        for (auto it = entries_.begin(); it != entries_.end();) {
            if (it->second.repeats == 0)
                it = entries_.erase(it);
            else
                ++it;
        }
    }
}

}  // namespace pgi
