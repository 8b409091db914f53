// Chunks of a pipeline's input: sizes and overlaps in characters, never splitting one.
#include "chunking.h"

#include <gtest/gtest.h>

using pgi::chunk_text;

TEST(Chunking, PiecesOfSizeWithOverlap) {
    EXPECT_EQ(chunk_text("abcdefghij", 4, 1), (std::vector<std::string>{"abcd", "defg", "ghij"}));
    EXPECT_EQ(chunk_text("abcdefghij", 4, 0), (std::vector<std::string>{"abcd", "efgh", "ij"}));
    EXPECT_EQ(chunk_text("abc", 4, 2), (std::vector<std::string>{"abc"}));
    EXPECT_EQ(chunk_text("abcd", 4, 2), (std::vector<std::string>{"abcd"}));
    EXPECT_TRUE(chunk_text("", 4, 0).empty());
}

TEST(Chunking, CountsCharactersNotBytes) {
    // "é" is two bytes, "€" three: each is one character.
    EXPECT_EQ(chunk_text("\xc3\xa9\xc3\xa9\xe2\x82\xac\xe2\x82\xac", 2, 0),
              (std::vector<std::string>{"\xc3\xa9\xc3\xa9", "\xe2\x82\xac\xe2\x82\xac"}));
    EXPECT_EQ(chunk_text("a\xe2\x82\xac"
                         "b",
                         2, 1),
              (std::vector<std::string>{"a\xe2\x82\xac",
                                        "\xe2\x82\xac"
                                        "b"}));
}

TEST(Chunking, EveryCharacterIsInAPiece) {
    const std::string text = "the quick brown fox jumps over the lazy dog";
    for (std::size_t size = 1; size < 12; size++) {
        for (std::size_t overlap = 0; overlap < size; overlap++) {
            auto pieces = chunk_text(text, size, overlap);
            std::string joined = pieces[0];
            for (std::size_t i = 1; i < pieces.size(); i++)
                joined += pieces[i].substr(overlap < pieces[i].size() ? overlap : pieces[i].size());
            EXPECT_EQ(joined, text) << size << "/" << overlap;
        }
    }
}
