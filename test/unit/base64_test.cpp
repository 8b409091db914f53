#include "base64.h"

#include <cstdint>
#include <cstring>
#include <gtest/gtest.h>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

namespace b = pgi::base64;

std::uint32_t bits_of(float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

float float_of(std::uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

TEST(Base64, Rfc4648Vectors) {
    const std::vector<std::pair<std::string, std::string>> vectors = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
    };
    for (const auto &[plain, encoded] : vectors) {
        EXPECT_EQ(b::encode(plain), encoded);
        EXPECT_EQ(b::decode(encoded), std::optional<std::string>(plain)) << encoded;
    }
}

TEST(Base64, UsesTheStandardAlphabet) {
    EXPECT_EQ(b::encode("\xfb\xff\xbf"), "+/+/");
    EXPECT_EQ(b::decode("+/+/"), std::optional<std::string>("\xfb\xff\xbf"));
    EXPECT_EQ(b::encode(std::string("\0\0\0", 3)), "AAAA");
}

TEST(Base64, ToleratesMissingPadding) {
    EXPECT_EQ(b::decode("Zg"), std::optional<std::string>("f"));
    EXPECT_EQ(b::decode("Zm8"), std::optional<std::string>("fo"));
    EXPECT_EQ(b::decode("Zm9vYg"), std::optional<std::string>("foob"));
    EXPECT_EQ(b::decode("Zm9vYmE"), std::optional<std::string>("fooba"));
}

TEST(Base64, RejectsInvalidInput) {
    for (const std::string text :
         {"Z", "Zm9vY", "Zg=", "Zm9v=", "Zg==Zg==", "Z===", "====", "==", "=", "Zm 9v", "Zm9v\n",
          " Zm9v", "Zm-_", "Zm9v!", "Zg==\n", "Zm=v"})
        EXPECT_EQ(b::decode(text), std::nullopt) << text;
    // Non-zero unused bits: "Zh==" and "Zm9=" are not what any encoder writes for "f" and "fo".
    EXPECT_EQ(b::decode("Zh=="), std::nullopt);
    EXPECT_EQ(b::decode("Zh"), std::nullopt);
    EXPECT_EQ(b::decode("Zm9="), std::nullopt);
    EXPECT_EQ(b::decode(std::string("Zm9v\0", 5)), std::nullopt);
    EXPECT_EQ(b::decode("Zm9v\xff"), std::nullopt);
}

TEST(Base64, RoundTripsEveryByteAndLength) {
    std::string all;
    for (int i = 0; i < 256; ++i)
        all += static_cast<char>(i);
    EXPECT_EQ(b::decode(b::encode(all)), std::optional<std::string>(all));

    std::mt19937 rng(42);
    for (std::size_t len = 0; len < 200; ++len) {
        std::string bytes(len, '\0');
        for (char &ch : bytes)
            ch = static_cast<char>(rng());
        const std::string text = b::encode(bytes);
        EXPECT_EQ(text.size(), 4 * ((len + 2) / 3));
        EXPECT_EQ(b::decode(text), std::optional<std::string>(bytes)) << len;
        std::string unpadded = text;
        while (!unpadded.empty() && unpadded.back() == '=')
            unpadded.pop_back();
        EXPECT_EQ(b::decode(unpadded), std::optional<std::string>(bytes)) << len;
    }
}

TEST(Base64Floats, KnownVector) {
    EXPECT_EQ(b::encode_floats({1.0f, -2.0f}), "AACAPwAAAMA=");
    const auto floats = b::decode_floats("AACAPwAAAMA=");
    ASSERT_TRUE(floats.has_value());
    EXPECT_EQ(*floats, (std::vector<float>{1.0f, -2.0f}));
}

TEST(Base64Floats, IsLittleEndianOnTheWire) {
    EXPECT_EQ(b::decode(b::encode_floats({1.0f})),
              std::optional<std::string>(std::string("\x00\x00\x80\x3f", 4)));
    EXPECT_EQ(b::decode(b::encode_floats({float_of(0x01020304)})),
              std::optional<std::string>(std::string("\x04\x03\x02\x01", 4)));
}

TEST(Base64Floats, RoundTripIsBitExact) {
    const std::vector<std::uint32_t> patterns = {
        0x00000000,  // +0
        0x80000000,  // -0
        0x00000001,  // smallest denormal
        0x807fffff,  // largest negative denormal
        0x00800000,  // FLT_MIN
        0x7f7fffff,  // FLT_MAX
        0x7f800000,  // +inf
        0xff800000,  // -inf
        0x7fc00000,  // quiet NaN
        0x7fc12345,  // quiet NaN with a payload
        0xffc00001,  // negative NaN with a payload
        0x3f800000,  // 1
        0xbf800000,  // -1
        0x3eaaaaab,  // 1/3
        0xffffffff,
    };
    std::vector<float> values;
    for (std::uint32_t p : patterns)
        values.push_back(float_of(p));
    const auto decoded = b::decode_floats(b::encode_floats(values));
    ASSERT_TRUE(decoded.has_value());
    ASSERT_EQ(decoded->size(), patterns.size());
    for (std::size_t i = 0; i < patterns.size(); ++i)
        EXPECT_EQ(bits_of((*decoded)[i]), patterns[i]) << i;
}

TEST(Base64Floats, RoundTripsALargeEmbedding) {
    std::mt19937 rng(7);
    std::normal_distribution<float> dist(0.0f, 0.05f);
    std::vector<float> values(3072);
    for (float &f : values)
        f = dist(rng);
    const std::string text = b::encode_floats(values);
    EXPECT_EQ(text.size(), 4 * ((values.size() * 4 + 2) / 3));
    const auto decoded = b::decode_floats(text);
    ASSERT_TRUE(decoded.has_value());
    ASSERT_EQ(decoded->size(), values.size());
    EXPECT_EQ(std::memcmp(decoded->data(), values.data(), values.size() * sizeof(float)), 0);
}

TEST(Base64Floats, RejectsPartialFloatsAndBadText) {
    EXPECT_EQ(b::decode_floats(""), std::optional<std::vector<float>>(std::vector<float>{}));
    EXPECT_EQ(b::encode_floats({}), "");
    EXPECT_EQ(b::decode_floats("AAAA"), std::nullopt);      // 3 bytes
    EXPECT_EQ(b::decode_floats("AACAPwA="), std::nullopt);  // 5 bytes
    EXPECT_EQ(b::decode_floats("AACAP!=="), std::nullopt);
    EXPECT_TRUE(b::decode_floats("AACAPw").has_value());  // unpadded, 4 bytes
}

}  // namespace
