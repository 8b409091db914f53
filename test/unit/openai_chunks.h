// OpenAI chat output as tests compare it: `created` is the clock and a generated
// "chatcmpl-<24 characters>" id is random, so both are pinned ("created":0, "chatcmpl-X");
// everything else must not depend on the run.
#pragma once

#include <cctype>
#include <cstddef>
#include <string>

namespace pgi::test_support {

inline std::string normalised(std::string text) {
    for (std::size_t at = text.find("\"created\":"); at != std::string::npos;
         at = text.find("\"created\":", at + 1)) {
        std::size_t digits = at + 10, end = digits;
        while (end < text.size() && std::isdigit(static_cast<unsigned char>(text[end])))
            ++end;
        text.replace(digits, end - digits, "0");
    }
    for (std::size_t at = text.find("chatcmpl-"); at != std::string::npos;
         at = text.find("chatcmpl-", at + 1)) {
        std::size_t end = at + 9;
        while (end < text.size() && std::isalnum(static_cast<unsigned char>(text[end])))
            ++end;
        if (end - at - 9 == 24)
            text.replace(at + 9, 24, "X");
    }
    return text;
}

}  // namespace pgi::test_support
