#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "chat_call.h"
#include "error_capture.h"
#include "openai_completions.h"
#include "service_fixtures.h"
#include "sse.h"

namespace {

using nlohmann::json;
using pgi::Protocol;
using pgi::ServiceEndpoint;
namespace chat = pgi::chat;
namespace oc = pgi::protocols::openai_completions;

const ServiceEndpoint kVllm{
    "vllm", "meta/llama", "http://vllm.test", Protocol::kOpenAiV1, "sk-vllm-secret-1234",
    false,  nullptr};
const ServiceEndpoint &kClaude = pgi::test_support::kAnthropicService;

TEST(ProtocolCompletions, APromptIsOneUserMessage) {
    chat::Request r = oc::read_request(json::parse(
        R"({"model":"m","prompt":["Once upon"],"max_tokens":7,"stop":"END","temperature":0.2,
            "stream":true,"stream_options":{"include_usage":true},"user":"u1","seed":3})"));
    ASSERT_EQ(r.messages.size(), 1u);
    EXPECT_EQ(r.messages[0].role, chat::Role::kUser);
    EXPECT_EQ(r.messages[0].content[0].text, "Once upon");
    EXPECT_EQ(r.max_tokens, 7);
    EXPECT_EQ(r.stop, std::vector<std::string>{"END"});
    EXPECT_EQ(r.temperature, 0.2);
    EXPECT_EQ(r.user, "u1");
    EXPECT_EQ(r.seed, 3);
    EXPECT_TRUE(r.stream);
    EXPECT_TRUE(r.stream_usage);
}

TEST(ProtocolCompletions, RefusesWhatCannotCross) {
    for (const char *body :
         {R"({"prompt":["a","b"]})", R"({"prompt":[1,2,3]})", R"({"prompt":"a","n":2})",
          R"({"prompt":"a","echo":true})", R"({"prompt":"a","logprobs":2})",
          R"({"prompt":"a","suffix":"z"})", R"({"prompt":"a","best_of":3})"}) {
        EXPECT_EQ(failure_of([&] { oc::read_request(json::parse(body)); }).sqlstate, "0A000")
            << body;
    }
    for (const char *body :
         {R"({"model":"m"})", R"({"prompt":5})", R"({"prompt":"a","max_tokens":0})",
          R"({"prompt":"a","stream":"yes"})", R"({"prompt":"a","stop":[1]})"}) {
        const Failure f = failure_of([&] { oc::read_request(json::parse(body)); });
        EXPECT_EQ(f.sqlstate, "22023") << body;
        EXPECT_FALSE(f.hint.empty());
    }
}

TEST(ProtocolCompletions, WritesTextCompletions) {
    chat::Response r;
    r.id = "cmpl-1";
    r.model = "claude-sonnet-4-5";
    chat::Block b;
    b.text = "a tale";
    r.content.push_back(b);
    r.stop_reason = chat::StopReason::kMaxTokens;
    r.usage = {3, 2, 5, true};
    json j = oc::write_response(r);
    EXPECT_EQ(j["object"], "text_completion");
    EXPECT_EQ(j["choices"][0]["text"], "a tale");
    EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
    EXPECT_EQ(j["usage"]["total_tokens"], 5);
}

TEST(ProtocolCompletions, StreamsChunksThenUsageThenDone) {
    oc::StreamWriter writer(true);
    std::string out;
    chat::Event e;
    e.kind = chat::Event::Kind::kStart;
    e.id = "cmpl-s";
    e.model = "m";
    writer.write(e, out);
    e = {};
    e.kind = chat::Event::Kind::kTextDelta;
    e.text = "once ";
    writer.write(e, out);
    e.text = "upon";
    writer.write(e, out);
    e = {};
    e.kind = chat::Event::Kind::kUsage;
    e.usage = {2, 2, 4, true};
    writer.write(e, out);
    e = {};
    e.kind = chat::Event::Kind::kEnd;
    writer.write(e, out);
    std::vector<pgi::SseEvent> events = pgi::SseParser().feed(out);
    ASSERT_EQ(events.size(), 5u);
    EXPECT_EQ(json::parse(events[0].data)["choices"][0]["text"], "once ");
    EXPECT_EQ(json::parse(events[2].data)["choices"][0]["finish_reason"], "stop");
    EXPECT_EQ(json::parse(events[3].data)["usage"]["total_tokens"], 4);
    EXPECT_EQ(json::parse(events[3].data)["choices"], json::array());
    EXPECT_EQ(events[4].data, "[DONE]");
}

TEST(ProtocolCompletions, AnOpenAiServiceGetsTheRequestAsItIs) {
    const std::string raw =
        R"({"model":"x","prompt":"hi","stream":true,"echo":true,"guided_json":{}})";
    json body = json::parse(raw);
    auto call = pgi::chat_call::plan(pgi::protocols::completions_module(), kVllm, body, {}, raw);
    EXPECT_TRUE(call.passed());
    EXPECT_EQ(call.request.url, "http://vllm.test/v1/completions");
    json sent = json::parse(call.request.body);
    EXPECT_EQ(sent["model"], "meta/llama");
    EXPECT_EQ(sent["echo"], true) << "what only the upstream knows reaches it";
    EXPECT_EQ(sent["guided_json"], json::object());
    EXPECT_EQ(sent["stream_options"]["include_usage"], true) << "the ledger needs the usage";
    EXPECT_FALSE(call.stream_usage) << "the caller did not ask for it";

    json crossing = json::parse(R"({"model":"x","prompt":"hi","max_tokens":9})");
    auto translated =
        pgi::chat_call::plan(pgi::protocols::completions_module(), kClaude, crossing, {});
    EXPECT_FALSE(translated.passed());
    json to_claude = json::parse(translated.request.body);
    EXPECT_EQ(to_claude["messages"][0]["content"], "hi");
    EXPECT_EQ(to_claude["max_tokens"], 9);
}

}  // namespace
