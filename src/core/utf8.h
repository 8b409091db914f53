// Counting characters in UTF-8 text, and telling UTF-8 text from other bytes.
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

// Whether text is well-formed UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF
// (what PostgreSQL accepts in a UTF8 database).
inline bool utf8_valid(std::string_view text) {
    const auto *p = reinterpret_cast<const unsigned char *>(text.data());
    const std::size_t n = text.size();
    for (std::size_t i = 0; i < n;) {
        const unsigned char c = p[i];
        std::size_t len;
        unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0)
                lo = 0xA0;  // overlong
            else if (c == 0xED)
                hi = 0x9F;  // surrogates
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0)
                lo = 0x90;  // overlong
            else if (c == 0xF4)
                hi = 0x8F;  // above U+10FFFF
        } else {
            return false;
        }
        if (n - i < len || p[i + 1] < lo || p[i + 1] > hi)
            return false;
        for (std::size_t k = 2; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
        }
        i += len;
    }
    return true;
}

}  // namespace pgi
