// Counting characters in UTF-8 text.
#pragma once

#include <cstddef>
#include <string_view>

namespace pgi {

// Characters, not bytes: every byte that does not continue a sequence starts a character. A
// length limit then means the same for "é" as for "e", and a token estimate (about four
// characters a token) does not double for text outside ASCII. Invalid bytes count as
// characters of their own.
inline std::size_t utf8_chars(std::string_view text) {
    std::size_t n = 0;
    for (char c : text)
        n += (static_cast<unsigned char>(c) & 0xC0) != 0x80 ? 1 : 0;
    return n;
}

}  // namespace pgi
