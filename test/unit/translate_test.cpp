#include "translate.h"

#include <gtest/gtest.h>
#include <limits>
#include <nlohmann/json.hpp>

#include "translate_util.h"

namespace {

using nlohmann::json;
using pgi::Protocol;
using pgi::ServiceEndpoint;
namespace tr = pgi::translate;

ServiceEndpoint service(Protocol p, std::string name = "svc") {
    return ServiceEndpoint{std::move(name), "m", "http://up", p, "sk-secret-123", false, nullptr};
}

}  // namespace

TEST(Translate, UsageFromOpenAiChatBody) {
    auto u = tr::usage_from_openai_body(R"({"id":"x","choices":[{"index":0,"message":{"role":
        "assistant","content":"the \"usage\": {\"prompt_tokens\": 99} is in a string"}}],
        "usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}})");
    EXPECT_TRUE(u.present);
    EXPECT_EQ(u.prompt_tokens, 12);
    EXPECT_EQ(u.completion_tokens, 5);
    EXPECT_EQ(u.total_tokens, 17);
}

TEST(Translate, UsageOfSeveralAnswersAddsUp) {
    tr::Usage sum;
    tr::add_usage(sum, tr::Usage());  // an answer without usage (Gemini embeddings) adds nothing
    EXPECT_FALSE(sum.present);
    tr::Usage a;
    a.prompt_tokens = 5;
    a.total_tokens = 5;
    a.present = true;
    tr::add_usage(sum, a);
    tr::add_usage(sum, a);
    EXPECT_TRUE(sum.present);
    EXPECT_EQ(sum.prompt_tokens, 10);
    EXPECT_EQ(sum.total_tokens, 10);
    a.total_tokens = std::numeric_limits<long long>::max();
    tr::add_usage(sum, a);
    EXPECT_EQ(sum.total_tokens, std::numeric_limits<long long>::max()) << "saturates";
}

TEST(Translate, UsageFromOpenAiEmbeddingsBody) {
    auto u = tr::usage_from_openai_body(
        R"({"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,-2e-3,[{}]]}],
            "model":"m","usage":{"prompt_tokens":8,"total_tokens":8}})");
    EXPECT_TRUE(u.present);
    EXPECT_EQ(u.prompt_tokens, 8);
    EXPECT_EQ(u.completion_tokens, 0);
    EXPECT_EQ(u.total_tokens, 8);
}

TEST(Translate, UsageFoundWhereverItIsAtTopLevel) {
    // OpenAI puts members after usage; vLLM and embeddings bodies end with it.
    const char *bodies[] = {
        R"({"id":"x","usage":{"prompt_tokens":4,"completion_tokens":6,"total_tokens":10},
            "service_tier":"default","system_fingerprint":"fp"})",
        R"({"id":"x","choices":[],"usage" : {"prompt_tokens":4,"completion_tokens":6,"total_tokens":10}}
           )",
        R"({"usage":{"prompt_tokens":4,"completion_tokens":6,"total_tokens":10}})",
        R"({"a":"tail \",\"usage\":{\"prompt_tokens\":99}}","usage":{"prompt_tokens":4,
            "completion_tokens":6,"total_tokens":10},"b":"\",\"usage\":{}}"})",
    };
    for (const char *body : bodies) {
        auto u = tr::usage_from_openai_body(body);
        EXPECT_TRUE(u.present) << body;
        EXPECT_EQ(u.total_tokens, 10) << body;
    }
}

TEST(Translate, UsageCountsReadAsNumbers) {
    // Read in place: fractions are cut off and anything but a number counts 0, as the JSON
    // document reading (usage_from_openai) does.
    auto u = tr::usage_from_openai_body(
        R"({"usage":{"prompt_tokens":12.0,"completion_tokens":"5","total_tokens":1.7e1,
            "prompt_tokens_details":{"cached_tokens":3}}})");
    EXPECT_TRUE(u.present);
    EXPECT_EQ(u.prompt_tokens, 12);
    EXPECT_EQ(u.completion_tokens, 0);
    EXPECT_EQ(u.total_tokens, 17);
    u = tr::usage_from_openai_body(R"({"usage":{"prompt_tokens":-1,"total_tokens":null}})");
    EXPECT_TRUE(u.present);
    EXPECT_EQ(u.prompt_tokens, -1);
    EXPECT_EQ(u.total_tokens, 0);
    EXPECT_TRUE(tr::usage_from_openai_body(R"({"usage":{}})").present);
}

TEST(Translate, UsageOnlyAtTopLevel) {
    EXPECT_FALSE(
        tr::usage_from_openai_body(R"({"choices":[{"usage":{"prompt_tokens":1}}]})").present);
    EXPECT_FALSE(tr::usage_from_openai_body(R"({"a":{"usage":{"prompt_tokens":1}}})").present);
    EXPECT_FALSE(tr::usage_from_openai_body(R"({"a":["usage"]})").present);
    EXPECT_FALSE(tr::usage_from_openai_body(R"({"usage":null})").present);
    EXPECT_FALSE(tr::usage_from_openai_body("not json").present);
    EXPECT_FALSE(tr::usage_from_openai_body("").present);
    EXPECT_FALSE(tr::usage_from_openai_body(R"({"usage":{"prompt_tokens":1)").present);
    // total_tokens missing: the sum.
    EXPECT_EQ(tr::usage_from_openai_body(R"({"usage":{"prompt_tokens":2,"completion_tokens":3}})")
                  .total_tokens,
              5);
}

TEST(Translate, WithMembersEditsInPlace) {
    using tr::detail::MemberEdit;
    const MemberEdit model[] = {{"model", R"("m")"}};
    EXPECT_EQ(
        tr::detail::with_members(R"( { "a" : 1 , "model" : "x\"y", "b":[1, "model"]} )", model, 1),
        R"( { "a" : 1 , "model" : "m", "b":[1, "model"]} )");
    const MemberEdit two[] = {{"model", R"("m")"}, {"s", "{}"}};
    EXPECT_EQ(tr::detail::with_members(R"({"model":"x","t":{"s":1}})", two, 2),
              R"({"s":{},"model":"m","t":{"s":1}})");
    EXPECT_EQ(tr::detail::with_members(" {} ", two, 2), R"( {"model":"m","s":{}} )");
    EXPECT_EQ(tr::detail::with_members(R"({"model":1,"model":2})", model, 1), std::nullopt);
    EXPECT_EQ(tr::detail::with_members(R"({"m\u006fdel":1})", model, 1), std::nullopt);
    EXPECT_EQ(tr::detail::with_members(R"(["model"])", model, 1), std::nullopt);
    EXPECT_EQ(tr::detail::with_members(R"({"model":)", model, 1), std::nullopt);
}

TEST(Translate, TopLevelMembers) {
    constexpr std::string_view keys[] = {"a", "b", "c"};
    std::string_view values[3];
    ASSERT_TRUE(tr::detail::top_level_members(
        R"( { "x" : "a\"b\\" , "a" : [1, {"b": 2}, "]}"] ,"b":null, "n": -1.5e3 } )", keys, values,
        3));
    EXPECT_EQ(values[0], R"([1, {"b": 2}, "]}"])");
    EXPECT_EQ(values[1], "null");
    EXPECT_EQ(values[2], "");
    EXPECT_TRUE(tr::detail::top_level_members("{}", keys, values, 3));
    EXPECT_FALSE(tr::detail::top_level_members("[]", keys, values, 3));
    EXPECT_FALSE(tr::detail::top_level_members(R"({"a":)", keys, values, 3));
    EXPECT_FALSE(tr::detail::top_level_members(R"({"a":1 "b":2})", keys, values, 3));
}

TEST(Translate, JsonStringEscaping) {
    std::string out;
    const std::string text = "q\"b\\n\nt\tr\rz\x01\x1f é";
    tr::detail::append_json_string(out, text);
    EXPECT_EQ(out, "\"q\\\"b\\\\n\\nt\\tr\\rz\\u0001\\u001f é\"");
    EXPECT_EQ(json::parse(out).get<std::string>(), text);
}

TEST(Translate, CompletionIdsAreFreshAndShaped) {
    std::string a = tr::detail::completion_id(), b = tr::detail::completion_id();
    EXPECT_NE(a, b);
    EXPECT_EQ(a.rfind("chatcmpl-", 0), 0u);
    EXPECT_EQ(a.size(), 9u + 24u);
}

TEST(Translate, OpenAiErrorJson) {
    EXPECT_EQ(json::parse(tr::openai_error_json("bad \"thing\"", "invalid_request_error")),
              json::parse(R"({"error":{"message":"bad \"thing\"","type":"invalid_request_error",
                              "param":null,"code":null}})"));
    EXPECT_EQ(json::parse(tr::openai_error_json("m", "t", "model_not_found"))["error"]["code"],
              "model_not_found");
    EXPECT_EQ(json::parse(tr::openai_error_json("m", "t", "", "messages"))["error"]["param"],
              "messages");
}

TEST(TranslateUpstreamFailure, OpenAiInvalidKey) {
    auto e = tr::upstream_failure(
        service(Protocol::kOpenAiV1, "oa"), 401,
        R"({"error":{"message":"Incorrect API key provided: sk-secret-123.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}})");
    EXPECT_EQ(e.sqlstate(), "PI401");
    EXPECT_STREQ(e.what(),
                 "service \"oa\" returned HTTP 401: Incorrect API key provided: [redacted].");
    EXPECT_EQ(e.detail(), "upstream error type: invalid_request_error, code: invalid_api_key");
    EXPECT_NE(e.hint().find("api_key"), std::string::npos);
}

TEST(TranslateUpstreamFailure, ShortKeysAreRedactedOnceAndKeepTheName) {
    // Keys that occur in "[redacted]" used to loop forever; a key inside the name mangled it.
    const std::string name = "badx";
    for (const std::string key : {"a", "e", "red", "[redacted]", "x", "d]"}) {
        ServiceEndpoint s = service(Protocol::kOpenAiV1, name);
        s.api_key = key;
        auto e =
            tr::upstream_failure(s, 401,
                                 json{{"error",
                                       {{"message", "Incorrect API key provided: " + key + "."},
                                        {"type", "invalid_request_error"},
                                        {"code", "invalid_api_key"}}}}
                                     .dump());
        EXPECT_EQ(e.sqlstate(), "PI401") << key;
        const std::string what = e.what();
        const std::string ours = "service \"badx\" returned HTTP 401: ";
        ASSERT_EQ(what.compare(0, ours.size(), ours), 0) << what;
        // After our own words, the upstream's: the key quoted back is gone.
        EXPECT_EQ(what.substr(what.size() - 12), " [redacted].") << what;
    }
}

TEST(TranslateUpstreamFailure, KeysInPlainTextBodiesAndShortenedEchoes) {
    ServiceEndpoint s = service(Protocol::kOpenAiV1, "oa");
    // A key cut at the 200th character of a plain-text body leaves no piece of itself.
    auto e = tr::upstream_failure(s, 401, std::string(195, '.') + " sk-secret-123 refused");
    EXPECT_EQ(std::string(e.what()).find("sk-s"), std::string::npos) << e.what();
    e = tr::upstream_failure(
        s, 401, R"({"error":{"message":"Incorrect API key provided: sk-sec…-123.","type":"x"}})");
    EXPECT_STREQ(e.what(),
                 "service \"oa\" returned HTTP 401: Incorrect API key provided: [redacted].");
    // An error inside a 200, and a body that is not JSON, are redacted too.
    try {
        tr::detail::parse_upstream_body(s, R"({"error":{"message":"key sk-secret-123 is bad"}})",
                                        "chat");
        ADD_FAILURE() << "no error";
    } catch (const pgi::Error &err) {
        EXPECT_STREQ(err.what(), "service \"oa\" returned an error: key [redacted] is bad");
    }
    try {
        tr::detail::parse_upstream_body(s, "<html>sk-secret-123</html>", "chat");
        ADD_FAILURE() << "no error";
    } catch (const pgi::Error &err) {
        EXPECT_EQ(err.detail(), "the body is not JSON: <html>[redacted]</html>");
    }
}

TEST(TranslateUpstreamFailure, OpenAiQuotaAndRateLimit) {
    auto quota = tr::upstream_failure(
        service(Protocol::kOpenAiV1), 429,
        R"({"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}})");
    EXPECT_EQ(quota.sqlstate(), "PI429");
    EXPECT_NE(quota.hint().find("quota is exhausted"), std::string::npos);
    auto rate = tr::upstream_failure(
        service(Protocol::kOpenAiV1), 429,
        R"({"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}})");
    EXPECT_EQ(rate.sqlstate(), "PI429");
    EXPECT_NE(rate.hint().find("rate limiting"), std::string::npos);
}

TEST(TranslateUpstreamFailure, AnthropicShapes) {
    auto overloaded = tr::upstream_failure(
        service(Protocol::kAnthropicV1, "claude"), 529,
        R"({"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}})");
    EXPECT_EQ(overloaded.sqlstate(), "PI500");
    EXPECT_STREQ(overloaded.what(), "service \"claude\" returned HTTP 529: Overloaded");
    EXPECT_EQ(overloaded.detail(), "upstream error type: overloaded_error");
    auto auth = tr::upstream_failure(
        service(Protocol::kAnthropicV1, "claude"), 401,
        R"({"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}})");
    EXPECT_EQ(auth.sqlstate(), "PI401");
    EXPECT_NE(auth.hint().find("credits"), std::string::npos);
    auto forbidden = tr::upstream_failure(
        service(Protocol::kAnthropicV1), 403,
        R"({"type":"error","error":{"type":"permission_error","message":"no"}})");
    EXPECT_EQ(forbidden.sqlstate(), "PI403");
    auto too_large = tr::upstream_failure(
        service(Protocol::kAnthropicV1), 413,
        R"({"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum size"}})");
    EXPECT_EQ(too_large.sqlstate(), "PI400");
    EXPECT_EQ(too_large.hint(), "");
}

TEST(TranslateUpstreamFailure, GeminiShapes) {
    auto bad_key = tr::upstream_failure(
        service(Protocol::kGeminiV1Beta, "gem"), 400,
        R"({"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}})");
    EXPECT_EQ(bad_key.sqlstate(), "PI401");
    EXPECT_STREQ(
        bad_key.what(),
        "service \"gem\" returned HTTP 400: API key not valid. Please pass a valid API key.");
    EXPECT_EQ(bad_key.detail(),
              "upstream error type: INVALID_ARGUMENT, code: 400, reason: API_KEY_INVALID");
    auto exhausted = tr::upstream_failure(
        service(Protocol::kGeminiV1Beta), 429,
        R"({"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}})");
    EXPECT_EQ(exhausted.sqlstate(), "PI429");
    auto invalid = tr::upstream_failure(
        service(Protocol::kGeminiV1Beta), 400,
        R"({"error":{"code":400,"message":"Invalid JSON payload","status":"INVALID_ARGUMENT"}})");
    EXPECT_EQ(invalid.sqlstate(), "PI400");
    auto unavailable = tr::upstream_failure(
        service(Protocol::kGeminiV1Beta), 503,
        R"({"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}})");
    EXPECT_EQ(unavailable.sqlstate(), "PI500");
}

TEST(TranslateUpstreamFailure, VllmAndPlainText) {
    auto not_found = tr::upstream_failure(service(Protocol::kOpenAiV1, "vllm"), 404,
                                          R"({"detail":"Not Found"})");
    EXPECT_EQ(not_found.sqlstate(), "PI404");
    EXPECT_STREQ(not_found.what(), "service \"vllm\" returned HTTP 404: Not Found");
    EXPECT_EQ(not_found.hint(), "Check the service's base_url and model.");
    auto unauthorized = tr::upstream_failure(service(Protocol::kOpenAiV1, "vllm"), 401,
                                             R"({"error":"Unauthorized"})");
    EXPECT_EQ(unauthorized.sqlstate(), "PI401");
    EXPECT_STREQ(unauthorized.what(), "service \"vllm\" returned HTTP 401: Unauthorized");
    auto gateway = tr::upstream_failure(service(Protocol::kOpenAiV1, "vllm"), 502,
                                        "<html>\n<h1>502 Bad Gateway</h1></html>");
    EXPECT_EQ(gateway.sqlstate(), "PI500");
    EXPECT_STREQ(gateway.what(),
                 "service \"vllm\" returned HTTP 502: <html> <h1>502 Bad Gateway</h1></html>");
    auto empty = tr::upstream_failure(service(Protocol::kOpenAiV1, "vllm"), 500, "");
    EXPECT_STREQ(empty.what(), "service \"vllm\" returned HTTP 500");
}

TEST(TranslateUpstreamFailure, KeyNeverAppears) {
    auto e = tr::upstream_failure(
        service(Protocol::kOpenAiV1), 400,
        R"({"error":{"message":"key sk-secret-123 bad","type":"sk-secret-123"}})");
    EXPECT_EQ(std::string(e.what()).find("sk-secret-123"), std::string::npos);
    EXPECT_EQ(e.detail().find("sk-secret-123"), std::string::npos);
}

// Token counts are whatever number an upstream wrote: one past the range of long long, or a sum
// that would be, saturates instead of overflowing.
TEST(Translate, HugeTokenCountsSaturate) {
    constexpr long long kMax = std::numeric_limits<long long>::max();
    auto in_place = tr::usage_from_openai_body(
        R"({"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":5}})");
    EXPECT_EQ(in_place.total_tokens, kMax);
    auto openai = tr::detail::usage_from_openai(
        json::parse(R"({"prompt_tokens":1e300,"completion_tokens":-1e300})"));
    EXPECT_EQ(openai.prompt_tokens, kMax);
    EXPECT_EQ(openai.completion_tokens, std::numeric_limits<long long>::min());
    auto anthropic = tr::detail::usage_from_anthropic(json::parse(
        R"({"input_tokens":9223372036854775807,"cache_read_input_tokens":9223372036854775807,
            "output_tokens":9223372036854775807})"));
    EXPECT_EQ(anthropic.prompt_tokens, kMax);
    EXPECT_EQ(anthropic.total_tokens, kMax);
    auto gemini = tr::detail::usage_from_gemini(json::parse(
        R"({"promptTokenCount":1,"candidatesTokenCount":9223372036854775807,
            "thoughtsTokenCount":9e18})"));
    EXPECT_EQ(gemini.completion_tokens, kMax);
    EXPECT_EQ(gemini.total_tokens, kMax);
}

// A body that is no error object is quoted by its first 200 bytes, cut where a character ends:
// the message goes into JSON error objects and logs, which need valid UTF-8.
TEST(TranslateUpstreamFailure, QuotedBodyCutAtACharacterBoundary) {
    const std::string body = std::string(199, 'x') + "\xc3\xa9 and more";  // é spans byte 200
    auto e = tr::upstream_failure(service(Protocol::kOpenAiV1), 502, body);
    EXPECT_EQ(std::string(e.what()), "service \"svc\" returned HTTP 502: " + std::string(199, 'x'));
    const std::string json_body =
        "[\"" + std::string(197, 'y') + "\xe2\x82\xac\"]";  // € at bytes 199-201
    e = tr::upstream_failure(service(Protocol::kOpenAiV1), 502, json_body);
    EXPECT_EQ(std::string(e.what()),
              "service \"svc\" returned HTTP 502: [\"" + std::string(197, 'y'));
    EXPECT_TRUE(json::accept(tr::openai_error_json(e.what(), "upstream_error")));
}

TEST(Translate, JsonStringsAreUtf8WhateverTheBytes) {
    std::string out;
    pgi::translate::detail::append_json_string(
        out, "caf\xC3\xA9 \xF0\x9F\x98\x80 caf\xE9 \xED\xA0\x80 \xC3");
    EXPECT_EQ(out,
              "\"caf\xC3\xA9 \xF0\x9F\x98\x80 caf\xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD "
              "\xEF\xBF\xBD\"");
    EXPECT_TRUE(json::parse(out, nullptr, false).is_string());
    // The same as nlohmann's own replacement, which the other writers use.
    const std::string raw = "a\xF6\x82z\xE2\x82";
    std::string mine;
    pgi::translate::detail::append_json_string(mine, raw);
    EXPECT_EQ(mine, json(raw).dump(-1, ' ', false, json::error_handler_t::replace));
}
