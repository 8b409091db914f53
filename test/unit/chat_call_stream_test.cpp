#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "caller_stream.h"
#include "openai_chunks.h"
#include "sse.h"

namespace {

using nlohmann::json;
using pgi::Protocol;
using pgi::ServiceEndpoint;
namespace tr = pgi::translate;

const ServiceEndpoint kOpenAi{"oa", "gpt-4o-mini", "http://up", Protocol::kOpenAiV1,
                              "",   false,         nullptr};
const ServiceEndpoint kAnthropic{
    "claude", "claude-sonnet-4-5", "http://up", Protocol::kAnthropicV1, "", false, nullptr};
const ServiceEndpoint kGemini{
    "gem", "gemini-2.5-flash", "http://up", Protocol::kGeminiV1Beta, "", false, nullptr};

using ChatStream = pgi::test_support::CallerStream;

using pgi::test_support::normalised;

struct Result {
    std::string out;
    tr::Usage usage;
    bool failed;
};

Result run(const ServiceEndpoint &s, bool wants_usage, std::string_view in,
           const std::vector<std::size_t> &cuts = {}) {
    ChatStream stream(s, wants_usage);
    std::string out;
    std::size_t pos = 0;
    for (std::size_t cut : cuts) {
        stream.feed(in.substr(pos, cut - pos), out);
        pos = cut;
    }
    stream.feed(in.substr(pos), out);
    stream.finish(out);
    EXPECT_TRUE(stream.done());
    return {normalised(out), stream.usage(), stream.failed()};
}

// Runs the input whole, one byte at a time and in random pieces; all must give the same bytes.
Result run_every_way(const ServiceEndpoint &s, bool wants_usage, std::string_view in) {
    Result whole = run(s, wants_usage, in);
    std::vector<std::size_t> bytes;
    for (std::size_t i = 1; i < in.size(); ++i)
        bytes.push_back(i);
    Result bytewise = run(s, wants_usage, in, bytes);
    EXPECT_EQ(bytewise.out, whole.out) << "one byte at a time";
    EXPECT_EQ(bytewise.usage.total_tokens, whole.usage.total_tokens);
    std::mt19937 rng(7);
    for (int round = 0; round < 30; ++round) {
        std::vector<std::size_t> cuts;
        for (std::size_t i = 1; i < in.size(); ++i) {
            if (rng() % 23 == 0)
                cuts.push_back(i);
        }
        EXPECT_EQ(run(s, wants_usage, in, cuts).out, whole.out) << "random split round " << round;
    }
    return whole;
}

// The output's events: every one must be framed as `data: ...` and a blank line.
std::vector<std::string> payloads(const std::string &out) {
    pgi::SseParser parser;
    std::vector<std::string> data;
    for (auto &e : parser.feed(out)) {
        EXPECT_EQ(e.event, "");
        data.push_back(e.data);
    }
    EXPECT_TRUE(parser.finish().empty()) << "output must end on an event boundary";
    return data;
}

// Chunks as JSON, [DONE] as the string "[DONE]".
std::vector<json> chunks(const std::string &out) {
    std::vector<json> list;
    for (const std::string &p : payloads(out))
        list.push_back(p == "[DONE]" ? json(p) : json::parse(p));
    return list;
}

json chunk(const char *id, const char *model, json choice_or_usage) {
    json c = {{"id", id}, {"object", "chat.completion.chunk"}, {"created", 0}, {"model", model}};
    if (choice_or_usage.contains("usage")) {
        c["choices"] = json::array();
        c["usage"] = choice_or_usage["usage"];
    } else {
        c["choices"] = json::array({choice_or_usage});
    }
    return c;
}

json delta(json d, json finish = nullptr, int index = 0) {
    return {{"index", index}, {"delta", std::move(d)}, {"finish_reason", std::move(finish)}};
}

// ---------------------------------------------------------------- inputs

const char kOpenAiStream[] =
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt\","
    "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
    "\"finish_reason\":null}],\"usage\":null}\n\n"
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt\","
    "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"usage: \\\"Hi\\\"\"},"
    "\"finish_reason\":null}],\"usage\":null}\n\n"
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt\","
    "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n";
const char kOpenAiUsageChunk[] =
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt\","
    "\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}"
    "\n\n";
const char kDone[] = "data: [DONE]\n\n";

const char kAnthropicStream[] =
    "event: message_start\n"
    "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\","
    "\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],"
    "\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,"
    "\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n"
    "event: ping\n"
    "data: {\"type\": \"ping\"}\n\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\","
    "\"thinking\":\"\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\","
    "\"thinking\":\"Let me think\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\","
    "\"signature\":\"abc\"}}\n\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\","
    "\"text\":\"\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\"Hello\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\","
    "\"text\":\" \\\"world\\\"\\n\"}}\n\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":1}\n\n"
    "event: content_block_start\n"
    "data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\","
    "\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"\"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"{\\\"city\\\": \"}}\n\n"
    "event: content_block_delta\n"
    "data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\","
    "\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n"
    "event: content_block_stop\n"
    "data: {\"type\":\"content_block_stop\",\"index\":2}\n\n"
    "event: message_delta\n"
    "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\","
    "\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}\n\n"
    "event: message_stop\n"
    "data: {\"type\":\"message_stop\"}\n\n";

const char kGeminiStream[] =
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"pondering\",\"thought\":true}],"
    "\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":10,"
    "\"totalTokenCount\":10},\"modelVersion\":\"gemini-2.5-flash-001\",\"responseId\":\"r1\"}"
    "\r\n\r\n"
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hel\"}],\"role\":\"model\"},"
    "\"index\":0}],\"modelVersion\":\"gemini-2.5-flash-001\",\"responseId\":\"r1\"}\r\n\r\n"
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"lo\"},{\"functionCall\":"
    "{\"name\":\"f\",\"args\":{\"x\":1}}}],\"role\":\"model\"},\"finishReason\":\"STOP\","
    "\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":10,\"candidatesTokenCount\":5,"
    "\"thoughtsTokenCount\":3,\"totalTokenCount\":18},\"modelVersion\":\"gemini-2.5-flash-001\","
    "\"responseId\":\"r1\"}\r\n\r\n";

}  // namespace

// ---------------------------------------------------------------- OpenAI

TEST(ChatCallStream, OpenAiUsageChunkHiddenWhenNotAsked) {
    std::string in = std::string(kOpenAiStream) + kOpenAiUsageChunk + kDone;
    Result r = run_every_way(kOpenAi, false, in);
    EXPECT_EQ(r.out, normalised(std::string(kOpenAiStream) + kDone));
    EXPECT_TRUE(r.usage.present);
    EXPECT_EQ(r.usage.prompt_tokens, 5);
    EXPECT_EQ(r.usage.completion_tokens, 2);
    EXPECT_EQ(r.usage.total_tokens, 7);
    EXPECT_FALSE(r.failed);
}

TEST(ChatCallStream, OpenAiUsageChunkShownWhenAsked) {
    std::string in = std::string(kOpenAiStream) + kOpenAiUsageChunk + kDone;
    Result r = run_every_way(kOpenAi, true, in);
    EXPECT_EQ(r.out, normalised(in));  // byte for byte, but for created
    EXPECT_EQ(r.usage.total_tokens, 7);
}

TEST(ChatCallStream, OpenAiVllmNullChoicesUsageChunk) {
    const char vllm_usage[] =
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt\","
        "\"choices\":null,\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":"
        "7}}"
        "\n\n";
    std::string in = std::string(kOpenAiStream) + vllm_usage + kDone;
    Result hidden = run_every_way(kOpenAi, false, in);
    EXPECT_EQ(hidden.out, normalised(std::string(kOpenAiStream) + kDone));
    EXPECT_EQ(hidden.usage.completion_tokens, 4);

    Result shown = run_every_way(kOpenAi, true, in);
    auto list = chunks(shown.out);
    ASSERT_EQ(list.size(), 5u);
    EXPECT_EQ(list[3]["choices"], json::array());
    EXPECT_EQ(list[3]["usage"]["total_tokens"], 7);
    EXPECT_EQ(list[4], "[DONE]");
}

TEST(ChatCallStream, OpenAiUsageOnAChunkWithChoicesIsForwarded) {
    const char in[] =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}],"
        "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n\n"
        "data: [DONE]\n\n";
    Result r = run_every_way(kOpenAi, false, in);
    EXPECT_EQ(r.out, normalised(in));
    EXPECT_EQ(r.usage.total_tokens, 2);
}

TEST(ChatCallStream, OpenAiFramingIsNormalised) {
    // CRLF framing, comments, a data payload on two lines: the caller gets plain framing.
    const char in[] =
        ": keep-alive\r\n\r\n"
        "data: {\"choices\":[{\"index\":0,\r\ndata: \"delta\":{\"content\":\"x\"}}]}\r\n\r\n"
        "data: [DONE]\r\n\r\n";
    Result r = run_every_way(kOpenAi, false, in);
    EXPECT_EQ(r.out,
              "data: {\"choices\":[{\"index\":0,\ndata: \"delta\":{\"content\":\"x\"}}]}\n\n"
              "data: [DONE]\n\n");
}

TEST(ChatCallStream, OpenAiMissingDoneIsAdded) {
    Result r = run_every_way(kOpenAi, false, kOpenAiStream);
    EXPECT_EQ(r.out, normalised(std::string(kOpenAiStream) + kDone));
    // No usage reported: the stream is charged one token per 4 characters it streamed.
    EXPECT_TRUE(r.usage.present);
    EXPECT_EQ(r.usage.prompt_tokens, 0);
    EXPECT_GT(r.usage.completion_tokens, 0);
}

TEST(ChatCallStream, OpenAiErrorChunkEndsTheStream) {
    const char error[] = "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\"}}\n\n";
    std::string in = std::string(kOpenAiStream) + error + "data: {\"choices\":[]}\n\n" + kDone;
    Result r = run_every_way(kOpenAi, false, in);
    EXPECT_EQ(r.out, normalised(std::string(kOpenAiStream) + error));
    EXPECT_TRUE(r.failed);
}

TEST(ChatCallStream, OpenAiNamedErrorEvent) {
    Result r =
        run_every_way(kOpenAi, false, "event: error\ndata: {\"message\":\"model overloaded\"}\n\n");
    EXPECT_EQ(
        chunks(r.out),
        std::vector<json>{json::parse(
            R"({"error":{"message":"model overloaded","type":"upstream_error","param":null,"code":null}})")});
    EXPECT_TRUE(r.failed);
}

TEST(ChatCallStream, ErrorEventsAreRedacted) {
    ServiceEndpoint s = kOpenAi;
    s.api_key = "sk-live-9876";
    Result r = run_every_way(
        s, false, "event: error\ndata: {\"message\":\"bad key sk-live-9876\",\"type\":\"e\"}\n\n");
    EXPECT_EQ(chunks(r.out)[0]["error"]["message"], "bad key [redacted]");
    ServiceEndpoint a = kAnthropic;
    a.api_key = "sk-ant-4321";
    r = run(a, false,
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"auth\","
            "\"message\":\"sk-ant-…4321 refused\"}}\n\n");
    EXPECT_EQ(chunks(r.out)[0]["error"]["message"], "[redacted] refused");
    ServiceEndpoint g = kGemini;
    g.api_key = "AIza0000";
    r = run(g, false, "data: {\"error\":{\"code\":400,\"message\":\"AIza0000 invalid\"}}\n\n");
    EXPECT_EQ(chunks(r.out)[0]["error"]["message"], "[redacted] invalid");
}

TEST(ChatCallStream, InputAfterTheEndIsIgnored) {
    ChatStream s(kOpenAi, false);
    std::string out = s.feed(std::string(kOpenAiStream) + kDone);
    EXPECT_TRUE(s.done());
    EXPECT_EQ(s.feed("data: {\"choices\":[]}\n\n"), "");
    EXPECT_EQ(s.finish(), "");
    EXPECT_FALSE(s.failed());
}

// ---------------------------------------------------------------- Anthropic

TEST(ChatCallStream, AnthropicFullStream) {
    const char *id = "msg_1";
    const char *model = "claude-sonnet-4-5-20250929";
    std::vector<json> expected = {
        chunk(id, model, delta({{"role", "assistant"}, {"content", ""}})),
        chunk(id, model, delta({{"content", "Hello"}})),
        chunk(id, model, delta({{"content", " \"world\"\n"}})),
        chunk(id, model,
              delta({{"tool_calls",
                      {{{"index", 0},
                        {"id", "toolu_1"},
                        {"type", "function"},
                        {"function", {{"name", "get_weather"}, {"arguments", ""}}}}}}})),
        chunk(id, model,
              delta({{"tool_calls",
                      {{{"index", 0}, {"function", {{"arguments", "{\"city\": "}}}}}}})),
        chunk(
            id, model,
            delta({{"tool_calls", {{{"index", 0}, {"function", {{"arguments", "\"Paris\"}"}}}}}}})),
        chunk(id, model, delta(json::object(), "tool_calls")),
    };
    Result r = run_every_way(kAnthropic, false, kAnthropicStream);
    std::vector<json> without_usage = expected;
    without_usage.push_back("[DONE]");
    EXPECT_EQ(chunks(r.out), without_usage);
    EXPECT_TRUE(r.usage.present);
    EXPECT_EQ(r.usage.prompt_tokens, 30);
    EXPECT_EQ(r.usage.completion_tokens, 42);
    EXPECT_EQ(r.usage.total_tokens, 72);
    EXPECT_EQ(r.usage.cached_tokens, 5);
    EXPECT_FALSE(r.failed);

    Result with_usage = run_every_way(kAnthropic, true, kAnthropicStream);
    expected.push_back(chunk(id, model,
                             {{"usage",
                               {{"prompt_tokens", 30},
                                {"completion_tokens", 42},
                                {"total_tokens", 72},
                                {"prompt_tokens_details", {{"cached_tokens", 5}}}}}}));
    expected.push_back("[DONE]");
    EXPECT_EQ(chunks(with_usage.out), expected);
}

TEST(ChatCallStream, AnthropicStopReasonsInStreams) {
    for (auto [reason, expected] :
         {std::pair{"end_turn", "stop"}, std::pair{"max_tokens", "length"},
          std::pair{"stop_sequence", "stop"}, std::pair{"refusal", "content_filter"}}) {
        std::string in =
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\","
            "\"model\":\"c\",\"usage\":{\"input_tokens\":1,\"output_tokens\":0}}}\n\n"
            "event: message_delta\ndata: "
            "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"" +
            std::string(reason) +
            "\"},\"usage\":{\"output_tokens\":3}}\n\n"
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        auto list = chunks(run(kAnthropic, false, in).out);
        ASSERT_EQ(list.size(), 3u);
        EXPECT_EQ(list[1]["choices"][0]["finish_reason"], expected) << reason;
    }
}

TEST(ChatCallStream, AnthropicErrorMidStream) {
    std::string in =
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\","
        "\"model\":\"c\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n"
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
        "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
        "\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n"
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
        "\"message\":\"Overloaded\"}}\n\n"
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    Result r = run_every_way(kAnthropic, true, in);
    auto list = chunks(r.out);
    ASSERT_EQ(list.size(), 3u);
    EXPECT_EQ(list[1]["choices"][0]["delta"]["content"], "Hi");
    EXPECT_EQ(list[2], json::parse(R"({"error":{"message":"Overloaded","type":"overloaded_error",
                                       "param":null,"code":null}})"));
    EXPECT_TRUE(r.failed);
    EXPECT_EQ(r.usage.prompt_tokens, 9);
}

TEST(ChatCallStream, AnthropicMalformedEvent) {
    Result r = run(kAnthropic, false, "event: content_block_delta\ndata: {not json\n\n");
    EXPECT_TRUE(r.failed);
    EXPECT_EQ(chunks(r.out)[0]["error"]["message"],
              "service \"claude\" sent a malformed stream event");
}

TEST(ChatCallStream, AnthropicWithoutEventNamesUsesDataType) {
    std::string in =
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\"}}\n\n"
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":"
        "\"text\",\"text\":\"\"}}\n\n"
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
        "\"text\":\"ok\"}}\n\n"
        "data: {\"type\":\"message_stop\"}\n\n";
    auto list = chunks(run(kAnthropic, false, in).out);
    ASSERT_EQ(list.size(), 4u);
    EXPECT_EQ(list[1]["choices"][0]["delta"]["content"], "ok");
    EXPECT_EQ(list[2]["choices"][0]["finish_reason"], "stop");
    EXPECT_EQ(list[3], "[DONE]");
}

// ---------------------------------------------------------------- Gemini

TEST(ChatCallStream, GeminiFullStream) {
    const char *id = "r1";
    const char *model = "gemini-2.5-flash-001";
    std::vector<json> expected = {
        chunk(id, model, delta({{"role", "assistant"}, {"content", ""}})),
        chunk(id, model, delta({{"content", "Hel"}})),
        chunk(id, model, delta({{"content", "lo"}})),
        chunk(id, model,
              delta({{"tool_calls",
                      {{{"index", 0},
                        {"id", "call_0"},
                        {"type", "function"},
                        {"function", {{"name", "f"}, {"arguments", ""}}}}}}})),
        chunk(
            id, model,
            delta({{"tool_calls", {{{"index", 0}, {"function", {{"arguments", "{\"x\":1}"}}}}}}})),
        chunk(id, model, delta(json::object(), "tool_calls")),
    };
    Result r = run_every_way(kGemini, true, kGeminiStream);
    expected.push_back(chunk(
        id, model,
        {{"usage", {{"prompt_tokens", 10}, {"completion_tokens", 8}, {"total_tokens", 18}}}}));
    expected.push_back("[DONE]");
    EXPECT_EQ(chunks(r.out), expected);
    EXPECT_EQ(r.usage.total_tokens, 18);

    Result hidden = run_every_way(kGemini, false, kGeminiStream);
    EXPECT_EQ(chunks(hidden.out).size(), expected.size() - 1);
    EXPECT_EQ(hidden.usage.total_tokens, 18);
}

TEST(ChatCallStream, GeminiFinishReasonsAndCandidates) {
    const char in[] =
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"a\"}]},\"index\":0},"
        "{\"content\":{\"parts\":[{\"text\":\"b\"}]},\"index\":1}]}\n\n"
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"c\"}]},\"index\":0,"
        "\"finishReason\":\"MAX_TOKENS\"},{\"index\":1,\"finishReason\":\"SAFETY\"}]}\n\n";
    auto list = chunks(run_every_way(kGemini, false, in).out);
    // One answer per call: the first candidate's (n above 1 reaches only OpenAI services).
    ASSERT_EQ(list.size(), 5u);
    auto choice = [&](std::size_t i) { return list[i]["choices"][0]; };
    EXPECT_EQ(choice(0)["index"], 0);
    EXPECT_EQ(choice(0)["delta"]["role"], "assistant");
    EXPECT_EQ(choice(1)["delta"]["content"], "a");
    EXPECT_EQ(choice(2)["delta"]["content"], "c");
    EXPECT_EQ(choice(3)["finish_reason"], "length");
    EXPECT_EQ(list[4], "[DONE]");
    // Without a responseId, the stream still has one id of its own.
    EXPECT_EQ(list[0]["id"], list[3]["id"]);
    EXPECT_EQ(list[0]["id"], "chatcmpl-X");
    EXPECT_EQ(list[0]["model"], "gemini-2.5-flash");
}

TEST(ChatCallStream, GeminiBlockedPrompt) {
    auto list =
        chunks(run(kGemini, false,
                   "data: {\"promptFeedback\":{\"blockReason\":\"PROHIBITED_CONTENT\"}}\n\n")
                   .out);
    ASSERT_EQ(list.size(), 3u);
    EXPECT_EQ(list[1]["choices"][0]["finish_reason"], "content_filter");
}

TEST(ChatCallStream, GeminiErrorEvent) {
    std::string in =
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"}]}}]}\r\n\r\n"
        "data: {\"error\":{\"code\":500,\"message\":\"Internal "
        "error\",\"status\":\"INTERNAL\"}}\r\n\r\n";
    Result r = run_every_way(kGemini, true, in);
    auto list = chunks(r.out);
    ASSERT_EQ(list.size(), 3u);
    EXPECT_EQ(list[2], json::parse(R"({"error":{"message":"Internal error","type":"INTERNAL",
                                       "param":null,"code":null}})"));
    EXPECT_TRUE(r.failed);
}

TEST(ChatCallStream, GeminiLastEventWithoutBlankLine) {
    std::string in = kGeminiStream;
    in.resize(in.size() - 4);  // the body ends right after the last data line
    EXPECT_EQ(run(kGemini, true, in).out, run(kGemini, true, kGeminiStream).out);
}

// ---------------------------------------------------------------- failures

TEST(ChatCallStream, TransportFailure) {
    ChatStream s(kGemini, false);
    std::string out = s.feed(std::string(kGeminiStream).substr(0, 250));
    s.fail("service \"gem\" timed out after 120 s", out);
    EXPECT_TRUE(s.failed());
    EXPECT_TRUE(s.done());
    auto list = chunks(normalised(out));
    EXPECT_EQ(list.back()["error"]["message"], "service \"gem\" timed out after 120 s");
    EXPECT_EQ(s.finish(), "");
}

TEST(ChatCallStream, OversizedEvent) {
    ChatStream s(kOpenAi, false);
    std::string out = s.feed("data: {\"choices\":[]}\n\n");
    s.feed("data: " + std::string(pgi::SseParser::kDefaultMaxEventBytes + 10, 'x'), out);
    EXPECT_TRUE(s.failed());
    auto list = chunks(out);
    ASSERT_EQ(list.size(), 2u);
    EXPECT_NE(list[1]["error"]["message"].get<std::string>().find("exceeds"), std::string::npos);
}

TEST(ChatCallStream, EmptyUpstream) {
    // A body that ends before any event still gives the caller a well-formed ending.
    EXPECT_EQ(run(kOpenAi, false, "").out, "data: [DONE]\n\n");
    // An Anthropic body with no event is no answer: the caller is told, not sent an empty one.
    Result r = run(kAnthropic, true, "");
    EXPECT_TRUE(r.failed);
    auto list = chunks(r.out);
    ASSERT_EQ(list.size(), 1u);
    EXPECT_TRUE(list[0].contains("error"));
}

// The check for a "usage" or "error" member scans 16 bytes at a time: the key must be found
// wherever it falls in a block, and across two.
TEST(ChatCallStream, OpenAiUsageAndErrorFoundAtEveryOffset) {
    for (int pad = 0; pad < 40; ++pad) {
        std::string id(static_cast<std::size_t>(pad), 'x');
        std::string usage = "data: {\"id\":\"" + id +
                            "\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":"
                            "{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n";
        Result r = run(kOpenAi, false, std::string(kOpenAiStream) + usage + kDone);
        EXPECT_EQ(r.out, normalised(std::string(kOpenAiStream) + kDone)) << "pad " << pad;
        EXPECT_EQ(r.usage.total_tokens, 7) << "pad " << pad;
        std::string error = "data: {\"id\":\"" + id + "\",\"error\":{\"message\":\"boom\"}}\n\n";
        EXPECT_TRUE(run(kOpenAi, false, std::string(kOpenAiStream) + error).failed)
            << "pad " << pad;
    }
}

// The in-place scan that spots a usage chunk is no validation: a chunk it can walk that is not
// JSON is the upstream's to judge, forwarded as it came rather than thrown out of feed().
TEST(ChatCallStream, OpenAiMalformedUsageChunkIsForwarded) {
    const std::string bad = "{\"choices\":null,\"usage\":{\"prompt_tokens\":3 4}}";
    const std::string in = std::string(kOpenAiStream) + "data: " + bad + "\n\n" + kDone;
    for (bool wants_usage : {true, false}) {
        ChatStream s(kOpenAi, wants_usage);
        std::string out;
        ASSERT_NO_THROW(s.feed(in, out));
        s.finish(out);
        EXPECT_EQ(out.find("data: " + bad + "\n\n") != std::string::npos, wants_usage);
        EXPECT_FALSE(s.failed());
    }
}

// An upstream may report any token count. The stream's running total and the charge of a stream
// cut short add counts; at the end of the range they saturate instead of overflowing (found by
// fuzzing a Responses caller's stream from an Anthropic service).
TEST(ChatCallStream, HugeTokenCountsSaturate) {
    const std::string max = "9223372036854775807";
    const std::string start =
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\","
        "\"model\":\"c\",\"usage\":{\"input_tokens\":" +
        max + ",\"output_tokens\":0}}}\n\n";
    const std::string text =
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
        "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
        "\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n";
    const std::string end =
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
        "\"end_turn\"},\"usage\":{\"output_tokens\":" +
        max + "}}\n\n";
    const json responses = {{"model", "m"}, {"input", "hi"}, {"stream", true}};
    auto open = [&](bool openai_caller) {
        return openai_caller
                   ? ChatStream(kAnthropic, true)
                   : ChatStream(pgi::protocols::responses_module(), kAnthropic, responses);
    };
    for (bool openai_caller : {true, false}) {
        ChatStream whole = open(openai_caller);
        whole.feed(start + text + end);
        whole.finish();
        EXPECT_EQ(whole.usage().prompt_tokens, INT64_MAX);
        EXPECT_EQ(whole.usage().completion_tokens, INT64_MAX);
        EXPECT_EQ(whole.usage().total_tokens, INT64_MAX);

        // Cut short after text: charged an estimate from the text on top of the prompt.
        ChatStream cut = open(openai_caller);
        std::string out = cut.feed(start + text);
        cut.fail("transfer interrupted", out);
        EXPECT_EQ(cut.usage().prompt_tokens, INT64_MAX);
        EXPECT_EQ(cut.usage().completion_tokens, 2);
        EXPECT_EQ(cut.usage().total_tokens, INT64_MAX);
    }
}

// Found by the chat_stream_gemini fuzz target: an upstream's error event that is not JSON is shown
// to the caller as its text, and bytes of it that were not UTF-8 made the error chunk invalid
// JSON. Every chunk must parse, whatever bytes the upstream sent.
TEST(ChatCallStream, AnErrorOfBytesThatAreNotUtf8IsStillJson) {
    const std::string in =
        std::string("data: {\"error\":[{\"a\":1}]}\0\xF6\x82\xCF\xDD\x1A tail\r\n\r\n", 40);
    for (const ServiceEndpoint *s : {&kGemini, &kAnthropic}) {
        Result r = run(*s, false, in);
        EXPECT_TRUE(r.failed) << s->name;
        std::size_t at = r.out.find("data: {\"error\"");
        ASSERT_NE(at, std::string::npos) << s->name << ": " << r.out;
        std::string payload = r.out.substr(at + 6, r.out.find("\n\n", at) - at - 6);
        json chunk = json::parse(payload, nullptr, false);
        ASSERT_TRUE(chunk.is_object()) << s->name << ": " << payload;
        if (s == &kGemini) {  // Gemini's module shows the event's text as the error
            EXPECT_NE(chunk["error"]["message"].get<std::string>().find("\xEF\xBF\xBD"),
                      std::string::npos)
                << "bytes that are not UTF-8 become U+FFFD: " << r.out;
        }
    }
}
