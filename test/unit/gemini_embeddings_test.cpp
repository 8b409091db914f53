#include "gemini_embeddings.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <string>

#include "error_capture.h"

namespace {

using nlohmann::json;
using pgi::Protocol;
using pgi::ServiceEndpoint;
namespace ge = pgi::gemini_embeddings;

const ServiceEndpoint kOpenAi{"emb",
                              "text-embedding-3-small",
                              "https://api.openai.test",
                              Protocol::kOpenAiV1,
                              "sk-oa-secret-key-123",
                              false,
                              nullptr};
const ServiceEndpoint kGemini{"gem",
                              "text-embedding-004",
                              "https://gemini.test",
                              Protocol::kGeminiV1Beta,
                              "sk-gem-secret-key-123",
                              false,
                              nullptr};

TEST(GeminiEmbeddings, ABatchBecomesOneOpenAiCall) {
    json body = json::parse(R"({"requests":[
        {"model":"models/x","content":{"parts":[{"text":"first"},{"text":"part"}]},"outputDimensionality":8,"taskType":"RETRIEVAL_DOCUMENT"},
        {"model":"models/x","content":{"parts":[{"text":"second"}]},"outputDimensionality":8}]})");
    ge::Call call = ge::read(body, true);
    EXPECT_EQ(call.texts, (std::vector<std::string>{"first part", "second"}));
    pgi::translate::UpstreamRequest r = ge::request(kOpenAi, call, body);
    EXPECT_EQ(r.url, "https://api.openai.test/v1/embeddings");
    json sent = json::parse(r.body);
    EXPECT_EQ(sent["input"], json({"first part", "second"}));
    EXPECT_EQ(sent["dimensions"], 8);
    EXPECT_FALSE(sent.contains("taskType"));

    pgi::translate::Usage usage;
    const std::string answer = ge::answer(
        kOpenAi, call,
        R"({"data":[{"index":1,"embedding":[0.5,0.25]},{"index":0,"embedding":[1,2]}],"usage":{"prompt_tokens":3,"total_tokens":3}})",
        usage);
    EXPECT_EQ(json::parse(answer),
              json::parse(R"({"embeddings":[{"values":[1.0,2.0]},{"values":[0.5,0.25]}]})"));
    EXPECT_EQ(usage.prompt_tokens, 3);
}

TEST(GeminiEmbeddings, AGeminiServiceGetsTheCallersBody) {
    json body = json::parse(
        R"({"content":{"parts":[{"text":"hello"}]},"taskType":"RETRIEVAL_QUERY","title":"t"})");
    ge::Call call = ge::read(body, false);
    pgi::translate::UpstreamRequest r = ge::request(kGemini, call, body);
    EXPECT_EQ(r.url, "https://gemini.test/v1beta/models/text-embedding-004:embedContent");
    json sent = json::parse(r.body);
    EXPECT_EQ(sent["taskType"], "RETRIEVAL_QUERY") << "Gemini-only fields reach Gemini";
    pgi::translate::Usage usage;
    const std::string upstream = R"({"embedding":{"values":[0.1,0.2]}})";
    EXPECT_EQ(ge::answer(kGemini, call, upstream, usage), upstream);
    EXPECT_EQ(failure_of([&] { ge::answer(kGemini, call, R"({"x":1})", usage); }).sqlstate,
              "PI400");
}

TEST(GeminiEmbeddings, BadRequestsAreRefused) {
    EXPECT_EQ(failure_of([] { ge::read(json::parse(R"({"content":{}})"), false); }).sqlstate,
              "22023");
    EXPECT_EQ(failure_of([] { ge::read(json::parse(R"({"requests":[]})"), true); }).sqlstate,
              "22023");
    EXPECT_EQ(failure_of([] {
                  ge::read(json::parse(R"({"content":{"parts":[{"inlineData":{}}]}})"), false);
              }).sqlstate,
              "0A000");
    EXPECT_EQ(failure_of([] {
                  ge::read(json::parse(R"({"requests":[
                      {"content":{"parts":[{"text":"a"}]},"outputDimensionality":8},
                      {"content":{"parts":[{"text":"b"}]}}]})"),
                           true);
              }).sqlstate,
              "0A000");
}

}  // namespace
