#include "base64.h"

#include <array>
#include <cstdint>
#include <cstring>
#include <limits>

namespace pgi::base64 {

namespace {

static_assert(sizeof(float) == 4 && std::numeric_limits<float>::is_iec559,
              "the wire format is IEEE 754 binary32");

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr unsigned char kInvalid = 0xFF;

// Character -> 6-bit value, kInvalid elsewhere; the high bit lets a whole quad be checked at once.
constexpr std::array<unsigned char, 256> make_reverse() {
    std::array<unsigned char, 256> table{};
    for (auto &entry : table)
        entry = kInvalid;
    for (unsigned char i = 0; i < 64; ++i)
        table[static_cast<unsigned char>(kAlphabet[i])] = i;
    return table;
}
constexpr std::array<unsigned char, 256> kReverse = make_reverse();

std::string encode_bytes(const unsigned char *in, std::size_t n) {
    std::string out(4 * ((n + 2) / 3), '\0');
    char *o = out.data();
    std::size_t i = 0;
    for (; n - i >= 3; i += 3, o += 4) {
        const std::uint32_t v = (std::uint32_t{in[i]} << 16) | (std::uint32_t{in[i + 1]} << 8) |
                                std::uint32_t{in[i + 2]};
        o[0] = kAlphabet[v >> 18];
        o[1] = kAlphabet[(v >> 12) & 0x3F];
        o[2] = kAlphabet[(v >> 6) & 0x3F];
        o[3] = kAlphabet[v & 0x3F];
    }
    if (n - i == 1) {
        const std::uint32_t v = std::uint32_t{in[i]} << 16;
        o[0] = kAlphabet[v >> 18];
        o[1] = kAlphabet[(v >> 12) & 0x3F];
        o[2] = '=';
        o[3] = '=';
    } else if (n - i == 2) {
        const std::uint32_t v = (std::uint32_t{in[i]} << 16) | (std::uint32_t{in[i + 1]} << 8);
        o[0] = kAlphabet[v >> 18];
        o[1] = kAlphabet[(v >> 12) & 0x3F];
        o[2] = kAlphabet[(v >> 6) & 0x3F];
        o[3] = '=';
    }
    return out;
}

}  // namespace

std::string encode(const std::string &bytes) {
    return encode_bytes(reinterpret_cast<const unsigned char *>(bytes.data()), bytes.size());
}

std::optional<std::string> decode(const std::string &text) {
    const auto *in = reinterpret_cast<const unsigned char *>(text.data());
    std::size_t n = text.size();
    // Padding only counts as such when it completes a quad; a '=' anywhere else fails the table
    // lookup below.
    if (n % 4 == 0 && n > 0) {
        if (in[n - 1] == '=')
            --n;
        if (in[n - 1] == '=')
            --n;
    }
    const std::size_t tail = n % 4;
    if (tail == 1)
        return std::nullopt;

    std::string out(n / 4 * 3 + (tail == 0 ? 0 : tail - 1), '\0');
    auto *o = reinterpret_cast<unsigned char *>(out.data());
    const std::size_t full = n - tail;
    for (std::size_t i = 0; i < full; i += 4, o += 3) {
        const unsigned a = kReverse[in[i]], b = kReverse[in[i + 1]], c = kReverse[in[i + 2]],
                       d = kReverse[in[i + 3]];
        if ((a | b | c | d) & 0x80)
            return std::nullopt;
        const std::uint32_t v = (a << 18) | (b << 12) | (c << 6) | d;
        o[0] = static_cast<unsigned char>(v >> 16);
        o[1] = static_cast<unsigned char>(v >> 8);
        o[2] = static_cast<unsigned char>(v);
    }
    // A final partial quad must leave its unused low bits zero: otherwise two different texts
    // would decode to the same bytes.
    if (tail == 2) {
        const unsigned a = kReverse[in[full]], b = kReverse[in[full + 1]];
        if (((a | b) & 0x80) || (b & 0x0F))
            return std::nullopt;
        o[0] = static_cast<unsigned char>((a << 2) | (b >> 4));
    } else if (tail == 3) {
        const unsigned a = kReverse[in[full]], b = kReverse[in[full + 1]],
                       c = kReverse[in[full + 2]];
        if (((a | b | c) & 0x80) || (c & 0x03))
            return std::nullopt;
        o[0] = static_cast<unsigned char>((a << 2) | (b >> 4));
        o[1] = static_cast<unsigned char>(((b & 0x0F) << 4) | (c >> 2));
    }
    return out;
}

std::string encode_floats(const std::vector<float> &values) {
    // Bits via memcpy, bytes via shifts: correct on big-endian hosts, and compilers turn it into
    // plain stores on little-endian ones.
    std::string bytes(values.size() * 4, '\0');
    auto *b = reinterpret_cast<unsigned char *>(bytes.data());
    for (std::size_t i = 0; i < values.size(); ++i, b += 4) {
        std::uint32_t bits;
        std::memcpy(&bits, &values[i], sizeof bits);
        b[0] = static_cast<unsigned char>(bits);
        b[1] = static_cast<unsigned char>(bits >> 8);
        b[2] = static_cast<unsigned char>(bits >> 16);
        b[3] = static_cast<unsigned char>(bits >> 24);
    }
    return encode_bytes(reinterpret_cast<const unsigned char *>(bytes.data()), bytes.size());
}

std::optional<std::vector<float>> decode_floats(const std::string &text) {
    const std::optional<std::string> bytes = decode(text);
    if (!bytes || bytes->size() % 4 != 0)
        return std::nullopt;
    std::vector<float> values(bytes->size() / 4);
    const auto *b = reinterpret_cast<const unsigned char *>(bytes->data());
    for (std::size_t i = 0; i < values.size(); ++i, b += 4) {
        const std::uint32_t bits = std::uint32_t{b[0]} | (std::uint32_t{b[1]} << 8) |
                                   (std::uint32_t{b[2]} << 16) | (std::uint32_t{b[3]} << 24);
        std::memcpy(&values[i], &bits, sizeof bits);
    }
    return values;
}

}  // namespace pgi::base64
