// Routes through the gateway: a model name that stands for several services, fallback before
// anything reaches the caller, the circuit breaker (here the Governor's in-process default), and
// the header that names the service that served.
#include "gateway_harness.h"

namespace {

using pgi::gateway::RouteEntry;
using pgi::routing::Target;

class GatewayRoutesTest : public GatewayTest {
  protected:
    void SetUp() override {
        GatewayTest::SetUp();
        config.max_retries = 0;  // one request per try: the upstream's log counts tries
    }

    void start_with(const std::map<std::string, RouteEntry> &routes) {
        server = std::make_unique<Server>(loop.base(), config, governor);
        Snapshot s = catalog();
        add_service(s, "down503", "gpt-up", "e503");
        add_service(s, "claude503", "claude-up", "e503", pgi::Protocol::kAnthropicV1);
        add_service(s, "chat-b", "gpt-b", "okb");
        s.routes = routes;
        add_key(s, "routed", "gw-routed", std::vector<std::string>{"r"});
        server->set_snapshot(std::make_shared<Snapshot>(std::move(s)));
        server->listen();
        port = server->port();
        loop.start();
    }

    static RouteEntry route(std::vector<Target> targets, int64_t cooldown_ms = 30000) {
        RouteEntry r;
        r.targets = std::move(targets);
        r.cooldown_us = cooldown_ms * 1000;
        return r;
    }

    size_t chat_tries(const std::string &label) {
        size_t n = 0;
        for (const auto &r : upstream->requests(label))
            if (r.path == "/v1/chat/completions" || r.path == "/v1/messages")
                n++;
        return n;
    }
};

TEST_F(GatewayRoutesTest, FallsBackAndTheBreakerSkipsAFailingService) {
    start_with({{"r", route({{"down503", 1, 1}, {"chat", 1, 2}}, 400)}});
    for (int i = 0; i < 10; i++) {
        Reply r = post(port, "/v1/chat/completions", chat_body("r"));
        ASSERT_EQ(r.status, 200) << r.body;
        EXPECT_EQ(r.header("x-pg-inference-service"), "chat");
        EXPECT_EQ(r.js()["model"], "gpt-up");
    }
    // Three failures in a row opened the breaker: the other seven requests skipped it.
    EXPECT_EQ(chat_tries("e503"), 3u);
    // After the cooldown, exactly one request probes it; it fails and the breaker opens again.
    std::this_thread::sleep_for(450ms);
    for (int i = 0; i < 5; i++)
        EXPECT_EQ(post(port, "/v1/chat/completions", chat_body("r")).status, 200);
    EXPECT_EQ(chat_tries("e503"), 4u);
    // The ledger names the service that served, and the request log the route named.
    for (const auto &done : governor.all()) {
        EXPECT_EQ(done.service, "chat");
        EXPECT_EQ(done.route, "r");
    }
}

// The request log's error type is the code of the gateway's own error answer.
TEST_F(GatewayRoutesTest, AFinishedRequestCarriesItsErrorCode) {
    start_with({});
    ASSERT_EQ(post(port, "/v1/chat/completions", chat_body("nope")).status, 404);
    ASSERT_EQ(post(port, "/v1/chat/completions", chat_body("chat")).status, 200);
    auto all = governor.all();
    ASSERT_GE(all.size(), 2u);
    EXPECT_EQ(all[all.size() - 2].error, "model_not_found");
    EXPECT_EQ(all[all.size() - 2].route, "");
    EXPECT_EQ(all.back().error, "");
}

TEST_F(GatewayRoutesTest, EveryAnswerNamesItsService) {
    start_with({});
    Reply r = post(port, "/v1/chat/completions", chat_body("chat"));
    EXPECT_EQ(r.header("x-pg-inference-service"), "chat");
    r = post(port, "/v1/chat/completions", chat_body("badkey"));
    EXPECT_EQ(r.status, 502);
    EXPECT_EQ(r.header("x-pg-inference-service"), "badkey");
}

TEST_F(GatewayRoutesTest, MixedProtocolsServeEveryDialect) {
    start_with({{"r", route({{"claude503", 1, 1}, {"chat", 1, 2}})}});
    Reply r = post(port, "/v1/chat/completions", chat_body("r"));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.js()["object"], "chat.completion");
    json messages = {
        {"model", "r"}, {"max_tokens", 20}, {"messages", {{{"role", "user"}, {"content", "hi"}}}}};
    r = post(port, "/v1/messages", messages, {"anthropic-version: 2023-06-01"});
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.js()["type"], "message");
    EXPECT_EQ(r.header("x-pg-inference-service"), "chat");
    // Streamed: the fallback happens before the first byte.
    r = post(port, "/v1/chat/completions", chat_body("r", true));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_FALSE(sse_text(r.body).empty()) << r.body;
    EXPECT_NE(r.body.find("[DONE]"), std::string::npos);
    EXPECT_EQ(chat_tries("e503"), 3u);
}

TEST_F(GatewayRoutesTest, AStreamThatFailedAfterItsFirstByteEndsWithAnError) {
    start_with({{"r", route({{"midfail", 1, 1}, {"chat-b", 1, 2}})}});
    Reply r = post(port, "/v1/chat/completions", chat_body("r", true));
    EXPECT_EQ(r.status, 200);
    std::vector<std::string> data = sse_data(r.body);
    ASSERT_FALSE(data.empty());
    EXPECT_TRUE(json::parse(data.back(), nullptr, false).contains("error")) << r.body;
    EXPECT_EQ(r.body.find("[DONE]"), std::string::npos);
    EXPECT_EQ(chat_tries("okb"), 0u);  // never a second answer
}

TEST_F(GatewayRoutesTest, TheCallersOwnMistakesDoNotFallBack) {
    start_with({{"r", route({{"badkey", 1, 1}, {"chat-b", 1, 2}})}});
    Reply r = post(port, "/v1/chat/completions", chat_body("r"));
    EXPECT_EQ(r.status, 502);
    EXPECT_EQ(r.js()["error"]["code"], "upstream_auth_failed");
    EXPECT_EQ(chat_tries("okb"), 0u);
}

TEST_F(GatewayRoutesTest, NoServiceToTry) {
    start_with({{"r", route({{"down503", 1, 1}})}});
    for (int i = 0; i < 3; i++)
        EXPECT_EQ(post(port, "/v1/chat/completions", chat_body("r")).status, 503);
    Reply r = post(port, "/v1/chat/completions", chat_body("r"));
    EXPECT_EQ(r.status, 503);
    EXPECT_EQ(r.js()["error"]["code"], "no_service_available") << r.body;
    EXPECT_EQ(chat_tries("e503"), 3u);
}

TEST_F(GatewayRoutesTest, WeightsSplitTheRequests) {
    start_with({{"r", route({{"chat", 3, 1}, {"chat-b", 1, 1}})}});
    const int n = 2000;
    int first = 0;
    for (int i = 0; i < n; i++) {
        Reply r = post(port, "/v1/chat/completions", chat_body("r"));
        ASSERT_EQ(r.status, 200);
        if (r.header("x-pg-inference-service") == "chat")
            first++;
    }
    EXPECT_NEAR(first / static_cast<double>(n), 0.75, 0.04);
}

TEST_F(GatewayRoutesTest, KeysAndOtherEndpoints) {
    start_with({{"r", route({{"emb", 1, 1}})}, {"rr", route({{"nim", 1, 1}})}});
    // A key that names the route may use it (and only it).
    auto as = [&](const char *key, const std::string &model) {
        CallOptions o;
        o.method = "POST";
        o.key = false;
        o.body = chat_body(model).dump();
        o.headers = {std::string("Authorization: Bearer ") + key, "Content-Type: application/json"};
        return call(port, "/v1/chat/completions", o).status;
    };
    EXPECT_NE(as("gw-routed", "r"), 403);
    EXPECT_EQ(as("gw-routed", "chat"), 403);
    EXPECT_EQ(as("gw-limited", "r"), 403);
    // Embeddings and rerank through routes; pass-through names services only.
    Reply r = post(port, "/v1/embeddings", json{{"model", "r"}, {"input", "hello"}});
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("x-pg-inference-service"), "emb");
    r = post(port, "/v1/rerank", json{{"model", "rr"}, {"query", "q"}, {"documents", {"a", "b"}}});
    EXPECT_EQ(r.status, 200) << r.body;
    r = post(port, "/inferenceservices/r/v1/chat/completions", chat_body("x"));
    EXPECT_EQ(r.status, 404);
    // /v1/models lists routes beside services, and shows one.
    CallOptions get;
    json models = call(port, "/v1/models", get).js();
    bool listed = false;
    for (const json &m : models["data"])
        listed = listed || m["id"] == "rr";
    EXPECT_TRUE(listed) << models.dump();
    EXPECT_EQ(call(port, "/v1/models/rr", get).status, 200);
    EXPECT_EQ(call(port, "/v1beta/models/rr", get).status, 200);
}

}  // namespace

namespace {

TEST_F(GatewayRoutesTest, TheModelHeaderChoosesTheServiceForEveryEndpoint) {
    start_with({{"r", route({{"chat-b", 1, 1}})}});
    // Chat: the header wins over the body's model, which follows the service.
    Reply r = post(port, "/v1/chat/completions", chat_body("chat"), {"x-ai-eg-model: chat-b"});
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("x-pg-inference-service"), "chat-b");
    EXPECT_EQ(json::parse(upstream->requests("okb").back().body)["model"], "gpt-b");
    // A route by header, with no model in the body at all.
    json no_model = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}};
    r = post(port, "/v1/chat/completions", no_model, {"x-ai-eg-model: r"});
    EXPECT_EQ(r.status, 200) << r.body;
    // Embeddings.
    r = post(port, "/v1/embeddings", json{{"model", "chat"}, {"input", "hello"}},
             {"x-ai-eg-model: emb"});
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("x-pg-inference-service"), "emb");
    // Pass-through: the header's service, the body's model rewritten, the header not forwarded.
    size_t before = upstream->requests("okb").size();
    r = post(port, "/inferenceservices/chat/v1/chat/completions", chat_body("something-else"),
             {"x-ai-eg-model: chat-b"});
    EXPECT_EQ(r.status, 200) << r.body;
    auto sent = upstream->requests("okb");
    ASSERT_EQ(sent.size(), before + 1);
    EXPECT_EQ(json::parse(sent.back().body)["model"], "gpt-b");
    EXPECT_EQ(sent.back().header("x-ai-eg-model"), "");
    // An unknown name in the header is the caller's mistake.
    r = post(port, "/v1/chat/completions", chat_body("chat"), {"x-ai-eg-model: nope"});
    EXPECT_EQ(r.status, 404);
}

TEST_F(GatewayRoutesTest, TheModelHeaderCanBeTurnedOff) {
    config.model_header = "";
    start_with({});
    Reply r = post(port, "/v1/chat/completions", chat_body("chat"), {"x-ai-eg-model: chat-b"});
    EXPECT_EQ(r.header("x-pg-inference-service"), "chat");
}

// Per-user limits need the end user of each request: the header first, then the body's `user`,
// `safety_identifier` or Anthropic `metadata.user_id`; a pass-through without the header has
// none. A user id too long to keep is refused.
TEST_F(GatewayRoutesTest, TheEndUserReachesTheGovernor) {
    start_with({});
    auto last_user = [&]() {
        std::lock_guard<std::mutex> lock(governor.mu);
        return governor.users.empty() ? std::string("<none>") : governor.users.back();
    };
    json body = chat_body("chat");
    body["user"] = "from-body";
    ASSERT_EQ(post(port, "/v1/chat/completions", body, {"x-user-id: alice"}).status, 200);
    EXPECT_EQ(last_user(), "alice");
    ASSERT_EQ(post(port, "/v1/chat/completions", body).status, 200);
    EXPECT_EQ(last_user(), "from-body");
    json safety = chat_body("chat");
    safety["safety_identifier"] = "hashed-42";
    ASSERT_EQ(post(port, "/v1/chat/completions", safety).status, 200);
    EXPECT_EQ(last_user(), "hashed-42");
    json anthropic = {{"model", "chat"},
                      {"max_tokens", 16},
                      {"metadata", {{"user_id", "u-7"}}},
                      {"messages", {{{"role", "user"}, {"content", "hi"}}}}};
    ASSERT_EQ(post(port, "/v1/messages", anthropic).status, 200);
    EXPECT_EQ(last_user(), "u-7");
    ASSERT_EQ(post(port, "/v1/chat/completions", chat_body("chat")).status, 200);
    EXPECT_EQ(last_user(), "");
    ASSERT_EQ(post(port, "/inferenceservices/chat/v1/chat/completions", chat_body("x"),
                   {"x-user-id: bob"})
                  .status,
              200);
    EXPECT_EQ(last_user(), "bob");
    const std::size_t admitted = governor.users.size();
    json long_user = chat_body("chat");
    long_user["user"] = std::string(300, 'u');
    Reply r = post(port, "/v1/chat/completions", long_user);
    EXPECT_EQ(r.status, 400);
    EXPECT_NE(r.body.find("longer than 256 bytes"), std::string::npos) << r.body;
    // The usage ledger keeps the id as text: bytes that are not UTF-8 text are refused too.
    json control = chat_body("chat");
    control["user"] = std::string("a\0b", 3);
    r = post(port, "/v1/chat/completions", control);
    EXPECT_EQ(r.status, 400);
    EXPECT_NE(r.body.find("contains a control character"), std::string::npos) << r.body;
    r = post(port, "/v1/chat/completions", chat_body("chat"), {"x-user-id: caf\xe9"});
    EXPECT_EQ(r.status, 400);
    EXPECT_NE(r.body.find("is not UTF-8 text"), std::string::npos) << r.body;
    EXPECT_EQ(governor.users.size(), admitted) << "refused before the limits";
    ASSERT_EQ(
        post(port, "/v1/chat/completions", chat_body("chat"), {"x-user-id: caf\xc3\xa9"}).status,
        200);
    EXPECT_EQ(last_user(), "caf\xc3\xa9");
}

TEST_F(GatewayRoutesTest, TheUserHeaderCanBeRenamed) {
    config.user_header = "x-end-user";
    start_with({});
    json body = chat_body("chat");
    body["user"] = "from-body";
    ASSERT_EQ(
        post(port, "/v1/chat/completions", body, {"x-user-id: alice", "x-end-user: carol"}).status,
        200);
    std::lock_guard<std::mutex> lock(governor.mu);
    EXPECT_EQ(governor.users.back(), "carol");
}

}  // namespace
