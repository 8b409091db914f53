#include "count_tokens.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <string>

#include "error_capture.h"
#include "service_fixtures.h"

namespace {

using nlohmann::json;
using pgi::Protocol;
using pgi::ServiceEndpoint;
namespace ct = pgi::count_tokens;
namespace protocols = pgi::protocols;

using pgi::test_support::kOpenAiService;
const ServiceEndpoint &kOpenAi = kOpenAiService;
const ServiceEndpoint &kClaude = pgi::test_support::kAnthropicService;
const ServiceEndpoint &kGemini = pgi::test_support::kGeminiService;

const protocols::Module &anthropic() {
    return protocols::anthropic_module();
}
const protocols::Module &gemini() {
    return protocols::module_for(Protocol::kGeminiV1Beta);
}

TEST(CountTokens, AnAnthropicServiceCountsOnItsOwnRoute) {
    json body = json::parse(
        R"({"model":"svc","system":"be brief","messages":[{"role":"user","content":"hi there"}],
            "thinking":{"type":"enabled","budget_tokens":1024}})");
    ct::Plan p = ct::plan(anthropic(), kClaude, body);
    ASSERT_TRUE(p.request);
    EXPECT_EQ(p.request->url, "https://api.anthropic.test/v1/messages/count_tokens");
    json sent = json::parse(p.request->body);
    EXPECT_EQ(sent["model"], "claude-sonnet-4-5");
    EXPECT_EQ(sent["thinking"]["budget_tokens"], 1024) << "the caller's fields reach its provider";
    EXPECT_FALSE(sent.contains("max_tokens"));
    EXPECT_EQ(ct::read_count(kClaude, R"({"input_tokens":12})"), 12);
    EXPECT_EQ(ct::answer(anthropic(), 12), R"({"input_tokens":12})");
}

TEST(CountTokens, AGeminiCallerOfAnAnthropicServiceIsTranslated) {
    json body = json::parse(
        R"({"contents":[{"role":"user","parts":[{"text":"hi there"}]}],
            "systemInstruction":{"parts":[{"text":"be brief"}]}})");
    ct::Plan p = ct::plan(gemini(), kClaude, body);
    ASSERT_TRUE(p.request);
    EXPECT_EQ(p.request->url, "https://api.anthropic.test/v1/messages/count_tokens");
    json sent = json::parse(p.request->body);
    EXPECT_EQ(sent["system"], "be brief");
    EXPECT_EQ(sent["messages"][0]["content"], "hi there");
    // count_tokens refuses members it does not take, such as max_tokens.
    for (const auto &[key, value] : sent.items())
        EXPECT_TRUE(key == "model" || key == "system" || key == "messages") << key;
    EXPECT_EQ(ct::answer(gemini(), 7), R"({"totalTokens":7})");
}

TEST(CountTokens, AnAnthropicCallerOfAGeminiServiceIsTranslated) {
    json body = json::parse(R"({"model":"svc","messages":[{"role":"user","content":"hi"}]})");
    ct::Plan p = ct::plan(anthropic(), kGemini, body);
    ASSERT_TRUE(p.request);
    EXPECT_EQ(p.request->url, "https://gemini.test/v1beta/models/gemini-2.0-flash:countTokens");
    json sent = json::parse(p.request->body);
    EXPECT_EQ(sent["generateContentRequest"]["model"], "models/gemini-2.0-flash");
    EXPECT_EQ(sent["generateContentRequest"]["contents"][0]["parts"][0]["text"], "hi");
    EXPECT_EQ(ct::read_count(kGemini, R"({"totalTokens":3})"), 3);
    EXPECT_EQ(ct::read_count(kGemini, R"({})"), 0) << "Gemini leaves a zero count out";
    EXPECT_EQ(failure_of([] { ct::read_count(kClaude, R"({"tokens":3})"); }).sqlstate, "PI400");
}

TEST(CountTokens, AGeminiCallerOfAGeminiServiceKeepsItsRequest) {
    json body = json::parse(
        R"({"generateContentRequest":{"model":"models/x","contents":[{"parts":[{"text":"hi"}]}],
            "safetySettings":[]}})");
    ct::Plan p = ct::plan(gemini(), kGemini, body);
    ASSERT_TRUE(p.request);
    json sent = json::parse(p.request->body);
    EXPECT_EQ(sent["generateContentRequest"]["model"], "models/gemini-2.0-flash");
    EXPECT_EQ(sent["generateContentRequest"]["safetySettings"], json::array());
}

TEST(CountTokens, AnOpenAiServiceGetsTheDocumentedEstimate) {
    json body = json::parse(
        R"({"model":"svc","system":"be brief","messages":[{"role":"user","content":"hello wörld"}]})");
    ct::Plan p = ct::plan(anthropic(), kOpenAi, body);
    EXPECT_FALSE(p.request) << "OpenAI has no counting route: nothing is sent";
    // 3 priming + 4 for the message + ceil((8 + 11 characters) / 4).
    EXPECT_EQ(p.estimate, 3 + 4 + 5);
}

TEST(CountTokens, BadInputIsTheCallersError) {
    json body = json::parse(R"({"model":"svc","messages":"hi"})");
    EXPECT_EQ(failure_of([&] { ct::plan(anthropic(), kOpenAi, body); }).sqlstate, "22023");
    json none = json::parse(R"([1,2])");
    EXPECT_EQ(failure_of([&] { ct::plan(anthropic(), kClaude, none); }).sqlstate, "22023");
}

}  // namespace
