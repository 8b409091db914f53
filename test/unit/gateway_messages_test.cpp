// POST /v1/messages, the Anthropic Messages dialect, end to end in one process: an Anthropic
// caller of an Anthropic service (its bytes forwarded with only the model rewritten), of an OpenAI
// service and of a Gemini service (translated both ways, streams included), the ledger's tokens,
// and errors in Anthropic's shape with Anthropic's statuses.
#include "gateway_harness.h"

namespace {

class MessagesTest : public GatewayTest {
  protected:
    // An Anthropic SDK's call: its key in x-api-key, the version header, a JSON body as text.
    Reply messages(const std::string &body, std::vector<std::string> headers = {}) {
        CallOptions o;
        o.method = "POST";
        o.key = false;
        o.body = body;
        o.headers = {std::string("x-api-key: ") + kGatewayKey, "anthropic-version: 2023-06-01",
                     "Content-Type: application/json"};
        for (auto &h : headers)
            o.headers.push_back(h);
        return call(port, "/v1/messages", o);
    }
    Reply messages(const json &body) { return messages(body.dump()); }

    static json hello(const std::string &model, bool stream = false) {
        json b = {{"model", model},
                  {"max_tokens", 100},
                  {"messages", {{{"role", "user"}, {"content", "hi"}}}}};
        if (stream)
            b["stream"] = true;
        return b;
    }

    // The named events of an SSE body with their data, in order.
    static std::vector<std::pair<std::string, json>> events(const std::string &body) {
        std::vector<std::pair<std::string, json>> out;
        size_t at = 0;
        while ((at = body.find("event: ", at)) != std::string::npos) {
            size_t eol = body.find('\n', at);
            std::string name = body.substr(at + 7, eol - at - 7);
            size_t data = body.find("data: ", eol);
            size_t end = body.find("\n\n", data);
            out.emplace_back(name,
                             json::parse(body.substr(data + 6, end - data - 6), nullptr, false));
            at = end;
        }
        return out;
    }

    static void expect_anthropic_error(const Reply &r, long status, const char *type) {
        EXPECT_EQ(r.status, status) << r.body;
        json j = r.js();
        EXPECT_EQ(j["type"], "error") << r.body;
        EXPECT_EQ(j["error"]["type"], type) << r.body;
        EXPECT_TRUE(j["error"]["message"].is_string()) << r.body;
    }

    Finished last_finished() {
        EXPECT_TRUE(eventually([&] { return !governor.all().empty(); }));
        auto all = governor.all();
        return all.empty() ? Finished{} : all.back();
    }
};

TEST_F(MessagesTest, AnthropicServiceGetsTheCallersBytes) {
    start();
    // Fields the chat form does not carry (thinking, cache_control, an unknown member) and the
    // caller's own spacing survive; only the model changes.
    const std::string body =
        R"({"model": "claude", "max_tokens": 64, "thinking": {"type": "enabled", )"
        R"("budget_tokens": 1024}, "x_future": [1, 2.50],)"
        R"( "messages": [{"role": "user", "content": [{"type": "text", "text": "hi",)"
        R"( "cache_control": {"type": "ephemeral"}}]}]})";
    Reply r = messages(body, {"anthropic-beta: interleaved-thinking-2025-05-14"});
    ASSERT_EQ(r.status, 200) << r.body;
    Recorded up = upstream->last();
    EXPECT_EQ(up.path, "/v1/messages");
    std::string expected = body;
    expected.replace(expected.find("\"claude\""), 8, "\"claude-up\"");
    EXPECT_EQ(up.body, expected);
    EXPECT_EQ(up.header("x-api-key"), kUpstreamKey);
    EXPECT_EQ(up.header("anthropic-beta"), "interleaved-thinking-2025-05-14");
    EXPECT_EQ(r.js()["id"], "msg_up");
    EXPECT_EQ(r.js()["content"][0]["text"], "hello world");
    EXPECT_EQ(r.header("x-ratelimit-remaining-requests"), "99");
    Finished f = last_finished();
    EXPECT_EQ(f.status, 200);
    EXPECT_EQ(f.service, "claude");
    EXPECT_EQ(f.usage.prompt_tokens, 3);
    EXPECT_EQ(f.usage.completion_tokens, 2);
}

TEST_F(MessagesTest, AnthropicServiceStreamIsPassedThroughAndCounted) {
    start();
    Reply r = messages(hello("claude", true));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("content-type"), "text/event-stream");
    auto ev = events(r.body);
    ASSERT_FALSE(ev.empty());
    EXPECT_EQ(ev.front().first, "message_start");
    EXPECT_EQ(ev.back().first, "message_stop");
    // The upstream's ping is there: nothing was rewritten.
    EXPECT_NE(r.body.find("event: ping"), std::string::npos);
    Finished f = last_finished();
    EXPECT_EQ(f.status, 200);
    EXPECT_EQ(f.usage.prompt_tokens, 3);
    EXPECT_EQ(f.usage.completion_tokens, 2);
}

TEST_F(MessagesTest, OpenAiServiceIsTranslated) {
    start();
    json body = hello("chat");
    body["system"] = "Be brief.";
    body["stop_sequences"] = {"END"};
    body["temperature"] = 0.5;
    Reply r = messages(body);
    ASSERT_EQ(r.status, 200) << r.body;
    Recorded up = upstream->last();
    EXPECT_EQ(up.path, "/v1/chat/completions");
    json sent = json::parse(up.body);
    EXPECT_EQ(sent["model"], "gpt-up");
    ASSERT_EQ(sent["messages"].size(), 2u);
    EXPECT_EQ(sent["messages"][0]["role"], "system");
    EXPECT_EQ(sent["messages"][0]["content"], "Be brief.");
    EXPECT_EQ(sent["messages"][1]["role"], "user");
    EXPECT_EQ(sent["stop"], json({"END"}));
    EXPECT_EQ(sent.value("max_completion_tokens", sent.value("max_tokens", 0)), 100);

    json j = r.js();
    EXPECT_EQ(j["type"], "message");
    EXPECT_EQ(j["role"], "assistant");
    EXPECT_EQ(j["content"][0]["type"], "text");
    EXPECT_EQ(j["content"][0]["text"], "hello world");
    EXPECT_EQ(j["stop_reason"], "end_turn");
    EXPECT_EQ(j["usage"]["input_tokens"], 3);
    EXPECT_EQ(j["usage"]["output_tokens"], 2);
    Finished f = last_finished();
    EXPECT_EQ(f.usage.prompt_tokens, 3);
    EXPECT_EQ(f.usage.completion_tokens, 2);
    EXPECT_EQ(f.usage.total_tokens, 5);
}

TEST_F(MessagesTest, OpenAiServiceToolUseRoundTrip) {
    FakeUpstream::Scripted answer;
    answer.body =
        json{
            {"id", "chatcmpl-tools"},
            {"object", "chat.completion"},
            {"created", 1},
            {"model", "gpt-up"},
            {"choices",
             {{{"index", 0},
               {"message",
                {{"role", "assistant"},
                 {"content", nullptr},
                 {"tool_calls",
                  {{{"id", "call_1"},
                    {"type", "function"},
                    {"function", {{"name", "weather"}, {"arguments", "{\"city\":\"Paris\"}"}}}}}}}},
               {"finish_reason", "tool_calls"}}}},
            {"usage", {{"prompt_tokens", 11}, {"completion_tokens", 7}, {"total_tokens", 18}}}}
            .dump();
    upstream->script("tools", answer);
    config.max_retries = 0;
    start();
    server->set_snapshot([&] {
        Snapshot s = catalog();
        add_service(s, "chat-tools", "gpt-up", "tools");
        return std::make_shared<Snapshot>(s);
    }());

    json tools = {
        {{"name", "weather"},
         {"description", "The weather in a city"},
         {"input_schema", {{"type", "object"}, {"properties", {{"city", {{"type", "string"}}}}}}}}};
    json body = hello("chat-tools");
    body["tools"] = tools;
    body["tool_choice"] = {{"type", "any"}};
    Reply r = messages(body);
    ASSERT_EQ(r.status, 200) << r.body;
    json sent = json::parse(upstream->last().body);
    EXPECT_EQ(sent["tools"][0]["function"]["name"], "weather");
    EXPECT_EQ(sent["tools"][0]["function"]["parameters"]["properties"]["city"]["type"], "string");
    EXPECT_EQ(sent["tool_choice"], "required");
    json j = r.js();
    EXPECT_EQ(j["stop_reason"], "tool_use");
    ASSERT_EQ(j["content"].size(), 1u);
    EXPECT_EQ(j["content"][0]["type"], "tool_use");
    EXPECT_EQ(j["content"][0]["id"], "call_1");
    EXPECT_EQ(j["content"][0]["name"], "weather");
    EXPECT_EQ(j["content"][0]["input"], json({{"city", "Paris"}}));
    EXPECT_EQ(last_finished().usage.total_tokens, 18);

    // The caller runs the tool and sends its result back, as the SDKs do.
    body["messages"].push_back({{"role", "assistant"}, {"content", j["content"]}});
    json result = {{"type", "tool_result"}, {"tool_use_id", "call_1"}, {"content", "sunny, 21 C"}};
    body["messages"].push_back({{"role", "user"}, {"content", json::array({result})}});
    r = messages(body);
    ASSERT_EQ(r.status, 200) << r.body;
    sent = json::parse(upstream->last().body);
    ASSERT_EQ(sent["messages"].size(), 3u);
    EXPECT_EQ(sent["messages"][1]["role"], "assistant");
    EXPECT_EQ(sent["messages"][1]["tool_calls"][0]["id"], "call_1");
    EXPECT_EQ(json::parse(
                  sent["messages"][1]["tool_calls"][0]["function"]["arguments"].get<std::string>()),
              json({{"city", "Paris"}}));
    EXPECT_EQ(sent["messages"][2]["role"], "tool");
    EXPECT_EQ(sent["messages"][2]["tool_call_id"], "call_1");
    EXPECT_EQ(sent["messages"][2]["content"], "sunny, 21 C");
}

TEST_F(MessagesTest, OpenAiServiceStreamBecomesAnthropicEvents) {
    start();
    Reply r = messages(hello("chat", true));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("content-type"), "text/event-stream");
    // The upstream was asked for usage whatever the caller said: the ledger needs it.
    json sent = json::parse(upstream->last().body);
    EXPECT_EQ(sent["stream"], true);
    EXPECT_EQ(sent["stream_options"]["include_usage"], true);

    auto ev = events(r.body);
    std::vector<std::string> names;
    std::string text;
    for (auto &e : ev) {
        if (names.empty() || names.back() != e.first)
            names.push_back(e.first);
        if (e.first == "content_block_delta")
            text += e.second["delta"]["text"].get<std::string>();
    }
    EXPECT_EQ(names, (std::vector<std::string>{"message_start", "content_block_start",
                                               "content_block_delta", "content_block_stop",
                                               "message_delta", "message_stop"}))
        << r.body;
    EXPECT_EQ(text, "hello world");
    json delta;
    for (auto &e : ev)
        if (e.first == "message_delta")
            delta = e.second;
    EXPECT_EQ(delta["delta"]["stop_reason"], "end_turn");
    EXPECT_EQ(delta["usage"]["output_tokens"], 2);
    Finished f = last_finished();
    EXPECT_EQ(f.status, 200);
    EXPECT_EQ(f.usage.prompt_tokens, 3);
    EXPECT_EQ(f.usage.completion_tokens, 2);
}

TEST_F(MessagesTest, BrokenUpstreamStreamEndsInAnErrorEventAndIsCharged) {
    config.max_retries = 0;
    start();
    Reply r = messages(hello("midfail", true));
    ASSERT_EQ(r.status, 200) << r.body;
    auto ev = events(r.body);
    ASSERT_FALSE(ev.empty()) << r.body;
    EXPECT_EQ(ev.back().first, "error") << r.body;
    EXPECT_EQ(ev.back().second["type"], "error");
    Finished f = last_finished();
    EXPECT_EQ(f.status, 502);
    // No usage came: what streamed is charged by its length.
    EXPECT_TRUE(f.usage.present);
    EXPECT_GE(f.usage.completion_tokens, 1);
}

TEST_F(MessagesTest, GeminiServiceIsTranslated) {
    start();
    Reply r = messages(hello("gemini"));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_NE(upstream->last().path.find(":generateContent"), std::string::npos);
    EXPECT_EQ(r.js()["content"][0]["text"], "hello world");
    EXPECT_EQ(r.js()["usage"]["output_tokens"], 2);

    r = messages(hello("gemini", true));
    ASSERT_EQ(r.status, 200) << r.body;
    std::string text;
    for (auto &e : events(r.body))
        if (e.first == "content_block_delta")
            text += e.second["delta"]["text"].get<std::string>();
    EXPECT_EQ(text, "hello world");
    EXPECT_EQ(events(r.body).back().first, "message_stop");
    EXPECT_EQ(last_finished().usage.total_tokens, 5);
}

TEST_F(MessagesTest, ErrorsInAnthropicShape) {
    start();
    // No key, a bad key: 401 authentication_error, whether refused before or after the body.
    CallOptions o;
    o.method = "POST";
    o.key = false;
    o.body = hello("chat").dump();
    o.headers = {"Content-Type: application/json"};
    expect_anthropic_error(call(port, "/v1/messages", o), 401, "authentication_error");
    o.headers.push_back("x-api-key: nope");
    expect_anthropic_error(call(port, "/v1/messages", o), 401, "authentication_error");
    o.headers = {"Content-Type: application/json", "Authorization: Bearer gw-revoked"};
    expect_anthropic_error(call(port, "/v1/messages", o), 401, "authentication_error");
    // The key as a Bearer token serves too (Claude Code's ANTHROPIC_AUTH_TOKEN).
    o.headers = {"Content-Type: application/json",
                 std::string("Authorization: Bearer ") + kGatewayKey};
    EXPECT_EQ(call(port, "/v1/messages", o).status, 200);
    // The OpenAI endpoint keeps its own shape.
    o.headers = {"Content-Type: application/json"};
    Reply openai = call(port, "/v1/chat/completions", o);
    EXPECT_EQ(openai.status, 401);
    EXPECT_EQ(openai.js()["error"]["code"], "invalid_api_key");

    expect_anthropic_error(messages(hello("nosuch")), 404, "not_found_error");
    expect_anthropic_error(messages(std::string(R"({"max_tokens":5,"messages":[]})")), 400,
                           "invalid_request_error");
    expect_anthropic_error(messages(std::string("{not json")), 400, "invalid_request_error");
    // The form's own checks on a translated call: max_tokens is required.
    json no_max = hello("chat");
    no_max.erase("max_tokens");
    expect_anthropic_error(messages(no_max), 400, "invalid_request_error");
}

TEST_F(MessagesTest, LimitedKeyAndRateLimits) {
    start();
    CallOptions o;
    o.method = "POST";
    o.key = false;
    o.body = hello("claude").dump();
    o.headers = {"Content-Type: application/json", "x-api-key: gw-limited",
                 "anthropic-version: 2023-06-01"};
    expect_anthropic_error(call(port, "/v1/messages", o), 403, "permission_error");

    governor.refuse = "chat";
    Reply r = messages(hello("chat"));
    expect_anthropic_error(r, 429, "rate_limit_error");
    EXPECT_EQ(r.header("retry-after"), "7");
    EXPECT_EQ(r.header("x-ratelimit-remaining-requests"), "99");

    // The upstream's own 429 and 5xx come back in Anthropic's shape too.
    config.max_retries = 0;
    server->reconfigure(config);
    expect_anthropic_error(messages(hello("chat429")), 429, "rate_limit_error");
    expect_anthropic_error(messages(hello("down")), 502, "api_error");
}

TEST_F(MessagesTest, ModelsInAnthropicShape) {
    start();
    CallOptions o;
    o.headers = {"anthropic-version: 2023-06-01"};
    Reply r = call(port, "/v1/models", o);
    ASSERT_EQ(r.status, 200) << r.body;
    json j = r.js();
    EXPECT_EQ(j["has_more"], false);
    ASSERT_FALSE(j["data"].empty());
    EXPECT_EQ(j["data"][0]["type"], "model");
    EXPECT_EQ(j["data"][0]["id"], j["first_id"]);
    EXPECT_EQ(j["data"].back()["id"], j["last_id"]);
    EXPECT_EQ(j["data"][0]["display_name"], j["data"][0]["id"]);
    EXPECT_TRUE(j["data"][0]["created_at"].is_string());
    EXPECT_FALSE(j.contains("object"));

    r = call(port, "/v1/models/claude", o);
    ASSERT_EQ(r.status, 200);
    EXPECT_EQ(r.js()["type"], "model");
    EXPECT_EQ(r.js()["id"], "claude");
    expect_anthropic_error(call(port, "/v1/models/nosuch", o), 404, "not_found_error");
    o.key = false;
    expect_anthropic_error(call(port, "/v1/models", o), 401, "authentication_error");

    // Without the header: OpenAI's list, as before.
    r = call(port, "/v1/models");
    EXPECT_EQ(r.js()["object"], "list");
}

TEST_F(MessagesTest, CallerLeavingMidStreamStopsTheUpstreamAndIsCharged) {
    start();
    int fd = connect_raw();
    ASSERT_GE(fd, 0);
    std::string body = hello("slow", true).dump();
    std::string request =
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + std::string(kGatewayKey) +
        "\r\nanthropic-version: 2023-06-01\r\nContent-Type: application/json"
        "\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
    ASSERT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
    std::string got = read_until(
        fd, [](const std::string &text) { return text.find("hello") != std::string::npos; });
    ASSERT_NE(got.find("content_block_delta"), std::string::npos) << got;
    expect_abandoned(fd);
    EXPECT_TRUE(eventually([&] { return upstream->streams_closed_by_peer() == 1; }));
    // Gone before the usage: charged an estimate from the text streamed, not zero.
    auto done = governor.all();
    ASSERT_FALSE(done.empty());
    EXPECT_TRUE(done[0].usage.present);
    EXPECT_GE(done[0].usage.completion_tokens, 2);
}

}  // namespace
