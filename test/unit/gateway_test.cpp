// The gateway engine end to end inside one process: a Server and a fake upstream (libevent
// evhttp imitating OpenAI, Anthropic, Gemini, NIM and vLLM) share an event_base running on a
// thread of the test, and the test thread calls the gateway with libcurl or raw sockets, as any
// client would. The same upstream also drives AsyncClient's own tests.
#include "gateway_harness.h"
#include "test_certificates.h"

namespace {

// ------------------------------------------------------------------------------------------------

TEST_F(GatewayTest, HealthAndMetricsNeedNoKey) {
    start();
    CallOptions o;
    o.key = false;
    Reply r = call(port, "/health", o);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "{\"status\":\"ok\"}");
    EXPECT_EQ(r.header("content-type"), "application/json");
    o.method = "HEAD";
    EXPECT_EQ(call(port, "/health", o).status, 200);
    o.method = "POST";
    r = call(port, "/health", o);
    EXPECT_EQ(r.status, 405);
    EXPECT_EQ(r.header("allow"), "GET, HEAD");
    o.method = "GET";
    r = call(port, "/metrics", o);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "pg_inference_test 1\n");
    EXPECT_EQ(r.header("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    // Neither is a request the ledger counts; the refused POST is, with no service.
    auto done = governor.all();
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].status, 405);
    EXPECT_EQ(done[0].service, "");
}

TEST_F(GatewayTest, AccessKeys) {
    start();
    auto code = [](const Reply &r) { return r.js()["error"]["code"]; };
    CallOptions o;
    o.key = false;
    Reply r = call(port, "/v1/models", o);
    EXPECT_EQ(r.status, 401);
    EXPECT_EQ(code(r), "invalid_api_key");
    EXPECT_EQ(r.js()["error"]["type"], "invalid_request_error");
    for (const char *bad :
         {"Authorization: Bearer nope", "Authorization: Bearer gw-revoked",
          "Authorization: Bearer gw-expired", "X-API-Key: nope", "Authorization: Basic Z3ctazE="}) {
        o.headers = {bad};
        r = call(port, "/v1/models", o);
        EXPECT_EQ(r.status, 401) << bad;
        EXPECT_EQ(code(r), "invalid_api_key") << bad;
    }
    o.headers = {std::string("X-API-Key: ") + kGatewayKey};
    EXPECT_EQ(call(port, "/v1/models", o).status, 200);
    o.headers = {std::string("authorization: bearer ") + kGatewayKey};
    EXPECT_EQ(call(port, "/v1/models", o).status, 200);

    // A key limited to other services.
    // With both headers, the Bearer one counts.
    r = post(port, "/v1/chat/completions", chat_body("claude"), {"X-API-Key: gw-limited"});
    EXPECT_EQ(r.status, 200);
    CallOptions limited;
    limited.key = false;
    limited.method = "POST";
    limited.body = chat_body("claude").dump();
    limited.headers = {"Authorization: Bearer gw-limited"};
    r = call(port, "/v1/chat/completions", limited);
    EXPECT_EQ(r.status, 403);
    EXPECT_EQ(code(r), "model_not_allowed");
    limited.body = chat_body("chat").dump();
    EXPECT_EQ(call(port, "/v1/chat/completions", limited).status, 200);
    // The caller's key never reaches the upstream.
    for (const Recorded &rec : upstream->requests()) {
        for (auto &h : rec.headers) {
            EXPECT_EQ(h.second.find("gw-"), std::string::npos) << h.first;
        }
    }
    auto done = governor.all();
    ASSERT_FALSE(done.empty());
    EXPECT_EQ(done.back().key, "limited");
    EXPECT_EQ(done.back().service, "chat");
}

TEST_F(GatewayTest, AKeyCreatedIsServedByTheNextRequest) {
    // The host's check publishes the catalog with a new key when "committed" is set, as a
    // listener reloads when the catalog's counter has moved.
    std::atomic<bool> committed{false};
    std::atomic<int> checks{0};
    catalog_check = [&]() {
        checks++;
        if (committed.exchange(false)) {
            Snapshot s = catalog();
            add_key(s, "new", "gw-new-key");
            server->set_snapshot(std::make_shared<Snapshot>(std::move(s)));
        }
    };
    start();
    CallOptions o;
    o.key = false;
    o.headers = {"Authorization: Bearer gw-new-key"};
    EXPECT_EQ(call(port, "/v1/models", o).status, 401);
    committed = true;
    EXPECT_EQ(call(port, "/v1/models", o).status, 200);
    // Checked before the headers' key check and again before the request is served.
    EXPECT_GE(checks.load(), 4);
    // A chat with a body, whose key is checked before the body is read.
    o.method = "POST";
    o.body = R"({"model":"chat","messages":[{"role":"user","content":"hi"}]})";
    o.headers.push_back("Content-Type: application/json");
    EXPECT_EQ(call(port, "/v1/chat/completions", o).status, 200);
}

TEST_F(GatewayTest, NoKeyRequired) {
    config.require_key = false;
    start();
    CallOptions o;
    o.key = false;
    EXPECT_EQ(call(port, "/v1/models", o).status, 200);
    o.headers = {"Authorization: Bearer not-a-key"};
    EXPECT_EQ(call(port, "/v1/models", o).status, 200);
    // A valid key still counts, restrictions included.
    o.headers = {"Authorization: Bearer gw-limited"};
    json list = call(port, "/v1/models", o).js();
    ASSERT_EQ(list["data"].size(), 1u);
    EXPECT_EQ(list["data"][0]["id"], "chat");
}

// A configuration reload: keys required or not and the body cap change for the next request,
// on the connections already open too; the port stays.
TEST_F(GatewayTest, ReconfigureAppliesToTheNextRequest) {
    start();
    CallOptions o;
    o.key = false;
    EXPECT_EQ(call(port, "/v1/models", o).status, 401);
    Config next = config;
    next.require_key = false;
    next.max_body_size = 1024;
    next.listen_addresses = {"0.0.0.0"};  // ignored: addresses and port need a new Server
    next.port = port + 1;
    loop.run([&] {
        server->reconfigure(next);
        return 0;
    });
    EXPECT_EQ(server->port(), port);
    EXPECT_EQ(call(port, "/v1/models", o).status, 200);
    json big = chat_body("chat");
    big["messages"][0]["content"] = std::string(2048, 'x');
    EXPECT_EQ(post(port, "/v1/chat/completions", big).status, 413);
    next.require_key = true;
    next.max_body_size = 64 * 1024;
    loop.run([&] {
        server->reconfigure(next);
        return 0;
    });
    EXPECT_EQ(call(port, "/v1/models", o).status, 401);
    EXPECT_EQ(post(port, "/v1/chat/completions", big).status, 200);
}

TEST_F(GatewayTest, Models) {
    start();
    json list = call(port, "/v1/models").js();
    EXPECT_EQ(list["object"], "list");
    ASSERT_EQ(list["data"].size(), catalog().services.size());
    EXPECT_EQ(list["data"][0]["id"], "amidfail");  // sorted by name
    EXPECT_EQ(list["data"][0]["object"], "model");
    EXPECT_EQ(list["data"][0]["owned_by"], "pg_inference");
    EXPECT_TRUE(list["data"][0]["created"].is_number_integer());

    Reply r = call(port, "/v1/models/claude");
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.js()["id"], "claude");
    EXPECT_EQ(call(port, "/v1/models/%63laude").js()["id"], "claude");
    r = call(port, "/v1/models/nope");
    EXPECT_EQ(r.status, 404);
    EXPECT_EQ(r.js()["error"]["code"], "model_not_found");
    CallOptions limited;
    limited.key = false;
    limited.headers = {"Authorization: Bearer gw-limited"};
    EXPECT_EQ(call(port, "/v1/models/claude", limited).status, 404);
    EXPECT_EQ(call(port, "/v1/models/chat", limited).status, 200);
    EXPECT_EQ(call(port, "/v1/models", limited).js()["data"].size(), 1u);
}

TEST_F(GatewayTest, ChatOpenAiIsPassedThrough) {
    start();
    Reply r = post(port, "/v1/chat/completions", chat_body("chat"));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("content-type"), "application/json");
    EXPECT_EQ(r.header("x-ratelimit-remaining-requests"), "99");
    json j = r.js();
    EXPECT_EQ(j["id"], "chatcmpl-up");
    EXPECT_EQ(j["model"], "gpt-up");
    EXPECT_EQ(j["choices"][0]["message"]["content"], "hello world");
    Recorded up = upstream->last();
    EXPECT_EQ(up.path, "/v1/chat/completions");
    EXPECT_EQ(up.header("authorization"), std::string("Bearer ") + kUpstreamKey);
    EXPECT_EQ(json::parse(up.body)["model"], "gpt-up");
    auto done = governor.all();
    ASSERT_EQ(done.size(), 1u);
    EXPECT_EQ(done[0].status, 200);
    EXPECT_TRUE(done[0].usage.present);
    EXPECT_EQ(done[0].usage.total_tokens, 5);
}

TEST_F(GatewayTest, ChatAnthropicAndGeminiAreTranslated) {
    start();
    Reply r = post(port, "/v1/chat/completions", chat_body("claude"));
    ASSERT_EQ(r.status, 200) << r.body;
    json j = r.js();
    EXPECT_EQ(j["object"], "chat.completion");
    EXPECT_EQ(j["choices"][0]["message"]["content"], "hello world");
    EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
    EXPECT_EQ(j["usage"]["total_tokens"], 5);
    Recorded up = upstream->last();
    EXPECT_EQ(up.path, "/v1/messages");
    EXPECT_EQ(up.header("x-api-key"), kUpstreamKey);
    EXPECT_EQ(up.header("anthropic-version"), "2023-06-01");
    EXPECT_EQ(up.header("authorization"), "");
    EXPECT_EQ(json::parse(up.body)["max_tokens"], 1024);

    r = post(port, "/v1/chat/completions", chat_body("gemini"));
    ASSERT_EQ(r.status, 200) << r.body;
    j = r.js();
    EXPECT_EQ(j["choices"][0]["message"]["content"], "hello world");
    EXPECT_EQ(j["model"], "gemini-up");
    up = upstream->last();
    EXPECT_EQ(up.path, "/v1beta/models/gemini-up:generateContent");
    EXPECT_EQ(up.header("x-goog-api-key"), kUpstreamKey);
    auto done = governor.all();
    ASSERT_EQ(done.size(), 2u);
    EXPECT_EQ(done[1].usage.prompt_tokens, 3);
}

TEST_F(GatewayTest, ChatStreamsForAllProtocols) {
    start();
    for (const char *model : {"chat", "claude", "gemini"}) {
        Reply r = post(port, "/v1/chat/completions", chat_body(model, true));
        ASSERT_EQ(r.status, 200) << model << r.body;
        EXPECT_EQ(r.header("content-type"), "text/event-stream") << model;
        EXPECT_EQ(r.header("transfer-encoding"), "chunked") << model;
        std::vector<std::string> data = sse_data(r.body);
        ASSERT_FALSE(data.empty()) << model;
        EXPECT_EQ(data.back(), "[DONE]") << model;
        EXPECT_EQ(sse_text(r.body), "hello world") << model;
        // The usage chunk the gateway asked for is not passed to a caller who did not.
        EXPECT_EQ(r.body.find("\"usage\":{"), std::string::npos) << model << r.body;
    }
    Recorded up = upstream->requests()[0];
    EXPECT_EQ(json::parse(up.body)["stream_options"]["include_usage"], true);
    EXPECT_EQ(upstream->last().path, "/v1beta/models/gemini-up:streamGenerateContent");
    EXPECT_EQ(upstream->last().query, "alt=sse");
    auto done = governor.all();
    ASSERT_EQ(done.size(), 3u);
    for (auto &d : done) {
        EXPECT_EQ(d.status, 200);
        EXPECT_TRUE(d.usage.present) << d.service;
        EXPECT_EQ(d.usage.total_tokens, 5) << d.service;
    }
    // Asked for, the usage chunk comes along.
    json body = chat_body("claude", true);
    body["stream_options"] = {{"include_usage", true}};
    Reply r = post(port, "/v1/chat/completions", body);
    EXPECT_NE(r.body.find("\"usage\":{"), std::string::npos);
}

TEST_F(GatewayTest, UpstreamErrorsBeforeTheStream) {
    config.max_retries = 1;
    start();
    // 429 with Retry-After: 0 is retried once, then answered with the upstream's status.
    Reply r = post(port, "/v1/chat/completions", chat_body("chat429", true));
    EXPECT_EQ(r.status, 429);
    EXPECT_EQ(r.header("content-type"), "application/json");
    EXPECT_EQ(r.header("retry-after"), "0");
    json e = r.js()["error"];
    EXPECT_EQ(e["code"], "rate_limit_exceeded");
    EXPECT_NE(e["message"].get<std::string>().find("slow down"), std::string::npos);
    EXPECT_EQ(upstream->requests("e429").size(), 2u);

    // The upstream's key, refused and quoted back, never reaches the caller.
    r = post(port, "/v1/chat/completions", chat_body("badkey"));
    EXPECT_EQ(r.status, 502);
    EXPECT_EQ(r.js()["error"]["code"], "upstream_auth_failed");
    EXPECT_EQ(r.body.find(kUpstreamKey), std::string::npos) << r.body;
    EXPECT_NE(r.body.find("[redacted]"), std::string::npos) << r.body;
    r = post(port, "/v1/chat/completions", chat_body("gbadkey"));
    EXPECT_EQ(r.status, 502);  // Gemini's 400 API_KEY_INVALID is an auth failure too

    // Unreachable and silent upstreams.
    r = post(port, "/v1/chat/completions", chat_body("down"));
    EXPECT_EQ(r.status, 502);
    EXPECT_EQ(r.js()["error"]["code"], "upstream_unreachable");
}

TEST_F(GatewayTest, RetriesUntilTheUpstreamRecovers) {
    start();
    Reply r = post(port, "/v1/chat/completions", chat_body("flaky"));
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(upstream->requests("flaky").size(), 3u);
}

TEST_F(GatewayTest, UpstreamTimeout) {
    config.request_timeout_ms = 300;
    start();
    Reply r = post(port, "/v1/chat/completions", chat_body("hang"));
    EXPECT_EQ(r.status, 504);
    EXPECT_EQ(r.js()["error"]["code"], "upstream_timeout");
    EXPECT_LT(r.total_ms, 2000);
    r = post(port, "/v1/chat/completions", chat_body("hang", true));
    EXPECT_EQ(r.status, 504);
    EXPECT_LT(r.total_ms, 2500) << r.total_ms;
}

TEST_F(GatewayTest, AServicesOwnTimeoutCutsItsCalls) {
    config.request_timeout_ms = 5000;
    server = std::make_unique<Server>(loop.base(), config, governor);
    Snapshot s = catalog();
    s.services["hang"].request_timeout_ms = 300;
    server->set_snapshot(std::make_shared<Snapshot>(std::move(s)));
    server->listen();
    port = server->port();
    loop.start();
    Reply r = post(port, "/v1/chat/completions", chat_body("hang"));
    EXPECT_EQ(r.status, 504);
    EXPECT_LT(r.total_ms, 2000);
    r = post(port, "/v1/chat/completions", chat_body("hang", true));
    EXPECT_EQ(r.status, 504);
    EXPECT_LT(r.total_ms, 2500);
}

TEST_F(GatewayTest, UpstreamBreaksOffMidStream) {
    start();
    for (const char *model : {"midfail", "amidfail"}) {
        Reply r = post(port, "/v1/chat/completions", chat_body(model, true));
        EXPECT_EQ(r.status, 200) << model;
        EXPECT_TRUE(r.error.empty()) << r.error;  // the stream itself ends cleanly
        std::vector<std::string> data = sse_data(r.body);
        ASSERT_FALSE(data.empty()) << model;
        json last = json::parse(data.back(), nullptr, false);
        ASSERT_TRUE(last.contains("error")) << model << r.body;
        EXPECT_EQ(r.body.find("[DONE]"), std::string::npos) << model;
    }
    auto done = governor.all();
    ASSERT_EQ(done.size(), 2u);
    EXPECT_EQ(done[0].status, 502);
    EXPECT_EQ(server->in_flight(), 0u);
}

TEST_F(GatewayTest, ClientLeavingMidStreamStopsTheUpstream) {
    start();
    int fd = connect_raw();
    ASSERT_GE(fd, 0);
    std::string body = chat_body("slow", true).dump();
    std::string request = chat_head(body.size()) + body;
    ASSERT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
    std::string got = read_until(
        fd, [](const std::string &text) { return text.find("hello") != std::string::npos; });
    ASSERT_NE(got.find("hello"), std::string::npos) << got;
    expect_abandoned(fd);
    EXPECT_TRUE(eventually([&] { return upstream->streams_closed_by_peer() == 1; }));
    // Gone before the usage chunk: charged an estimate from the text streamed (4 characters a
    // token), not zero.
    auto done = governor.all();
    ASSERT_FALSE(done.empty());
    EXPECT_TRUE(done[0].usage.present);
    EXPECT_GE(done[0].usage.completion_tokens, 2);
    EXPECT_EQ(done[0].usage.total_tokens,
              done[0].usage.prompt_tokens + done[0].usage.completion_tokens);
}

TEST_F(GatewayTest, ClientLeavingPassThroughStreamIsCharged) {
    start();
    int fd = connect_raw();
    ASSERT_GE(fd, 0);
    std::string body = chat_body("gpt-up", true).dump();
    std::string request =
        "POST /inferenceservices/slow/v1/chat/completions HTTP/1.1\r\nHost: "
        "x\r\nAuthorization: Bearer " +
        std::string(kGatewayKey) +
        "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\n\r\n" + body;
    ASSERT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
    std::string got = read_until(
        fd, [](const std::string &text) { return text.find("world") != std::string::npos; });
    ASSERT_NE(got.find("world"), std::string::npos) << got;
    expect_abandoned(fd);
    auto done = governor.all();
    ASSERT_FALSE(done.empty());
    EXPECT_EQ(done[0].service, "slow");
    EXPECT_TRUE(done[0].usage.present);
    EXPECT_GE(done[0].usage.completion_tokens, 3);  // "hello world" at least
}

TEST_F(GatewayTest, ClientLeavingBeforeTheAnswerStopsTheUpstream) {
    start();
    int fd = connect_raw();
    ASSERT_GE(fd, 0);
    std::string body = chat_body("hang").dump();
    std::string request = chat_head(body.size()) + body;
    ASSERT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
    ASSERT_TRUE(eventually([&] { return upstream->requests("hang").size() == 1; }));
    expect_abandoned(fd);
}

TEST_F(GatewayTest, KeepAliveAndPipelining) {
    start();
    // Two requests written at once on one connection: answered in order, and the second one,
    // arriving while the first waits on its upstream, must not upset the connection.
    int fd = connect_raw();
    ASSERT_GE(fd, 0);
    std::string body = chat_body("claude").dump();
    std::string one = chat_head(body.size()) + body;
    std::string both = one + one;
    ASSERT_EQ(write(fd, both.data(), both.size()), static_cast<ssize_t>(both.size()));
    auto count_answers = [](const std::string &text) {
        size_t answers = 0;
        for (size_t at = text.find("hello world"); at != std::string::npos;
             at = text.find("hello world", at + 1))
            answers++;
        return answers;
    };
    std::string got =
        read_until(fd, [&](const std::string &text) { return count_answers(text) >= 2; });
    size_t answers = count_answers(got);
    close(fd);
    EXPECT_EQ(answers, 2u) << got;
    EXPECT_EQ(got.rfind("HTTP/1.1 200", 0), 0u);
}

TEST_F(GatewayTest, Embeddings) {
    start();
    json body = {{"model", "emb"}, {"input", {"a", "b"}}, {"encoding_format", "base64"}};
    Reply r = post(port, "/v1/embeddings", body);
    ASSERT_EQ(r.status, 200) << r.body;
    json j = r.js();
    std::string first = j["data"][0]["embedding"];
    EXPECT_EQ(pgi::base64::decode_floats(first).value(), (std::vector<float>{0.5f, 1.0f, -2.25f}));
    EXPECT_EQ(json::parse(upstream->last().body)["encoding_format"], "base64");
    EXPECT_EQ(j["model"], "emb-up");  // the upstream's body, as it was

    body["encoding_format"] = "float";
    j = post(port, "/v1/embeddings", body).js();
    EXPECT_EQ(j["data"][1]["embedding"], json({1.5, 1.0, -2.25}));

    // Upstreams that only give floats still serve base64 callers.
    for (const char *model : {"emb-floats", "emb-nob64", "gemb"}) {
        body = {{"model", model}, {"input", {"a", "b"}}, {"encoding_format", "base64"}};
        r = post(port, "/v1/embeddings", body);
        ASSERT_EQ(r.status, 200) << model << r.body;
        j = r.js();
        ASSERT_EQ(j["data"].size(), 2u) << model;
        std::string second = j["data"][1]["embedding"];
        EXPECT_EQ(pgi::base64::decode_floats(second).value(),
                  (std::vector<float>{1.5f, 1.0f, -2.25f}))
            << model;
    }
    EXPECT_EQ(upstream->requests("rejectb64").size(), 2u);
    EXPECT_EQ(upstream->last().path, "/v1beta/models/gemb-up:batchEmbedContents");

    // Anthropic has no embeddings: the caller's mistake, said clearly.
    r = post(port, "/v1/embeddings", json{{"model", "claude"}, {"input", "x"}});
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(r.js()["error"]["type"], "invalid_request_error");
    r = post(port, "/v1/embeddings", json{{"model", "emb"}, {"input", 5}});
    EXPECT_EQ(r.status, 400);
}

TEST_F(GatewayTest, RerankInBothShapesWithRouteDiscovery) {
    start();
    json rerank = {{"model", "nim"}, {"query", "q"}, {"documents", {"d0", "d1"}}, {"top_n", 2}};
    Reply r = post(port, "/v1/rerank", rerank);
    ASSERT_EQ(r.status, 200) << r.body;
    json j = r.js();
    ASSERT_EQ(j["results"].size(), 2u);
    EXPECT_EQ(j["results"][0]["index"], 1);
    EXPECT_EQ(upstream->last().path, "/v1/ranking");

    // NIM's shape against an upstream that only serves /v1/rerank: probed, then remembered.
    json ranking = {{"model", "vllm"},
                    {"query", {{"text", "q"}}},
                    {"passages", {{{"text", "d0"}}, {{"text", "d1"}}}}};
    r = post(port, "/v1/ranking", ranking);
    ASSERT_EQ(r.status, 200) << r.body;
    j = r.js();
    ASSERT_EQ(j["rankings"].size(), 2u);
    EXPECT_EQ(j["rankings"][0]["index"], 1);
    auto vllm = upstream->requests("vllm");
    ASSERT_EQ(vllm.size(), 2u);
    EXPECT_EQ(vllm[0].path, "/v1/ranking");
    EXPECT_EQ(vllm[1].path, "/v1/rerank");
    r = post(port, "/v1/rerank",
             json{{"model", "vllm"}, {"query", "q"}, {"documents", {"a", "b"}}});
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(upstream->requests("vllm").size(), 3u);
    EXPECT_EQ(upstream->last().path, "/v1/rerank");
    ASSERT_EQ(governor.learned.size(), 2u);
    EXPECT_EQ(governor.learned[0].first, "nim");
    EXPECT_EQ(governor.learned[0].second, pgi::translate::RerankRoute::kRanking);
    EXPECT_EQ(governor.learned[1].first, "vllm");
    EXPECT_EQ(governor.learned[1].second, pgi::translate::RerankRoute::kRerank);

    // A route known from the catalog is used straight away.
    r = post(port, "/v1/rerank",
             json{{"model", "vllm-known"}, {"query", "q"}, {"documents", {"a", "b"}}});
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(upstream->requests("vllm").size(), 4u);
    EXPECT_EQ(upstream->last().path, "/v1/rerank");
}

TEST_F(GatewayTest, PassThrough) {
    start();
    CallOptions o;
    o.method = "POST";
    o.body = "raw body";
    o.headers = {"X-Custom: yes", std::string("X-API-Key: ") + kGatewayKey,
                 "Content-Type: text/plain"};
    Reply r = call(port, "/inferenceservices/chat/echo/a%20b?x=1&y=2", o);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("x-upstream"), "yes");
    EXPECT_EQ(r.header("content-type"), "application/json");
    json j = r.js();
    EXPECT_EQ(j["method"], "POST");
    EXPECT_EQ(j["path"], "/echo/a%20b");
    EXPECT_EQ(j["query"], "x=1&y=2");
    EXPECT_EQ(j["body"], "raw body");
    EXPECT_EQ(j["headers"]["x-custom"], "yes");
    EXPECT_EQ(j["headers"]["content-type"], "text/plain");
    EXPECT_EQ(j["headers"]["authorization"], std::string("Bearer ") + kUpstreamKey);
    EXPECT_FALSE(j["headers"].contains("x-api-key"));

    // An Anthropic service: the caller's own x-api-key is replaced, not forwarded.
    o.method = "GET";
    o.body.clear();
    o.headers = {"x-api-key: gw-key-1", "anthropic-version: 1999-01-01"};
    o.key = false;
    j = call(port, "/inferenceservices/claude/echo", o).js();
    EXPECT_EQ(j["headers"]["x-api-key"], kUpstreamKey);
    EXPECT_EQ(j["headers"]["anthropic-version"], "2023-06-01");

    // Upstream errors come back as they are.
    o.key = true;
    o.headers.clear();
    r = call(port, "/inferenceservices/chat/nothing-here", o);
    EXPECT_EQ(r.status, 404);
    EXPECT_NE(r.body.find("no route /nothing-here"), std::string::npos);

    // Refused paths and services.
    o.path_as_is = true;
    for (const char *bad : {"/inferenceservices/chat/../emb/x", "/inferenceservices/chat/%2e%2e/x",
                            "/inferenceservices/chat/a%2Fb"}) {
        r = call(port, bad, o);
        EXPECT_EQ(r.status, 400) << bad;
        EXPECT_EQ(r.js()["error"]["code"], "invalid_path") << bad;
    }
    EXPECT_EQ(call(port, "/inferenceservices/nope/x", o).status, 404);
    CallOptions limited;
    limited.key = false;
    limited.headers = {"Authorization: Bearer gw-limited"};
    EXPECT_EQ(call(port, "/inferenceservices/claude/echo", limited).status, 403);
}

TEST_F(GatewayTest, PassThroughIsCounted) {
    start();
    auto last = [&] { return governor.all().back(); };
    CallOptions o;
    o.method = "POST";
    o.headers = {"Content-Type: application/json", "Accept-Encoding: gzip"};

    // JSON answers, in each shape the gateway reads.
    o.body = chat_body("gpt-up").dump();
    Reply r = call(port, "/inferenceservices/chat/v1/chat/completions", o);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.js()["choices"][0]["message"]["content"], "hello world");
    EXPECT_TRUE(upstream->requests("ok").back().header("accept-encoding").empty());
    Finished f = last();
    EXPECT_EQ(f.key, "full");
    EXPECT_EQ(f.service, "chat");
    EXPECT_EQ(f.status, 200);
    EXPECT_TRUE(f.usage.present);
    EXPECT_EQ(f.usage.prompt_tokens, 3);
    EXPECT_EQ(f.usage.completion_tokens, 2);
    EXPECT_EQ(f.usage.total_tokens, 5);

    o.body = json{{"model", "claude-up"},
                  {"max_tokens", 10},
                  {"messages", {{{"role", "user"}, {"content", "hi"}}}}}
                 .dump();
    ASSERT_EQ(call(port, "/inferenceservices/claude/v1/messages", o).status, 200);
    EXPECT_EQ(last().usage.total_tokens, 5);
    o.body = json{{"contents", {{{"role", "user"}, {"parts", {{{"text", "hi"}}}}}}}}.dump();
    ASSERT_EQ(
        call(port, "/inferenceservices/gemini/v1beta/models/gemini-up:generateContent", o).status,
        200);
    EXPECT_EQ(last().usage.total_tokens, 5);

    // An SSE answer with the usage chunk: counted exactly, and the caller gets it as sent.
    json streamed = chat_body("gpt-up", true);
    streamed["stream_options"] = {{"include_usage", true}};
    o.body = streamed.dump();
    r = call(port, "/inferenceservices/chat/v1/chat/completions", o);
    ASSERT_EQ(r.status, 200);
    EXPECT_NE(r.body.find("\"usage\""), std::string::npos);
    EXPECT_NE(r.body.find("data: [DONE]"), std::string::npos);
    f = last();
    EXPECT_EQ(f.status, 200);
    EXPECT_TRUE(f.usage.present);
    EXPECT_EQ(f.usage.total_tokens, 5);

    // Without usage in the stream: the estimate, "hello world" (11 characters) as 3 tokens.
    o.body = chat_body("gpt-up", true).dump();
    ASSERT_EQ(call(port, "/inferenceservices/chat/v1/chat/completions", o).status, 200);
    f = last();
    EXPECT_TRUE(f.usage.present);
    EXPECT_EQ(f.usage.prompt_tokens, 0);
    EXPECT_EQ(f.usage.completion_tokens, 3);

    // Any other path: counted as a request, with no tokens.
    o.body = "x";
    ASSERT_EQ(call(port, "/inferenceservices/chat/echo", o).status, 200);
    f = last();
    EXPECT_EQ(f.service, "chat");
    EXPECT_FALSE(f.usage.present);
}

TEST_F(GatewayTest, PassThroughKeyRules) {
    start();
    CallOptions nopass;
    nopass.key = false;
    nopass.headers = {"Authorization: Bearer gw-nopass"};
    for (const char *path :
         {"/inferenceservices/chat/echo", "/inferenceservices/chat/v1/models",
          "/inferenceservices/chat/v1/chat/completions", "/inferenceservices/nope/x"}) {
        Reply r = call(port, path, nopass);
        EXPECT_EQ(r.status, 403) << path;
        json e = r.js()["error"];
        EXPECT_EQ(e["code"], "passthrough_not_allowed") << path;
        EXPECT_NE(e["message"].get<std::string>().find("pass-through"), std::string::npos);
    }
    // The key serves the OpenAI-compatible routes all the same.
    EXPECT_EQ(
        post(port, "/v1/chat/completions", chat_body("chat"), {"X-API-Key: gw-nopass"}).status,
        200);

    // A token limit: only paths whose usage the gateway reads.
    CallOptions metered;
    metered.key = false;
    metered.headers = {"Authorization: Bearer gw-metered"};
    Reply r = call(port, "/inferenceservices/chat/echo", metered);
    EXPECT_EQ(r.status, 403);
    EXPECT_EQ(r.js()["error"]["code"], "passthrough_path_not_metered");
    EXPECT_NE(r.js()["error"]["message"].get<std::string>().find("token limit"), std::string::npos);
    EXPECT_EQ(governor.all().back().status, 403);
    metered.method = "POST";
    metered.body = chat_body("gpt-up").dump();
    metered.headers.push_back("Content-Type: application/json");
    r = call(port, "/inferenceservices/chat/v1/chat/completions", metered);
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(governor.all().back().usage.total_tokens, 5);
}

TEST(PassthroughUsageShape, Paths) {
    using pgi::Protocol;
    using pgi::gateway::passthrough_usage_shape;
    EXPECT_EQ(passthrough_usage_shape("/v1/chat/completions"), Protocol::kOpenAiV1);
    EXPECT_EQ(passthrough_usage_shape("/openai/v1/chat/completions/"), Protocol::kOpenAiV1);
    EXPECT_EQ(passthrough_usage_shape("/v1/completions"), Protocol::kOpenAiV1);
    EXPECT_EQ(passthrough_usage_shape("/v1/embeddings"), Protocol::kOpenAiV1);
    EXPECT_EQ(passthrough_usage_shape("/v1/messages"), Protocol::kAnthropicV1);
    EXPECT_EQ(passthrough_usage_shape("/v1beta/models/g:generateContent"), Protocol::kGeminiV1Beta);
    EXPECT_EQ(passthrough_usage_shape("/v1beta/models/g%3AstreamGenerateContent"),
              Protocol::kGeminiV1Beta);
    EXPECT_FALSE(passthrough_usage_shape("/v1/models"));
    EXPECT_FALSE(passthrough_usage_shape("/v1/images/generations"));
    EXPECT_FALSE(passthrough_usage_shape("/v1/messages/count_tokens"));
    EXPECT_FALSE(passthrough_usage_shape("/"));
}

TEST_F(GatewayTest, PassThroughStreamsAsItArrives) {
    start();
    Reply r = call(port, "/inferenceservices/chat/stream");
    ASSERT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "data: 1\n\ndata: 2\n\ndata: 3\n\n");
    EXPECT_EQ(r.header("content-type"), "text/event-stream");
    // Three events 150 ms apart: the first arrives long before the last.
    EXPECT_LT(r.first_byte_ms + 200, r.total_ms) << r.first_byte_ms << " " << r.total_ms;
}

TEST_F(GatewayTest, BadRequests) {
    start();
    auto error = [](const Reply &r) { return r.js()["error"]; };
    Reply r = call(port, "/v1/nothing");
    EXPECT_EQ(r.status, 404);
    EXPECT_EQ(r.header("content-type"), "application/json");
    EXPECT_EQ(error(r)["type"], "invalid_request_error");
    r = call(port, "/v1/chat/completions");
    EXPECT_EQ(r.status, 405);
    EXPECT_EQ(r.header("allow"), "POST");
    CallOptions o;
    o.method = "POST";
    o.body = "{\"model\":";
    o.headers = {"Content-Type: application/json"};
    r = call(port, "/v1/chat/completions", o);
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(error(r)["code"], "invalid_json");
    o.body = "[1]";
    EXPECT_EQ(call(port, "/v1/chat/completions", o).status, 400);
    // The JSON parser stops at a NUL and would take what precedes it for the whole body, while
    // the bytes after it would still be forwarded: a raw NUL is refused instead.
    o.body = chat_body("chat").dump() + std::string(1, '\0') + "{\"model\":\"other\"}";
    r = call(port, "/v1/chat/completions", o);
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(error(r)["code"], "invalid_json");
    EXPECT_NE(error(r)["message"].get<std::string>().find("NUL"), std::string::npos);
    o.body = "{\"messages\":[]}";
    r = call(port, "/v1/chat/completions", o);
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(error(r)["param"], "model");
    o.body = chat_body("nope").dump();
    r = call(port, "/v1/chat/completions", o);
    EXPECT_EQ(r.status, 404);
    EXPECT_EQ(error(r)["code"], "model_not_found");
    o.body = "{\"model\":\"chat\",\"messages\":\"x\"}";
    r = call(port, "/v1/chat/completions", o);
    EXPECT_EQ(r.status, 400);
    EXPECT_EQ(error(r)["code"], "invalid_value");
    o.body = "<xml/>";
    o.headers = {"Content-Type: application/xml"};
    EXPECT_EQ(call(port, "/v1/chat/completions", o).status, 415);
    // Over the body limit: 413, still OpenAI-shaped.
    o.headers.clear();
    o.body = "{\"model\":\"chat\",\"x\":\"" + std::string(70000, 'a') + "\"}";
    r = call(port, "/v1/chat/completions", o);
    EXPECT_EQ(r.status, 413);
    EXPECT_EQ(r.header("content-type"), "application/json");
    EXPECT_EQ(error(r)["code"], "request_too_large");
    EXPECT_TRUE(upstream->requests().empty());
    // Garbage on the wire does not hurt the server.
    int fd = connect_raw();
    ASSERT_GE(fd, 0);
    std::string junk = "\x01\x02 GARBAGE\r\n\r\n";
    ASSERT_GT(write(fd, junk.data(), junk.size()), 0);
    char buf[1024];
    ssize_t n = read(fd, buf, sizeof(buf));
    close(fd);
    EXPECT_GT(n, 0);
    EXPECT_NE(std::string(buf, n > 0 ? n : 0).find("400"), std::string::npos);
    EXPECT_EQ(call(port, "/health").status, 200);
}

// A method libevent does not serve (TRACE, CONNECT, an unknown token) is the caller's mistake:
// 405 with the methods the gateway serves, OpenAI-shaped, never a 5xx.
TEST_F(GatewayTest, UnservedMethodsAre405) {
    start();
    for (std::string method : {"TRACE", "CONNECT", "BREW", "post"}) {
        int fd = connect_raw();
        ASSERT_GE(fd, 0);
        std::string request = method + " /v1/models HTTP/1.1\r\nHost: x\r\n\r\n";
        ASSERT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
        std::string got =
            read_until(fd, [](const std::string &g) { return g.find("}}") != std::string::npos; });
        close(fd);
        EXPECT_EQ(got.rfind("HTTP/1.1 405 Method Not Allowed\r\n", 0), 0u) << method << ": " << got;
        EXPECT_NE(got.find("Allow: GET, POST, HEAD, PUT, DELETE, OPTIONS, PATCH\r\n"),
                  std::string::npos)
            << got;
        EXPECT_NE(got.find("\"type\":\"invalid_request_error\""), std::string::npos) << got;
        EXPECT_NE(got.find("\"code\":\"method_not_allowed\""), std::string::npos) << got;
    }
    EXPECT_EQ(call(port, "/health").status, 200);
}

// A HEAD answer carries no body, whatever the route answers to it: on a kept-alive connection a
// body would be read as the start of the next answer.
TEST_F(GatewayTest, HeadAnswersHaveNoBody) {
    start();
    int fd = connect_raw();
    ASSERT_GE(fd, 0);
    std::string requests =
        "HEAD /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n"
        "HEAD /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
        std::string(kGatewayKey) +
        "\r\n\r\n"
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    ASSERT_EQ(write(fd, requests.data(), requests.size()), static_cast<ssize_t>(requests.size()));
    std::string got = read_until(fd, [](const std::string &g) {
        return g.find("{\"status\":\"ok\"}") != std::string::npos;
    });
    close(fd);
    EXPECT_EQ(got.rfind("HTTP/1.1 405 ", 0), 0u) << got;
    size_t second = got.find("\r\n\r\nHTTP/1.1 200 ");
    ASSERT_NE(second, std::string::npos) << got;
    size_t third = got.find("\r\n\r\nHTTP/1.1 200 ", second + 4);
    ASSERT_NE(third, std::string::npos) << got;
    EXPECT_EQ(got.substr(got.size() - 15), "{\"status\":\"ok\"}") << got;
}

// Headers past the limit, still being sent when the gateway refuses them: the caller reads a 431
// rather than meeting a reset while it writes the rest.
TEST_F(GatewayTest, OversizedHeadersAre431WithoutAReset) {
    start();
    for (size_t size : {size_t(70000), size_t(300000)}) {
        int fd = connect_raw();
        ASSERT_GE(fd, 0);
        std::string request =
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Filler: " + std::string(size, 'f') +
            "\r\nContent-Length: 2\r\n\r\n{}";
        size_t sent = send_all(fd, request);
        EXPECT_EQ(sent, request.size()) << "the gateway stopped reading at " << sent;
        std::string got =
            read_until(fd, [](const std::string &g) { return g.find("}}") != std::string::npos; });
        close(fd);
        EXPECT_EQ(got.rfind("HTTP/1.1 431 ", 0), 0u) << got.substr(0, 300);
        EXPECT_NE(got.find("\"code\":\"headers_too_large\""), std::string::npos) << got;
    }
    EXPECT_EQ(call(port, "/health").status, 200);
}

// A framing the gateway does not read (a transfer coding other than chunked, a HEAD with a
// body) is a 400 sent while the caller may still be sending, not a close that resets the answer.
TEST_F(GatewayTest, UnreadableFramingIs400WithoutAReset) {
    start();
    const std::string body(200000, 'b');
    for (const std::string &head :
         {std::string("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                      "Transfer-Encoding: identity\r\nContent-Length: 200000\r\n\r\n"),
          std::string("HEAD /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n"),
          // A request line without a target, or with one that is no URI.
          std::string("POST  HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n"),
          std::string("POST http://[::1 HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n")}) {
        int fd = connect_raw();
        ASSERT_GE(fd, 0);
        std::string request = head + body;
        size_t sent = send_all(fd, request);
        EXPECT_EQ(sent, request.size()) << "the gateway stopped reading at " << sent;
        std::string got =
            read_until(fd, [](const std::string &g) { return g.find("}}") != std::string::npos; });
        close(fd);
        EXPECT_EQ(got.rfind("HTTP/1.1 400 ", 0), 0u) << head << got.substr(0, 300);
        EXPECT_NE(got.find("\"code\":\"invalid_request\""), std::string::npos) << got;
    }
    EXPECT_EQ(call(port, "/health").status, 200);
}

TEST_F(GatewayTest, TooLargeOnAKeptAliveConnection) {
    start();
    // libevent writes its own 413 on a connection that served a request before; it must be
    // OpenAI-shaped all the same.
    int fd = connect_raw();
    ASSERT_GE(fd, 0);
    auto exchange = [&](const std::string &body) {
        std::string request = chat_head(body.size());
        EXPECT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
        send_all(fd, body);
        // One whole response: its head, and as much body as its Content-Length says.
        return read_until(fd, [](const std::string &got) {
            size_t head = got.find("\r\n\r\n");
            size_t length_at = got.find("Content-Length: ");
            return head != std::string::npos && length_at != std::string::npos &&
                   got.size() >= head + 4 + std::stoul(got.substr(length_at + 16));
        });
    };
    std::string first = exchange(chat_body("chat").dump());
    EXPECT_EQ(first.rfind("HTTP/1.1 200", 0), 0u) << first;
    std::string second = exchange("{\"model\":\"chat\",\"x\":\"" + std::string(70000, 'a') + "\"}");
    close(fd);
    EXPECT_EQ(second.rfind("HTTP/1.1 413", 0), 0u) << second;
    EXPECT_NE(second.find("Content-Type: application/json"), std::string::npos) << second;
    EXPECT_NE(second.find("\"code\":\"request_too_large\""), std::string::npos) << second;
}

TEST_F(GatewayTest, GovernorRefusal) {
    governor.refuse = "chat";
    start();
    Reply r = post(port, "/v1/chat/completions", chat_body("chat"));
    EXPECT_EQ(r.status, 429);
    EXPECT_EQ(r.header("retry-after"), "7");
    EXPECT_EQ(r.header("x-ratelimit-remaining-requests"), "99");
    EXPECT_EQ(r.js()["error"]["code"], "rate_limit_exceeded");
    EXPECT_TRUE(upstream->requests().empty());
    auto done = governor.all();
    ASSERT_EQ(done.size(), 1u);
    EXPECT_TRUE(done[0].rate_limited);
}

TEST_F(GatewayTest, SnapshotReloadAndConnectionReuse) {
    start();
    for (int i = 0; i < 5; i++)
        EXPECT_EQ(post(port, "/v1/chat/completions", chat_body("chat")).status, 200);
    std::set<int> peers;
    for (auto &r : upstream->requests())
        peers.insert(r.peer_port);
    EXPECT_EQ(peers.size(), 1u);  // one kept-alive upstream connection

    Snapshot next;
    add_service(next, "fresh", "gpt-up", "ok");
    add_key(next, "full", kGatewayKey);
    loop.run([&] { server->set_snapshot(std::make_shared<Snapshot>(next)); });
    EXPECT_EQ(call(port, "/v1/models").js()["data"].size(), 1u);
    EXPECT_EQ(post(port, "/v1/chat/completions", chat_body("chat")).status, 404);
    EXPECT_EQ(post(port, "/v1/chat/completions", chat_body("fresh")).status, 200);
}

TEST_F(GatewayTest, NotInstalledAnswers503) {
    start();
    Snapshot s = catalog();
    s.unavailable = "pg_inference is not installed in database \"postgres\"";
    loop.run([&] { server->set_snapshot(std::make_shared<Snapshot>(s)); });
    auto expect_unavailable = [&](const Reply &r) {
        EXPECT_EQ(r.status, 503);
        json j = r.js();
        EXPECT_EQ(j["error"]["message"], *s.unavailable) << r.body;
        EXPECT_EQ(j["error"]["type"], "service_unavailable");
        EXPECT_EQ(j["error"]["code"], "extension_not_installed");
    };
    expect_unavailable(post(port, "/v1/chat/completions", chat_body("chat")));
    CallOptions o;
    o.key = false;  // no key is asked for: nothing could check it
    expect_unavailable(call(port, "/v1/models", o));
    expect_unavailable(call(port, "/health", o));
    expect_unavailable(call(port, "/nowhere", o));
    Reply metrics = call(port, "/metrics", o);
    EXPECT_EQ(metrics.status, 200);
    EXPECT_EQ(metrics.body, "pg_inference_test 1\n");
    EXPECT_TRUE(upstream->requests().empty());
    EXPECT_TRUE(governor.all().empty());
    // Installed again: served as before.
    loop.run([&] { server->set_snapshot(std::make_shared<Snapshot>(catalog())); });
    EXPECT_EQ(post(port, "/v1/chat/completions", chat_body("chat")).status, 200);
}

TEST_F(GatewayTest, ConnectionCap) {
    config.max_connections = 2;
    start();
    auto stats = [&] { return loop.run([&] { return server->connection_stats(); }); };
    const std::string health = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    auto served = [&](int fd) {
        if (write(fd, health.data(), health.size()) != static_cast<ssize_t>(health.size()))
            return false;
        std::string got = read_until(fd, [](const std::string &text) {
            return text.find("{\"status\":\"ok\"}") != std::string::npos;
        });
        return got.rfind("HTTP/1.1 200", 0) == 0;
    };
    int one = connect_raw();
    int two = connect_raw();
    ASSERT_GE(one, 0);
    ASSERT_GE(two, 0);
    EXPECT_TRUE(served(one));
    EXPECT_TRUE(served(two));
    EXPECT_EQ(stats().open, 2u);

    // A third is answered 503 at once and closed, and the two keep working.
    int three = connect_raw();
    ASSERT_GE(three, 0);
    std::string refused = read_until(three, [](const std::string &) { return false; });
    close(three);
    EXPECT_EQ(refused.rfind("HTTP/1.1 503 Service Unavailable\r\n", 0), 0u) << refused;
    EXPECT_NE(refused.find("Retry-After: 1\r\n"), std::string::npos) << refused;
    EXPECT_NE(refused.find("Connection: close\r\n"), std::string::npos) << refused;
    size_t body_at = refused.find("\r\n\r\n");
    ASSERT_NE(body_at, std::string::npos);
    json error = json::parse(refused.substr(body_at + 4), nullptr, false);
    EXPECT_EQ(error["error"]["code"], "too_many_connections") << refused;
    EXPECT_EQ(error["error"]["type"], "service_unavailable");
    EXPECT_NE(
        error["error"]["message"].get<std::string>().find("inference.gateway_max_connections"),
        std::string::npos);
    EXPECT_TRUE(served(one));
    EXPECT_TRUE(served(two));
    EXPECT_EQ(stats().refused, 1u);
    EXPECT_TRUE(eventually([&] { return governor.warnings_with("refused a connection") == 1; }));

    // A request sent at once, before the refusal is read, does not turn it into a reset.
    int eager = connect_raw();
    ASSERT_GE(eager, 0);
    ASSERT_EQ(write(eager, health.data(), health.size()), static_cast<ssize_t>(health.size()));
    refused = read_until(eager, [](const std::string &) { return false; });
    close(eager);
    EXPECT_EQ(refused.rfind("HTTP/1.1 503", 0), 0u) << refused;

    // A closed connection frees its slot; one that served a call with an upstream too.
    std::string body = chat_body("chat").dump();
    std::string request = chat_head(body.size()) + body;
    ASSERT_EQ(write(one, request.data(), request.size()), static_cast<ssize_t>(request.size()));
    std::string answer = read_until(
        one, [](const std::string &text) { return text.find("hello world") != std::string::npos; });
    EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0u) << answer;
    close(one);
    EXPECT_TRUE(eventually([&] { return stats().open == 1; }));
    int four = connect_raw();
    ASSERT_GE(four, 0);
    EXPECT_TRUE(served(four));
    close(two);
    close(four);
    EXPECT_TRUE(eventually([&] { return stats().open == 0; }));
    // The repeated refusal was throttled: one line so far, the second counted for later.
    EXPECT_EQ(governor.warnings_with("refused a connection"), 1u);
}

// ------------------------------------------------------------------------------------------------
// Hostile callers: refused before their body, held to deadlines, slow stream readers

// Everything one response carries, or what came before the gateway closed or 5 s passed.
static bool whole_response(const std::string &got) {
    size_t head = got.find("\r\n\r\n");
    size_t length_at = got.find("Content-Length: ");
    return head != std::string::npos && length_at != std::string::npos &&
           got.size() >= head + 4 + std::stoul(got.substr(length_at + 16));
}

TEST_F(GatewayTest, UnauthorisedBodyIsRefusedAfterItsHeaders) {
    config.max_body_size = 32u << 20;
    start();
    for (const char *auth : {"Authorization: Bearer wrong\r\n", "", "X-API-Key: gw-revoked\r\n"}) {
        // The head of a 15 MB upload, without its body: the answer may not wait for it.
        int fd = connect_raw();
        ASSERT_GE(fd, 0);
        std::string head = std::string("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n") + auth +
                           "Content-Type: application/json\r\nContent-Length: 15000000\r\n\r\n";
        ASSERT_EQ(write(fd, head.data(), head.size()), static_cast<ssize_t>(head.size()));
        auto sent = Clock::now();
        std::string got = read_until(fd, whole_response);
        auto waited = Clock::now() - sent;
        EXPECT_EQ(got.rfind("HTTP/1.1 401", 0), 0u) << got;
        EXPECT_NE(got.find("Connection: close\r\n"), std::string::npos) << got;
        EXPECT_NE(got.find("\"code\":\"invalid_api_key\""), std::string::npos) << got;
        EXPECT_LT(waited, 1s);
        // Then the connection is closed: what the client still sends is drained and dropped
        // for a short while (so that a reset cannot destroy the answer), then sending fails.
        // How much is drained depends on how fast both sides run, so bytes are not counted.
        timeval limit = {1, 0};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
        std::string more(1 << 20, 'x');
        auto began = Clock::now();
        bool closed = false;
        while (!closed && Clock::now() - began < 8s) {
            ssize_t n = send(fd, more.data(), more.size(), MSG_NOSIGNAL);
            closed = n < 0 && (errno == EPIPE || errno == ECONNRESET);
        }
        auto took = Clock::now() - began;
        close(fd);
        EXPECT_TRUE(closed) << "the gateway kept reading for 8 s";
        EXPECT_LT(took, 5s);
    }
    auto done = governor.all();
    ASSERT_EQ(done.size(), 3u);
    EXPECT_EQ(done[0].status, 401);

    // A small request whose body came with its head is answered as before and keeps its
    // connection.
    int fd = connect_raw();
    ASSERT_GE(fd, 0);
    std::string body = chat_body("chat").dump();
    std::string bad =
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        "wrong\r\nContent-Type: application/json\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
    ASSERT_EQ(write(fd, bad.data(), bad.size()), static_cast<ssize_t>(bad.size()));
    std::string got = read_until(fd, whole_response);
    EXPECT_EQ(got.rfind("HTTP/1.1 401", 0), 0u) << got;
    EXPECT_EQ(got.find("Connection: close"), std::string::npos) << got;
    std::string good = chat_head(body.size()) + body;
    ASSERT_EQ(write(fd, good.data(), good.size()), static_cast<ssize_t>(good.size()));
    got = read_until(fd, whole_response);
    close(fd);
    EXPECT_EQ(got.rfind("HTTP/1.1 200", 0), 0u) << got;
}

TEST_F(GatewayTest, OversizedContentLengthIsRefusedAtOnce) {
    start();
    int fd = connect_raw();
    ASSERT_GE(fd, 0);
    std::string head = chat_head(10 * 1024 * 1024);
    ASSERT_EQ(write(fd, head.data(), head.size()), static_cast<ssize_t>(head.size()));
    auto sent = Clock::now();
    std::string got = read_until(fd, whole_response);
    EXPECT_LT(Clock::now() - sent, 1s);
    close(fd);
    EXPECT_EQ(got.rfind("HTTP/1.1 413", 0), 0u) << got;
    EXPECT_NE(got.find("\"code\":\"request_too_large\""), std::string::npos) << got;
    EXPECT_NE(got.find("Connection: close\r\n"), std::string::npos) << got;
}

TEST_F(GatewayTest, HeaderAndBodyDeadlines) {
    config.header_timeout_s = 1;
    config.client_timeout_s = 60;
    start();
    // Headers trickled a byte every 200 ms: each byte is in time for the idle timeout, but the
    // headers are not done in a second.
    auto trickle = [&](const std::string &first, const std::string &slow) {
        int fd = connect_raw();
        EXPECT_GE(fd, 0);
        if (!first.empty()) {
            EXPECT_EQ(write(fd, first.data(), first.size()), static_cast<ssize_t>(first.size()));
        }
        auto began = Clock::now();
        std::string got;
        bool closed = false;
        for (size_t i = 0; i < slow.size() && !closed && Clock::now() - began < 5s; i++) {
            if (send(fd, &slow[i], 1, MSG_NOSIGNAL) != 1) {
                closed = true;
                break;
            }
            pollfd p{fd, POLLIN, 0};
            if (poll(&p, 1, 200) > 0) {
                char buf[4096];
                ssize_t n = read(fd, buf, sizeof(buf));
                if (n <= 0)
                    closed = true;
                else
                    got.append(buf, n);
            }
        }
        double seconds = std::chrono::duration<double>(Clock::now() - began).count();
        close(fd);
        return std::make_tuple(closed, seconds, got);
    };
    std::string head = chat_head(100);
    auto [closed, seconds, got] = trickle("", head + std::string(100, ' '));
    EXPECT_TRUE(closed);
    EXPECT_GT(seconds, 0.8);
    EXPECT_LT(seconds, 2.0);
    EXPECT_EQ(got.rfind("HTTP/1.1 408", 0), 0u) << got;

    // The body has its own second after the headers.
    auto [body_closed, body_seconds, body_got] = trickle(head, std::string(100, ' '));
    EXPECT_TRUE(body_closed);
    EXPECT_GT(body_seconds, 0.8);
    EXPECT_LT(body_seconds, 2.0);

    // Callers in time are served, on the same connection again and again.
    int fd = connect_raw();
    ASSERT_GE(fd, 0);
    std::string body = chat_body("chat").dump();
    std::string request = chat_head(body.size()) + body;
    for (int i = 0; i < 3; i++) {
        ASSERT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
        std::string answer = read_until(fd, whole_response);
        EXPECT_EQ(answer.rfind("HTTP/1.1 200", 0), 0u) << answer;
        std::this_thread::sleep_for(700ms);  // idle between requests is not the deadline's
    }
    close(fd);
}

TEST_F(GatewayTest, SlowStreamReaderPausesTheUpstream) {
    config.request_timeout_ms = 2000;  // a paused upstream is not an idle one
    start();
    int fd = connect_raw();
    ASSERT_GE(fd, 0);
    std::string body = chat_body("bulk", true).dump();
    std::string request = chat_head(body.size()) + body;
    ASSERT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
    // Once the stream flows (on a loaded machine its start may take a while), the caller reads
    // nothing for 3 s: the gateway holds its high-water mark and what the sockets buffer, not
    // the 26 MB stream.
    size_t delivered = 0;
    for (auto flowing = Clock::now() + 20s; delivered == 0 && Clock::now() < flowing;) {
        std::this_thread::sleep_for(50ms);
        delivered = loop.run([&] { return upstream->stream_bytes_delivered(); });
    }
    ASSERT_GT(delivered, 0u);
    std::this_thread::sleep_for(3s);
    delivered = loop.run([&] { return upstream->stream_bytes_delivered(); });
    EXPECT_LT(delivered, 16u << 20) << delivered;
    // Read at last, the stream resumes and ends whole.
    std::string tail;
    size_t total = 0;
    auto until = Clock::now() + 20s;
    while (Clock::now() < until) {
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0)
            continue;
        char buf[65536];
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            break;
        total += static_cast<size_t>(n);
        tail.append(buf, n);
        if (tail.size() > 4096)
            tail.erase(0, tail.size() - 4096);
        if (tail.find("[DONE]") != std::string::npos)
            break;
    }
    close(fd);
    EXPECT_NE(tail.find("[DONE]"), std::string::npos);
    EXPECT_GT(total, 25u << 20);
}

TEST_F(GatewayTest, Https) {
    char dir[] = "/tmp/gateway_tls_XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    config.tls_cert_file = std::string(dir) + "/cert.pem";
    config.tls_key_file = std::string(dir) + "/key.pem";
    pgi::test_support::write_certificate(config.tls_cert_file, config.tls_key_file);
    start();
    CallOptions o;
    o.https = true;
    Reply r = call(port, "/health", o);
    EXPECT_EQ(r.status, 200) << r.error;
    o.method = "POST";
    o.body = chat_body("claude", true).dump();
    r = call(port, "/v1/chat/completions", o);
    EXPECT_EQ(r.status, 200) << r.error;
    EXPECT_EQ(sse_text(r.body), "hello world");
    o.https = false;
    o.method = "GET";
    o.body.clear();
    EXPECT_NE(call(port, "/health", o).status, 200);  // plain HTTP on a TLS port
    unlink(config.tls_cert_file.c_str());
    unlink(config.tls_key_file.c_str());
    rmdir(dir);
}

TEST_F(GatewayTest, ListenErrors) {
    Config bad = config;
    bad.tls_cert_file = "/nonexistent/cert.pem";
    bad.tls_key_file = "/nonexistent/key.pem";
    Server tls(loop.base(), bad, governor);
    EXPECT_THROW(tls.listen(), pgi::Error);
    start();
    // Two servers on one port (SO_REUSEPORT) is the design; a port held without it is an error.
    Config same = config;
    same.port = port;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)), 0);
    ASSERT_EQ(listen(fd, 1), 0);
    socklen_t len = sizeof(addr);
    getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len);
    Config taken = config;
    taken.port = ntohs(addr.sin_port);
    loop.run([&] {
        Server second(loop.base(), same, governor);
        EXPECT_NO_THROW(second.listen());
        Server third(loop.base(), taken, governor);
        EXPECT_THROW(third.listen(), pgi::Error);
        return 0;
    });
    close(fd);
}

void accept_failures_child() {
    int failures = 0;
    auto check = [&](bool ok, const std::string &what) {
        if (!ok) {
            fprintf(stderr, "child: %s\n", what.c_str());
            failures++;
        }
    };
    signal(SIGPIPE, SIG_IGN);
    rlimit files{256, 256};
    if (setrlimit(RLIMIT_NOFILE, &files) != 0)
        _exit(90);
    event_base *base = event_base_new();
    RecordingGovernor governor;
    Config config;
    config.listen_addresses = {"127.0.0.1"};
    config.port = 0;
    int clients[20];
    std::vector<int> filler;
    {
        Server server(base, config, governor);
        server.listen();
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(static_cast<uint16_t>(server.port()));
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        for (int &fd : clients) {
            fd = socket(AF_INET, SOCK_STREAM, 0);
            // Completed by the kernel (the backlog): nothing is accepted until the loop runs.
            if (fd < 0 || connect(fd, reinterpret_cast<sockaddr *>(&addr), sizeof(addr)) != 0)
                _exit(91);
        }
        for (int fd; (fd = open("/dev/null", O_RDONLY)) >= 0;)
            filler.push_back(fd);
        check(errno == EMFILE, "the filler did not end in EMFILE");

        auto cpu_seconds = [] {
            rusage usage{};
            getrusage(RUSAGE_SELF, &usage);
            return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
                   (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
        };
        auto run_for = [&](long ms) {
            timeval tv = {ms / 1000, (ms % 1000) * 1000};
            event_base_loopexit(base, &tv);
            event_base_dispatch(base);
        };
        double cpu_before = cpu_seconds();
        run_for(1000);
        double cpu = cpu_seconds() - cpu_before;
        auto stats = server.connection_stats();
        check(cpu < 0.3, "the loop spent " + std::to_string(cpu) + " s of CPU in 1 s");
        check(stats.accept_failures >= 1 && stats.accept_failures <= 15,
              std::to_string(stats.accept_failures) + " accept failures in 1 s");
        check(governor.warnings_with("could not accept a connection: Too many open files") == 1,
              std::to_string(governor.warnings.size()) + " warnings, the first: " +
                  (governor.warnings.empty() ? "" : governor.warnings.front()));
        check(governor.warnings_with("libevent") == 0, "libevent logged on its own");

        // Descriptors come back: the waiting connections are accepted and served.
        for (int fd : filler)
            close(fd);
        filler.clear();
        run_for(300);
        check(server.connection_stats().open == 20,
              std::to_string(server.connection_stats().open) + " connections open, not 20");
        const std::string health = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        check(
            write(clients[0], health.data(), health.size()) == static_cast<ssize_t>(health.size()),
            "write");
        run_for(200);
        char buf[512] = {};
        ssize_t n = recv(clients[0], buf, sizeof(buf) - 1, MSG_DONTWAIT);
        check(n > 0 && std::string(buf).rfind("HTTP/1.1 200", 0) == 0,
              std::string("no answer after the pause: ") + buf);
        for (int fd : clients)
            close(fd);
    }
    event_base_free(base);
    _exit(failures == 0 ? 0 : 1);
}

// Descriptors exhausted: accept() fails while connections wait in the backlog. The listener must
// pause rather than retry in a busy loop, warn once rather than on every attempt, and accept
// again once descriptors are free. In a child process, whose descriptor limit can be lowered
// for good without touching the other tests.
TEST(GatewayLimits, AcceptFailuresDoNotSpin) {
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
        // The child must never return into the test runner.
        try {
            accept_failures_child();
        } catch (...) {
            _exit(92);
        }
        _exit(93);
    }
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0);
}

// ------------------------------------------------------------------------------------------------
// AsyncClient on its own.

class AsyncClientTest : public ::testing::Test {
  protected:
    void SetUp() override {
        base = event_base_new();
        upstream = std::make_unique<FakeUpstream>(base);
        client = std::make_unique<pgi::http::AsyncClient>(base);
    }
    void TearDown() override {
        client.reset();
        upstream.reset();
        event_base_free(base);
    }
    pgi::http::Request chat_request(const std::string &label, bool stream = false) {
        pgi::http::Request r;
        r.method = "POST";
        r.url = upstream->url(label) + "/v1/chat/completions";
        r.headers = {std::string("Authorization: Bearer ") + kUpstreamKey};
        r.body = json{{"model", "m"}, {"stream", stream}}.dump();
        return r;
    }
    // Runs the loop until done() or a time limit.
    void run_until(const std::function<bool()> &done) {
        auto until = Clock::now() + 5s;
        while (!done() && Clock::now() < until)
            event_base_loop(base, EVLOOP_ONCE);
    }

    event_base *base;
    std::unique_ptr<FakeUpstream> upstream;
    std::unique_ptr<pgi::http::AsyncClient> client;
};

TEST_F(AsyncClientTest, ConcurrentCallsShareConnections) {
    int finished = 0;
    bool synchronous = true;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 4; i++) {
            client->start(chat_request("ok"), {nullptr, [&](pgi::http::Response &r) {
                                                   EXPECT_FALSE(synchronous);
                                                   EXPECT_EQ(r.status, 200);
                                                   EXPECT_NE(r.body.find("hello world"),
                                                             std::string::npos);
                                                   finished++;
                                               }});
        }
        synchronous = false;
        run_until([&] { return finished == 4 * (round + 1); });
        synchronous = true;
    }
    EXPECT_EQ(finished, 12);
    EXPECT_EQ(client->active(), 0u);
    EXPECT_LE(client->connections_opened(), 4);  // later rounds reuse the first round's
}

TEST_F(AsyncClientTest, BlockedNetworksRefuseNewAndKeptAliveConnections) {
    auto blocked = std::make_shared<const pgi::net::AddressFilter>(
        pgi::net::AddressFilter::parse("127.0.0.0/8"));
    auto run = [&](pgi::http::Request request) {
        pgi::http::Response out;
        bool done = false;
        client->start(std::move(request), {nullptr, [&](pgi::http::Response &r) {
                                               out = r;
                                               done = true;
                                           }});
        run_until([&] { return done; });
        EXPECT_TRUE(done);
        return out;
    };
    pgi::http::Request first = chat_request("ok");
    first.blocked_networks = blocked;
    pgi::http::Response r = run(first);
    EXPECT_TRUE(r.blocked);
    EXPECT_EQ(r.attempts, 1);
    EXPECT_EQ(r.transport_error, "upstream address 127.0.0.1 is in inference.blocked_networks");
    EXPECT_EQ(client->connections_opened(), 0);

    // An unrestricted call leaves a kept-alive connection that a restricted one must not use.
    EXPECT_EQ(run(chat_request("ok")).status, 200);
    pgi::http::Request again = chat_request("ok");
    again.blocked_networks = blocked;
    r = run(again);
    EXPECT_TRUE(r.blocked);
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(upstream->requests("ok").size(), 1u);
}

TEST_F(AsyncClientTest, StreamsRetriesAndCancels) {
    // Body pieces as they come.
    std::string streamed;
    bool done = false;
    client->start(chat_request("ok", true),
                  {[&](const pgi::http::Response &head, const char *d, size_t n) {
                       EXPECT_EQ(head.status, 200);
                       streamed.append(d, n);
                       return true;
                   },
                   [&](pgi::http::Response &r) {
                       EXPECT_EQ(r.curl_code, 0);
                       EXPECT_TRUE(r.body.empty());
                       done = true;
                   }});
    run_until([&] { return done; });
    EXPECT_NE(streamed.find("[DONE]"), std::string::npos);

    // Retryable statuses are retried on timers; the error body is kept for the caller.
    pgi::http::AsyncClient::Options options;
    options.retry.max_retries = 3;
    done = false;
    client->start(chat_request("flaky"),
                  {nullptr,
                   [&](pgi::http::Response &r) {
                       EXPECT_EQ(r.status, 200);
                       EXPECT_EQ(r.attempts, 3);
                       done = true;
                   }},
                  options);
    run_until([&] { return done; });
    EXPECT_TRUE(done);
    options.retry.max_retries = 1;
    done = false;
    client->start(chat_request("e503", true),
                  {[&](const pgi::http::Response &, const char *, size_t) {
                       ADD_FAILURE() << "error bodies are not streamed";
                       return true;
                   },
                   [&](pgi::http::Response &r) {
                       EXPECT_EQ(r.status, 503);
                       EXPECT_EQ(r.attempts, 2);
                       EXPECT_NE(r.body.find("slow down"), std::string::npos);
                       done = true;
                   }},
                  options);
    run_until([&] { return done; });
    EXPECT_TRUE(done);

    // Cancelled from its own body callback: no completion, the upstream sees the close.
    pgi::http::AsyncClient::Id id = 0;
    int pieces = 0;
    id = client->start(
        chat_request("slow", true),
        {[&](const pgi::http::Response &, const char *, size_t) {
             if (++pieces == 2)
                 client->cancel(id);
             return true;
         },
         [&](pgi::http::Response &) { ADD_FAILURE() << "cancelled call completed"; }});
    run_until([&] { return upstream->streams_closed_by_peer() == 1; });
    EXPECT_EQ(upstream->streams_closed_by_peer(), 1);
    EXPECT_EQ(client->active(), 0u);

    // A hanging call cancelled from outside; an unreachable one reports on the loop.
    id = client->start(chat_request("hang"),
                       {nullptr, [&](pgi::http::Response &) { ADD_FAILURE(); }});
    event_base_loop(base, EVLOOP_NONBLOCK);
    client->cancel(id);
    pgi::http::Request down = chat_request("ok");
    down.url = "http://127.0.0.1:1/x";
    done = false;
    client->start(down, {nullptr, [&](pgi::http::Response &r) {
                             EXPECT_EQ(r.status, 0);
                             EXPECT_EQ(r.curl_code, CURLE_COULDNT_CONNECT);
                             done = true;
                         }});
    run_until([&] { return done; });
    EXPECT_TRUE(done);
    EXPECT_EQ(client->active(), 0u);
}

}  // namespace

// A target in absolute form names one of the gateway's routes; the connection is kept for the
// caller's next request as with any other (libevent took it for a proxy request and closed).
TEST_F(GatewayTest, AbsoluteFormTargetsKeepTheConnection) {
    start();
    std::string body = "{}";
    for (std::string target : {"http://127.0.0.1/v1/models", "/v1/models"}) {
        for (std::string method : {"POST", "GET"}) {
            std::string req;
            for (const char *conn : {"keep-alive", "close"})
                req += method + " " + target + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                       std::string(kGatewayKey) +
                       "\r\nContent-Type: application/json\r\nContent-Length: " +
                       std::to_string(body.size()) + "\r\nConnection: " + conn + "\r\n\r\n" + body;
            int fd = connect_raw();
            ASSERT_GE(fd, 0);
            ASSERT_EQ(write(fd, req.data(), req.size()), static_cast<ssize_t>(req.size()));
            std::string got = read_until(fd, [](const std::string &) { return false; });
            close(fd);
            size_t answers = 0;
            for (size_t at = got.find("HTTP/1.1 "); at != std::string::npos;
                 at = got.find("HTTP/1.1 ", at + 1))
                answers++;
            EXPECT_EQ(answers, 2u) << method << " " << target << ": " << got;
        }
    }
}
