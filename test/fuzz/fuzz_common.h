// What every fuzz target shares: the endpoints it calls, the property check that turns a broken
// promise into a crash libFuzzer keeps, and JSON validity.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <fuzzer/FuzzedDataProvider.h>
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

}  // namespace pgi::fuzz
