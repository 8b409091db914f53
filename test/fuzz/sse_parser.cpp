// The SSE parser on a body (the input) fed whole, in pieces cut where the fuzzer chose, and one
// byte at a time: the events must not depend on the cuts.
#include "error.h"
#include "fuzz_common.h"
#include "sse.h"

using namespace pgi;

namespace {

struct Run {
    std::vector<SseEvent> events;
    bool refused = false;  // the size cap was hit
};

Run parse(const std::vector<std::string_view> &pieces, std::size_t cap) {
    SseParser parser(cap);
    Run run;
    try {
        for (std::string_view piece : pieces)
            parser.feed(piece, run.events);
        parser.finish(run.events);
    } catch (const Error &) {
        run.refused = true;
    }
    return run;
}

bool same(const SseEvent &a, const SseEvent &b) {
    return a.event == b.event && a.data == b.data;
}

// Where one run was refused by the cap, what it delivered before is a prefix of the other's.
void check_agree(const Run &a, const Run &b) {
    if (!a.refused && !b.refused)
        FUZZ_CHECK(a.events.size() == b.events.size());
    if (a.refused && !b.refused)
        FUZZ_CHECK(a.events.size() <= b.events.size());
    const std::size_t n = std::min(a.events.size(), b.events.size());
    for (std::size_t i = 0; i < n; ++i)
        FUZZ_CHECK(same(a.events[i], b.events[i]));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FuzzedDataProvider in(data, size);
    // A small cap in some runs, so the refusal path is fuzzed too.
    const std::size_t cap = in.ConsumeBool() ? in.ConsumeIntegralInRange<std::size_t>(1, 256)
                                             : SseParser::kDefaultMaxEventBytes;
    const std::vector<std::size_t> cuts = fuzz::cut_lengths(in);
    const std::string body = in.ConsumeRemainingBytesAsString();

    const Run whole = parse({body}, cap);
    for (const SseEvent &e : whole.events) {
        // Fields end at line ends: none is left inside a value.
        FUZZ_CHECK(e.event.find_first_of("\r\n") == std::string::npos);
        FUZZ_CHECK(e.data.find('\r') == std::string::npos);
    }
    const Run pieces = parse(fuzz::split(body, cuts), cap);
    std::vector<std::string_view> bytes;
    for (std::size_t i = 0; i < body.size(); ++i)
        bytes.push_back(std::string_view(body).substr(i, 1));
    const Run single = parse(bytes, cap);

    if (cap == SseParser::kDefaultMaxEventBytes) {
        // Inputs are far below the default cap: no refusal, and identical events.
        FUZZ_CHECK(!whole.refused && !pieces.refused && !single.refused);
    }
    check_agree(whole, pieces);
    check_agree(pieces, whole);
    check_agree(whole, single);
    check_agree(single, whole);
    return 0;
}
