#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "error_capture.h"
#include "openai_chat.h"
#include "openai_chunks.h"

namespace {

using nlohmann::json;
using pgi::Protocol;
using pgi::ServiceEndpoint;
using pgi::chat::Block;
using pgi::chat::Event;
namespace chat = pgi::chat;
namespace oc = pgi::protocols::openai_chat;

const ServiceEndpoint kService{"oa",      "gpt-4o-mini", "http://up:1", Protocol::kOpenAiV1,
                               "sk-test", false,         nullptr};

// ---- readable forms, so a failing comparison shows what differs ----

std::string describe(const Block &b) {
    switch (b.kind) {
        case Block::Kind::kText:
            return "text(" + b.text + ")";
        case Block::Kind::kImage:
            return "image(" + b.image_url + ")";
        case Block::Kind::kToolUse:
            return "tool_use(" + b.tool_id + "," + b.tool_name + "," + b.input.dump() + ")";
        case Block::Kind::kToolResult:
            return "tool_result(" + b.tool_id + "," + b.tool_name + "," + b.text +
                   (b.is_error ? ",error" : "") + ")";
    }
    return "?";
}

std::string describe(const chat::Request &r) {
    std::string s = "system=" + r.system + "\n";
    for (const chat::Message &m : r.messages) {
        s += m.role == chat::Role::kUser ? "user:" : "assistant:";
        for (const Block &b : m.content)
            s += " " + describe(b);
        s += "\n";
    }
    for (const chat::Tool &t : r.tools)
        s += "tool " + t.name + " " + t.description + " " + t.parameters.dump() + "\n";
    if (r.tool_choice)
        s += "tool_choice " + std::to_string(static_cast<int>(r.tool_choice->mode)) + " " +
             r.tool_choice->name + "\n";
    if (r.max_tokens)
        s += "max_tokens " + std::to_string(*r.max_tokens) + "\n";
    if (r.temperature)
        s += "temperature " + std::to_string(*r.temperature) + "\n";
    if (r.top_p)
        s += "top_p " + std::to_string(*r.top_p) + "\n";
    if (r.top_k)
        s += "top_k " + std::to_string(*r.top_k) + "\n";
    for (const std::string &stop : r.stop)
        s += "stop " + stop + "\n";
    if (r.seed)
        s += "seed " + std::to_string(*r.seed) + "\n";
    s += "format " + std::to_string(static_cast<int>(r.format.kind)) + " " + r.format.name + " " +
         r.format.schema.dump() + (r.format.strict ? " strict" : "") + "\n";
    s += "user " + r.user + "\n";
    s += std::string("stream ") + (r.stream ? "1" : "0") + (r.stream_usage ? " usage" : "") + "\n";
    return s;
}

std::string describe(const chat::Response &r) {
    std::string s = "id=" + r.id + " model=" + r.model +
                    " stop=" + std::to_string(static_cast<int>(r.stop_reason)) + "(" +
                    r.stop_sequence + ")";
    for (const Block &b : r.content)
        s += " " + describe(b);
    if (r.usage.present) {
        s += " usage=" + std::to_string(r.usage.prompt_tokens) + "/" +
             std::to_string(r.usage.completion_tokens) + "/" + std::to_string(r.usage.total_tokens);
    }
    return s;
}

std::string describe(const Event &e) {
    switch (e.kind) {
        case Event::Kind::kStart:
            return "start " + e.id + " " + e.model;
        case Event::Kind::kBlockStart:
            return "block_start " + std::to_string(e.index) + " " +
                   (e.block.kind == Block::Kind::kToolUse
                        ? "tool " + e.block.tool_id + " " + e.block.tool_name
                        : std::string("text"));
        case Event::Kind::kTextDelta:
            return "text " + std::to_string(e.index) + " " + e.text;
        case Event::Kind::kToolInputDelta:
            return "input " + std::to_string(e.index) + " " + e.text;
        case Event::Kind::kBlockStop:
            return "block_stop " + std::to_string(e.index);
        case Event::Kind::kStop:
            return "stop " + std::to_string(static_cast<int>(e.stop_reason)) + " " +
                   e.stop_sequence;
        case Event::Kind::kUsage:
            return "usage " + std::to_string(e.usage.prompt_tokens) + "/" +
                   std::to_string(e.usage.completion_tokens) + "/" +
                   std::to_string(e.usage.total_tokens);
        case Event::Kind::kEnd:
            return "end";
        case Event::Kind::kError:
            return "error " + std::to_string(e.error.status) + " " + e.error.type + " " +
                   e.error.message;
    }
    return "?";
}

std::vector<std::string> describe(const std::vector<Event> &events) {
    std::vector<std::string> out;
    for (const Event &e : events)
        out.push_back(describe(e));
    return out;
}

// Consecutive deltas of one block joined: how a stream is split into deltas is not part of
// what it says.
std::vector<std::string> merged(const std::vector<Event> &events) {
    std::vector<Event> joined;
    for (const Event &e : events) {
        bool delta = e.kind == Event::Kind::kTextDelta || e.kind == Event::Kind::kToolInputDelta;
        if (delta && !joined.empty() && joined.back().kind == e.kind &&
            joined.back().index == e.index) {
            joined.back().text += e.text;
        } else {
            joined.push_back(e);
        }
    }
    return describe(joined);
}

using pgi::test_support::normalised;

std::vector<Event> read_stream(std::string_view in, const std::vector<std::size_t> &cuts = {}) {
    oc::StreamReader reader(kService);
    std::vector<Event> out;
    std::size_t pos = 0;
    for (std::size_t cut : cuts) {
        reader.feed(in.substr(pos, cut - pos), out);
        pos = cut;
    }
    reader.feed(in.substr(pos), out);
    reader.finish(out);
    return out;
}

std::string write_stream(const std::vector<Event> &events, bool usage) {
    oc::StreamWriter writer(usage);
    std::string out;
    for (const Event &e : events)
        writer.write(e, out);
    return out;
}

// ---- read_request ----

const json kConversation = json::parse(R"({
  "model": "ignored",
  "messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "developer", "content": [{"type": "text", "text": "Use "}, {"type": "text", "text": "tools."}]},
    {"role": "user", "content": [
      {"type": "text", "text": "What is in this picture, and the weather?"},
      {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}}
    ]},
    {"role": "assistant", "content": null, "tool_calls": [
      {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
      {"id": "c2", "type": "function", "function": {"name": "time", "arguments": ""}}
    ]},
    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "noon"}]},
    {"role": "assistant", "content": "A cat; sunny at noon."},
    {"role": "user", "content": "Thanks"}
  ],
  "tools": [
    {"type": "function", "function": {"name": "weather", "description": "Weather of a city",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "time"}}
  ],
  "tool_choice": {"type": "function", "function": {"name": "weather"}},
  "max_tokens": 50,
  "max_completion_tokens": 100,
  "temperature": 0.5,
  "top_p": 0.9,
  "stop": "END",
  "seed": 7,
  "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": true}},
  "user": "u-1",
  "stream": true,
  "stream_options": {"include_usage": true},
  "logprobs": true,
  "presence_penalty": 0.1
})");

TEST(ProtocolOpenAiChat, ReadsARequest) {
    chat::Request r = oc::read_request(kConversation);
    EXPECT_EQ(describe(r),
              "system=Be brief.\n\nUse tools.\n"
              "user: text(What is in this picture, and the weather?) "
              "image(https://example.com/cat.png)\n"
              "assistant: tool_use(c1,weather,{\"city\":\"Paris\"}) tool_use(c2,time,{})\n"
              "user: tool_result(c1,weather,sunny) tool_result(c2,time,noon)\n"
              "assistant: text(A cat; sunny at noon.)\n"
              "user: text(Thanks)\n"
              "tool weather Weather of a city "
              "{\"properties\":{\"city\":{\"type\":\"string\"}},\"type\":\"object\"}\n"
              "tool time  {}\n"
              "tool_choice 3 weather\n"
              "max_tokens 100\n"
              "temperature 0.500000\n"
              "top_p 0.900000\n"
              "stop END\n"
              "seed 7\n"
              "format 2 answer {\"type\":\"object\"} strict\n"
              "user u-1\n"
              "stream 1 usage\n");
}

TEST(ProtocolOpenAiChat, ReadsTheSmallForms) {
    chat::Request r = oc::read_request(json::parse(R"({"messages":[
        {"role":"user","content":"Hi"},
        {"role":"assistant","content":"Hello","tool_calls":null},
        {"role":"assistant","content":null},
        {"role":"user","content":"Again"}],
      "max_tokens": 9, "stop": ["a", "b"], "tool_choice": "required",
      "response_format": {"type": "json_object"}, "stream_options": {"include_usage": true},
      "temperature": null})"));
    EXPECT_EQ(describe(r),
              "system=\n"
              "user: text(Hi)\n"
              "assistant: text(Hello)\n"
              "user: text(Again)\n"
              "tool_choice 2 \n"
              "max_tokens 9\n"
              "stop a\nstop b\n"
              "format 1  {}\n"
              "user \n"
              "stream 0\n");
    for (const char *mode : {"auto", "none"}) {
        json body = {{"messages", {{{"role", "user"}, {"content", "x"}}}}, {"tool_choice", mode}};
        EXPECT_EQ(static_cast<int>(oc::read_request(body).tool_choice->mode),
                  std::string(mode) == "auto" ? 0 : 1);
    }
    json text_format = {{"messages", {{{"role", "user"}, {"content", "x"}}}},
                        {"response_format", {{"type", "text"}}}};
    EXPECT_EQ(oc::read_request(text_format).format.kind, chat::OutputFormat::Kind::kText);
}

TEST(ProtocolOpenAiChat, ToolResultsFollowTheirCalls) {
    // A tool message with no earlier call still reads (Anthropic needs no name); a tool result
    // after user text starts a turn of its own.
    chat::Request r = oc::read_request(json::parse(R"({"messages":[
        {"role":"user","content":"go"},
        {"role":"tool","tool_call_id":"zz","content":"late"}]})"));
    EXPECT_EQ(describe(r),
              "system=\nuser: text(go)\nuser: tool_result(zz,,late)\nformat 0  {}\nuser \n"
              "stream 0\n");
}

struct Refusal {
    const char *body;
    const char *sqlstate;
    const char *message;
};

TEST(ProtocolOpenAiChat, RefusesWhatItCannotRead) {
    const Refusal cases[] = {
        // Today's validation, word for word.
        {R"([1])", "22023", "the chat request must be a JSON object"},
        {R"({})", "22023", "the chat request has no \"messages\""},
        {R"({"messages":[]})", "22023", "\"messages\" must be a non-empty array"},
        {R"({"messages":[{"role":"robot","content":"x"}]})", "22023",
         "messages[0] has an unknown role \"robot\""},
        {R"({"messages":[{"role":"user"}]})", "22023", "messages[0] has no \"content\""},
        {R"({"messages":[{"role":"user","content":"x"}],"max_tokens":0})", "22023",
         "\"max_tokens\" must be a positive integer"},
        {R"({"messages":[{"role":"user","content":"x"}],"stop":5})", "22023",
         "\"stop\" must be a string or an array of strings"},
        {R"({"messages":[{"role":"user","content":"x"}],"temperature":"hot"})", "22023",
         "\"temperature\" must be a number"},
        {R"({"messages":[{"role":"user","content":"x"}],"tool_choice":"always"})", "22023",
         "\"tool_choice\" must be \"auto\", \"none\", \"required\" or "
         "{\"type\":\"function\",\"function\":{\"name\":...}}"},
        {R"({"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{oops"}}]}]})",
         "22023", "messages[0]: tool call \"c1\" has arguments that are not a JSON object"},
        {R"({"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"[1]"}}]}]})",
         "22023", "messages[0]: tool call \"c1\" has arguments that are not a JSON object"},
        {R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{}}]})",
         "22023", "every entry of \"tools\" needs function.name"},
        {R"({"messages":[{"role":"system","content":"x"}]})", "22023",
         "the chat request has no user or assistant message"},
        // What this reader adds.
        {R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]})",
         "22023", "messages[0].content image_url parts need image_url.url"},
        {R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"yaml"}})",
         "22023", "\"response_format\" must have type text, json_object or json_schema"},
        {R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema"}})",
         "22023", "\"response_format\" of type json_schema needs a \"json_schema\" object"},
        {R"({"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"schema":3}}})",
         "22023", "\"response_format.json_schema.schema\" must be a JSON Schema object"},
        {R"({"messages":[{"role":"user","content":"x"}],"user":5})", "22023",
         "\"user\" must be a string"},
        {R"({"messages":[{"role":"user","content":"x"}],"seed":18446744073709551615})", "22023",
         "\"seed\" is out of range"},
        {R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f","parameters":[]}}]})",
         "22023", "tools[].function.parameters must be a JSON Schema object"},
        // What the form cannot carry to another protocol.
        {R"({"messages":[{"role":"user","content":"x"}],"n":2})", "0A000",
         "\"n\" greater than 1 cannot be translated to another protocol"},
        {R"({"messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]})",
         "0A000", "content parts of type \"input_audio\" cannot be translated to another protocol"},
        {R"({"messages":[{"role":"system","content":[{"type":"image_url","image_url":{"url":"u"}}]},{"role":"user","content":"x"}]})",
         "0A000",
         "content parts of type \"image_url\" outside user messages cannot be translated to "
         "another protocol"},
        {R"({"messages":[{"role":"user","content":"x"}],"tools":[{"type":"web_search"}]})", "0A000",
         "tools of type \"web_search\" cannot be translated to another protocol"},
        {R"({"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"custom","custom":{"name":"f","input":"x"}}]}]})",
         "0A000", "tool calls of type \"custom\" cannot be translated to another protocol"},
    };
    for (const Refusal &c : cases) {
        SCOPED_TRACE(c.body);
        Failure f = failure_of([&] { oc::read_request(json::parse(c.body)); });
        EXPECT_EQ(f.sqlstate, c.sqlstate);
        EXPECT_EQ(f.message, c.message);
        EXPECT_FALSE(f.hint.empty());
    }
    EXPECT_EQ(
        failure_of([] {
            oc::read_request(json::parse(R"({"messages":[{"role":"user","content":"x"}],"n":2})"));
        }).hint,
        "Only a service of the OPENAI_V1 protocol takes it; call one, or leave it out.");
    // n of 1 crosses.
    EXPECT_NO_THROW(
        oc::read_request(json::parse(R"({"messages":[{"role":"user","content":"x"}],"n":1})")));
}

// ---- write_response ----

chat::Response answer() {
    chat::Response r;
    r.id = "msg_1";
    r.model = "claude-x";
    Block text;
    text.text = "Let me check.";
    Block call;
    call.kind = Block::Kind::kToolUse;
    call.tool_id = "toolu_1";
    call.tool_name = "weather";
    call.input = {{"city", "Paris"}};
    r.content = {text, call};
    r.stop_reason = chat::StopReason::kToolUse;
    r.usage = {10, 5, 15, true};
    return r;
}

TEST(ProtocolOpenAiChat, WritesAResponse) {
    json j = oc::write_response(answer());
    EXPECT_TRUE(j["created"].is_number_integer());
    j.erase("created");
    EXPECT_EQ(j, json::parse(R"({"id":"msg_1","object":"chat.completion","model":"claude-x",
        "choices":[{"index":0,"message":{"role":"assistant","content":"Let me check.",
          "tool_calls":[{"id":"toolu_1","type":"function",
            "function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}}]},
          "finish_reason":"tool_calls","logprobs":null}],
        "usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}})"));
}

TEST(ProtocolOpenAiChat, WritesContentNullForOnlyToolCallsAndMapsStopReasons) {
    chat::Response r = answer();
    r.content.erase(r.content.begin());
    r.id.clear();
    json j = oc::write_response(r);
    EXPECT_TRUE(j["choices"][0]["message"]["content"].is_null());
    EXPECT_EQ(normalised(j["id"].get<std::string>()), "chatcmpl-X");

    const std::pair<chat::StopReason, const char *> reasons[] = {
        {chat::StopReason::kEndTurn, "stop"},
        {chat::StopReason::kStopSequence, "stop"},
        {chat::StopReason::kMaxTokens, "length"},
        {chat::StopReason::kToolUse, "tool_calls"},
        {chat::StopReason::kContentFilter, "content_filter"},
        {chat::StopReason::kOther, "stop"},
    };
    chat::Response empty;
    empty.model = "m";
    for (const auto &[reason, text] : reasons) {
        empty.stop_reason = reason;
        json k = oc::write_response(empty);
        EXPECT_EQ(k["choices"][0]["finish_reason"], text);
        EXPECT_EQ(k["choices"][0]["message"]["content"], "");
        EXPECT_FALSE(k["choices"][0]["message"].contains("tool_calls"));
    }
}

// ---- error_body ----

TEST(ProtocolOpenAiChat, ErrorBodies) {
    EXPECT_EQ(
        oc::error_body(400, "bad \"x\""),
        R"({"error":{"message":"bad \"x\"","type":"invalid_request_error","param":null,"code":null}})");
    EXPECT_EQ(json::parse(oc::error_body(404, "m"))["error"]["type"], "invalid_request_error");
    EXPECT_EQ(json::parse(oc::error_body(429, "m"))["error"]["type"], "rate_limit_error");
    EXPECT_EQ(json::parse(oc::error_body(500, "m"))["error"]["type"], "server_error");
    EXPECT_EQ(json::parse(oc::error_body(503, "m"))["error"]["type"], "upstream_error");
}

// ---- write_request ----

TEST(ProtocolOpenAiChat, WritesARequest) {
    chat::Request r = oc::read_request(kConversation);
    pgi::translate::UpstreamRequest up = oc::write_request(kService, r, {});
    EXPECT_EQ(up.method, "POST");
    EXPECT_EQ(up.url, "http://up:1/v1/chat/completions");
    EXPECT_EQ(up.headers, (std::vector<std::string>{"Authorization: Bearer sk-test",
                                                    "Content-Type: application/json",
                                                    "Accept: text/event-stream"}));
    EXPECT_EQ(json::parse(up.body), json::parse(R"({
      "model": "gpt-4o-mini",
      "messages": [
        {"role": "system", "content": "Be brief.\n\nUse tools."},
        {"role": "user", "content": [
          {"type": "text", "text": "What is in this picture, and the weather?"},
          {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]},
        {"role": "assistant", "content": null, "tool_calls": [
          {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
          {"id": "c2", "type": "function", "function": {"name": "time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "noon"},
        {"role": "assistant", "content": "A cat; sunny at noon."},
        {"role": "user", "content": "Thanks"}
      ],
      "tools": [
        {"type": "function", "function": {"name": "weather", "description": "Weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}},
        {"type": "function", "function": {"name": "time"}}
      ],
      "tool_choice": {"type": "function", "function": {"name": "weather"}},
      "max_completion_tokens": 100,
      "temperature": 0.5,
      "top_p": 0.9,
      "stop": ["END"],
      "seed": 7,
      "presence_penalty": 0.1,
      "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": true}},
      "user": "u-1",
      "stream": true,
      "stream_options": {"include_usage": true}
    })"));
}

TEST(ProtocolOpenAiChat, StreamsAlwaysAskForUsage) {
    chat::Request r = oc::read_request(
        json::parse(R"({"messages":[{"role":"user","content":"x"}],"stream":true})"));
    EXPECT_FALSE(r.stream_usage);
    json body = json::parse(oc::write_request(kService, r, {}).body);
    EXPECT_EQ(body["stream_options"], json::parse(R"({"include_usage":true})"));
    r.stream = false;
    pgi::translate::UpstreamRequest up = oc::write_request(kService, r, {});
    EXPECT_FALSE(json::parse(up.body).contains("stream"));
    EXPECT_EQ(up.headers.size(), 2u);
}

TEST(ProtocolOpenAiChat, WritesWhatOtherDialectsBring) {
    // Another dialect's request: tool results and text in one user turn, an error result, a
    // schema without a name, tool_choice auto, no limit.
    chat::Request r;
    Block result;
    result.kind = Block::Kind::kToolResult;
    result.tool_id = "t1";
    result.tool_name = "f";
    result.text = "failed";
    result.is_error = true;
    Block text;
    text.text = "and now?";
    r.messages = {{chat::Role::kUser, {text, result}}};
    r.tool_choice = chat::ToolChoice{};
    r.format.kind = chat::OutputFormat::Kind::kJsonSchema;
    r.format.schema = {{"type", "object"}};
    json body = json::parse(oc::write_request(kService, r, {}).body);
    EXPECT_EQ(body, json::parse(R"({"model":"gpt-4o-mini","messages":[
        {"role":"tool","tool_call_id":"t1","content":"failed"},
        {"role":"user","content":"and now?"}],
      "tool_choice":"auto",
      "response_format":{"type":"json_schema","json_schema":{"name":"response","schema":{"type":"object"},"strict":false}}})"));
}

TEST(ProtocolOpenAiChat, WriteRequestRefusesWhatOpenAiCannotTake) {
    chat::Request r;
    Block text;
    text.text = "x";
    r.messages = {{chat::Role::kUser, {text}}};
    r.top_k = 40;
    Failure f = failure_of([&] { oc::write_request(kService, r, {}); });
    EXPECT_EQ(f.sqlstate, "0A000");
    EXPECT_EQ(f.message, "service \"oa\" cannot take \"top_k\"");
    r.top_k.reset();

    Block image;
    image.kind = Block::Kind::kImage;
    image.image_url = "https://x/y.png";
    r.messages.push_back({chat::Role::kAssistant, {image}});
    f = failure_of([&] { oc::write_request(kService, r, {}); });
    EXPECT_EQ(f.sqlstate, "0A000");
    EXPECT_EQ(f.message, "service \"oa\" cannot take images in an assistant message");
}

// ---- read_response ----

TEST(ProtocolOpenAiChat, ReadsAResponse) {
    chat::Response r = oc::read_response(kService, R"({"id":"chatcmpl-1","object":"chat.completion",
      "created":1,"model":"gpt-4o-mini-2024","choices":[{"index":0,"message":{"role":"assistant",
      "content":"Hi","tool_calls":[{"id":"call_a","type":"function","function":{"name":"f",
      "arguments":"{\"x\":1}"}}]},"finish_reason":"tool_calls","logprobs":null}],
      "usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}})");
    EXPECT_EQ(describe(r),
              "id=chatcmpl-1 model=gpt-4o-mini-2024 stop=3() text(Hi) "
              "tool_use(call_a,f,{\"x\":1}) usage=3/4/7");

    // vLLM names the stop string that matched; some servers say "stop" for tool calls; no
    // model and no usage.
    r = oc::read_response(kService, R"({"choices":[{"message":{"content":"a"},
      "finish_reason":"stop","stop_reason":"END"}]})");
    EXPECT_EQ(describe(r), "id= model=gpt-4o-mini stop=2(END) text(a)");
    r = oc::read_response(kService, R"({"choices":[{"message":{"content":null,"tool_calls":[
      {"type":"function","function":{"name":"g","arguments":""}}]},"finish_reason":"stop"}]})");
    EXPECT_EQ(describe(r), "id= model=gpt-4o-mini stop=3() tool_use(call_0,g,{})");
    r = oc::read_response(kService,
                          R"({"choices":[{"message":{"content":"x"},"finish_reason":"length"}],
      "usage":{"prompt_tokens":9223372036854775807,"completion_tokens":5}})");
    EXPECT_EQ(describe(r),
              "id= model=gpt-4o-mini stop=1() text(x) usage=9223372036854775807/5/"
              "9223372036854775807");
    r = oc::read_response(kService, R"({"choices":[{"message":{"content":null,"refusal":"No."},
      "finish_reason":"content_filter"}]})");
    EXPECT_EQ(describe(r), "id= model=gpt-4o-mini stop=4() text(No.)");
    r = oc::read_response(kService,
                          R"({"choices":[{"message":{"content":[{"type":"text","text":"p"},
      {"type":"text","text":"q"}]},"finish_reason":"weird"}]})");
    EXPECT_EQ(describe(r), "id= model=gpt-4o-mini stop=5() text(pq)");
}

TEST(ProtocolOpenAiChat, ReadResponseRefusesMalformedBodies) {
    const std::pair<const char *, const char *> cases[] = {
        {"not json", "the body is not JSON: not json"},
        {R"({"object":"chat.completion"})", "the body has no \"choices\" array"},
        {R"({"choices":[]})", "the body has no choices"},
        {R"({"choices":[{"index":0}]})", "the first choice has no \"message\" object"},
        {R"({"choices":[{"message":{"content":5}}]})", "message.content is neither text nor null"},
        {R"({"choices":[{"message":{"tool_calls":{}}}]})", "message.tool_calls is not an array"},
        {R"({"choices":[{"message":{"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{broken"}}]}}]})",
         "tool call \"c\" has arguments that are not a JSON object"},
    };
    for (const auto &[body, why] : cases) {
        SCOPED_TRACE(body);
        Failure f = failure_of([&] { oc::read_response(kService, body); });
        EXPECT_EQ(f.sqlstate, "PI400");
        EXPECT_EQ(f.message, "service \"oa\" returned a malformed chat response");
        EXPECT_EQ(f.detail, why);
    }
    // An error object inside a 200, with the key it echoes removed.
    Failure f = failure_of([] {
        oc::read_response(kService, R"({"error":{"message":"bad key sk-test","type":"x"}})");
    });
    EXPECT_EQ(f.sqlstate, "PI400");
    EXPECT_EQ(f.message, "service \"oa\" returned an error: bad key [redacted]");
}

// ---- round trips ----

TEST(ProtocolOpenAiChat, RequestRoundTrip) {
    chat::Request first = oc::read_request(kConversation);
    json written = json::parse(oc::write_request(kService, first, {}).body);
    // The upstream asks for usage; the caller did too here, so the round trip keeps it.
    chat::Request second = oc::read_request(written);
    EXPECT_EQ(describe(second), describe(first));
}

TEST(ProtocolOpenAiChat, ResponseRoundTrip) {
    chat::Response first = answer();
    first.stop_reason = chat::StopReason::kToolUse;
    chat::Response second = oc::read_response(kService, oc::write_response(first).dump());
    EXPECT_EQ(describe(second), describe(first));
}

// ---- StreamWriter ----

std::vector<Event> answer_events() {
    std::vector<Event> events;
    auto add = [&](Event::Kind kind, std::size_t index = 0, std::string text = {}) {
        Event e;
        e.kind = kind;
        e.index = index;
        e.text = std::move(text);
        events.push_back(std::move(e));
        return &events.back();
    };
    Event *start = add(Event::Kind::kStart);
    start->id = "msg_1";
    start->model = "claude-x";
    add(Event::Kind::kBlockStart, 0);
    add(Event::Kind::kTextDelta, 0, "Let me ");
    add(Event::Kind::kTextDelta, 0, "check.");
    add(Event::Kind::kBlockStop, 0);
    Event *tool = add(Event::Kind::kBlockStart, 1);
    tool->block.kind = Block::Kind::kToolUse;
    tool->block.tool_id = "toolu_1";
    tool->block.tool_name = "weather";
    add(Event::Kind::kToolInputDelta, 1, "{\"city\":");
    add(Event::Kind::kToolInputDelta, 1, "\"Paris\"}");
    add(Event::Kind::kBlockStop, 1);
    tool = add(Event::Kind::kBlockStart, 2);
    tool->block.kind = Block::Kind::kToolUse;
    tool->block.tool_id = "toolu_2";
    tool->block.tool_name = "time";
    add(Event::Kind::kBlockStop, 2);
    add(Event::Kind::kStop)->stop_reason = chat::StopReason::kToolUse;
    add(Event::Kind::kUsage)->usage = {10, 5, 15, true};
    add(Event::Kind::kEnd);
    return events;
}

constexpr const char *kPrefix =
    R"(data: {"id":"msg_1","object":"chat.completion.chunk","created":0,"model":"claude-x","choices":[)";

TEST(ProtocolOpenAiChat, StreamWriterWritesChunks) {
    std::string p = kPrefix;
    std::string expected =
        p + R"({"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]})" +
        "\n\n" + p + R"({"index":0,"delta":{"content":"Let me "},"finish_reason":null}]})" +
        "\n\n" + p + R"({"index":0,"delta":{"content":"check."},"finish_reason":null}]})" + "\n\n" +
        p +
        R"({"index":0,"delta":{"tool_calls":[{"index":0,"id":"toolu_1","type":"function","function":{"name":"weather","arguments":""}}]},"finish_reason":null}]})" +
        "\n\n" + p +
        R"({"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]})" +
        "\n\n" + p +
        R"({"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":null}]})" +
        "\n\n" + p +
        R"({"index":0,"delta":{"tool_calls":[{"index":1,"id":"toolu_2","type":"function","function":{"name":"time","arguments":""}}]},"finish_reason":null}]})" +
        "\n\n" + p + R"({"index":0,"delta":{},"finish_reason":"tool_calls"}]})" + "\n\n";
    EXPECT_EQ(normalised(write_stream(answer_events(), false)), expected + "data: [DONE]\n\n");
    EXPECT_EQ(normalised(write_stream(answer_events(), true)),
              expected + p +
                  R"(],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}})" +
                  "\n\ndata: [DONE]\n\n");
}

TEST(ProtocolOpenAiChat, StreamWriterKeepsIdCreatedAndModel) {
    std::vector<Event> events = answer_events();
    events[0].id.clear();
    std::string out = write_stream(events, true);
    std::vector<json> chunks;
    for (std::size_t at = 0; (at = out.find("data: {", at)) != std::string::npos;) {
        std::size_t end = out.find("\n\n", at);
        chunks.push_back(json::parse(out.substr(at + 6, end - at - 6)));
        at = end;
    }
    ASSERT_EQ(chunks.size(), 9u);
    EXPECT_EQ(normalised(chunks[0]["id"].get<std::string>()), "chatcmpl-X");
    for (const json &c : chunks) {
        EXPECT_EQ(c["id"], chunks[0]["id"]);
        EXPECT_EQ(c["created"], chunks[0]["created"]);
        EXPECT_EQ(c["model"], "claude-x");
        EXPECT_EQ(c["object"], "chat.completion.chunk");
    }
    EXPECT_EQ(chunks.back()["choices"], json::array());
}

TEST(ProtocolOpenAiChat, StreamWriterIgnoresARepeatedStart) {
    std::vector<Event> events = answer_events();
    Event again = events[0];
    again.id = "other";
    events.insert(events.begin() + 2, again);
    EXPECT_EQ(write_stream(events, false).find("other"), std::string::npos);
    EXPECT_EQ(normalised(write_stream(events, false)),
              normalised(write_stream(answer_events(), false)));
}

TEST(ProtocolOpenAiChat, StreamWriterEndsOnAnError) {
    std::vector<Event> events = answer_events();
    Event error;
    error.kind = Event::Kind::kError;
    error.error.status = 529;
    error.error.message = "Overloaded";
    events.insert(events.begin() + 3, error);
    std::string out = normalised(write_stream(events, true));
    std::string p = kPrefix;
    EXPECT_EQ(
        out,
        p + R"({"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]})" +
            "\n\n" + p + R"({"index":0,"delta":{"content":"Let me "},"finish_reason":null}]})" +
            "\n\n" +
            R"(data: {"error":{"message":"Overloaded","type":"upstream_error","param":null,"code":null}})" +
            "\n\n");
    // An error type the reader kept goes on as it is.
    error.error.type = "overloaded_error";
    EXPECT_EQ(
        write_stream({error}, false),
        "data: "
        R"({"error":{"message":"Overloaded","type":"overloaded_error","param":null,"code":null}})"
        "\n\n");
}

// ---- StreamReader ----

std::string sse(const std::vector<std::string> &chunks) {
    std::string out;
    for (const std::string &c : chunks)
        out += "data: " + c + "\n\n";
    return out;
}

// A recorded shape of OpenAI's stream with two parallel tool calls, whose argument deltas are
// interleaved as some servers send them, text first, then the finish and usage chunks.
const std::string kInterleaved = sse({
    R"({"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]})",
    R"({"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024","choices":[{"index":0,"delta":{"content":"Checking "},"finish_reason":null}]})",
    R"({"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024","choices":[{"index":0,"delta":{"content":"both."},"finish_reason":null}]})",
    R"({"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"weather","arguments":""}}]},"finish_reason":null}]})",
    R"({"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"ci"}}]},"finish_reason":null}]})",
    R"({"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"time","arguments":"{\"tz\":"}}]},"finish_reason":null}]})",
    R"({"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\":\"Paris\"}"}},{"index":1,"function":{"arguments":"\"CET\"}"}}]},"finish_reason":null}]})",
    R"({"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]})",
    R"({"id":"chatcmpl-9","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024","choices":[],"usage":{"prompt_tokens":20,"completion_tokens":12,"total_tokens":32}})",
    "[DONE]",
});

const std::vector<std::string> kInterleavedEvents = {
    "start chatcmpl-9 gpt-4o-2024",
    "block_start 0 text",
    "text 0 Checking ",
    "text 0 both.",
    "block_stop 0",
    "block_start 1 tool call_a weather",
    "input 1 {\"ci",
    "input 1 ty\":\"Paris\"}",
    "block_stop 1",
    "block_start 2 tool call_b time",
    "input 2 {\"tz\":\"CET\"}",
    "block_stop 2",
    "stop 3 ",
    "usage 20/12/32",
    "end",
};

TEST(ProtocolOpenAiChat, StreamReaderRegroupsInterleavedToolCalls) {
    EXPECT_EQ(describe(read_stream(kInterleaved)), kInterleavedEvents);
}

TEST(ProtocolOpenAiChat, StreamReaderIgnoresHowBytesAreSplit) {
    const std::vector<std::string> whole = merged(read_stream(kInterleaved));
    for (std::size_t cut = 0; cut <= kInterleaved.size(); ++cut) {
        SCOPED_TRACE(cut);
        ASSERT_EQ(describe(read_stream(kInterleaved, {cut})), kInterleavedEvents);
    }
    std::vector<std::size_t> every;
    for (std::size_t i = 1; i < kInterleaved.size(); ++i)
        every.push_back(i);
    EXPECT_EQ(describe(read_stream(kInterleaved, every)), kInterleavedEvents);
    // CRLF line ends and two-line data read the same.
    std::string crlf;
    for (char c : kInterleaved) {
        if (c == '\n')
            crlf += '\r';
        crlf += c;
    }
    EXPECT_EQ(merged(read_stream(crlf, every)), whole);
}

TEST(ProtocolOpenAiChat, StreamReaderHoldsTextThatComesDuringAToolCall) {
    // Text after a tool call began, and a call that arrives without its name first.
    std::string in = sse({
        R"({"id":"c","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":"{"}}]}}]})",
        R"({"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"note"}}]})",
        R"({"id":"c","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"}"}}]}}]})",
        R"({"id":"c","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{}"}}]}}]})",
        R"({"id":"c","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"name":"g"}}]},"finish_reason":"stop"}]})",
        "[DONE]",
    });
    EXPECT_EQ(describe(read_stream(in)),
              (std::vector<std::string>{
                  "start c m", "block_start 0 tool a f", "input 0 {", "input 0 }", "block_stop 0",
                  "block_start 1 text", "text 1 note", "block_stop 1",
                  "block_start 2 tool call_0 g", "input 2 {}", "block_stop 2", "stop 3 ", "end"}));
}

TEST(ProtocolOpenAiChat, StreamReaderStartsWhereTheAnswerDoes) {
    // Azure's prompt_filter_results chunk (empty id, no choices) comes first; vLLM's usage chunk
    // has choices null; a stream without [DONE] is ended anyway, with the usage seen.
    std::string in = sse({
        R"({"id":"","object":"","created":0,"model":"","choices":[],"prompt_filter_results":[]})",
        R"({"id":"cmpl-1","model":"llama","choices":[{"index":0,"delta":{"role":"assistant"}}]})",
        R"({"id":"cmpl-1","model":"llama","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"length"}]})",
        R"({"id":"cmpl-1","model":"llama","choices":null,"usage":{"prompt_tokens":1,"completion_tokens":2}})",
    });
    EXPECT_EQ(describe(read_stream(in)),
              (std::vector<std::string>{"start cmpl-1 llama", "block_start 0 text", "text 0 Hi",
                                        "block_stop 0", "stop 1 ", "usage 1/2/3", "end"}));
    // Nothing at all but [DONE]: still a whole, empty answer, with a generated id.
    std::vector<Event> events = read_stream("data: [DONE]\n\n");
    ASSERT_EQ(events.size(), 3u);
    EXPECT_EQ(normalised(events[0].id), "chatcmpl-X");
    EXPECT_EQ(events[0].model, "gpt-4o-mini");
    EXPECT_EQ(describe(events[1]), "stop 0 ");
    EXPECT_EQ(describe(events[2]), "end");
}

// Text chunks are read in place; whatever else a chunk holds sends it to the parser. Both
// readings give the same events, escapes and spacing included.
TEST(ProtocolOpenAiChat, StreamReaderReadsTextChunksInPlaceAsTheParserWould) {
    std::string in = sse({
        R"({"id":"c","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]})",
        R"( { "id" : "c" , "choices" : [ { "index" : 0 , "delta" : { "content" : "a\"b\u00e9\n" } , "finish_reason" : null } ] , "x" : {"content":"no"} })",
        R"({"id":"c","choices":[{"delta":{"content":"c"},"logprobs":null}],"usage":null})",
        R"({"id":"c","choices":[{"index":0,"delta":{"content":"d"},"finish_reason":"stop"}]})",
        R"({"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}})",
    });
    EXPECT_EQ(describe(read_stream(in)),
              (std::vector<std::string>{"start c m", "block_start 0 text", "text 0 a\"b\xC3\xA9\n",
                                        "text 0 c", "text 0 d", "block_stop 0", "stop 0 ",
                                        "usage 1/2/3", "end"}));
    // A second choice, a tool call or a refusal is not plain text: parsed as before.
    std::string other = sse({
        R"({"id":"c","model":"m","choices":[{"index":0,"delta":{"role":"assistant"}}]})",
        R"({"id":"c","choices":[{"index":1,"delta":{"content":"other choice"}}]})",
        R"({"id":"c","choices":[{"index":0,"delta":{"refusal":"no"}}]})",
        R"({"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})",
    });
    EXPECT_EQ(describe(read_stream(other)),
              (std::vector<std::string>{"start c m", "block_start 0 text", "text 0 no",
                                        "block_stop 0", "stop 0 ", "end"}));
}

TEST(ProtocolOpenAiChat, StreamReaderTurnsErrorsIntoAnErrorEvent) {
    std::string in = sse({
        R"({"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"Hi"}}]})",
        R"({"error":{"message":"Rate limit reached for key sk-test","type":"requests","code":"rate_limit_exceeded"}})",
        R"({"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"lost"}}]})",
        "[DONE]",
    });
    EXPECT_EQ(describe(read_stream(in)),
              (std::vector<std::string>{"start c m", "block_start 0 text", "text 0 Hi",
                                        "error 429 requests Rate limit reached for key "
                                        "[redacted]"}));
    EXPECT_EQ(describe(read_stream("event: error\ndata: {\"error\":{\"message\":\"boom\"}}\n\n")),
              (std::vector<std::string>{"error 500 upstream_error boom"}));
    EXPECT_EQ(describe(read_stream("data: {not json\n\n")),
              (std::vector<std::string>{
                  "error 502 upstream_error service \"oa\" sent a malformed stream event"}));
}

TEST(ProtocolOpenAiChat, StreamRoundTrip) {
    // The writer's bytes read back to the same events, whatever the split.
    std::vector<Event> events = answer_events();
    std::string bytes = write_stream(events, true);
    std::vector<std::string> expected = describe(events);
    std::vector<std::size_t> every;
    for (std::size_t i = 1; i < bytes.size(); ++i)
        every.push_back(i);
    EXPECT_EQ(describe(read_stream(bytes)), expected);
    EXPECT_EQ(describe(read_stream(bytes, every)), expected);
    // And the reader's events of an upstream stream write back to a stream that reads the same.
    std::vector<Event> read = read_stream(kInterleaved);
    EXPECT_EQ(describe(read_stream(write_stream(read, true))), describe(read));
}

}  // namespace
