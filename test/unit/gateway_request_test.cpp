// The gateway's request rules as pure functions: routes, paths that must stay inside a service,
// access-key headers, content types, upstream status mapping; and snapshots from JSON.
#include "gateway_request.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "crypto.h"
#include "error.h"
#include "gateway_snapshot.h"

namespace {

using namespace pgi::gateway;

TEST(GatewayRoute, KnownEndpoints) {
    EXPECT_EQ(route("/health").endpoint, Endpoint::kHealth);
    EXPECT_EQ(route("/metrics").endpoint, Endpoint::kMetrics);
    EXPECT_EQ(route("/v1/models").endpoint, Endpoint::kModels);
    EXPECT_EQ(route("/v1/chat/completions").endpoint, Endpoint::kChat);
    EXPECT_EQ(route("/v1/chat/completions").allowed, unsigned(kPost));
    EXPECT_EQ(route("/v1/embeddings").endpoint, Endpoint::kEmbeddings);
    EXPECT_EQ(route("/v1/rerank").endpoint, Endpoint::kRerank);
    EXPECT_EQ(route("/v1/ranking").endpoint, Endpoint::kRanking);
    EXPECT_EQ(route("/v1/models/").endpoint, Endpoint::kUnknown);
    EXPECT_EQ(route("/v1/chat/completions/").endpoint, Endpoint::kUnknown);
    EXPECT_EQ(route("/").endpoint, Endpoint::kUnknown);
    EXPECT_EQ(route("").endpoint, Endpoint::kUnknown);
    EXPECT_EQ(route("/inferenceservices/").endpoint, Endpoint::kUnknown);
}

TEST(GatewayRoute, ModelIdIsPercentDecoded) {
    Route r = route("/v1/models/meta%2Fllama-3.1");
    EXPECT_EQ(r.endpoint, Endpoint::kModel);
    EXPECT_EQ(r.model_id, "meta/llama-3.1");
    EXPECT_EQ(route("/v1/models/a%zz").model_id, "");
}

TEST(GatewayRoute, GeminiRoutes) {
    Route r = route("/v1beta/models/gw-chat:generateContent");
    EXPECT_EQ(r.endpoint, Endpoint::kGenerate);
    EXPECT_EQ(r.allowed, unsigned(kPost));
    EXPECT_EQ(r.model_id, "gw-chat");
    EXPECT_TRUE(is_gemini_route(r));
    r = route("/v1beta/models/gw%20chat:streamGenerateContent");
    EXPECT_EQ(r.endpoint, Endpoint::kStreamGenerate);
    EXPECT_EQ(r.model_id, "gw chat");
    // Google's own prefix, doubled by some clients, and the v1 version of the routes.
    EXPECT_EQ(route("/v1beta/models/models/gw-chat:generateContent").model_id, "gw-chat");
    EXPECT_EQ(route("/v1/models/gw-chat:generateContent").endpoint, Endpoint::kGenerate);
    EXPECT_EQ(route("/v1beta/models").endpoint, Endpoint::kGeminiModels);
    r = route("/v1beta/models/gw-chat");
    EXPECT_EQ(r.endpoint, Endpoint::kGeminiModel);
    EXPECT_EQ(r.allowed, unsigned(kGet | kHead));
    // OpenAI's and Anthropic's model routes stay theirs.
    EXPECT_EQ(route("/v1/models").endpoint, Endpoint::kModels);
    EXPECT_EQ(route("/v1/models/gw-chat").endpoint, Endpoint::kModel);
    EXPECT_FALSE(is_gemini_route(route("/v1/models/gw-chat")));
    // Methods the gateway does not serve are unknown routes (404).
    EXPECT_EQ(route("/v1beta/models/gw-chat:predict").endpoint, Endpoint::kUnknown);
    EXPECT_EQ(route("/v1beta/modelsx").endpoint, Endpoint::kUnknown);
}

TEST(GatewayRequest, GeminiQueryKey) {
    Route gemini = route("/v1beta/models/gw-chat:generateContent");
    EXPECT_EQ(gemini_query_key(gemini, "key=gk-1"), "gk-1");
    EXPECT_EQ(gemini_query_key(gemini, "alt=sse&key=gk%2B2"), "gk+2");
    EXPECT_EQ(gemini_query_key(gemini, "alt=sse"), "");
    EXPECT_EQ(gemini_query_key(gemini, "keys=no"), "");
    EXPECT_EQ(gemini_query_key(gemini, nullptr), "");
    // Only the Gemini routes read it: elsewhere a query goes upstream with the path.
    EXPECT_EQ(gemini_query_key(route("/v1/chat/completions"), "key=gk-1"), "");
    EXPECT_EQ(gemini_query_key(route("/inferenceservices/x/y"), "key=gk-1"), "");
}

TEST(GatewayRoute, Passthrough) {
    Route r = route("/inferenceservices/chat.v2/v1/models/x%20y");
    EXPECT_EQ(r.endpoint, Endpoint::kPassthrough);
    EXPECT_EQ(r.service, "chat.v2");
    EXPECT_EQ(r.rest, "/v1/models/x%20y");  // forwarded still encoded
    EXPECT_FALSE(r.bad_path);
    EXPECT_EQ(route("/inferenceservices/chat").rest, "/");
    EXPECT_FALSE(route("/inferenceservices/chat").bad_path);
    EXPECT_TRUE(r.allowed & kPatch);
    EXPECT_TRUE(route("/inferenceservices/chat/../other/x").bad_path);
    EXPECT_TRUE(route("/inferenceservices/chat/%2e%2E/other").bad_path);
    EXPECT_TRUE(route("/inferenceservices/chat/a%2Fb").bad_path);
    EXPECT_TRUE(route("/inferenceservices/a%2Fb/x").bad_path);
    EXPECT_TRUE(route("/inferenceservices/%2e%2e/x").bad_path);
}

TEST(GatewayRoute, SafeSubpath) {
    EXPECT_TRUE(safe_subpath("/"));
    EXPECT_TRUE(safe_subpath("/v1/chat/completions"));
    EXPECT_TRUE(safe_subpath("/a..b/.c/c."));
    EXPECT_TRUE(safe_subpath("/a//b"));
    EXPECT_FALSE(safe_subpath(""));
    EXPECT_FALSE(safe_subpath("x"));
    EXPECT_FALSE(safe_subpath("/.."));
    EXPECT_FALSE(safe_subpath("/a/../b"));
    EXPECT_FALSE(safe_subpath("/a/./b"));
    EXPECT_FALSE(safe_subpath("/a/.%2e"));
    EXPECT_FALSE(safe_subpath("/a/%2E."));
    EXPECT_FALSE(safe_subpath("/a%5c..%5cb"));
    EXPECT_FALSE(safe_subpath("/a%2f..%2fb"));
    EXPECT_FALSE(safe_subpath("/a%00"));
    EXPECT_FALSE(safe_subpath("/a%0d%0aHost:x"));
    EXPECT_FALSE(safe_subpath("/a%"));
    EXPECT_FALSE(safe_subpath("/a%4"));
}

TEST(GatewayRoute, AllowHeader) {
    EXPECT_EQ(allow_header(kGet | kHead), "GET, HEAD");
    EXPECT_EQ(allow_header(kPost), "POST");
}

TEST(GatewayRequest, PercentDecode) {
    EXPECT_EQ(percent_decode("a%20b%2Fc").value(), "a b/c");
    EXPECT_EQ(percent_decode("a+b").value(), "a+b");
    EXPECT_FALSE(percent_decode("%2").has_value());
    EXPECT_FALSE(percent_decode("%g0").has_value());
    EXPECT_FALSE(percent_decode("%00").has_value());
}

TEST(GatewayRequest, AccessKey) {
    EXPECT_EQ(access_key("Bearer abc", nullptr), "abc");
    EXPECT_EQ(access_key("bearer   abc  ", nullptr), "abc");
    EXPECT_EQ(access_key("BEARER abc", "zzz"), "abc");
    EXPECT_EQ(access_key("Basic abc", "zzz"), "zzz");
    EXPECT_EQ(access_key(nullptr, " k "), "k");
    EXPECT_EQ(access_key("Bearer ", nullptr), "");
    EXPECT_EQ(access_key(nullptr, nullptr), "");
}

TEST(GatewayRequest, JsonBodyType) {
    EXPECT_EQ(json_body_type(nullptr, "{}"), BodyType::kJson);
    EXPECT_EQ(json_body_type("application/json", "{}"), BodyType::kJson);
    EXPECT_EQ(json_body_type("Application/JSON; charset=utf-8", "{}"), BodyType::kJson);
    EXPECT_EQ(json_body_type("application/vnd.api+json", "{}"), BodyType::kJson);
    EXPECT_EQ(json_body_type("text/plain", "{}"), BodyType::kJson);
    EXPECT_EQ(json_body_type("application/x-www-form-urlencoded", " {\"a\":1}"), BodyType::kJson);
    EXPECT_EQ(json_body_type("application/x-www-form-urlencoded", "a=1"), BodyType::kUnsupported);
    EXPECT_EQ(json_body_type("multipart/form-data; boundary=x", "{}"), BodyType::kUnsupported);
    EXPECT_EQ(json_body_type("text/xml", "{}"), BodyType::kUnsupported);
}

TEST(GatewayRequest, EndUserInBody) {
    using nlohmann::json;
    EXPECT_EQ(pgi::gateway::end_user_in_body(json{{"user", "a"}, {"safety_identifier", "b"}}), "a");
    EXPECT_EQ(pgi::gateway::end_user_in_body(json{{"user", ""}, {"safety_identifier", "b"}}), "b");
    EXPECT_EQ(pgi::gateway::end_user_in_body(json{{"metadata", {{"user_id", "c"}}}}), "c");
    EXPECT_EQ(pgi::gateway::end_user_in_body(json{{"user", 5}, {"metadata", "x"}}), "");
    EXPECT_EQ(pgi::gateway::end_user_in_body(json::array({"user"})), "");
    EXPECT_EQ(pgi::gateway::end_user_in_body(json()), "");
}

TEST(GatewayRequest, CallerStatus) {
    EXPECT_EQ(caller_status(400), 400);
    EXPECT_EQ(caller_status(404), 404);
    EXPECT_EQ(caller_status(422), 422);
    EXPECT_EQ(caller_status(401), 502);
    EXPECT_EQ(caller_status(403), 502);
    EXPECT_EQ(caller_status(408), 504);
    EXPECT_EQ(caller_status(429), 429);
    EXPECT_EQ(caller_status(500), 500);
    EXPECT_EQ(caller_status(503), 503);
    EXPECT_EQ(caller_status(529), 503);
    EXPECT_EQ(caller_status(599), 502);
    EXPECT_EQ(caller_status(302), 502);
    EXPECT_STREQ(error_type(429), "rate_limit_error");
    EXPECT_STREQ(error_type(401), "invalid_request_error");
    EXPECT_STREQ(error_type(502), "upstream_error");
}

TEST(GatewaySnapshot, FromJson) {
    nlohmann::json doc = nlohmann::json::parse(R"({
      "services": [
        {"name": "chat", "model": "gpt-4o-mini", "base_url": "http://h:1/x/", "api_key": "sk"},
        {"name": "claude", "model": "c", "base_url": "http://h", "protocol": "anthropic_v1",
         "rerank_route": "rerank", "allow_insecure": true}],
      "keys": [
        {"name": "k1", "key": "secret", "services": ["chat"], "requests_per_minute": 5},
        {"name": "k2", "key_hash": "35224d0d3465d74e855f8d69a136e79c744ea35a675d3393360a327cbf6359a2",
         "revoked": true, "expires_at_ms": 1}]})");
    Snapshot s = snapshot_from_json(doc);
    ASSERT_EQ(s.services.size(), 2u);
    EXPECT_EQ(s.services.at("chat").base_url, "http://h:1/x");
    EXPECT_EQ(s.services.at("claude").protocol, pgi::Protocol::kAnthropicV1);
    EXPECT_TRUE(s.services.at("claude").allow_insecure);
    EXPECT_EQ(s.rerank_routes.at("claude"), "rerank");
    ASSERT_EQ(s.keys.size(), 2u);
    const AccessKey &k1 = s.keys.at(pgi::crypto::sha256("secret"));
    EXPECT_EQ(k1.name, "k1");
    EXPECT_TRUE(k1.allows("chat"));
    EXPECT_FALSE(k1.allows("claude"));
    EXPECT_EQ(k1.limits.rpm.value(), 5);
    const AccessKey &k2 = s.keys.at(pgi::crypto::sha256("secret2"));
    EXPECT_TRUE(k2.revoked);
    EXPECT_TRUE(k2.allows("anything"));
    EXPECT_EQ(k2.expires_at_ms.value(), 1);
}

TEST(GatewaySnapshot, RejectsBadEntries) {
    auto bad = [](const char *text) {
        EXPECT_THROW(snapshot_from_json(nlohmann::json::parse(text)), pgi::Error) << text;
    };
    bad(R"([])");
    bad(R"({"services": [{"name": "a", "model": "m"}]})");
    bad(R"({"services": [{"name": "a", "model": "m", "base_url": "u", "protocol": "x"}]})");
    bad(R"({"services": [{"name": "a", "model": "m", "base_url": "u", "rerank_route": "x"}]})");
    bad(R"({"keys": [{"name": "k"}]})");
    bad(R"({"keys": [{"name": "k", "key": "a", "services": "chat"}]})");
    bad(R"({"keys": [{"name": "k", "key": "a"}, {"name": "k2", "key": "a"}]})");
}

}  // namespace
