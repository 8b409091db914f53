#include "sse.h"

#include <gtest/gtest.h>
#include <random>
#include <string>
#include <vector>

#include "error.h"

namespace {

using pgi::SseEvent;
using pgi::SseParser;

struct Ev {
    std::string event;
    std::string data;
    bool operator==(const Ev &o) const { return event == o.event && data == o.data; }
};

std::ostream &operator<<(std::ostream &os, const Ev &e) {
    return os << "{event=" << e.event << ", data=" << e.data << "}";
}

std::vector<Ev> convert(const std::vector<SseEvent> &events) {
    std::vector<Ev> out;
    for (const SseEvent &e : events)
        out.push_back({e.event, e.data});
    return out;
}

std::vector<Ev> whole(std::string_view text) {
    SseParser p;
    auto events = p.feed(text);
    auto rest = p.finish();
    events.insert(events.end(), rest.begin(), rest.end());
    return convert(events);
}

std::vector<Ev> in_pieces(std::string_view text, const std::vector<std::size_t> &cuts) {
    SseParser p;
    std::vector<SseEvent> events;
    std::size_t pos = 0;
    for (std::size_t cut : cuts) {
        p.feed(text.substr(pos, cut - pos), events);
        pos = cut;
    }
    p.feed(text.substr(pos), events);
    p.finish(events);
    return convert(events);
}

const char kMixed[] =
    "\xEF\xBB\xBF: a comment\r\n"
    "event: first\r\n"
    "data: one\r\n"
    "data:two\r\n"
    "id: 7\r\n"
    "retry: 100\r\n"
    "\r\n"
    "data: cr only\r"
    "\r"
    "event: named-but-empty\n"
    "\n"
    "data\n"
    "\n"
    "data:  two spaces\n"
    "unknown: field\n"
    "\n"
    "data: last\r\n\r\n";

const std::vector<Ev> kMixedEvents = {
    {"first", "one\ntwo"}, {"", "cr only"}, {"", ""}, {"", " two spaces"}, {"", "last"}};

}  // namespace

TEST(Sse, SimpleEvent) {
    EXPECT_EQ(whole("data: hello\n\n"), (std::vector<Ev>{{"", "hello"}}));
}

TEST(Sse, NamedEventAndMultilineData) {
    EXPECT_EQ(whole("event: message_start\ndata: {\"a\":1}\ndata: {\"b\":2}\n\n"),
              (std::vector<Ev>{{"message_start", "{\"a\":1}\n{\"b\":2}"}}));
}

TEST(Sse, AllLineEndingsCommentsAndIgnoredFields) {
    EXPECT_EQ(whole(kMixed), kMixedEvents);
}

TEST(Sse, EventWithoutDataIsNotDeliveredAndItsNameDoesNotLeak) {
    EXPECT_EQ(whole("event: ping\n\ndata: x\n\n"), (std::vector<Ev>{{"", "x"}}));
}

TEST(Sse, OneByteAtATime) {
    std::string text = kMixed;
    std::vector<std::size_t> cuts;
    for (std::size_t i = 1; i < text.size(); ++i)
        cuts.push_back(i);
    EXPECT_EQ(in_pieces(text, cuts), kMixedEvents);
}

TEST(Sse, EverySingleSplitPoint) {
    std::string text = kMixed;
    for (std::size_t i = 0; i <= text.size(); ++i) {
        EXPECT_EQ(in_pieces(text, {i}), kMixedEvents) << "split at " << i;
    }
}

TEST(Sse, RandomSplits) {
    std::string text = kMixed;
    std::mt19937 rng(42);
    for (int round = 0; round < 200; ++round) {
        std::vector<std::size_t> cuts;
        for (std::size_t i = 1; i < text.size(); ++i) {
            if (rng() % 4 == 0)
                cuts.push_back(i);
        }
        EXPECT_EQ(in_pieces(text, cuts), kMixedEvents) << "round " << round;
    }
}

TEST(Sse, CarriageReturnAtTheEndOfAPieceThenAnotherLine) {
    SseParser p;
    EXPECT_TRUE(p.feed("data: a\r").empty());
    // The \r ended the line; the next piece starting with \r is the blank line, not a \r\n pair.
    EXPECT_EQ(convert(p.feed("\rdata: b\r")), (std::vector<Ev>{{"", "a"}}));
    EXPECT_TRUE(p.feed("\n").empty());  // the \n of a \r\n split across pieces adds no blank line
    EXPECT_EQ(convert(p.feed("\r\n")), (std::vector<Ev>{{"", "b"}}));
}

TEST(Sse, EmptyFeedsChangeNothing) {
    SseParser p;
    EXPECT_TRUE(p.feed("").empty());
    EXPECT_TRUE(p.feed("data: a\r").empty());
    EXPECT_TRUE(p.feed("").empty());
    EXPECT_EQ(convert(p.feed("\n\n")), (std::vector<Ev>{{"", "a"}}));
}

TEST(Sse, FinishDeliversAnUnterminatedEvent) {
    EXPECT_EQ(whole("data: {\"done\":true}"), (std::vector<Ev>{{"", "{\"done\":true}"}}));
    EXPECT_EQ(whole("event: x\ndata: y\n"), (std::vector<Ev>{{"x", "y"}}));
    EXPECT_TRUE(whole("event: x\n").empty());
    EXPECT_TRUE(whole(": just a comment").empty());
}

TEST(Sse, ByteOrderMarkOnlyAtTheStart) {
    std::string bom = "\xEF\xBB\xBF";
    EXPECT_EQ(in_pieces(bom + "data: a\n\n", {1, 2}), (std::vector<Ev>{{"", "a"}}));
    // Later in the stream it is ordinary text.
    EXPECT_EQ(whole("data: a\n\n" + bom + "data: b\n\n"), (std::vector<Ev>{{"", "a"}}));
}

TEST(Sse, OversizedEventIsRefused) {
    SseParser p(64);
    std::string big(100, 'x');
    try {
        p.feed("data: " + big);
        FAIL() << "no error";
    } catch (const pgi::Error &e) {
        EXPECT_EQ(e.sqlstate(), pgi::sqlstate::kUpstreamBadResponse);
    }
    SseParser q(64);
    // Many small lines that add up past the limit count too.
    EXPECT_THROW(
        {
            for (int i = 0; i < 20; ++i)
                q.feed("data: 0123456789\n");
        },
        pgi::Error);
}

TEST(Sse, ManyEventsInOneFeed) {
    std::string text;
    for (int i = 0; i < 100; ++i)
        text += "data: " + std::to_string(i) + "\n\n";
    auto events = whole(text);
    ASSERT_EQ(events.size(), 100u);
    EXPECT_EQ(events[99].data, "99");
}

// The sink form hands over single-line events without copying them, and copies whatever must
// outlive the bytes of one feed (a data line whose blank line comes in the next piece).
TEST(Sse, SinkSeesWholeEventsInPlaceAndCopiesWhatSpansPieces) {
    struct Recorder final : pgi::SseSink {
        std::string_view fed;
        std::vector<std::pair<std::string, bool>> seen;  // data, and whether it was in place
        void on_event(const pgi::SseEventView &e) override {
            bool in_place = e.data.data() >= fed.data() &&
                            e.data.data() + e.data.size() <= fed.data() + fed.size();
            seen.emplace_back(std::string(e.data), in_place);
        }
    } recorder;
    SseParser p;
    std::string first = "data: one\n\ndata: two\n";
    recorder.fed = first;
    p.feed(first, recorder);
    std::string second = "\ndata: three\ndata: four\n\n";
    recorder.fed = second;
    p.feed(second, recorder);
    ASSERT_EQ(recorder.seen.size(), 3u);
    EXPECT_EQ(recorder.seen[0], std::make_pair(std::string("one"), true));
    EXPECT_EQ(recorder.seen[1], std::make_pair(std::string("two"), false));
    EXPECT_EQ(recorder.seen[2], std::make_pair(std::string("three\nfour"), false));
}

TEST(Sse, EventsBeforeAnOversizedOneAreHandedOver) {
    SseParser p(64);
    std::vector<SseEvent> events;
    EXPECT_THROW(p.feed("data: a\n\ndata: b\n\ndata: " + std::string(100, 'x') + "\n\n", events),
                 pgi::Error);
    EXPECT_EQ(convert(events), (std::vector<Ev>{{"", "a"}, {"", "b"}}));
}
