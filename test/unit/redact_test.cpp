// The one secret scrubber: keys of every length, keys hidden in the replacement itself,
// overlaps, several keys, the kept service name, shortened echoes, and a random-text property
// that no key survives.
#include "redact.h"

#include <chrono>
#include <gtest/gtest.h>
#include <random>
#include <string>
#include <vector>

namespace {

using pgi::kRedacted;
using pgi::redact;

std::string one(std::string_view text, std::string_view key, std::string_view keep = {}) {
    if (keep.empty())
        return redact(text, {key});
    return redact(text, {key}, {keep});
}

// The output's pieces between replacements, when the input holds no '['.
std::vector<std::string> pieces(const std::string &out) {
    std::vector<std::string> parts;
    std::size_t from = 0;
    for (std::size_t at = out.find(kRedacted); at != std::string::npos;
         at = out.find(kRedacted, from)) {
        parts.push_back(out.substr(from, at - from));
        from = at + kRedacted.size();
    }
    parts.push_back(out.substr(from));
    return parts;
}

TEST(Redact, NothingToDo) {
    EXPECT_EQ(redact("", {"key"}), "");
    EXPECT_EQ(redact("plain text", {}), "plain text");
    EXPECT_EQ(redact("plain text", {""}), "plain text");
    EXPECT_EQ(redact("plain text", {"", "zz"}), "plain text");
    EXPECT_EQ(redact("a [redacted] b", {"zz"}), "a [redacted] b");
}

TEST(Redact, EveryKeyLengthOutsideTheReplacement) {
    const std::string alphabet = "zqxjkvbwpyfg";
    for (std::size_t n = 1; n <= alphabet.size(); ++n) {
        const std::string key = alphabet.substr(0, n);
        EXPECT_EQ(one("key " + key + " end", key), "key [redacted] end") << key;
        EXPECT_EQ(one(key, key), "[redacted]") << key;
        EXPECT_EQ(one(key + "::" + key, key), "[redacted]::[redacted]") << key;
        // Text that already holds the replacement does not confuse it.
        EXPECT_EQ(one("[redacted] " + key + " [redacted]", key), "[redacted] [redacted] [redacted]")
            << key;
    }
}

TEST(Redact, EveryKeyLengthInsideTheReplacement) {
    // Every key of length 1 to 12 that occurs in "[redacted]" or contains it.
    const std::string r(kRedacted);
    std::vector<std::string> keys;
    for (std::size_t n = 1; n <= r.size(); ++n) {
        for (std::size_t at = 0; at + n <= r.size(); ++at)
            keys.push_back(r.substr(at, n));
    }
    keys.push_back(r + "x");
    keys.push_back("y" + r + "x");
    for (const std::string &key : keys) {
        const std::string out = one("before " + key + " after", key);
        // Terminates, and the key's occurrences in the original are gone: what is left of the
        // original around the replacements holds no key.
        for (const std::string &p : pieces(out))
            EXPECT_EQ(p.find(key), std::string::npos) << key << " -> " << out;
    }
    EXPECT_EQ(one("service failed: e", "e"),
              "s[redacted]rvic[redacted] fail[redacted]d: [redacted]");
    EXPECT_EQ(one("x [redacted] y", "[redacted]"), "x [redacted] y");
    EXPECT_EQ(one("[redacted][redacted]", "[redacted]"), "[redacted]");
    EXPECT_EQ(one("red alert", "red"), "[redacted] alert");
    EXPECT_EQ(one("banana", "a"), "b[redacted]n[redacted]n[redacted]");
}

TEST(Redact, OverlappingAndTouchingMatchesBecomeOne) {
    EXPECT_EQ(one("aaa", "aa"), "[redacted]");
    EXPECT_EQ(one("xaaay", "aa"), "x[redacted]y");
    EXPECT_EQ(one("abab", "ab"), "[redacted]");
    EXPECT_EQ(one("ababa", "aba"), "[redacted]");
    EXPECT_EQ(one("ab ab", "ab"), "[redacted] [redacted]");
    EXPECT_EQ(one(std::string(1000, 'a'), "a"), "[redacted]");
}

TEST(Redact, SeveralKeys) {
    EXPECT_EQ(redact("k1 and k2", {"k1", "k2"}), "[redacted] and [redacted]");
    // Overlapping matches of different keys merge.
    EXPECT_EQ(redact("xabcdy", {"abc", "cd"}), "x[redacted]y");
    EXPECT_EQ(redact("xabcdy", {"cd", "abc"}), "x[redacted]y");
    EXPECT_EQ(redact("abXcd", {"ab", "cd", ""}), "[redacted]X[redacted]");
    // Touching matches of different keys merge too.
    EXPECT_EQ(redact("abcd", {"cd", "ab"}), "[redacted]");
}

TEST(Redact, TheServiceNameIsKept) {
    EXPECT_EQ(one("service \"badx\" returned HTTP 401: key x refused", "x", "badx"),
              "service \"badx\" returned HTTP 401: key [redacted] refused");
    // A match only partly inside the name is removed.
    EXPECT_EQ(one("badxy", "xy", "badx"), "bad[redacted]");
    // The key as long as the name, and equal to it: the name is kept.
    EXPECT_EQ(one("svc: svc", "svc", "svc"), "svc: svc");
    // A key that contains the name is still removed.
    EXPECT_EQ(one("svc svc-key", "svc-key", "svc"), "svc [redacted]");
    // Several kept strings.
    EXPECT_EQ(redact("ab cd a c", {"a", "c"}, {"ab", "cd"}), "ab cd [redacted] [redacted]");
    // A key equal to the name is public already: every occurrence lies inside the name.
    EXPECT_EQ(one("service \"e\": e", "e", "e"), "service \"e\": e");
}

TEST(Redact, RedactKeyKeepsTheServiceName) {
    pgi::ServiceEndpoint s;
    s.name = "badx";
    s.api_key = "x";
    EXPECT_EQ(pgi::redact_key("no such key: x (badx)", s), "no such key: [redacted] (badx)");
    s.api_key.clear();
    EXPECT_EQ(pgi::redact_key("no such key: x (badx)", s), "no such key: x (badx)");
}

TEST(Redact, ShortenedEchoes) {
    const std::string key = "sk-proj-0123456789abcd";
    EXPECT_EQ(one("Incorrect API key provided: sk-proj-\xE2\x80\xA6"
                  "abcd.",
                  key),
              "Incorrect API key provided: [redacted].");
    EXPECT_EQ(one("Incorrect API key provided: sk-proj-...abcd.", key),
              "Incorrect API key provided: [redacted].");
    EXPECT_EQ(one("Incorrect API key provided: sk-proj-*********abcd.", key),
              "Incorrect API key provided: [redacted].");
    // No visible start, or a visible start that is not the key's: only the mask and the tail go.
    EXPECT_EQ(one("key \xE2\x80\xA6"
                  "abcd here",
                  key),
              "key [redacted] here");
    EXPECT_EQ(one("key sk-live-...abcd here", key), "key sk-live-[redacted] here");
    EXPECT_EQ(one("key sk-pr...abcd", key), "key [redacted]");
    // A longer run of dots is one mask.
    EXPECT_EQ(one("key sk-......abcd", key), "key [redacted]");
    // Not an echo: too few dots or stars, or another tail.
    EXPECT_EQ(one("v1..abcd", key), "v1..abcd");
    EXPECT_EQ(one("a**abcd", key), "a**abcd");
    EXPECT_EQ(one("sk-proj-...abce", key), "sk-proj-...abce");
    // Keys of 4 characters or fewer have no shortened form.
    EXPECT_EQ(one("...abcd", "abcd"), "...[redacted]");
    EXPECT_EQ(one("...bcd", "bcd"), "...[redacted]");
    // Shortened and whole echoes side by side.
    EXPECT_EQ(one(key + " or sk-...abcd", key), "[redacted] or [redacted]");
    // The whole key right before the mask goes with it.
    EXPECT_EQ(one(key + "...abcd", key), "[redacted]");
    // Inside the kept name, a shortened echo stays.
    EXPECT_EQ(one("name...abcd", key, "name...abcd"), "name...abcd");
}

TEST(Redact, ShortenedEchoesOfRepetitiveKeys) {
    // The visible prefix is found by its longest match even when the key repeats itself.
    const std::string key = "aaaaaaaab";  // tail "aaab"
    EXPECT_EQ(one("x aaaa...aaab y", key), "x [redacted] y");
    EXPECT_EQ(one("x aaaaaaaaaaaa...aaab y", key), "x aaaa[redacted] y");
    EXPECT_EQ(one("x ab...aaab y", key), "x ab[redacted] y");
}

TEST(Redact, NoKeySurvivesRandomTexts) {
    std::mt19937 rng(20240611);
    const std::string alphabet = "abcde-.*xyz \xE2\x80\xA6";
    auto random_text = [&](std::size_t n) {
        std::string s;
        std::uniform_int_distribution<std::size_t> pick(0, alphabet.size() - 1);
        for (std::size_t i = 0; i < n; ++i)
            s.push_back(alphabet[pick(rng)]);
        return s;
    };
    std::uniform_int_distribution<std::size_t> key_len(1, 12);
    std::uniform_int_distribution<std::size_t> text_len(0, 80);
    std::uniform_int_distribution<int> key_count(1, 3);
    for (int round = 0; round < 20000; ++round) {
        std::vector<std::string> keys;
        const int count = key_count(rng);
        for (int k = 0; k < count; ++k)
            keys.push_back(random_text(key_len(rng)));
        std::string text = random_text(text_len(rng));
        for (const std::string &k : keys) {
            std::uniform_int_distribution<std::size_t> where(0, text.size());
            text.insert(where(rng), k);
            text.insert(where(rng), k);
        }
        const std::vector<std::string_view> views(keys.begin(), keys.end());
        const std::string out = redact(text, views);
        for (const std::string &p : pieces(out)) {
            for (const std::string &k : keys)
                ASSERT_EQ(p.find(k), std::string::npos)
                    << "key '" << k << "' in '" << text << "' -> '" << out << "'";
        }
        // Only matched text goes: without the keys' letters nothing changes.
        ASSERT_EQ(redact(text, {"#"}), text);
    }
}

TEST(Redact, LargeTextsStayFast) {
    // 4 MB of a one-letter key, of near-misses of a long key, and of shortened-echo lookalikes.
    const std::string many_a(4 << 20, 'a');
    std::string near_miss;
    while (near_miss.size() < (4u << 20))
        near_miss += "sk-proj-01234567";
    std::string echoes;
    while (echoes.size() < (4u << 20))
        echoes += "sk-proj-...abcd ";
    const std::string key = "sk-proj-0123456789abcd";
    const auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(redact(many_a, {"a"}), kRedacted);
    EXPECT_EQ(redact(many_a, {"aa", "aaa"}), kRedacted);
    EXPECT_EQ(redact(near_miss, {key, "a", "[redacted]"}), near_miss);
    const std::string out = redact(echoes, {key});
    EXPECT_EQ(out.find("abcd"), std::string::npos);
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_LT(std::chrono::duration_cast<std::chrono::milliseconds>(took).count(), 5000);
}

}  // namespace
