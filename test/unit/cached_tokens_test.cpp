// Cached prompt tokens, as each provider reports them, read into the one usage form the ledger
// prices; and written back in each caller's own terms.
#include <gtest/gtest.h>

#include "protocols/modules.h"
#include "translate.h"
#include "translate_util.h"

namespace {

using pgi::Protocol;
namespace tr = pgi::translate;
namespace proto = pgi::protocols;

TEST(CachedTokens, OpenAiChatFromPromptTokensDetails) {
    const char *body =
        R"({"id":"x","choices":[],"usage":{"prompt_tokens":2006,"completion_tokens":300,
        "total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0}}})";
    tr::Usage u = tr::usage_from_answer_body(Protocol::kOpenAiV1, body);
    EXPECT_TRUE(u.present);
    EXPECT_EQ(u.prompt_tokens, 2006);
    EXPECT_EQ(u.cached_tokens, 1920);
    // The document reader (translated answers and streams) reads the same.
    tr::Usage d = tr::detail::usage_from_openai(nlohmann::json::parse(body)["usage"]);
    EXPECT_EQ(d.cached_tokens, 1920);
    // No details, or details without the count: nothing cached.
    EXPECT_EQ(tr::usage_from_openai_body(R"({"usage":{"prompt_tokens":5,"completion_tokens":1}})")
                  .cached_tokens,
              0);
    EXPECT_EQ(
        tr::usage_from_openai_body(R"({"usage":{"prompt_tokens":5,"prompt_tokens_details":null}})")
            .cached_tokens,
        0);
}

TEST(CachedTokens, AnthropicCacheReadsArePartOfThePrompt) {
    const char *body = R"({"type":"message","content":[],"usage":{"input_tokens":50,
        "cache_creation_input_tokens":100,"cache_read_input_tokens":1000,"output_tokens":7}})";
    tr::Usage u = tr::usage_from_answer_body(Protocol::kAnthropicV1, body);
    EXPECT_EQ(u.prompt_tokens, 1150);
    EXPECT_EQ(u.cached_tokens, 1000);
    EXPECT_EQ(u.total_tokens, 1157);
}

TEST(CachedTokens, GeminiCachedContentTokenCount) {
    const char *body = R"({"candidates":[],"usageMetadata":{"promptTokenCount":4000,
        "cachedContentTokenCount":3000,"candidatesTokenCount":20,"totalTokenCount":4020}})";
    tr::Usage u = tr::usage_from_answer_body(Protocol::kGeminiV1Beta, body);
    EXPECT_EQ(u.prompt_tokens, 4000);
    EXPECT_EQ(u.cached_tokens, 3000);
}

TEST(CachedTokens, ResponsesInputTokensDetails) {
    const char *body = R"({"id":"resp_1","object":"response","status":"completed","output":[],
        "usage":{"input_tokens":300,"input_tokens_details":{"cached_tokens":256},
                 "output_tokens":9,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":309}})";
    tr::Usage u = proto::responses_module().answer_usage(body);
    EXPECT_EQ(u.prompt_tokens, 300);
    EXPECT_EQ(u.cached_tokens, 256);
}

TEST(CachedTokens, AShareBeyondThePromptIsCutToIt) {
    tr::Usage u = tr::usage_from_openai_body(
        R"({"usage":{"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":99}}})");
    EXPECT_EQ(u.cached_tokens, 10);
    u = tr::usage_from_answer_body(Protocol::kAnthropicV1,
                                   R"({"usage":{"input_tokens":1,"cache_read_input_tokens":-4}})");
    EXPECT_EQ(u.cached_tokens, 0);
}

TEST(CachedTokens, AddedUpAcrossAnswers) {
    tr::Usage a{10, 1, 11, true, 4};
    tr::add_usage(a, tr::Usage{20, 2, 22, true, 6});
    EXPECT_EQ(a.cached_tokens, 10);
}

TEST(CachedTokens, WrittenInEachCallersTerms) {
    tr::Usage u{30, 5, 35, true, 20};
    std::string openai;
    tr::detail::append_usage_json(openai, u);
    EXPECT_EQ(nlohmann::json::parse(openai)["prompt_tokens_details"]["cached_tokens"], 20);
    // Read back by each caller protocol's own reader, the counts are those written.
    EXPECT_EQ(tr::usage_from_openai_body("{\"usage\":" + openai + "}").cached_tokens, 20);
    u.cached_tokens = 0;
    openai.clear();
    tr::detail::append_usage_json(openai, u);
    EXPECT_FALSE(nlohmann::json::parse(openai).contains("prompt_tokens_details"));
}

}  // namespace
