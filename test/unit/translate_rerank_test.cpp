#include "translate_rerank.h"

#include <cmath>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "translate_fixtures.h"

namespace {

using nlohmann::json;
using pgi::Protocol;
using pgi::ServiceEndpoint;
namespace tr = pgi::translate;

const ServiceEndpoint kNim{"nim-rerank",  "nvidia/nv-rerankqa-mistral-4b-v3",
                           "http://up:1", Protocol::kOpenAiV1,
                           "sk-n",        false,
                           nullptr};
const ServiceEndpoint kGemini{"gem", "g",   "http://up:3", Protocol::kGeminiV1Beta,
                              "",    false, nullptr};

const std::vector<std::string> kDocs = {"Paris is in France", "Rome \"eternal\"", "Berlin"};

tr::RerankCall call_of(tr::RerankRoute shape, bool return_documents = false) {
    tr::RerankCall c;
    c.shape = shape;
    c.query = "capital";
    c.documents = kDocs;
    c.return_documents = return_documents;
    return c;
}

}  // namespace

TEST(TranslateRerank, RankingRequest) {
    auto r = tr::rerank_request(kNim, tr::RerankRoute::kRanking, "capital of France?", kDocs, 2);
    EXPECT_EQ(r.method, "POST");
    EXPECT_EQ(r.url, "http://up:1/v1/ranking");
    EXPECT_EQ(r.headers, (std::vector<std::string>{"Authorization: Bearer sk-n",
                                                   "Content-Type: application/json"}));
    EXPECT_EQ(json::parse(r.body), json::parse(R"({"model": "nvidia/nv-rerankqa-mistral-4b-v3",
      "query": {"text": "capital of France?"},
      "passages": [{"text": "Paris is in France"}, {"text": "Rome \"eternal\""}, {"text": "Berlin"}],
      "truncate": "END"})"));
}

TEST(TranslateRerank, RerankRequest) {
    auto r = tr::rerank_request(kNim, tr::RerankRoute::kRerank, "q", kDocs, 2);
    EXPECT_EQ(r.url, "http://up:1/v1/rerank");
    EXPECT_EQ(json::parse(r.body), json::parse(R"({"model": "nvidia/nv-rerankqa-mistral-4b-v3",
      "query": "q", "documents": ["Paris is in France", "Rome \"eternal\"", "Berlin"], "top_n": 2})"));
    EXPECT_FALSE(
        json::parse(tr::rerank_request(kNim, tr::RerankRoute::kRerank, "q", kDocs, {}).body)
            .contains("top_n"));
}

TEST(TranslateRerank, RequestErrors) {
    for (const ServiceEndpoint *s : {&kAnthropic, &kGemini}) {
        auto e =
            error_of([&] { tr::rerank_request(*s, tr::RerankRoute::kRerank, "q", kDocs, {}); });
        EXPECT_EQ(e.sqlstate(), "0A000");
        EXPECT_EQ(std::string(e.what()), "service \"" + s->name + "\" does not support rerank");
        EXPECT_NE(e.hint().find("OPENAI_V1"), std::string::npos);
    }
    EXPECT_EQ(error_of([] {
                  tr::rerank_request(kNim, tr::RerankRoute::kRanking, "", kDocs, {});
              }).sqlstate(),
              "22023");
    EXPECT_EQ(error_of([] {
                  tr::rerank_request(kNim, tr::RerankRoute::kRanking, "q", {}, {});
              }).sqlstate(),
              "22023");
    EXPECT_EQ(error_of([] {
                  tr::rerank_request(kNim, tr::RerankRoute::kRerank, "q", kDocs, 0);
              }).sqlstate(),
              "22023");
}

TEST(TranslateRerank, RankingResponseSortedAndCut) {
    auto r = tr::rerank_response(
        kNim, tr::RerankRoute::kRanking,
        R"({"rankings": [{"index": 2, "logit": -3.5}, {"index": 0, "logit": 4.25},
                                                  {"index": 1, "logit": 0.5}]})",
        3, {});
    EXPECT_EQ(r.scale, tr::RerankRoute::kRanking);
    ASSERT_EQ(r.results.size(), 3u);
    EXPECT_EQ(r.results[0].index, 0);
    EXPECT_EQ(r.results[0].score, 4.25);
    EXPECT_EQ(r.results[1].index, 1);
    EXPECT_EQ(r.results[2].index, 2);
    EXPECT_FALSE(r.usage.present);
    auto cut = tr::rerank_response(
        kNim, tr::RerankRoute::kRanking,
        R"({"rankings": [{"index": 2, "logit": -3.5}, {"index": 0, "logit": 4.25},
                                                    {"index": 1, "logit": 0.5}]})",
        3, 2);
    ASSERT_EQ(cut.results.size(), 2u);
    EXPECT_EQ(cut.results[1].index, 1);
}

TEST(TranslateRerank, RerankResponse) {
    auto r = tr::rerank_response(kNim, tr::RerankRoute::kRerank, R"({"id": "x", "results": [
        {"index": 1, "relevance_score": 0.9, "document": {"text": "Rome"}},
        {"index": 0, "relevance_score": 0.95}],
      "usage": {"total_tokens": 30}})",
                                 3, {});
    EXPECT_EQ(r.scale, tr::RerankRoute::kRerank);
    ASSERT_EQ(r.results.size(), 2u);
    EXPECT_EQ(r.results[0].index, 0);
    EXPECT_EQ(r.results[0].score, 0.95);
    EXPECT_TRUE(r.usage.present);
    EXPECT_EQ(r.usage.total_tokens, 30);
}

TEST(TranslateRerank, BadResponses) {
    const std::pair<tr::RerankRoute, const char *> cases[] = {
        {tr::RerankRoute::kRanking, R"({"results": []})"},
        {tr::RerankRoute::kRanking, R"({"rankings": [{"index": 3, "logit": 1}]})"},
        {tr::RerankRoute::kRanking, R"({"rankings": [{"index": -1, "logit": 1}]})"},
        {tr::RerankRoute::kRanking,
         R"({"rankings": [{"index": 0, "logit": 1}, {"index": 0, "logit": 2}]})"},
        {tr::RerankRoute::kRanking, R"({"rankings": [{"index": 0}]})"},
        {tr::RerankRoute::kRerank, R"({"results": [{"index": 0, "logit": 1}]})"},
        {tr::RerankRoute::kRerank, "not json"},
    };
    for (const auto &[route, body] : cases) {
        auto e = error_of([&] { tr::rerank_response(kNim, route, body, 3, {}); });
        EXPECT_EQ(e.sqlstate(), "PI400") << body;
        EXPECT_STREQ(e.what(), "service \"nim-rerank\" returned a malformed rerank response");
    }
}

TEST(TranslateRerank, ParseBothShapes) {
    auto cohere = tr::parse_rerank_call(json::parse(R"({"model": "svc", "query": "q",
      "documents": ["a", {"text": "b"}], "top_n": 1, "return_documents": true})"));
    EXPECT_EQ(cohere.shape, tr::RerankRoute::kRerank);
    EXPECT_EQ(cohere.query, "q");
    EXPECT_EQ(cohere.documents, (std::vector<std::string>{"a", "b"}));
    EXPECT_EQ(cohere.top_n, 1);
    EXPECT_TRUE(cohere.return_documents);

    auto nim = tr::parse_rerank_call(json::parse(R"({"model": "svc", "query": {"text": "q"},
      "passages": [{"text": "a"}, {"text": "b"}], "truncate": "END"})"));
    EXPECT_EQ(nim.shape, tr::RerankRoute::kRanking);
    EXPECT_EQ(nim.query, "q");
    EXPECT_EQ(nim.documents, (std::vector<std::string>{"a", "b"}));
    EXPECT_FALSE(nim.top_n);
    EXPECT_FALSE(nim.return_documents);
}

TEST(TranslateRerank, ParseErrors) {
    const char *cases[] = {
        R"([])",
        R"({"documents": ["a"]})",
        R"({"query": "", "documents": ["a"]})",
        R"({"query": {"text": 1}, "documents": ["a"]})",
        R"({"query": "q"})",
        R"({"query": "q", "documents": []})",
        R"({"query": "q", "documents": [1]})",
        R"({"query": "q", "passages": [{"content": "a"}]})",
        R"({"query": "q", "documents": ["a"], "top_n": 0})",
        R"({"query": "q", "documents": ["a"], "top_n": "2"})",
        R"({"query": "q", "documents": ["a"], "return_documents": "yes"})",
    };
    for (const char *body : cases) {
        EXPECT_EQ(error_of([&] { tr::parse_rerank_call(json::parse(body)); }).sqlstate(), "22023")
            << body;
    }
}

TEST(TranslateRerank, CallerShapeSameScale) {
    tr::Ranking logits{tr::RerankRoute::kRanking, {{0, 4.25}, {2, -3.5}}, {}};
    EXPECT_EQ(tr::rerank_caller_response(call_of(tr::RerankRoute::kRanking), logits, "svc"),
              R"({"rankings":[{"index":0,"logit":4.25},{"index":2,"logit":-3.5}]})");

    tr::Ranking scores{tr::RerankRoute::kRerank, {{1, 0.9}, {0, 0.25}}, {}};
    scores.usage.present = true;
    scores.usage.total_tokens = 12;
    json out = json::parse(
        tr::rerank_caller_response(call_of(tr::RerankRoute::kRerank, true), scores, "svc"));
    EXPECT_EQ(out["id"].get<std::string>().rfind("rerank-", 0), 0u);
    out.erase("id");
    EXPECT_EQ(out, json::parse(R"({"model": "svc", "results": [
        {"index": 1, "relevance_score": 0.9, "document": {"text": "Rome \"eternal\""}},
        {"index": 0, "relevance_score": 0.25, "document": {"text": "Paris is in France"}}],
      "usage": {"prompt_tokens": 0, "total_tokens": 12}})"));
}

TEST(TranslateRerank, CallerShapeConvertsScales) {
    // logits to relevance scores: the sigmoid
    tr::Ranking logits{tr::RerankRoute::kRanking, {{0, 0.0}, {1, 2.0}, {2, -800.0}}, {}};
    json rerank =
        json::parse(tr::rerank_caller_response(call_of(tr::RerankRoute::kRerank), logits, "svc"));
    EXPECT_FALSE(rerank.contains("usage"));
    EXPECT_FALSE(rerank["results"][0].contains("document"));
    EXPECT_DOUBLE_EQ(rerank["results"][0]["relevance_score"].get<double>(), 0.5);
    EXPECT_DOUBLE_EQ(rerank["results"][1]["relevance_score"].get<double>(),
                     1.0 / (1.0 + std::exp(-2.0)));
    EXPECT_DOUBLE_EQ(rerank["results"][2]["relevance_score"].get<double>(), 0.0);

    // relevance scores to logits: the inverse, finite at 0 and 1, unbounded scores kept
    tr::Ranking scores{tr::RerankRoute::kRerank, {{0, 0.5}, {1, 0.880797}, {2, 1.0}}, {}};
    json ranking =
        json::parse(tr::rerank_caller_response(call_of(tr::RerankRoute::kRanking), scores, "svc"));
    EXPECT_NEAR(ranking["rankings"][0]["logit"].get<double>(), 0.0, 1e-12);
    EXPECT_NEAR(ranking["rankings"][1]["logit"].get<double>(), 2.0, 1e-5);
    EXPECT_NEAR(ranking["rankings"][2]["logit"].get<double>(), 27.63, 0.01);
    tr::Ranking raw{tr::RerankRoute::kRerank, {{0, 7.5}, {1, -2.0}}, {}};
    EXPECT_EQ(tr::rerank_caller_response(call_of(tr::RerankRoute::kRanking), raw, "svc"),
              R"({"rankings":[{"index":0,"logit":7.5},{"index":1,"logit":-2.0}]})");
}
