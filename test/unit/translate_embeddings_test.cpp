#include "translate_embeddings.h"

#include <cmath>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base64.h"
#include "translate_fixtures.h"

namespace {

using nlohmann::json;
using pgi::Protocol;
using pgi::ServiceEndpoint;
namespace tr = pgi::translate;

const ServiceEndpoint kOpenAi{
    "nim-embed", "nvidia/nv-embedqa-e5-v5", "http://up:1", Protocol::kOpenAiV1, "sk-o", false,
    nullptr};
const ServiceEndpoint kGemini{
    "gem-embed", "gemini-embedding-001", "https://up:3", Protocol::kGeminiV1Beta, "g-key", false,
    nullptr};

}  // namespace

// ---------------------------------------------------------------- requests

TEST(TranslateEmbeddings, OpenAiRequest) {
    auto r = tr::embeddings_request(kOpenAi, {"hello", "wo\"rld\n"}, json::object(), false);
    EXPECT_EQ(r.method, "POST");
    EXPECT_EQ(r.url, "http://up:1/v1/embeddings");
    EXPECT_EQ(r.headers, (std::vector<std::string>{"Authorization: Bearer sk-o",
                                                   "Content-Type: application/json"}));
    EXPECT_EQ(r.body, R"({"model":"nvidia/nv-embedqa-e5-v5","input":["hello","wo\"rld\n"]})");
}

TEST(TranslateEmbeddings, OpenAiRequestWithOptionsAndBase64) {
    auto r = tr::embeddings_request(
        kOpenAi, {"q"},
        json::parse(R"({"dimensions": 256, "input_type": "query", "truncate": "end"})"), true);
    EXPECT_EQ(json::parse(r.body),
              json::parse(R"({"model": "nvidia/nv-embedqa-e5-v5", "input": ["q"],
      "encoding_format": "base64", "dimensions": 256, "input_type": "query", "truncate": "END"})"));
    // null options are no options
    EXPECT_EQ(json::parse(tr::embeddings_request(kOpenAi, {"q"}, json(), false).body),
              json::parse(R"({"model": "nvidia/nv-embedqa-e5-v5", "input": ["q"]})"));
}

TEST(TranslateEmbeddings, GeminiRequest) {
    auto r = tr::embeddings_request(
        kGemini, {"a", "b"}, json::parse(R"({"dimensions": 768, "input_type": "passage"})"), true);
    EXPECT_EQ(r.url, "https://up:3/v1beta/models/gemini-embedding-001:batchEmbedContents");
    EXPECT_EQ(r.headers, (std::vector<std::string>{"x-goog-api-key: g-key",
                                                   "Content-Type: application/json"}));
    EXPECT_EQ(json::parse(r.body), json::parse(R"({"requests": [
      {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]},
       "taskType": "RETRIEVAL_DOCUMENT", "outputDimensionality": 768},
      {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]},
       "taskType": "RETRIEVAL_DOCUMENT", "outputDimensionality": 768}]})"));

    auto plain = tr::embeddings_request(kGemini, {"x"}, json::object(), false);
    EXPECT_EQ(json::parse(plain.body), json::parse(R"({"requests": [
      {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "x"}]}}]})"));
    EXPECT_EQ(json::parse(tr::embeddings_request(kGemini, {"x"}, {{"input_type", "query"}}, false)
                              .body)["requests"][0]["taskType"],
              "RETRIEVAL_QUERY");
    EXPECT_EQ(
        json::parse(tr::embeddings_request(kGemini, {"x"}, {{"input_type", "CLUSTERING"}}, false)
                        .body)["requests"][0]["taskType"],
        "CLUSTERING");
}

TEST(TranslateEmbeddings, GeminiRefusesWhatItHasNot) {
    auto truncate = error_of([] {
        tr::embeddings_request(kGemini, {"x"}, {{"truncate", "END"}}, false);
    });
    EXPECT_EQ(truncate.sqlstate(), "0A000");
    EXPECT_STREQ(truncate.what(), "service \"gem-embed\" does not support the truncate option");
    auto type = error_of([] {
        tr::embeddings_request(kGemini, {"x"}, {{"input_type", "search"}}, false);
    });
    EXPECT_EQ(type.sqlstate(), "22023");
    EXPECT_NE(type.hint().find("RETRIEVAL_QUERY"), std::string::npos);
}

TEST(TranslateEmbeddings, AnthropicHasNoEmbeddings) {
    auto e = error_of([] { tr::embeddings_request(kAnthropic, {"x"}, json::object(), false); });
    EXPECT_EQ(e.sqlstate(), "0A000");
    EXPECT_STREQ(e.what(), "service \"claude\" does not support embeddings");
    EXPECT_EQ(e.hint(),
              "Anthropic's API has no embeddings endpoint; register an OpenAI- or Gemini-protocol "
              "embedding service.");
}

TEST(TranslateEmbeddings, OptionErrors) {
    const std::pair<json, const char *> cases[] = {
        {{{"dimension", 3}}, "unknown embedding option \"dimension\""},
        {{{"dimensions", 0}}, "embedding option \"dimensions\" must be a positive integer"},
        {{{"dimensions", "3"}}, "embedding option \"dimensions\" must be a positive integer"},
        {{{"input_type", 1}}, "embedding option \"input_type\" must be a non-empty string"},
        {{{"truncate", "middle"}}, "embedding option \"truncate\" must be NONE, START or END"},
        {json::array({1}), "embedding options must be a JSON object"},
    };
    for (const auto &[options, message] : cases) {
        auto e = error_of([&] { tr::embeddings_request(kOpenAi, {"x"}, options, false); });
        EXPECT_EQ(e.sqlstate(), "22023") << options;
        EXPECT_STREQ(e.what(), message) << options;
        EXPECT_EQ(e.hint(), "Valid embedding options are dimensions, input_type and truncate.");
    }
    auto none = error_of([] { tr::embeddings_request(kOpenAi, {}, json::object(), false); });
    EXPECT_EQ(none.sqlstate(), "22023");
    EXPECT_STREQ(none.what(), "there is no input to embed");
}

// ---------------------------------------------------------------- responses

TEST(TranslateEmbeddings, OpenAiFloatResponseInIndexOrder) {
    auto e = tr::embeddings_response(kOpenAi, R"({"object": "list", "data": [
        {"object": "embedding", "index": 1, "embedding": [0.5, -1]},
        {"object": "embedding", "index": 0, "embedding": [0.25, 2e-3]}],
      "model": "m", "usage": {"prompt_tokens": 6, "total_tokens": 6}})",
                                     2);
    ASSERT_EQ(e.vectors.size(), 2u);
    EXPECT_EQ(e.vectors[0], (std::vector<float>{0.25f, 0.002f}));
    EXPECT_EQ(e.vectors[1], (std::vector<float>{0.5f, -1.0f}));
    EXPECT_TRUE(e.usage.present);
    EXPECT_EQ(e.usage.prompt_tokens, 6);
    EXPECT_EQ(e.usage.total_tokens, 6);
}

TEST(TranslateEmbeddings, OpenAiBase64Response) {
    std::vector<float> a = {0.1f, -0.0f, 3.5e-8f, 1e30f}, b = {1.0f, 2.0f, 3.0f, 4.0f};
    json body = json::parse(R"({"usage": {"prompt_tokens": 2, "total_tokens": 2}})");
    body["data"] = {{{"index", 0}, {"embedding", pgi::base64::encode_floats(a)}},
                    {{"index", 1}, {"embedding", pgi::base64::encode_floats(b)}}};
    auto e = tr::embeddings_response(kOpenAi, body.dump(), 2);
    EXPECT_EQ(e.vectors[0], a);
    EXPECT_TRUE(std::signbit(e.vectors[0][1]));
    EXPECT_EQ(e.vectors[1], b);
}

TEST(TranslateEmbeddings, OpenAiUnusualFormatting) {
    // Whitespace everywhere, exponents, no index, and a base64 string with JSON's optional "\/"
    // escape: all read the same.
    std::vector<float> v = {-1.5f, 0.25f, 3.0f, -1.9999999f};
    std::string b64 = pgi::base64::encode_floats(v);
    ASSERT_NE(b64.find('/'), std::string::npos);
    std::string escaped;
    for (char c : b64)
        escaped += c == '/' ? std::string("\\/") : std::string(1, c);
    std::string body =
        "{\n  \"data\" : [\n    { \"embedding\" : [ 1E+2 , -2.5e-1,0 ] } ,\n"
        "    {\"embedding\":\"" +
        escaped + "\", \"index\": 1}\n  ]\n}\n";
    auto e = tr::embeddings_response(kOpenAi, body, 2);
    EXPECT_EQ(e.vectors[0], (std::vector<float>{100.0f, -0.25f, 0.0f}));
    EXPECT_EQ(e.vectors[1], v);
    EXPECT_FALSE(e.usage.present);
}

TEST(TranslateEmbeddings, LargeBatchRoundTrip) {
    tr::Embeddings original;
    for (int i = 0; i < 128; ++i) {
        std::vector<float> v(1536);
        for (std::size_t k = 0; k < v.size(); ++k) {
            v[k] = std::sin(static_cast<float>(i * 1536 + k)) / static_cast<float>(k + 1);
        }
        original.vectors.push_back(std::move(v));
    }
    original.usage = {512, 0, 512, true};
    for (bool base64 : {false, true}) {
        std::string body = tr::embeddings_openai_response(original, base64, "m");
        auto back = tr::embeddings_response(kOpenAi, body, 128);
        EXPECT_EQ(back.vectors, original.vectors) << "base64 " << base64;
        EXPECT_EQ(back.usage.prompt_tokens, 512);
    }
}

TEST(TranslateEmbeddings, OpenAiBadResponses) {
    const std::pair<const char *, const char *> cases[] = {
        {R"({"data": [{"index": 0, "embedding": [1]}]})", "expected 2 embeddings, got 1"},
        {R"({"data": [{"index": 0, "embedding": [1]}, {"index": 0, "embedding": [2]}]})",
         "embedding index 0 is out of range or repeated"},
        {R"({"data": [{"index": 0, "embedding": [1]}, {"index": 5, "embedding": [2]}]})",
         "embedding index 5 is out of range or repeated"},
        {R"({"data": [{"index": 0, "embedding": [1]}, {"index": -1, "embedding": [2]}]})",
         "embedding index 1 is out of range or repeated"},
        {R"({"data": [{"index": 0, "embedding": [1]}, {"index": 1, "embedding": "***"}]})",
         "embedding 1 is not base64 float32 data"},
        {R"({"data": [{"index": 0, "embedding": [1]}, {"index": 1, "embedding": ["x"]}]})",
         "embedding 1 holds a non-number"},
        {R"({"data": [{"index": 0, "embedding": [1]}, {"index": 1}]})", "embedding 1 is missing"},
        {R"({"object": "list"})", "the body has no \"data\" array"},
        {R"({"data": [{"index": 0, "embedding": [1]}, {"index": 1, "embedding": [nan]}]})",
         "the body is not JSON: {\"data\": [{\"index\": 0, \"embedding\": [1]}, {\"index\": 1, "
         "\"embedding\": [nan]}]}"},
    };
    for (const auto &[body, detail] : cases) {
        auto e = error_of([&] { tr::embeddings_response(kOpenAi, body, 2); });
        EXPECT_EQ(e.sqlstate(), "PI400") << body;
        EXPECT_STREQ(e.what(), "service \"nim-embed\" returned a malformed embeddings response");
        EXPECT_EQ(e.detail(), detail) << body;
    }
}

TEST(TranslateEmbeddings, GeminiResponse) {
    auto e = tr::embeddings_response(
        kGemini, R"({"embeddings": [{"values": [1, 2]}, {"values": [0.5, -0.5]}]})", 2);
    EXPECT_EQ(e.vectors, (std::vector<std::vector<float>>{{1, 2}, {0.5f, -0.5f}}));
    EXPECT_FALSE(e.usage.present);
    auto count = error_of([] { tr::embeddings_response(kGemini, R"({"embeddings": []})", 1); });
    EXPECT_EQ(count.sqlstate(), "PI400");
    EXPECT_EQ(count.detail(), "expected 1 embeddings, got 0");
    auto upstream = error_of([] {
        tr::embeddings_response(kGemini, R"({"error": {"code": 400, "message": "bad"}})", 1);
    });
    EXPECT_STREQ(upstream.what(), "service \"gem-embed\" returned an error: bad");
}

// ---------------------------------------------------------------- the gateway's answer

TEST(TranslateEmbeddings, OpenAiShapedFloats) {
    tr::Embeddings e;
    e.vectors = {{0.1f, -2.5f, 1e-7f}, {3.0f}};
    e.usage.prompt_tokens = 4;
    e.usage.total_tokens = 4;
    e.usage.present = true;
    EXPECT_EQ(
        tr::embeddings_openai_response(e, false, "embed"),
        R"({"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-2.5,1e-07]},)"
        R"({"object":"embedding","index":1,"embedding":[3]}],"model":"embed",)"
        R"("usage":{"prompt_tokens":4,"total_tokens":4}})");
    // Shortest form still reads back as the same float.
    json parsed = json::parse(tr::embeddings_openai_response(e, false, "embed"));
    EXPECT_EQ(parsed["data"][0]["embedding"][0].get<float>(), 0.1f);
}

TEST(TranslateEmbeddings, OpenAiShapedBase64FromFloatUpstream) {
    auto e = tr::embeddings_response(kGemini, R"({"embeddings": [{"values": [0.1, 0.2, -3]}]})", 1);
    json out = json::parse(tr::embeddings_openai_response(e, true, "gem-embed"));
    ASSERT_TRUE(out["data"][0]["embedding"].is_string());
    EXPECT_EQ(pgi::base64::decode_floats(out["data"][0]["embedding"].get<std::string>()),
              (std::vector<float>{0.1f, 0.2f, -3.0f}));
    EXPECT_EQ(out["model"], "gem-embed");
    EXPECT_EQ(out["usage"], json::parse(R"({"prompt_tokens": 0, "total_tokens": 0})"));
}

TEST(TranslateEmbeddings, ParseGatewayRequest) {
    auto one = tr::parse_embeddings_call(json::parse(R"({"model": "svc", "input": "hello"})"));
    EXPECT_EQ(one.inputs, (std::vector<std::string>{"hello"}));
    EXPECT_FALSE(one.base64_out);
    EXPECT_EQ(one.options, json::object());

    auto many = tr::parse_embeddings_call(json::parse(R"({"model": "svc", "input": ["a", "b"],
      "encoding_format": "base64", "dimensions": 64, "input_type": "passage", "truncate": "NONE",
      "user": "ignored", "extra": 1})"));
    EXPECT_EQ(many.inputs, (std::vector<std::string>{"a", "b"}));
    EXPECT_TRUE(many.base64_out);
    EXPECT_EQ(many.options,
              json::parse(R"({"dimensions": 64, "input_type": "passage", "truncate": "NONE"})"));
    EXPECT_FALSE(
        tr::parse_embeddings_call(json::parse(R"({"input": "x", "encoding_format": "float"})"))
            .base64_out);
}

TEST(TranslateEmbeddings, ParseGatewayRequestErrors) {
    const std::pair<const char *, const char *> cases[] = {
        {R"([])", "the embeddings request must be a JSON object"},
        {R"({"model": "m"})", "the embeddings request has no \"input\""},
        {R"({"input": ""})", "\"input\" is empty"},
        {R"({"input": []})",
         "\"input\" must be a non-empty string or a non-empty array of strings"},
        {R"({"input": 5})", "\"input\" must be a non-empty string or a non-empty array of strings"},
        {R"({"input": ["a", ""]})", "input[1] must be a non-empty string"},
        {R"({"input": ["a", null]})", "input[1] must be a non-empty string"},
        {R"({"input": "a", "encoding_format": "int8"})",
         "\"encoding_format\" must be \"float\" or \"base64\""},
        {R"({"input": "a", "dimensions": -1})",
         "embedding option \"dimensions\" must be a positive integer"},
    };
    for (const auto &[body, message] : cases) {
        auto e = error_of([&] { tr::parse_embeddings_call(json::parse(body)); });
        EXPECT_EQ(e.sqlstate(), "22023") << body;
        EXPECT_STREQ(e.what(), message) << body;
    }
    for (const char *tokens : {R"({"input": [1, 2, 3]})", R"({"input": [[1, 2], [3]]})"}) {
        auto e = error_of([&] { tr::parse_embeddings_call(json::parse(tokens)); });
        EXPECT_EQ(e.sqlstate(), "0A000");
        EXPECT_STREQ(e.what(), "token arrays are not supported as embeddings input");
    }
}
