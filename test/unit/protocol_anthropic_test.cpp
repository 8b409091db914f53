#include <climits>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "anthropic.h"
#include "error_capture.h"
#include "form_json.h"
#include "service_fixtures.h"
#include "sse.h"

namespace {

using namespace pgi::test_support;
using nlohmann::json;
using pgi::Protocol;
using pgi::ServiceEndpoint;
namespace chat = pgi::chat;
namespace an = pgi::protocols::anthropic;

const ServiceEndpoint &kClaude = kAnthropicService;

// ---- reading requests ----

const char *kFullRequest = R"({
  "model": "claude-sonnet-4-5",
  "max_tokens": 512,
  "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
             {"type": "text", "text": "Answer in French."}],
  "messages": [
    {"role": "user", "content": [
      {"type": "text", "text": "What is in this picture, and the weather?"},
      {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
      {"type": "image", "source": {"type": "url", "url": "https://example.test/cat.jpg"}}]},
    {"role": "assistant", "content": [
      {"type": "thinking", "thinking": "The user wants...", "signature": "EqQB"},
      {"type": "text", "text": "A cat. Let me check."},
      {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
      {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}]},
    {"role": "user", "content": [
      {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C, sunny"},
      {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
       "content": [{"type": "text", "text": "clock"}, {"type": "text", "text": "unavailable"}]}]},
    {"role": "user", "content": "Thanks!"}
  ],
  "tools": [{"name": "get_weather", "description": "Weather of a city",
             "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
            {"name": "get_time", "input_schema": {"type": "object", "properties": {}}, "type": "custom"}],
  "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true},
  "stop_sequences": ["END", "STOP"],
  "temperature": 0.5,
  "top_p": 0.9,
  "top_k": 40,
  "metadata": {"user_id": "user-7"},
  "stream": true,
  "thinking": {"type": "enabled", "budget_tokens": 1024}
})";

TEST(ProtocolAnthropic, ReadRequestCarriesEveryPart) {
    chat::Request r = an::read_request(json::parse(kFullRequest));
    EXPECT_EQ(r.system, "You are terse.\n\nAnswer in French.");
    ASSERT_EQ(r.messages.size(), 4u);

    const auto &user = r.messages[0];
    EXPECT_EQ(user.role, chat::Role::kUser);
    ASSERT_EQ(user.content.size(), 3u);
    EXPECT_EQ(user.content[0].kind, chat::Block::Kind::kText);
    EXPECT_EQ(user.content[1].kind, chat::Block::Kind::kImage);
    EXPECT_EQ(user.content[1].image_url, "data:image/png;base64,iVBORw0KGgo=");
    EXPECT_EQ(user.content[2].image_url, "https://example.test/cat.jpg");

    const auto &assistant = r.messages[1];
    EXPECT_EQ(assistant.role, chat::Role::kAssistant);
    ASSERT_EQ(assistant.content.size(), 3u) << "the thinking block is left out";
    EXPECT_EQ(assistant.content[0].text, "A cat. Let me check.");
    EXPECT_EQ(assistant.content[1].kind, chat::Block::Kind::kToolUse);
    EXPECT_EQ(assistant.content[1].tool_id, "toolu_1");
    EXPECT_EQ(assistant.content[1].tool_name, "get_weather");
    EXPECT_EQ(assistant.content[1].input, json({{"city", "Paris"}}));
    EXPECT_EQ(assistant.content[2].input, json::object());

    const auto &results = r.messages[2];
    ASSERT_EQ(results.content.size(), 2u);
    EXPECT_EQ(results.content[0].kind, chat::Block::Kind::kToolResult);
    EXPECT_EQ(results.content[0].tool_id, "toolu_1");
    EXPECT_EQ(results.content[0].tool_name, "get_weather") << "named from the call it answers";
    EXPECT_EQ(results.content[0].text, "18 C, sunny");
    EXPECT_FALSE(results.content[0].is_error);
    EXPECT_EQ(results.content[1].tool_name, "get_time");
    EXPECT_EQ(results.content[1].text, "clock\n\nunavailable");
    EXPECT_TRUE(results.content[1].is_error);

    EXPECT_EQ(r.messages[3].role, chat::Role::kUser) << "consecutive user turns stay apart";
    ASSERT_EQ(r.messages[3].content.size(), 1u);
    EXPECT_EQ(r.messages[3].content[0].text, "Thanks!");

    ASSERT_EQ(r.tools.size(), 2u);
    EXPECT_EQ(r.tools[0].name, "get_weather");
    EXPECT_EQ(r.tools[0].description, "Weather of a city");
    EXPECT_EQ(r.tools[0].parameters["properties"]["city"]["type"], "string");
    EXPECT_EQ(r.tools[1].description, "");
    ASSERT_TRUE(r.tool_choice);
    EXPECT_EQ(r.tool_choice->mode, chat::ToolChoice::Mode::kNamed);
    EXPECT_EQ(r.tool_choice->name, "get_weather");
    EXPECT_EQ(r.max_tokens, 512);
    EXPECT_EQ(r.temperature, 0.5);
    EXPECT_EQ(r.top_p, 0.9);
    EXPECT_EQ(r.top_k, 40);
    EXPECT_EQ(r.stop, (std::vector<std::string>{"END", "STOP"}));
    EXPECT_EQ(r.user, "user-7");
    EXPECT_TRUE(r.stream);
    EXPECT_TRUE(r.stream_usage) << "Anthropic streams always report usage";
    EXPECT_FALSE(r.seed);
    EXPECT_EQ(r.format.kind, chat::OutputFormat::Kind::kText);
}

TEST(ProtocolAnthropic, ReadRequestMinimal) {
    chat::Request r = an::read_request(json::parse(
        R"({"model":"x","max_tokens":16,"messages":[{"role":"user","content":"Hi"}]})"));
    EXPECT_EQ(r.system, "");
    ASSERT_EQ(r.messages.size(), 1u);
    EXPECT_EQ(r.messages[0].content[0].text, "Hi");
    EXPECT_FALSE(r.tool_choice);
    EXPECT_FALSE(r.temperature);
    EXPECT_FALSE(r.stream);
    EXPECT_FALSE(r.stream_usage);
    EXPECT_EQ(r.user, "");
}

TEST(ProtocolAnthropic, ReadRequestToolChoiceModes) {
    const std::pair<const char *, chat::ToolChoice::Mode> cases[] = {
        {R"({"type":"auto"})", chat::ToolChoice::Mode::kAuto},
        {R"({"type":"any"})", chat::ToolChoice::Mode::kRequired},
        {R"({"type":"none"})", chat::ToolChoice::Mode::kNone},
        {R"({"type":"tool","name":"f"})", chat::ToolChoice::Mode::kNamed},
    };
    for (const auto &[choice, mode] : cases) {
        json body = json::parse(R"({"max_tokens":5,"messages":[{"role":"user","content":"x"}]})");
        body["tool_choice"] = json::parse(choice);
        chat::Request r = an::read_request(body);
        ASSERT_TRUE(r.tool_choice) << choice;
        EXPECT_EQ(r.tool_choice->mode, mode) << choice;
    }
}

TEST(ProtocolAnthropic, ReadRequestOutputFormats) {
    const json schema = {{"type", "object"},
                         {"properties", {{"a", {{"type", "string"}}}}},
                         {"additionalProperties", false}};
    json body = json::parse(R"({"max_tokens":5,"messages":[{"role":"user","content":"x"}]})");
    body["output_config"] = {{"format", {{"type", "json_schema"}, {"schema", schema}}}};
    chat::Request r = an::read_request(body);
    EXPECT_EQ(r.format.kind, chat::OutputFormat::Kind::kJsonSchema);
    EXPECT_EQ(r.format.schema, schema);
    EXPECT_TRUE(r.format.strict);

    body.erase("output_config");
    body["output_format"] = {{"type", "json_schema"}, {"schema", schema}};
    EXPECT_EQ(an::read_request(body).format.schema, schema) << "the beta's output_format";
}

struct BadRequest {
    const char *body;
    const char *sqlstate;
    const char *message;  // a part of the error message
};

TEST(ProtocolAnthropic, ReadRequestRefusesBadInput) {
    const std::string msgs = R"("messages":[{"role":"user","content":"x"}])";
    auto with = [&](const std::string &more) {
        return "{\"max_tokens\":5," + msgs + (more.empty() ? "" : "," + more) + "}";
    };
    auto turn = [](const std::string &role, const std::string &content) {
        return R"({"max_tokens":5,"messages":[{"role":")" + role + R"(","content":)" + content +
               "}]}";
    };
    const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
        {"[]", "22023", "must be a JSON object"},
        {"{" + msgs + "}", "22023", "no \"max_tokens\""},
        {R"({"max_tokens":0,)" + msgs + "}", "22023", "\"max_tokens\" must be a positive integer"},
        {R"({"max_tokens":"5",)" + msgs + "}", "22023",
         "\"max_tokens\" must be a positive integer"},
        {R"({"max_tokens":1.5,)" + msgs + "}", "22023",
         "\"max_tokens\" must be a positive integer"},
        {R"({"max_tokens":18446744073709551615,)" + msgs + "}", "22023", "positive integer"},
        {with(R"("model":7)"), "22023", "\"model\" must be a string"},
        {R"({"max_tokens":5})", "22023", "no \"messages\""},
        {R"({"max_tokens":5,"messages":[]})", "22023", "non-empty array"},
        {turn("system", "\"x\""), "22023", "messages[0].role must be \"user\" or \"assistant\""},
        {turn("user", "7"), "22023", "messages[0].content must be a string or an array"},
        {turn("user", "[7]"), "22023", "messages[0].content[0] must be an object with a \"type\""},
        {turn("user", R"([{"type":"audio"}])"), "22023", "unknown type \"audio\""},
        {turn("user", R"([{"type":"text"}])"), "22023", "content[0].text must be a string"},
        {turn("user", R"([{"type":"image","source":{"type":"base64","data":"x"}}])"), "22023",
         "needs a non-empty string \"media_type\""},
        {turn("user", R"([{"type":"image","source":{"type":"ftp"}}])"), "22023",
         "source.type must be \"base64\" or \"url\""},
        {turn("user", R"([{"type":"image"}])"), "22023", "needs a \"source\" object"},
        {turn("user", R"([{"type":"tool_use","id":"t","name":"f","input":{}}])"), "22023",
         "tool_use blocks belong in assistant turns"},
        {turn("assistant", R"([{"type":"tool_result","tool_use_id":"t"}])"), "22023",
         "tool_result blocks belong in user turns"},
        {turn("assistant", R"([{"type":"tool_use","name":"f"}])"), "22023",
         "needs a non-empty string \"id\""},
        {turn("assistant", R"([{"type":"tool_use","id":"t","name":"f","input":[]}])"), "22023",
         ".input must be a JSON object"},
        {turn("user", R"([{"type":"tool_result","tool_use_id":"t","content":7}])"), "22023",
         ".content must be a string or an array of text blocks"},
        {turn("user", R"([{"type":"tool_result","tool_use_id":"t","content":[{"type":"x"}]}])"),
         "22023", "unknown type \"x\""},
        {turn("user", R"([{"type":"tool_result","tool_use_id":"t","is_error":"yes"}])"), "22023",
         "is_error must be a boolean"},
        {with(R"("system":7)"), "22023", "\"system\" must be a string or an array of text blocks"},
        {with(R"("system":[{"type":"image"}])"), "22023", "system[0] must be a text block"},
        {with(R"("tools":{})"), "22023", "\"tools\" must be an array"},
        {with(R"("tools":[{"name":"f"}])"), "22023", "needs an \"input_schema\" object"},
        {with(R"("tools":[{"input_schema":{}}])"), "22023", "needs a non-empty string \"name\""},
        {with(R"("tool_choice":{"type":"required"})"), "22023", "\"tool_choice\" must be"},
        {with(R"("tool_choice":{"type":"tool"})"), "22023", "\"tool_choice\" must be"},
        {with(R"("stop_sequences":"END")"), "22023", "\"stop_sequences\" must be an array"},
        {with(R"("temperature":"hot")"), "22023", "\"temperature\" must be a number"},
        {with(R"("top_p":true)"), "22023", "\"top_p\" must be a number"},
        {with(R"("top_k":-1)"), "22023", "\"top_k\" must be a non-negative integer"},
        {with(R"("metadata":{"user_id":7})"), "22023", "\"metadata\" must be an object"},
        {with(R"("stream":"yes")"), "22023", "\"stream\" must be a boolean"},
        {with(R"("output_format":{"type":"json_object"})"), "22023", "\"output_format\" must be"},
        {with(R"("output_config":{"format":{"type":"json_schema"}})"), "22023",
         "\"output_config.format\" must be"},
        // Known Anthropic features the form cannot carry.
        {turn("user", R"([{"type":"document","source":{"type":"text","data":"x"}}])"), "0A000",
         "content blocks of type \"document\" cannot be translated"},
        {turn("assistant", R"([{"type":"server_tool_use","id":"s","name":"web_search"}])"), "0A000",
         "\"server_tool_use\""},
        {turn("user", R"([{"type":"web_search_tool_result","tool_use_id":"s"}])"), "0A000",
         "\"web_search_tool_result\""},
        {turn("user", R"([{"type":"image","source":{"type":"file","file_id":"f"}}])"), "0A000",
         "an image given by file_id"},
        {turn(
             "user",
             R"([{"type":"tool_result","tool_use_id":"t","content":[{"type":"image","source":{}}]}])"),
         "0A000", "a tool_result holding image blocks"},
        {with(R"("tools":[{"type":"web_search_20250305","name":"web_search"}])"), "0A000",
         "tools of type \"web_search_20250305\""},
    };
    for (const auto &[body, sqlstate, message] : cases) {
        json parsed = json::parse(body, nullptr, false);
        ASSERT_FALSE(parsed.is_discarded()) << body;
        Failure f = failure_of([&] { an::read_request(parsed); });
        EXPECT_EQ(f.sqlstate, sqlstate) << body;
        EXPECT_NE(f.message.find(message), std::string::npos) << body << "\n  got: " << f.message;
        EXPECT_FALSE(f.hint.empty()) << body;
    }
}

// ---- writing requests ----

chat::Request form_of(const char *body) {
    return an::read_request(json::parse(body));
}

json body_of(const pgi::translate::UpstreamRequest &r) {
    return json::parse(r.body);
}

TEST(ProtocolAnthropic, WriteRequestUrlAndHeaders) {
    chat::Request r = form_of(R"({"max_tokens":5,"messages":[{"role":"user","content":"x"}]})");
    auto call = an::write_request(kClaude, r, {});
    EXPECT_EQ(call.method, "POST");
    EXPECT_EQ(call.url, "https://api.anthropic.test/v1/messages");
    EXPECT_EQ(call.headers, (std::vector<std::string>{"x-api-key: sk-ant-secret-key-123",
                                                      "anthropic-version: 2023-06-01",
                                                      "Content-Type: application/json"}));
    r.stream = true;
    call = an::write_request(kClaude, r, {});
    EXPECT_EQ(call.headers.back(), "Accept: text/event-stream");
    EXPECT_EQ(body_of(call)["stream"], true);
}

TEST(ProtocolAnthropic, WriteRequestBody) {
    chat::Request r;
    r.system = "Be brief.";
    chat::Message user;
    user.content.resize(3);
    user.content[0].text = "Look";
    user.content[1].kind = chat::Block::Kind::kImage;
    user.content[1].image_url = "data:image/jpeg;base64,/9j/4AAQ";
    user.content[2].kind = chat::Block::Kind::kImage;
    user.content[2].image_url = "https://example.test/a.png";
    chat::Message call;
    call.role = chat::Role::kAssistant;
    call.content.resize(3);
    call.content[0].text = "";  // empty text says nothing and Anthropic refuses it
    call.content[1].kind = chat::Block::Kind::kToolUse;
    call.content[1].tool_id = "c1";
    call.content[1].tool_name = "f";
    call.content[1].input = {{"a", 1}};
    call.content[2] = call.content[1];
    call.content[2].tool_id = "c2";
    // Two results as an OpenAI caller sends them: one message each.
    chat::Message result1, result2;
    result1.content.resize(1);
    result1.content[0].kind = chat::Block::Kind::kToolResult;
    result1.content[0].tool_id = "c1";
    result1.content[0].text = "one";
    result2.content = result1.content;
    result2.content[0].tool_id = "c2";
    result2.content[0].text = "";
    result2.content[0].is_error = true;
    chat::Message follow;
    follow.content.resize(1);
    follow.content[0].text = "go on";
    chat::Message empty;  // an OpenAI assistant message with neither text nor calls
    empty.role = chat::Role::kAssistant;
    r.messages = {user, call, result1, result2, follow, empty};
    r.tools.resize(2);
    r.tools[0].name = "f";
    r.tools[0].description = "does f";
    r.tools[0].parameters = {{"type", "object"}, {"properties", {{"a", {{"type", "integer"}}}}}};
    r.tools[1].name = "g";
    r.tool_choice = chat::ToolChoice{chat::ToolChoice::Mode::kRequired, ""};
    r.temperature = 1.7;
    r.top_p = 0.5;
    r.top_k = 3;
    r.stop = {"##"};
    r.seed = 42;
    r.user = "u-1";

    pgi::chat::Defaults defaults;
    defaults.default_max_tokens = 777;
    json body = body_of(an::write_request(kClaude, r, defaults));
    json expected = json::parse(R"({
      "model": "claude-sonnet-4-5",
      "max_tokens": 777,
      "system": "Be brief.",
      "messages": [
        {"role": "user", "content": [
          {"type": "text", "text": "Look"},
          {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
          {"type": "image", "source": {"type": "url", "url": "https://example.test/a.png"}}]},
        {"role": "assistant", "content": [
          {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}},
          {"type": "tool_use", "id": "c2", "name": "f", "input": {"a": 1}}]},
        {"role": "user", "content": [
          {"type": "tool_result", "tool_use_id": "c1", "content": "one"},
          {"type": "tool_result", "tool_use_id": "c2", "is_error": true}]},
        {"role": "user", "content": "go on"}
      ],
      "tools": [
        {"name": "f", "description": "does f",
         "input_schema": {"type": "object", "properties": {"a": {"type": "integer"}}}},
        {"name": "g", "input_schema": {"type": "object", "properties": {}}}],
      "tool_choice": {"type": "any"},
      "temperature": 1.0,
      "top_p": 0.5,
      "top_k": 3,
      "stop_sequences": ["##"],
      "metadata": {"user_id": "u-1"}
    })");
    EXPECT_EQ(body, expected) << body.dump(2);
}

TEST(ProtocolAnthropic, WriteRequestToolChoiceAndFormat) {
    chat::Request r = form_of(R"({"max_tokens":5,"messages":[{"role":"user","content":"x"}],
        "tools":[{"name":"f","input_schema":{"type":"object"}}]})");
    const std::pair<chat::ToolChoice, json> cases[] = {
        {{chat::ToolChoice::Mode::kAuto, ""}, {{"type", "auto"}}},
        {{chat::ToolChoice::Mode::kNone, ""}, {{"type", "none"}}},
        {{chat::ToolChoice::Mode::kRequired, ""}, {{"type", "any"}}},
        {{chat::ToolChoice::Mode::kNamed, "f"}, {{"type", "tool"}, {"name", "f"}}},
    };
    for (const auto &[choice, expected] : cases) {
        r.tool_choice = choice;
        EXPECT_EQ(body_of(an::write_request(kClaude, r, {}))["tool_choice"], expected);
    }
    r.tools.clear();
    EXPECT_FALSE(body_of(an::write_request(kClaude, r, {})).contains("tool_choice"))
        << "a choice without tools means nothing";

    r.format.kind = chat::OutputFormat::Kind::kJsonSchema;
    r.format.name = "answer";
    r.format.schema = {{"type", "object"}, {"additionalProperties", false}};
    EXPECT_EQ(body_of(an::write_request(kClaude, r, {}))["output_config"],
              json({{"format", {{"type", "json_schema"}, {"schema", r.format.schema}}}}));
}

TEST(ProtocolAnthropic, WriteRequestRefusals) {
    chat::Request r = form_of(R"({"max_tokens":5,"messages":[{"role":"user","content":"x"}]})");
    r.format.kind = chat::OutputFormat::Kind::kJsonObject;
    Failure f = failure_of([&] { an::write_request(kClaude, r, {}); });
    EXPECT_EQ(f.sqlstate, "0A000");
    EXPECT_EQ(f.message, "service \"claude\" cannot take a JSON answer format without a schema");
    EXPECT_NE(f.hint.find("JSON Schema"), std::string::npos);

    r.format = {};
    r.messages[0].content[0].kind = chat::Block::Kind::kImage;
    r.messages[0].content[0].image_url = "data:text/plain,hello";
    f = failure_of([&] { an::write_request(kClaude, r, {}); });
    EXPECT_EQ(f.sqlstate, "0A000");
    EXPECT_EQ(f.message, "service \"claude\" cannot take an image data: URL that is not base64");

    r.messages.clear();
    f = failure_of([&] { an::write_request(kClaude, r, {}); });
    EXPECT_EQ(f.sqlstate, "22023");
    EXPECT_EQ(f.message, "the chat request has no user or assistant message");
}

// read_request(write_request(F)) == F for a form in Anthropic's own shape (tool results of one
// round in one turn, non-empty texts, temperature within 0-1).
TEST(ProtocolAnthropic, RequestRoundTrip) {
    json body = json::parse(kFullRequest);
    body.erase("thinking");
    body["messages"][1]["content"].erase(0);  // thinking is dropped, so it cannot come back
    body["system"] = "You are terse.\n\nAnswer in French.";
    body["output_config"] = {{"format",
                              {{"type", "json_schema"},
                               {"schema", {{"type", "object"}, {"additionalProperties", false}}}}}};
    const chat::Request form = an::read_request(body);
    const auto call = an::write_request(kClaude, form, {});
    const chat::Request again = an::read_request(json::parse(call.body));
    EXPECT_EQ(request_json(again), request_json(form));
    // And writing it again gives the same bytes.
    EXPECT_EQ(an::write_request(kClaude, again, {}).body, call.body);

    // A plain conversation, consecutive user turns included.
    const chat::Request plain = form_of(R"({"max_tokens":9,"messages":[
        {"role":"user","content":"a"},{"role":"user","content":"b"},
        {"role":"assistant","content":"c"}]})");
    EXPECT_EQ(
        request_json(an::read_request(json::parse(an::write_request(kClaude, plain, {}).body))),
        request_json(plain));
}

// ---- answers ----

TEST(ProtocolAnthropic, ReadResponse) {
    chat::Response r = an::read_response(kClaude, R"({
      "id": "msg_01XYZ", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
      "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Oslo"}}],
      "stop_reason": "tool_use", "stop_sequence": null,
      "usage": {"input_tokens": 100, "cache_creation_input_tokens": 20, "cache_read_input_tokens": 3,
                "output_tokens": 50}})");
    EXPECT_EQ(r.id, "msg_01XYZ");
    EXPECT_EQ(r.model, "claude-sonnet-4-5-20250929");
    ASSERT_EQ(r.content.size(), 2u);
    EXPECT_EQ(r.content[0].text, "Let me check.");
    EXPECT_EQ(r.content[1].kind, chat::Block::Kind::kToolUse);
    EXPECT_EQ(r.content[1].tool_id, "toolu_9");
    EXPECT_EQ(r.content[1].tool_name, "get_weather");
    EXPECT_EQ(r.content[1].input, json({{"city", "Oslo"}}));
    EXPECT_EQ(r.stop_reason, chat::StopReason::kToolUse);
    EXPECT_EQ(r.usage.prompt_tokens, 123) << "cached prompt tokens count as prompt tokens";
    EXPECT_EQ(r.usage.completion_tokens, 50);
    EXPECT_EQ(r.usage.total_tokens, 173);
    EXPECT_TRUE(r.usage.present);

    chat::Response bare = an::read_response(kClaude, R"({"content":[]})");
    EXPECT_EQ(bare.id.rfind("msg_", 0), 0u);
    EXPECT_EQ(bare.id.size(), 28u);
    EXPECT_EQ(bare.model, "claude-sonnet-4-5");
    EXPECT_FALSE(bare.usage.present);
}

TEST(ProtocolAnthropic, ReadResponseStopReasons) {
    const std::pair<const char *, chat::StopReason> cases[] = {
        {"\"end_turn\"", chat::StopReason::kEndTurn},
        {"\"max_tokens\"", chat::StopReason::kMaxTokens},
        {"\"model_context_window_exceeded\"", chat::StopReason::kMaxTokens},
        {"\"stop_sequence\"", chat::StopReason::kStopSequence},
        {"\"tool_use\"", chat::StopReason::kToolUse},
        {"\"refusal\"", chat::StopReason::kContentFilter},
        {"\"pause_turn\"", chat::StopReason::kOther},
        {"null", chat::StopReason::kEndTurn},
    };
    for (const auto &[reason, expected] : cases) {
        std::string body =
            std::string(R"({"content":[],"stop_reason":)") + reason + R"(,"stop_sequence":"##"})";
        EXPECT_EQ(an::read_response(kClaude, body).stop_reason, expected) << reason;
    }
    EXPECT_EQ(an::read_response(kClaude, R"({"content":[],"stop_reason":"stop_sequence",
        "stop_sequence":"##"})")
                  .stop_sequence,
              "##");
}

TEST(ProtocolAnthropic, ReadResponseRefusesMalformedBodies) {
    for (const char *body : {"not json sk-ant-secret-key-123", "[]", R"({"content":"text"})",
                             R"({"type":"error","error":{"type":"api_error","message":"boom"}})"}) {
        Failure f = failure_of([&] { an::read_response(kClaude, body); });
        EXPECT_EQ(f.sqlstate, "PI400") << body;
        EXPECT_NE(f.message.find("service \"claude\""), std::string::npos) << body;
        EXPECT_EQ((f.message + f.detail).find("sk-ant-secret"), std::string::npos) << body;
    }
}

TEST(ProtocolAnthropic, WriteResponse) {
    chat::Response r;
    r.id = "chatcmpl-abc";
    r.model = "gpt-4o";
    r.content.resize(3);
    r.content[0].text = "Hi";
    r.content[1].kind = chat::Block::Kind::kToolUse;
    r.content[1].tool_id = "call_1";
    r.content[1].tool_name = "f";
    r.content[1].input = {{"x", true}};
    r.content[2].kind = chat::Block::Kind::kImage;  // no place in an Anthropic message
    r.content[2].image_url = "data:image/png;base64,AA==";
    r.stop_reason = chat::StopReason::kToolUse;
    r.usage = {11, 22, 33, true};
    EXPECT_EQ(an::write_response(r), json::parse(R"({
      "id": "chatcmpl-abc", "type": "message", "role": "assistant", "model": "gpt-4o",
      "content": [{"type": "text", "text": "Hi"},
                  {"type": "tool_use", "id": "call_1", "name": "f", "input": {"x": true}}],
      "stop_reason": "tool_use", "stop_sequence": null,
      "usage": {"input_tokens": 11, "output_tokens": 22}})"));

    const std::pair<chat::StopReason, const char *> reasons[] = {
        {chat::StopReason::kEndTurn, "end_turn"},
        {chat::StopReason::kMaxTokens, "max_tokens"},
        {chat::StopReason::kStopSequence, "stop_sequence"},
        {chat::StopReason::kToolUse, "tool_use"},
        {chat::StopReason::kContentFilter, "refusal"},
        {chat::StopReason::kOther, "end_turn"},
    };
    for (const auto &[reason, name] : reasons) {
        r.stop_reason = reason;
        EXPECT_EQ(an::write_response(r)["stop_reason"], name);
    }
    r.stop_reason = chat::StopReason::kStopSequence;
    r.stop_sequence = "END";
    EXPECT_EQ(an::write_response(r)["stop_sequence"], "END");
    r.id.clear();
    EXPECT_EQ(an::write_response(r)["id"].get<std::string>().rfind("msg_", 0), 0u);
}

TEST(ProtocolAnthropic, ResponseRoundTrip) {
    chat::Response r;
    r.id = "msg_1";
    r.model = "claude-haiku-4-5";
    r.content.resize(2);
    r.content[0].text = "It is ";
    r.content[1].kind = chat::Block::Kind::kToolUse;
    r.content[1].tool_id = "toolu_1";
    r.content[1].tool_name = "lookup";
    r.content[1].input = {{"q", "ü"}, {"n", {1, 2}}};
    r.stop_reason = chat::StopReason::kStopSequence;
    r.stop_sequence = "\n\nHuman:";
    r.usage = {7, 9, 16, true};
    chat::Response back = an::read_response(kClaude, an::write_response(r).dump());
    EXPECT_EQ(response_json(back), response_json(r));
}

// ---- error bodies ----

TEST(ProtocolAnthropic, ErrorBodies) {
    const std::pair<int, const char *> cases[] = {
        {400, "invalid_request_error"},
        {401, "authentication_error"},
        {402, "billing_error"},
        {403, "permission_error"},
        {404, "not_found_error"},
        {408, "timeout_error"},
        {413, "request_too_large"},
        {422, "invalid_request_error"},
        {429, "rate_limit_error"},
        {500, "api_error"},
        {502, "api_error"},
        {503, "overloaded_error"},
        {504, "timeout_error"},
        {529, "overloaded_error"},
        {200, "api_error"},
    };
    for (const auto &[status, type] : cases) {
        json body = json::parse(an::error_body(status, "it \"broke\"\n"));
        EXPECT_EQ(body, json({{"type", "error"},
                              {"error", {{"type", type}, {"message", "it \"broke\"\n"}}}}))
            << status;
    }
}

// ---- streams ----

// A recorded Anthropic stream: thinking, text and a tool call, with a ping in between.
const std::string kStream =
    "event: message_start\n"
    R"(data: {"type":"message_start","message":{"id":"msg_01ABC","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_read_input_tokens":5,"output_tokens":1}}})"
    "\n\n"
    "event: content_block_start\n"
    R"(data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}})"
    "\n\n"
    "event: content_block_delta\n"
    R"(data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me see"}})"
    "\n\n"
    "event: content_block_delta\n"
    R"(data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQB"}})"
    "\n\n"
    "event: content_block_stop\n"
    R"(data: {"type":"content_block_stop","index":0})"
    "\n\n"
    "event: ping\n"
    R"(data: {"type": "ping"})"
    "\n\n"
    "event: content_block_start\n"
    R"(data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}})"
    "\n\n"
    "event: content_block_delta\n"
    R"(data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hello, "}})"
    "\n\n"
    "event: content_block_delta\n"
    R"(data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"wörld ☃"}})"
    "\n\n"
    "event: content_block_stop\n"
    R"(data: {"type":"content_block_stop","index":1})"
    "\n\n"
    "event: content_block_start\n"
    R"(data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{}}})"
    "\n\n"
    "event: content_block_delta\n"
    R"(data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":""}})"
    "\n\n"
    "event: content_block_delta\n"
    R"(data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Par"}})"
    "\n\n"
    "event: content_block_delta\n"
    R"(data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"is\"}"}})"
    "\n\n"
    "event: content_block_stop\n"
    R"(data: {"type":"content_block_stop","index":2})"
    "\n\n"
    "event: message_delta\n"
    R"(data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":42}})"
    "\n\n"
    "event: message_stop\n"
    R"(data: {"type":"message_stop"})"
    "\n\n";

const std::vector<std::string> kStreamEvents = {
    R"(start msg_01ABC claude-sonnet-4-5-20250929 [30,1,31,true])",
    "block_start 0 0  ",
    "text 0 Hello, ",
    "text 0 wörld ☃",
    "block_stop 0",
    "block_start 1 2 toolu_01 get_weather",
    R"(input 1 {"city": "Par)",
    R"(input 1 is"})",
    "block_stop 1",
    "stop 3 ",
    "usage [30,42,72,true]",
    "end",
};

// The events of a stream fed in pieces cut at `cuts`.
std::vector<chat::Event> read_stream(std::string_view in, const std::vector<std::size_t> &cuts = {},
                                     const ServiceEndpoint &s = kClaude) {
    an::StreamReader reader(s);
    std::vector<chat::Event> out;
    std::size_t pos = 0;
    for (std::size_t cut : cuts) {
        reader.feed(in.substr(pos, cut - pos), out);
        pos = cut;
    }
    reader.feed(in.substr(pos), out);
    reader.finish(out);
    EXPECT_TRUE(reader.done());
    return out;
}

TEST(ProtocolAnthropic, StreamReaderEvents) {
    an::StreamReader reader(kClaude);
    std::vector<chat::Event> out;
    reader.feed(kStream, out);
    EXPECT_TRUE(reader.done()) << "message_stop ends the stream";
    reader.finish(out);
    EXPECT_EQ(describe(out), kStreamEvents);
    EXPECT_EQ(reader.usage().prompt_tokens, 30);
    EXPECT_EQ(reader.usage().completion_tokens, 42);
    EXPECT_EQ(reader.usage().total_tokens, 72);
}

TEST(ProtocolAnthropic, StreamReaderIgnoresHowBytesAreSplit) {
    for (std::size_t i = 1; i < kStream.size(); ++i)
        ASSERT_EQ(describe(read_stream(kStream, {i})), kStreamEvents) << "split at " << i;
    std::vector<std::size_t> bytes;
    for (std::size_t i = 1; i < kStream.size(); ++i)
        bytes.push_back(i);
    EXPECT_EQ(describe(read_stream(kStream, bytes)), kStreamEvents) << "byte by byte";

    // CRLF line ends, as some proxies write them.
    std::string crlf;
    for (char c : kStream) {
        if (c == '\n')
            crlf += '\r';
        crlf += c;
    }
    for (std::size_t i = 1; i < crlf.size(); ++i)
        ASSERT_EQ(describe(read_stream(crlf, {i})), kStreamEvents) << "CRLF split at " << i;
}

TEST(ProtocolAnthropic, StreamReaderErrorEvent) {
    const std::string in =
        "event: message_start\n"
        R"(data: {"type":"message_start","message":{"id":"msg_2","model":"m","usage":{"input_tokens":3}}})"
        "\n\n"
        "event: content_block_start\n"
        R"(data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":"Hi"}})"
        "\n\n"
        "event: error\n"
        R"(data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded for key sk-ant-secret-key-123"}})"
        "\n\n"
        "event: content_block_delta\n"
        R"(data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"late"}})"
        "\n\n";
    std::vector<std::string> expected = {
        "start msg_2 m [3,0,3,true]",
        "block_start 0 0  ",
        "text 0 Hi",
        "error 529 overloaded_error Overloaded for key [redacted]",
    };
    EXPECT_EQ(describe(read_stream(in)), expected);
    for (std::size_t i = 1; i < in.size(); ++i)
        ASSERT_EQ(describe(read_stream(in, {i})), expected) << "split at " << i;

    // Error types become the status they stand for.
    const std::pair<const char *, int> types[] = {{"rate_limit_error", 429},
                                                  {"api_error", 500},
                                                  {"invalid_request_error", 400},
                                                  {"authentication_error", 401},
                                                  {"something_new", 500}};
    for (const auto &[type, status] : types) {
        auto events = read_stream(std::string("event: error\ndata: {\"type\":\"error\",\"error\":"
                                              "{\"type\":\"") +
                                  type + "\",\"message\":\"m\"}}\n\n");
        ASSERT_EQ(events.size(), 1u);
        EXPECT_EQ(events[0].error.status, status) << type;
        EXPECT_EQ(events[0].error.type, type);
    }
    auto bare = read_stream("event: error\ndata: {\"type\":\"error\"}\n\n");
    ASSERT_EQ(bare.size(), 1u);
    EXPECT_EQ(describe(bare[0]), "error 500 api_error service \"claude\" failed mid-stream");
}

TEST(ProtocolAnthropic, StreamReaderFailures) {
    // Not JSON.
    EXPECT_EQ(describe(read_stream("event: message_start\ndata: {oops\n\n")),
              (std::vector<std::string>{
                  "error 502 api_error service \"claude\" sent a malformed stream event"}));
    // A block index that is not one.
    auto bad_index = read_stream(
        "event: content_block_start\ndata: "
        "{\"index\":-1,\"content_block\":{\"type\":\"text\"}}\n\n");
    ASSERT_EQ(bad_index.size(), 1u);
    EXPECT_EQ(bad_index[0].kind, chat::Event::Kind::kError);
    // Cut before the answer ended, and an empty body.
    const std::string cut = kStream.substr(0, kStream.find("event: message_delta"));
    auto events = read_stream(cut);
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(describe(events.back()),
              "error 502 api_error service \"claude\" ended the stream before the answer was "
              "complete");
    EXPECT_EQ(describe(read_stream("")).size(), 1u);
    EXPECT_EQ(read_stream("")[0].kind, chat::Event::Kind::kError);
    // An event larger than the parser takes.
    an::StreamReader reader(kClaude);
    std::vector<chat::Event> out;
    reader.feed(
        "event: ping\ndata: " + std::string(pgi::SseParser::kDefaultMaxEventBytes + 10, 'x'), out);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].kind, chat::Event::Kind::kError);
    EXPECT_TRUE(reader.done());
}

TEST(ProtocolAnthropic, StreamReaderCompletesWhatTheUpstreamLeftOut) {
    // No message_start, no content_block_stop and no message_stop, data types without event
    // names: still a whole answer in the form's order.
    const std::string in =
        R"(data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"f","input":{"a":1}}})"
        "\n\n"
        R"(data: {"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"input_tokens":4,"output_tokens":2}})";
    auto events = read_stream(in);
    ASSERT_EQ(events.size(), 7u);
    EXPECT_EQ(events[0].kind, chat::Event::Kind::kStart);
    EXPECT_EQ(events[0].id.rfind("msg_", 0), 0u);
    EXPECT_EQ(events[0].model, "claude-sonnet-4-5");
    const std::vector<std::string> rest = {"block_start 0 2 t f", R"(input 0 {"a":1})",
                                           "block_stop 0",        "stop 1 ",
                                           "usage [4,2,6,true]",  "end"};
    EXPECT_EQ(describe(std::vector<chat::Event>(events.begin() + 1, events.end())), rest);

    // message_stop without message_delta: an end turn.
    auto short_answer = read_stream(
        "event: message_start\ndata: {\"message\":{\"id\":\"m\",\"model\":\"x\"}}\n\n"
        "event: message_stop\ndata: {}\n\n");
    EXPECT_EQ(describe(short_answer),
              (std::vector<std::string>{"start m x [0,0,0,false]", "stop 0 ", "end"}));
}

TEST(ProtocolAnthropic, StreamUsageSaturates) {
    const std::string in =
        "event: message_start\n"
        R"(data: {"message":{"id":"m","model":"x","usage":{"input_tokens":9223372036854775807,"cache_read_input_tokens":5}}})"
        "\n\n"
        "event: message_delta\n"
        R"(data: {"delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9223372036854775807}})"
        "\n\n";
    an::StreamReader reader(kClaude);
    std::vector<chat::Event> out;
    reader.feed(in, out);
    reader.finish(out);
    EXPECT_EQ(reader.usage().prompt_tokens, LLONG_MAX);
    EXPECT_EQ(reader.usage().completion_tokens, LLONG_MAX);
    EXPECT_EQ(reader.usage().total_tokens, LLONG_MAX);
}

// The written stream as (event name, data) pairs; every event must be named and framed.
std::vector<std::pair<std::string, json>> written_events(const std::string &out) {
    pgi::SseParser parser;
    std::vector<std::pair<std::string, json>> events;
    for (const auto &e : parser.feed(out)) {
        json data = json::parse(e.data);
        EXPECT_EQ(data["type"], e.event) << "the data's type repeats the event name";
        events.emplace_back(e.event, data);
    }
    EXPECT_TRUE(parser.finish().empty()) << "the output must end on an event boundary";
    return events;
}

TEST(ProtocolAnthropic, StreamWriterWritesNamedEvents) {
    an::StreamWriter writer;
    std::string out;
    for (const chat::Event &e : read_stream(kStream))
        writer.write(e, out);
    auto events = written_events(out);
    std::vector<std::string> names;
    for (const auto &[name, data] : events)
        names.push_back(name);
    EXPECT_EQ(names, (std::vector<std::string>{
                         "message_start", "content_block_start", "content_block_delta",
                         "content_block_delta", "content_block_stop", "content_block_start",
                         "content_block_delta", "content_block_delta", "content_block_stop",
                         "message_delta", "message_stop"}));
    EXPECT_EQ(events[0].second, json::parse(R"({"type":"message_start","message":{
        "id":"msg_01ABC","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",
        "content":[],"stop_reason":null,"stop_sequence":null,
        "usage":{"input_tokens":25,"cache_read_input_tokens":5,"output_tokens":1}}})"));
    EXPECT_EQ(events[1].second, json::parse(R"({"type":"content_block_start","index":0,
        "content_block":{"type":"text","text":""}})"));
    EXPECT_EQ(events[3].second, json::parse(R"({"type":"content_block_delta","index":0,
        "delta":{"type":"text_delta","text":"wörld ☃"}})"));
    EXPECT_EQ(events[5].second, json::parse(R"({"type":"content_block_start","index":1,
        "content_block":{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{}}})"));
    EXPECT_EQ(events[6].second, json::parse(R"({"type":"content_block_delta","index":1,
        "delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Par"}})"));
    EXPECT_EQ(events[8].second, json::parse(R"({"type":"content_block_stop","index":1})"));
    EXPECT_EQ(events[9].second, json::parse(R"({"type":"message_delta",
        "delta":{"stop_reason":"tool_use","stop_sequence":null},
        "usage":{"input_tokens":25,"cache_read_input_tokens":5,"output_tokens":42}})"));

    // Read back, the written stream gives the same events.
    EXPECT_EQ(describe(read_stream(out)), kStreamEvents);
}

TEST(ProtocolAnthropic, StreamWriterStopSequenceAndUsageOrder) {
    an::StreamWriter writer;
    std::string out;
    chat::Event start;
    start.id = "chatcmpl-1";
    start.model = "gpt-4o";
    writer.write(start, out);
    chat::Event usage;
    usage.kind = chat::Event::Kind::kUsage;
    usage.usage = {5, 6, 11, true};
    writer.write(usage, out);  // usage may come before the stop reason
    chat::Event stop;
    stop.kind = chat::Event::Kind::kStop;
    stop.stop_reason = chat::StopReason::kStopSequence;
    stop.stop_sequence = "END";
    writer.write(stop, out);
    chat::Event end;
    end.kind = chat::Event::Kind::kEnd;
    writer.write(end, out);
    writer.write(start, out);  // after the end: nothing
    auto events = written_events(out);
    ASSERT_EQ(events.size(), 3u);
    EXPECT_EQ(events[0].second["message"]["usage"],
              json({{"input_tokens", 0}, {"output_tokens", 0}}));
    EXPECT_EQ(events[1].second, json::parse(R"({"type":"message_delta",
        "delta":{"stop_reason":"stop_sequence","stop_sequence":"END"},
        "usage":{"input_tokens":5,"output_tokens":6}})"));
    EXPECT_EQ(events[2].first, "message_stop");
}

TEST(ProtocolAnthropic, StreamWriterError) {
    an::StreamWriter writer;
    std::string out;
    chat::Event start;
    writer.write(start, out);
    chat::Event error;
    error.kind = chat::Event::Kind::kError;
    error.error = {429, "rate_limit_exceeded", "slow down"};
    writer.write(error, out);
    chat::Event end;
    end.kind = chat::Event::Kind::kEnd;
    writer.write(end, out);
    auto events = written_events(out);
    ASSERT_EQ(events.size(), 2u);
    EXPECT_EQ(events[1].first, "error");
    EXPECT_EQ(events[1].second,
              json::parse(
                  R"({"type":"error","error":{"type":"rate_limit_error","message":"slow down"}})"));

    // An error before anything else is the whole stream.
    an::StreamWriter early;
    std::string only;
    error.error = {529, "", "overloaded"};
    early.write(error, only);
    EXPECT_EQ(only,
              "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
              "\"message\":\"overloaded\"}}\n\n");
}

TEST(ProtocolAnthropic, StreamWriterStartsAMessageWhenTheStartIsMissing) {
    an::StreamWriter writer;
    std::string out;
    chat::Event block;
    block.kind = chat::Event::Kind::kBlockStart;
    writer.write(block, out);
    auto events = written_events(out);
    ASSERT_EQ(events.size(), 2u);
    EXPECT_EQ(events[0].first, "message_start");
    EXPECT_EQ(events[0].second["message"]["id"].get<std::string>().rfind("msg_", 0), 0u);
}

}  // namespace
