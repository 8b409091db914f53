#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "chat_call.h"
#include "error_capture.h"
#include "form_json.h"
#include "openai_responses.h"
#include "service_fixtures.h"

namespace {

using namespace pgi::test_support;
using nlohmann::json;
using pgi::Protocol;
using pgi::ServiceEndpoint;
namespace rs = pgi::protocols::openai_responses;

const ServiceEndpoint &kOpenAi = kOpenAiService;
const ServiceEndpoint &kClaude = kAnthropicService;

// ---- reading requests ----

const char *kAgentTurn = R"({
  "model": "svc",
  "instructions": "You are terse.",
  "input": [
    {"role": "developer", "content": "Answer in French."},
    {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"},
                                 {"type": "input_image", "image_url": "https://example.test/cat.jpg"}]},
    {"type": "reasoning", "id": "rs_1", "summary": []},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
    {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
    {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": ""},
    {"type": "function_call_output", "call_id": "call_1", "output": "18 C"},
    {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "noon"}]}
  ],
  "tools": [{"type": "function", "name": "get_weather", "description": "Weather of a city",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": true},
            {"type": "function", "name": "get_time"}],
  "tool_choice": {"type": "function", "name": "get_weather"},
  "parallel_tool_calls": false,
  "max_output_tokens": 256,
  "temperature": 0.5,
  "top_p": 0.9,
  "text": {"format": {"type": "json_schema", "name": "answer", "strict": true,
                      "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}},
  "store": true,
  "metadata": {"k": "v"},
  "safety_identifier": "user-7",
  "stream": true
})";

TEST(ProtocolResponses, ReadsAnAgentTurn) {
    chat::Request r = rs::read_request(json::parse(kAgentTurn));
    json got = request_json(r);
    EXPECT_EQ(got["system"], "You are terse.\n\nAnswer in French.");
    json text = block_json({});
    ASSERT_EQ(r.messages.size(), 3u);
    EXPECT_EQ(r.messages[0].role, chat::Role::kUser);
    ASSERT_EQ(r.messages[0].content.size(), 2u);
    EXPECT_EQ(r.messages[0].content[0].text, "Weather in Paris?");
    EXPECT_EQ(r.messages[0].content[1].kind, chat::Block::Kind::kImage);
    EXPECT_EQ(r.messages[0].content[1].image_url, "https://example.test/cat.jpg");
    // The assistant's text and both calls are one turn; the reasoning item is dropped.
    EXPECT_EQ(r.messages[1].role, chat::Role::kAssistant);
    ASSERT_EQ(r.messages[1].content.size(), 3u);
    EXPECT_EQ(r.messages[1].content[0].text, "Checking.");
    EXPECT_EQ(got["messages"][1]["content"][1]["input"], json({{"city", "Paris"}}));
    EXPECT_EQ(r.messages[1].content[1].tool_id, "call_1");
    EXPECT_EQ(r.messages[1].content[2].tool_name, "get_time");
    EXPECT_EQ(r.messages[1].content[2].input, json::object());
    // Both results in one user turn, named after their calls (Gemini needs the name).
    EXPECT_EQ(r.messages[2].role, chat::Role::kUser);
    ASSERT_EQ(r.messages[2].content.size(), 2u);
    EXPECT_EQ(r.messages[2].content[0].kind, chat::Block::Kind::kToolResult);
    EXPECT_EQ(r.messages[2].content[0].text, "18 C");
    EXPECT_EQ(r.messages[2].content[0].tool_name, "get_weather");
    EXPECT_EQ(r.messages[2].content[1].text, "noon");
    EXPECT_EQ(got["tools"][0]["name"], "get_weather");
    EXPECT_EQ(got["tools"][0]["parameters"]["properties"]["city"]["type"], "string");
    EXPECT_EQ(got["tools"][1]["parameters"], json::object());
    EXPECT_EQ(got["tool_choice"], json({{"mode", 3}, {"name", "get_weather"}}));
    EXPECT_EQ(r.parallel_tool_calls, false);
    EXPECT_EQ(got["max_tokens"], 256);
    EXPECT_EQ(got["temperature"], 0.5);
    EXPECT_EQ(got["top_p"], 0.9);
    EXPECT_EQ(got["format"]["kind"], static_cast<int>(chat::OutputFormat::Kind::kJsonSchema));
    EXPECT_EQ(got["format"]["name"], "answer");
    EXPECT_EQ(got["format"]["strict"], true);
    EXPECT_EQ(got["user"], "user-7");
    EXPECT_TRUE(r.stream);
    EXPECT_TRUE(r.stream_usage) << "response.completed always carries the usage";
}

TEST(ProtocolResponses, ReadsAPlainString) {
    chat::Request r = rs::read_request(json{{"model", "svc"}, {"input", "Hello"}});
    ASSERT_EQ(r.messages.size(), 1u);
    EXPECT_EQ(r.messages[0].content[0].text, "Hello");
    EXPECT_EQ(r.system, "");
    EXPECT_FALSE(r.stream);
    EXPECT_FALSE(r.max_tokens);
}

TEST(ProtocolResponses, RefusesBadInputWith22023AndAHint) {
    const std::vector<std::pair<json, std::string>> cases = {
        {json::array(), "must be a JSON object"},
        {{{"model", "svc"}}, "has no \"input\""},
        {{{"input", 5}}, "\"input\" must be a string or an array"},
        {{{"input", json::array({{{"role", "robot"}, {"content", "x"}}})}}, "role must be"},
        {{{"input", json::array({{{"type", "function_call"}, {"name", "f"}}})}}, "call_id"},
        {{{"input", json::array({{{"type", "function_call"},
                                  {"call_id", "c"},
                                  {"name", "f"},
                                  {"arguments", "[1]"}}})}},
         "JSON text of an object"},
        {{{"input", "x"}, {"max_output_tokens", 0}}, "max_output_tokens"},
        {{{"input", "x"}, {"stream", "yes"}}, "\"stream\" must be a boolean"},
        {{{"input", "x"}, {"text", {{"format", {{"type", "json_schema"}}}}}}, "needs a \"name\""},
        {{{"input", "x"}, {"tools", json::array({{{"type", "function"}}})}}, "needs a \"name\""},
        {{{"input", "x"}, {"previous_response_id", "resp_1"}}, "previous_response_id"},
    };
    for (const auto &[body, words] : cases) {
        const Failure f = failure_of([&] { rs::read_request(body); });
        EXPECT_EQ(f.sqlstate, "22023") << body.dump();
        EXPECT_NE(f.message.find(words), std::string::npos) << f.message;
        EXPECT_FALSE(f.hint.empty()) << body.dump();
    }
}

TEST(ProtocolResponses, RefusesWhatTheFormCannotCarryWith0A000) {
    const std::vector<json> cases = {
        {{"input", "x"}, {"tools", json::array({{{"type", "web_search"}}})}},
        {{"input", json::array({{{"type", "item_reference"}, {"id", "msg_1"}}})}},
        {{"input", json::array({{{"type", "web_search_call"}, {"id", "ws_1"}}})}},
        {{"input",
          json::array(
              {{{"role", "user"},
                {"content", json::array({{{"type", "input_file"}, {"file_id", "file-1"}}})}}})}},
        {{"input", "x"}, {"background", true}},
    };
    for (const json &body : cases) {
        const Failure f = failure_of([&] { rs::read_request(body); });
        EXPECT_EQ(f.sqlstate, "0A000") << body.dump();
        EXPECT_FALSE(f.hint.empty());
    }
}

// ---- writing answers ----

chat::Response answer_with_call() {
    chat::Response r;
    r.id = "resp_abc";
    r.model = "gpt-4o-mini";
    chat::Block text;
    text.text = "Let me check.";
    chat::Block call;
    call.kind = chat::Block::Kind::kToolUse;
    call.tool_id = "call_1";
    call.tool_name = "get_weather";
    call.input = {{"city", "Paris"}};
    r.content = {text, call};
    r.stop_reason = chat::StopReason::kToolUse;
    r.usage.present = true;
    r.usage.prompt_tokens = 12;
    r.usage.completion_tokens = 5;
    r.usage.total_tokens = 17;
    return r;
}

TEST(ProtocolResponses, WritesAResponseObject) {
    json j = rs::write_response(answer_with_call());
    EXPECT_EQ(j["id"], "resp_abc");
    EXPECT_EQ(j["object"], "response");
    EXPECT_EQ(j["status"], "completed");
    EXPECT_TRUE(j["incomplete_details"].is_null());
    EXPECT_TRUE(j["created_at"].is_number_integer());
    ASSERT_EQ(j["output"].size(), 2u);
    EXPECT_EQ(j["output"][0]["type"], "message");
    EXPECT_EQ(j["output"][0]["role"], "assistant");
    EXPECT_EQ(
        j["output"][0]["content"][0],
        json({{"type", "output_text"}, {"text", "Let me check."}, {"annotations", json::array()}}));
    EXPECT_EQ(j["output"][1]["type"], "function_call");
    EXPECT_EQ(j["output"][1]["call_id"], "call_1");
    EXPECT_EQ(j["output"][1]["name"], "get_weather");
    EXPECT_EQ(json::parse(j["output"][1]["arguments"].get<std::string>()),
              json({{"city", "Paris"}}));
    EXPECT_EQ(j["usage"]["input_tokens"], 12);
    EXPECT_EQ(j["usage"]["output_tokens"], 5);
    EXPECT_EQ(j["usage"]["total_tokens"], 17);

    chat::Response cut = answer_with_call();
    cut.stop_reason = chat::StopReason::kMaxTokens;
    json c = rs::write_response(cut);
    EXPECT_EQ(c["status"], "incomplete");
    EXPECT_EQ(c["incomplete_details"], json({{"reason", "max_output_tokens"}}));
}

TEST(ProtocolResponses, AnswersReadBackAsTheyWereWritten) {
    const chat::Response r = answer_with_call();
    chat::Response back = rs::read_response(kOpenAi, rs::write_response(r).dump());
    EXPECT_EQ(response_json(back), response_json(r));
    EXPECT_EQ(rs::answer_usage(rs::write_response(r).dump()).total_tokens, 17);
}

// ---- streams ----

std::vector<chat::Event> answer_events() {
    std::vector<chat::Event> events(11);
    using K = chat::Event::Kind;
    events[0].kind = K::kStart;
    events[0].id = "resp_s1";
    events[0].model = "gpt-4o-mini";
    events[1].kind = K::kBlockStart;
    events[2].kind = K::kTextDelta;
    events[2].text = "Hello, ";
    events[3].kind = K::kTextDelta;
    events[3].text = "wörld ☃";
    events[4].kind = K::kBlockStop;
    events[5].kind = K::kBlockStart;
    events[5].index = 1;
    events[5].block.kind = chat::Block::Kind::kToolUse;
    events[5].block.tool_id = "call_9";
    events[5].block.tool_name = "get_weather";
    events[6].kind = K::kToolInputDelta;
    events[6].index = 1;
    events[6].text = "{\"city\":";
    events[7].kind = K::kToolInputDelta;
    events[7].index = 1;
    events[7].text = "\"Paris\"}";
    events[8].kind = K::kBlockStop;
    events[8].index = 1;
    events[9].kind = K::kStop;
    events[9].stop_reason = chat::StopReason::kToolUse;
    events[10].kind = K::kUsage;
    events[10].usage.present = true;
    events[10].usage.prompt_tokens = 9;
    events[10].usage.completion_tokens = 4;
    events[10].usage.total_tokens = 13;
    chat::Event end;
    end.kind = K::kEnd;
    events.push_back(end);
    return events;
}

std::string written(const std::vector<chat::Event> &events) {
    rs::StreamWriter writer;
    std::string out;
    for (const chat::Event &e : events)
        writer.write(e, out);
    return out;
}

std::vector<json> stream_payloads(const std::string &sse) {
    std::vector<json> out;
    for (const pgi::SseEvent &e : pgi::SseParser().feed(sse)) {
        json j = json::parse(e.data);
        EXPECT_EQ(j["type"], e.event) << "the event name is the payload's type";
        out.push_back(j);
    }
    return out;
}

TEST(ProtocolResponses, StreamWriterWritesTheEventsInOrder) {
    const std::vector<json> events = stream_payloads(written(answer_events()));
    std::vector<std::string> types;
    for (std::size_t i = 0; i < events.size(); ++i) {
        types.push_back(events[i]["type"]);
        EXPECT_EQ(events[i]["sequence_number"], i);
    }
    const std::vector<std::string> expected = {
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    };
    EXPECT_EQ(types, expected);
    EXPECT_EQ(events[0]["response"]["id"], "resp_s1");
    EXPECT_EQ(events[0]["response"]["status"], "in_progress");
    EXPECT_EQ(events[4]["delta"], "Hello, ");
    EXPECT_EQ(events[4]["output_index"], 0);
    EXPECT_EQ(events[6]["text"], "Hello, wörld ☃");
    EXPECT_EQ(events[9]["item"]["call_id"], "call_9");
    EXPECT_EQ(events[10]["output_index"], 1);
    EXPECT_EQ(events[12]["arguments"], "{\"city\":\"Paris\"}");
    const json &done = events.back()["response"];
    EXPECT_EQ(done["status"], "completed");
    EXPECT_EQ(done["usage"]["input_tokens"], 9);
    EXPECT_EQ(done["usage"]["output_tokens"], 4);
    ASSERT_EQ(done["output"].size(), 2u);
    EXPECT_EQ(done["output"][0]["content"][0]["text"], "Hello, wörld ☃");
    EXPECT_EQ(done["output"][1]["arguments"], "{\"city\":\"Paris\"}");
}

TEST(ProtocolResponses, StreamWriterEndsWithAnErrorEvent) {
    std::vector<chat::Event> events = answer_events();
    events.resize(3);
    chat::Event error;
    error.kind = chat::Event::Kind::kError;
    error.error.status = 502;
    error.error.message = "the upstream stream broke off";
    events.push_back(error);
    events.push_back(answer_events().back());  // nothing after the error
    const std::vector<json> out = stream_payloads(written(events));
    EXPECT_EQ(out.back()["type"], "error");
    EXPECT_EQ(out.back()["message"], "the upstream stream broke off");
    EXPECT_EQ(out.back()["code"], "server_error");
}

TEST(ProtocolResponses, StreamsReadBackWhateverTheSplit) {
    const std::string sse = written(answer_events());
    std::vector<std::string> expected = describe(answer_events());
    // The reader reports the block stops before the stop, as the form orders them.
    for (std::size_t cut = 0; cut <= sse.size(); ++cut) {
        rs::StreamReader reader(kOpenAi);
        std::vector<chat::Event> out;
        reader.feed(std::string_view(sse).substr(0, cut), out);
        reader.feed(std::string_view(sse).substr(cut), out);
        reader.finish(out);
        ASSERT_EQ(describe(out), expected) << "split at " << cut;
    }
}

TEST(ProtocolResponses, AStreamCutShortIsAnError) {
    const std::string sse = written(answer_events());
    rs::StreamReader reader(kOpenAi);
    std::vector<chat::Event> out;
    reader.feed(std::string_view(sse).substr(0, sse.size() / 2), out);
    reader.finish(out);
    ASSERT_FALSE(out.empty());
    EXPECT_EQ(out.back().kind, chat::Event::Kind::kError);
}

// ---- through the chat call ----

TEST(ProtocolResponses, AnOpenAiServiceGetsAChatCompletion) {
    json body = json::parse(kAgentTurn);
    pgi::chat_call::Call call =
        pgi::chat_call::plan(pgi::protocols::responses_module(), kOpenAi, body, {});
    EXPECT_FALSE(call.passed());
    EXPECT_EQ(call.request.url, "https://api.openai.test/v1/chat/completions");
    json sent = json::parse(call.request.body);
    EXPECT_EQ(sent["model"], "gpt-4o-mini");
    EXPECT_EQ(sent["messages"][0],
              json({{"role", "system"}, {"content", "You are terse.\n\nAnswer in French."}}));
    EXPECT_EQ(sent["max_completion_tokens"].is_null() ? sent["max_tokens"]
                                                      : sent["max_completion_tokens"],
              256);
    EXPECT_EQ(sent["response_format"]["type"], "json_schema");
    EXPECT_EQ(sent["stream_options"]["include_usage"], true);
}

TEST(ProtocolResponses, StoredStateGoesToTheUpstreamsOwnResponses) {
    const std::string raw =
        R"({"model":"svc","previous_response_id":"resp_1","input":"and then?","x_extra":[1]})";
    json body = json::parse(raw);
    pgi::chat_call::Call call =
        pgi::chat_call::plan(pgi::protocols::responses_module(), kOpenAi, body, {}, raw);
    EXPECT_TRUE(call.passed());
    EXPECT_EQ(call.request.url, "https://api.openai.test/v1/responses");
    json sent = json::parse(call.request.body);
    EXPECT_EQ(sent["model"], "gpt-4o-mini");
    EXPECT_EQ(sent["x_extra"], json::array({1})) << "fields the gateway does not know survive";
    pgi::chat_call::Answer a =
        pgi::chat_call::answer(call, kOpenAi, rs::write_response(answer_with_call()).dump());
    EXPECT_EQ(a.usage.total_tokens, 17);

    // Another protocol keeps no responses: a clear 400.
    json again = json::parse(raw);
    const Failure f = failure_of(
        [&] { pgi::chat_call::plan(pgi::protocols::responses_module(), kClaude, again, {}, raw); });
    EXPECT_EQ(f.sqlstate, "22023");
    EXPECT_NE(f.hint.find("whole conversation"), std::string::npos) << f.hint;
}

TEST(ProtocolResponses, APassedStreamIsChargedFromResponseCompleted) {
    const std::string raw =
        R"({"model":"svc","previous_response_id":"resp_1","input":"x","stream":true})";
    json body = json::parse(raw);
    pgi::chat_call::Call call =
        pgi::chat_call::plan(pgi::protocols::responses_module(), kOpenAi, body, {}, raw);
    ASSERT_TRUE(call.passed());
    ASSERT_TRUE(call.stream);
    auto stream = pgi::chat_call::stream(call, kOpenAi);
    EXPECT_TRUE(stream->verbatim());
    std::string out;
    stream->feed(written(answer_events()), out);
    stream->finish(out);
    EXPECT_TRUE(out.empty()) << "the upstream's bytes go to the caller as they are";
    EXPECT_EQ(stream->charged().prompt_tokens, 9);
    EXPECT_EQ(stream->charged().completion_tokens, 4);
    EXPECT_FALSE(stream->failed());
}

}  // namespace
