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

// The character at the start of non-empty text: its length in bytes, whether it is well-formed
// UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF: what PostgreSQL accepts in a
// UTF8 database) and, when it is, its code point. For bytes that are not, the length of their
// maximal subpart (the bytes that could begin a character, at least one): what a decoder
// replaces with one U+FFFD, as Unicode recommends and nlohmann's json does.
struct Utf8Step {
    std::size_t bytes;
    bool valid;
    char32_t cp = 0;
};
inline Utf8Step utf8_step(std::string_view text) {
    const auto *p = reinterpret_cast<const unsigned char *>(text.data());
    const std::size_t n = text.size();
    const unsigned char c = p[0];
    if (c < 0x80)
        return {1, true, c};
    std::size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
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
        return {1, false};
    }
    if (n < 2 || p[1] < lo || p[1] > hi)
        return {1, false};
    char32_t cp = c & (0x7F >> len);
    for (std::size_t k = 1; k < len; k++) {
        if (k >= n || (p[k] & 0xC0) != 0x80)
            return {k, false};
        cp = (cp << 6) | (p[k] & 0x3F);
    }
    return {len, true, cp};
}

// Whether text is well-formed UTF-8.
inline bool utf8_valid(std::string_view text) {
    for (std::size_t i = 0; i < text.size();) {
        const Utf8Step step = utf8_step(text.substr(i));
        if (!step.valid)
            return false;
        i += step.bytes;
    }
    return true;
}

}  // namespace pgi
