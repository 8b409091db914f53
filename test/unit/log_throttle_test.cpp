#include "log_throttle.h"

#include <gtest/gtest.h>

namespace {

using namespace std::chrono_literals;
using pgi::LogThrottle;

class LogThrottleTest : public ::testing::Test {
  protected:
    LogThrottle::Clock::time_point now = LogThrottle::Clock::time_point(1000s);
    LogThrottle throttle{10s, [this] { return now; }};
};

TEST_F(LogThrottleTest, FirstOccurrenceIsLoggedRepeatsAreSummarised) {
    const std::string m = "could not accept a connection: Too many open files";
    EXPECT_EQ(throttle.note(m), m);
    EXPECT_FALSE(throttle.pending());
    for (int i = 0; i < 999; i++) {
        now += 1ms;
        EXPECT_EQ(throttle.note(m), std::nullopt);
    }
    EXPECT_TRUE(throttle.pending());
    EXPECT_EQ(throttle.next_flush(), LogThrottle::Clock::time_point(1010s));
    EXPECT_TRUE(throttle.flush().empty());  // the window has not passed
    now = LogThrottle::Clock::time_point(1010s);
    // The next occurrence after the window carries the count, itself included.
    EXPECT_EQ(throttle.note(m), m + " (1000 times in the last 10 s)");
    EXPECT_FALSE(throttle.pending());
    now += 9s;
    EXPECT_EQ(throttle.note(m), std::nullopt);
    now += 1s;
    // A burst that ends is reported by flush.
    auto lines = throttle.flush();
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_EQ(lines[0], m + " (1 time in the last 10 s)");
    EXPECT_TRUE(throttle.flush().empty());
    // Quiet for a window: the next one is logged as it is.
    now += 11s;
    EXPECT_EQ(throttle.note(m), m);
}

TEST_F(LogThrottleTest, MessagesDifferingInNumbersAreOneMessage) {
    EXPECT_EQ(throttle.note("cannot get connection on 17"), "cannot get connection on 17");
    EXPECT_EQ(throttle.note("cannot get connection on 18"), std::nullopt);
    EXPECT_EQ(throttle.note("something else"), "something else");
    now += 10s;
    auto lines = throttle.flush();
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_EQ(lines[0], "cannot get connection on 18 (1 time in the last 10 s)");
}

TEST_F(LogThrottleTest, MemoryIsBounded) {
    for (int i = 0; i < 10000; i++) {
        now += 1ms;
        throttle.note("message " + std::string(1, static_cast<char>('a' + i % 26)) +
                      std::string(static_cast<size_t>(i % 300), 'x'));
    }
    // Nothing to assert beyond not growing: every distinct message is still logged first time.
    EXPECT_EQ(throttle.note("brand new"), "brand new");
}

}  // namespace
