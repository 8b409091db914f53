// Rate-limited warnings: a condition that repeats (descriptors exhausted, say, hit on every
// accept) must not flood the server log. The first occurrence of a message is logged at once;
// repeats within the window are counted and summarised at most once per window as
// "<message> (N times in the last 10 s)". Messages that differ only in numbers (a descriptor,
// a port) count as the same message.
//
// No clock of its own beyond the injected one, no I/O: the caller logs what it is given.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace pgi {

class LogThrottle {
  public:
    using Clock = std::chrono::steady_clock;
    using Now = std::function<Clock::time_point()>;

    explicit LogThrottle(std::chrono::milliseconds window = std::chrono::seconds(10),
                         Now now = Clock::now);

    // The line to log for this occurrence of message now, or nullopt when it is counted for a
    // later summary instead.
    std::optional<std::string> note(const std::string &message);
    // Summaries of messages that repeated and whose window has passed since they were last
    // logged; for a timer, so that the tail of a burst is reported even if it never recurs.
    std::vector<std::string> flush();
    // Whether some repeats wait for a summary, and when flush() will have one for the earliest.
    bool pending() const;
    Clock::time_point next_flush() const;

  private:
    struct Entry {
        Clock::time_point logged;  // when the last line for it was logged
        uint64_t repeats = 0;      // occurrences since, not logged
        std::string message;       // the latest wording
    };
    std::string summary(const Entry &entry, uint64_t times) const;
    void forget_idle(Clock::time_point now);

    std::chrono::milliseconds window_;
    Now now_;
    std::unordered_map<std::string, Entry> entries_;  // by message with digits folded
};

}  // namespace pgi
