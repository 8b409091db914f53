// What every fuzz target shares: the endpoints it calls, the property check that turns a broken
// promise into a crash libFuzzer keeps, and JSON validity.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <fuzzer/FuzzedDataProvider.h>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "protocol.h"

// A property the code under test promises did not hold: abort, so libFuzzer saves the input.
#define FUZZ_CHECK(cond)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            std::fprintf(stderr, "fuzz property failed: %s at %s:%d\n", #cond, __FILE__, \
                         __LINE__);                                                      \
            std::abort();                                                                \
        }                                                                                \
    } while (0)

namespace pgi::fuzz {

// A registered service of the given protocol, with a key, as the translators receive it.
ServiceEndpoint endpoint(Protocol protocol);

// Whether text is one JSON document that a strict parser (valid UTF-8 included) accepts.
bool valid_json(std::string_view text);

// Cuts text into pieces at points the fuzzer chose (each a length taken from `in`), the way a
// network delivers a body.
std::vector<std::string_view> split(std::string_view text, const std::vector<std::size_t> &cuts);
std::vector<std::size_t> cut_lengths(FuzzedDataProvider &in);

// One event of a stream a writer produced: its event name (empty when it has none) and its data.
struct StreamEvent {
    std::string name;
    std::string data;
};

// Whether two runs of the same stream wrote the same events once `scrub` has taken out of each
// JSON payload what may differ between runs (generated ids, the clock). Only events that differ
// as text are parsed: most are equal, and parsing every one took a fifth of a stream target's
// time.
bool same_events(const std::vector<StreamEvent> &a, const std::vector<StreamEvent> &b,
                 void (*scrub)(nlohmann::json &));

}  // namespace pgi::fuzz
