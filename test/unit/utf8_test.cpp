#include "utf8.h"

#include <gtest/gtest.h>
#include <string>

using pgi::utf8_chars;
using pgi::utf8_valid;

TEST(Utf8, CountsCharactersNotBytes) {
    EXPECT_EQ(utf8_chars("abc"), 3u);
    EXPECT_EQ(utf8_chars("caf\xc3\xa9"), 4u);
    EXPECT_EQ(utf8_chars("\xf0\x9f\x98\x80"), 1u);
}

TEST(Utf8, TakesWellFormedText) {
    EXPECT_TRUE(utf8_valid(""));
    EXPECT_TRUE(utf8_valid("plain ascii"));
    EXPECT_TRUE(utf8_valid("caf\xc3\xa9"));
    EXPECT_TRUE(utf8_valid("\xe2\x82\xac"));          // U+20AC
    EXPECT_TRUE(utf8_valid("\xed\x9f\xbf"));          // U+D7FF, just below the surrogates
    EXPECT_TRUE(utf8_valid("\xf0\x9f\x98\x80"));      // U+1F600
    EXPECT_TRUE(utf8_valid("\xf4\x8f\xbf\xbf"));      // U+10FFFF, the last code point
    EXPECT_TRUE(utf8_valid(std::string("a\0b", 3)));  // NUL is UTF-8; callers refuse it
}

TEST(Utf8, RefusesMalformedText) {
    EXPECT_FALSE(utf8_valid("caf\xe9"));           // Latin-1
    EXPECT_FALSE(utf8_valid("\x80"));              // a lone continuation byte
    EXPECT_FALSE(utf8_valid("\xc3"));              // cut short
    EXPECT_FALSE(utf8_valid("\xe2\x82"));          // cut short
    EXPECT_FALSE(utf8_valid("\xc0\xaf"));          // overlong '/'
    EXPECT_FALSE(utf8_valid("\xe0\x80\xaf"));      // overlong '/'
    EXPECT_FALSE(utf8_valid("\xf0\x80\x80\xaf"));  // overlong '/'
    EXPECT_FALSE(utf8_valid("\xed\xa0\x80"));      // U+D800, a surrogate
    EXPECT_FALSE(utf8_valid("\xf4\x90\x80\x80"));  // above U+10FFFF
    EXPECT_FALSE(utf8_valid("\xf5\x80\x80\x80"));  // no such lead byte
    EXPECT_FALSE(utf8_valid("\xe2\x28\xa1"));      // a bad third byte
    EXPECT_FALSE(utf8_valid("\xf0\x9f\x98\x28"));  // a bad fourth byte
}
